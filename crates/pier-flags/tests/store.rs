//! The flag store against real databases, on both backends: conditional writes, keyset pages,
//! the audit trail, document import and the evaluation cache a write keeps current.

use std::sync::Arc;
use std::time::Duration;

use pier_cache::Settings;
use pier_core::{Clock, ManualClock, WorkspaceId};
use pier_flags::audit::Action;
use pier_flags::{Context, Document, Flag, FlagError, FlagKey, FlagStore};
use pier_testkit::{Backend, TestDb, on_both_backends};
use serde_json::{Map, Value, json};

on_both_backends!(
    flags_are_created_read_replaced_and_deleted_conditionally,
    lists_page_by_key,
    imports_create_update_and_delete_with_an_audit_trail,
    a_change_reaches_the_evaluation_cache,
    another_workspace_sees_nothing,
    a_follower_gets_a_snapshot_then_every_change_in_commit_order,
    a_follower_resumes_only_from_a_change_the_trail_holds,
);

struct Fixture {
    _db: TestDb,
    db: pier_db::Db,
    clock: Arc<dyn Clock>,
    manual: ManualClock,
    store: FlagStore,
    workspace: WorkspaceId,
}

fn cache() -> Settings {
    Settings {
        capacity: 100,
        ttl: Duration::from_secs(300),
        negative_ttl: Duration::from_secs(5),
        jitter: 0.0,
    }
}

async fn fixture(backend: Backend) -> Fixture {
    let test_db = TestDb::new(&backend, &[pier_db::MIGRATIONS, pier_flags::MIGRATIONS]).await;
    let manual = ManualClock::starting_now();
    let clock: Arc<dyn Clock> = Arc::new(manual.clone());
    Fixture {
        manual,
        db: test_db.db.clone(),
        store: FlagStore::new(test_db.db.clone(), clock.clone(), cache()),
        workspace: WorkspaceId::new(clock.now()),
        clock,
        _db: test_db,
    }
}

fn flag(key: &str, state: &str) -> Flag {
    let definition =
        json!({"state": state, "variants": {"on": true, "off": false}, "defaultVariant": "on"});
    Flag::parse(
        FlagKey::parse(key).expect("key"),
        &definition,
        "",
        &Map::new(),
    )
    .expect("valid")
}

fn key(text: &str) -> FlagKey {
    FlagKey::parse(text).expect("key")
}

async fn flags_are_created_read_replaced_and_deleted_conditionally(backend: Backend) {
    let f = fixture(backend).await;
    let created = f
        .store
        .create(&f.workspace, "key_a", flag("checkout", "ENABLED"))
        .await
        .expect("created");
    assert_eq!(created.version, 1);
    let again = f
        .store
        .create(&f.workspace, "key_a", flag("checkout", "DISABLED"))
        .await;
    assert!(matches!(again, Err(FlagError::Exists(key)) if key == "checkout"));

    let seen = f
        .store
        .get(&f.workspace, &key("checkout"))
        .await
        .expect("read")
        .expect("found");
    let replaced = f
        .store
        .replace(&f.workspace, "key_b", &seen, flag("checkout", "DISABLED"))
        .await
        .expect("replaced")
        .expect("the version matched");
    assert_eq!(replaced.version, 2);
    assert!(!replaced.flag.enabled());
    // A writer holding the old version changes nothing.
    let stale = f
        .store
        .replace(&f.workspace, "key_c", &seen, flag("checkout", "ENABLED"))
        .await;
    assert!(stale.expect("no error").is_none());
    assert!(
        !f.store
            .delete(&f.workspace, "key_c", &seen)
            .await
            .expect("no error")
    );
    assert!(
        f.store
            .delete(&f.workspace, "key_c", &replaced)
            .await
            .expect("deleted")
    );
    assert!(
        f.store
            .get(&f.workspace, &key("checkout"))
            .await
            .expect("read")
            .is_none()
    );

    let changes = f
        .store
        .changes(&f.workspace, &key("checkout"), None, 10)
        .await
        .expect("trail");
    let actions: Vec<(Action, &str, i64)> = changes
        .iter()
        .map(|c| (c.action, c.actor.as_str(), c.version))
        .collect();
    assert_eq!(
        actions,
        [
            (Action::Deleted, "key_c", 2),
            (Action::Updated, "key_b", 2),
            (Action::Created, "key_a", 1)
        ]
    );
    assert_eq!(changes[1].diff, json!({"state": "DISABLED"}));
    assert_eq!(
        changes[2].diff["variants"],
        json!({"on": true, "off": false})
    );
    let page = f
        .store
        .changes(&f.workspace, &key("checkout"), Some(changes[0].seq), 10)
        .await;
    assert_eq!(page.expect("page").len(), 2);
}

