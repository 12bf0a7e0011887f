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
);

struct Fixture {
    _db: TestDb,
    db: pier_db::Db,
    clock: Arc<dyn Clock>,
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
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::starting_now());
    Fixture {
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