async fn lists_page_by_key(backend: Backend) {
    let f = fixture(backend).await;
    for name in ["b", "a", "d", "c", "e"] {
        f.store
            .create(&f.workspace, "key_a", flag(name, "ENABLED"))
            .await
            .expect("created");
    }
    let first = f.store.list(&f.workspace, None, 2).await.expect("page");
    let keys = |page: &[pier_flags::StoredFlag]| -> Vec<String> {
        page.iter().map(|s| s.flag.key().to_string()).collect()
    };
    assert_eq!(keys(&first), ["a", "b"]);
    let second = f
        .store
        .list(&f.workspace, Some("b".into()), 2)
        .await
        .expect("page");
    assert_eq!(keys(&second), ["c", "d"]);
    let last = f
        .store
        .list(&f.workspace, Some("d".into()), 2)
        .await
        .expect("page");
    assert_eq!(keys(&last), ["e"]);
}

async fn imports_create_update_and_delete_with_an_audit_trail(backend: Backend) {
    let f = fixture(backend).await;
    f.store
        .create(&f.workspace, "key_a", flag("keep", "ENABLED"))
        .await
        .expect("created");
    f.store
        .create(&f.workspace, "key_a", flag("change", "ENABLED"))
        .await
        .expect("created");
    f.store
        .create(&f.workspace, "key_a", flag("drop", "ENABLED"))
        .await
        .expect("created");
    let document = json!({
        "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@pier.dev"]}},
        "flags": {
            "keep": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
            "change": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
            "new": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                    "targeting": {"if": [{"$ref": "staff"}, "on", null]}}
        }
    });
    let document = Document::parse(&document).expect("valid");
    let imported = f
        .store
        .import(&f.workspace, "key_i", document)
        .await
        .expect("imported");
    assert_eq!(imported.created, ["new"]);
    assert_eq!(imported.updated, ["change"]);
    assert_eq!(imported.deleted, ["drop"]);
    assert_eq!(imported.unchanged, 1);
    let trail = f
        .store
        .changes(&f.workspace, &key("drop"), None, 10)
        .await
        .expect("trail");
    assert_eq!(
        (trail[0].action, trail[0].actor.as_str()),
        (Action::Deleted, "key_i")
    );

    let live = f.store.live(&f.workspace).await.expect("live");
    let keys: Vec<&String> = live.flags.keys().collect();
    assert_eq!(keys, ["change", "keep", "new"]);
    let mut context = Context::new(Map::from_iter([("email".into(), json!("ana@pier.dev"))]), 0);
    let resolution = live.get("new").expect("new").evaluate(&mut context);
    assert_eq!(resolution.value, Some(json!(true)));
}

async fn a_change_reaches_the_evaluation_cache(backend: Backend) {
    let f = fixture(backend).await;
    assert!(
        f.store
            .live(&f.workspace)
            .await
            .expect("live")
            .flags
            .is_empty()
    );
    let created = f
        .store
        .create(&f.workspace, "key_a", flag("switch", "ENABLED"))
        .await
        .expect("created");
    let live = f.store.live(&f.workspace).await.expect("live");
    assert!(
        live.get("switch")
            .expect("cached after the create")
            .enabled()
    );
    f.store
        .replace(&f.workspace, "key_a", &created, flag("switch", "DISABLED"))
        .await
        .expect("ok")
        .expect("replaced");
    let live = f.store.live(&f.workspace).await.expect("live");
    assert!(!live.get("switch").expect("still there").enabled());

    // Another node (a second store on the same database) hears of the change when it listens;
    // on SQLite every writer is in one process and shares the store.
    if f.db.backend() == pier_db::Backend::Postgres {
        let other = FlagStore::new(f.db.clone(), f.clock.clone(), cache());
        let listener = other
            .listen(pier_db::Relay::default())
            .spawn(&f.db)
            .expect("a listener");
        assert!(
            !other
                .live(&f.workspace)
                .await
                .expect("live")
                .get("switch")
                .expect("flag")
                .enabled()
        );
        let seen = f
            .store
            .get(&f.workspace, &key("switch"))
            .await
            .expect("read")
            .expect("found");
        f.store
            .replace(&f.workspace, "key_a", &seen, flag("switch", "ENABLED"))
            .await
            .expect("ok")
            .expect("replaced");
        let mut attempts = 0;
        while !other
            .live(&f.workspace)
            .await
            .expect("live")
            .get("switch")
            .expect("flag")
            .enabled()
        {
            attempts += 1;
            assert!(attempts < 500, "the other node never heard of the change");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        listener.abort();
    }
}

async fn another_workspace_sees_nothing(backend: Backend) {
    let f = fixture(backend).await;
    let other = WorkspaceId::new(f.clock.now());
    let created = f
        .store
        .create(&f.workspace, "key_a", flag("mine", "ENABLED"))
        .await
        .expect("created");
    assert!(
        f.store
            .get(&other, &key("mine"))
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        f.store
            .list(&other, None, 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(f.store.live(&other).await.expect("live").flags.is_empty());
    assert!(
        f.store
            .changes(&other, &key("mine"), None, 10)
            .await
            .expect("trail")
            .is_empty()
    );
    assert!(
        !f.store
            .delete(&other, "key_x", &created)
            .await
            .expect("no error")
    );
    // The same key in another workspace is another flag.
    f.store
        .create(&other, "key_b", flag("mine", "DISABLED"))
        .await
        .expect("its own");
    let value: Value = json!(
        f.store
            .get(&f.workspace, &key("mine"))
            .await
            .expect("read")
            .expect("mine")
            .flag
            .enabled()
    );
    assert_eq!(value, json!(true));
}

/// The changes a follower hands out until it has `n` (a hang guard, not a timing: the feed's
/// own backstop poll is 30 s).
async fn next_changes(
    follower: &mut pier_flags::Follower,
    n: usize,
) -> Vec<pier_flags::FeedChange> {
    let mut changes = Vec::new();
    while changes.len() < n {
        let more = tokio::time::timeout(Duration::from_secs(10), follower.changes())
            .await
            .expect("a committed change wakes the follower")
            .expect("read");
        changes.extend(more);
    }
    changes
}

async fn a_follower_gets_a_snapshot_then_every_change_in_commit_order(backend: Backend) {
    let f = fixture(backend).await;
    let (a, b) = (flag("a", "ENABLED"), flag("b", "ENABLED"));
    f.store.create(&f.workspace, "k", a).await.expect("a");
    let b = f.store.create(&f.workspace, "k", b).await.expect("b");
    let (mut follower, snapshot) = f.store.follow(&f.workspace, None).await.expect("follow");
    let snapshot = snapshot.expect("no place to resume from: a snapshot");
    assert_eq!(snapshot.flags.flags.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(follower.last(), snapshot.seq);

    // The follower waits first; the changes commit while it does.
    let store = f.store.clone();
    let workspace = f.workspace.clone();
    let writer = tokio::spawn(async move {
        let seen = store
            .get(&workspace, &key("a"))
            .await
            .expect("get")
            .expect("a");
        store
            .replace(&workspace, "k", &seen, flag("a", "DISABLED"))
            .await
            .expect("replace")
            .expect("unchanged since read");
        assert!(store.delete(&workspace, "k", &b).await.expect("delete"));
        store
            .create(&workspace, "k", flag("c", "ENABLED"))
            .await
            .expect("c");
    });
    let changes = next_changes(&mut follower, 3).await;
    writer.await.expect("writer");
    let summary: Vec<_> = changes
        .iter()
        .map(|c| (c.key.as_str(), c.action, c.version))
        .collect();
    assert_eq!(
        summary,
        [
            ("a", Action::Updated, 2),
            ("b", Action::Deleted, 1),
            ("c", Action::Created, 1)
        ]
    );
    assert_eq!(
        changes[0].definition.as_ref().expect("left a definition")["state"],
        "DISABLED"
    );
    assert_eq!(changes[1].definition, None, "a delete leaves none");
    assert!(
        changes.windows(2).all(|w| w[0].seq < w[1].seq),
        "in feed order"
    );
    assert_eq!(follower.last(), changes[2].seq);
}

async fn a_follower_resumes_only_from_a_change_the_trail_holds(backend: Backend) {
    let f = fixture(backend).await;
    let other = WorkspaceId::new(f.clock.now());
    f.store
        .create(&other, "k", flag("theirs", "ENABLED"))
        .await
        .expect("theirs");
    f.store
        .create(&f.workspace, "k", flag("a", "ENABLED"))
        .await
        .expect("a");
    let (mut follower, _) = f.store.follow(&f.workspace, None).await.expect("follow");
    let first = follower.last();
    let seen = f
        .store
        .get(&f.workspace, &key("a"))
        .await
        .expect("get")
        .expect("a");
    f.store
        .replace(&f.workspace, "k", &seen, flag("a", "DISABLED"))
        .await
        .expect("replace")
        .expect("unchanged");
    let missed = next_changes(&mut follower, 1).await;

    // From a place the trail holds: the changes after it, no snapshot.
    let (mut resumed, snapshot) = f
        .store
        .follow(&f.workspace, Some(first))
        .await
        .expect("resume");
    assert!(snapshot.is_none(), "resumed without a snapshot");
    assert_eq!(next_changes(&mut resumed, 1).await, missed);

    // A place older than the history kept gives a snapshot: pruning may have taken what
    // followed it.
    let keeping_an_hour = f.store.clone().with_history(Duration::from_secs(3600));
    let (_, snapshot) = keeping_an_hour
        .follow(&f.workspace, Some(first))
        .await
        .expect("follow");
    assert!(snapshot.is_none(), "young enough");
    f.manual.advance(Duration::from_secs(3601));
    let (_, snapshot) = keeping_an_hour
        .follow(&f.workspace, Some(first))
        .await
        .expect("follow");
    assert!(snapshot.is_some(), "older than the history kept");

    // Places this workspace's trail does not hold (none yet, another workspace's change, a
    // made-up one) give a snapshot of the flags as they are.
    let (theirs, _) = f.store.follow(&other, None).await.expect("follow theirs");
    for place in [0, theirs.last(), missed[0].seq + 1_000] {
        let (_, snapshot) = f
            .store
            .follow(&f.workspace, Some(place))
            .await
            .expect("follow");
        let snapshot = snapshot.unwrap_or_else(|| panic!("{place}: a snapshot"));
        assert_eq!(snapshot.seq, missed[0].seq);
        assert_eq!(snapshot.flags.flags["a"].definition()["state"], "DISABLED");
    }
}

/// Two writers of one workspace's flags take turns (the second waits on the workspace's lock
/// until the first commits), so their audit rows' `seq`s follow commit order; another
/// workspace's writer does not wait.
#[tokio::test]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn writes_to_one_workspace_take_turns_on_postgres() {
    let f = fixture(Backend::postgres()).await;
    let first = f.store.begin_write(&f.workspace).await.expect("lock taken");
    let other = WorkspaceId::new(f.clock.now());
    tokio::time::timeout(
        Duration::from_secs(10),
        f.store.create(&other, "k", flag("theirs", "ENABLED")),
    )
    .await
    .expect("another workspace's write does not wait")
    .expect("created");

    let store = f.store.clone();
    let workspace = f.workspace.clone();
    let second =
        tokio::spawn(async move { store.create(&workspace, "k", flag("a", "ENABLED")).await });
    // Wait until the second writer is queued on the lock, as PostgreSQL reports it.
    let mut waiting = 0_i64;
    for _ in 0..1_000 {
        waiting = pier_db::with_reader!(&f.db, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            )
            .fetch_one(pool)
            .await
        })
        .expect("pg_locks");
        if waiting == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(waiting, 1, "the second writer waits for the first");
    assert!(!second.is_finished());
    first.rollback().await.expect("first ends");
    second.await.expect("task").expect("then the second writes");
}
