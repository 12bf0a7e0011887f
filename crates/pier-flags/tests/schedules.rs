//! Scheduled changes and the pruning of old history against real databases, on both backends:
//! a schedule applies once through the audited path, fails when its patch no longer fits, loses
//! or wins cleanly against a cancel, is cancelled with its flag, and ends up pruned.

use std::sync::Arc;
use std::time::Duration;

use pier_cache::Settings;
use pier_core::{ManualClock, Timestamp, WorkspaceId};
use pier_flags::audit::Action;
use pier_flags::schedule::{Status, queue};
use pier_flags::{Flag, FlagKey, FlagSchedules, FlagStore, Schedule, ScheduleError, StoredFlag};
use pier_jobs::{JobStore, Notifier};
use pier_testkit::{Backend, TestDb, on_both_backends};
use serde_json::{Map, Value, json};

on_both_backends!(
    a_schedule_applies_once_through_the_audited_path,
    a_patch_that_no_longer_fits_fails_and_changes_nothing,
    cancelling_wins_before_the_job_and_is_refused_after,
    deleting_a_flag_cancels_its_pending_schedules,
    scheduling_checks_the_time_and_the_patch,
    old_history_is_pruned_but_each_live_flags_newest_change,
);

const HOUR: Duration = Duration::from_secs(3600);

struct Fixture {
    _db: TestDb,
    db: pier_db::Db,
    clock: ManualClock,
    store: FlagStore,
    schedules: FlagSchedules,
    workspace: WorkspaceId,
}

async fn fixture(backend: Backend) -> Fixture {
    let migrations = [
        pier_db::MIGRATIONS,
        pier_jobs::MIGRATIONS,
        pier_flags::MIGRATIONS,
    ];
    let test_db = TestDb::new(&backend, &migrations).await;
    let clock = ManualClock::starting_now();
    let shared: Arc<dyn pier_core::Clock> = Arc::new(clock.clone());
    let cache = Settings {
        capacity: 100,
        ttl: Duration::from_secs(300),
        negative_ttl: Duration::from_secs(5),
        jitter: 0.0,
    };
    let store = FlagStore::new(test_db.db.clone(), shared.clone(), cache);
    let jobs = JobStore::new(test_db.db.clone(), shared.clone(), Notifier::default());
    Fixture {
        db: test_db.db.clone(),
        schedules: FlagSchedules::new(store.clone(), jobs),
        store,
        workspace: WorkspaceId::new(shared.now()),
        clock,
        _db: test_db,
    }
}

fn key(text: &str) -> FlagKey {
    FlagKey::parse(text).expect("key")
}

fn patch(value: Value) -> Map<String, Value> {
    value.as_object().expect("an object").clone()
}

impl Fixture {
    fn now(&self) -> Timestamp {
        pier_core::Clock::now(&self.clock)
    }

    /// Flag `name`, disabled, with variants on and off.
    async fn flag(&self, name: &str) {
        let definition = json!({"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off"});
        let flag = Flag::parse(key(name), &definition, "", &Map::new()).expect("valid");
        self.store
            .create(&self.workspace, "key_author", flag)
            .await
            .expect("created");
    }

    async fn schedule(&self, name: &str, change: Value) -> Schedule {
        self.schedules
            .create(
                &self.workspace,
                "key_planner",
                &key(name),
                self.now().saturating_add(HOUR),
                patch(change),
            )
            .await
            .expect("scheduled")
    }

    async fn reread(&self, schedule: &Schedule) -> Schedule {
        let key = key(&schedule.flag_key);
        self.schedules
            .get(&self.workspace, &key, &schedule.id)
            .await
            .expect("read")
            .expect("there")
    }

    async fn apply(&self, schedule: &Schedule) {
        self.schedules
            .apply(&self.workspace, &schedule.id)
            .await
            .expect("applied or skipped");
    }

    async fn stored(&self, name: &str) -> StoredFlag {
        let stored = self.store.get(&self.workspace, &key(name)).await;
        stored.expect("read").expect("there")
    }

    /// Replaces flag `name`'s definition by hand.
    async fn redefine(&self, name: &str, definition: &Value) {
        let seen = self.stored(name).await;
        let flag = Flag::parse(key(name), definition, "", &Map::new()).expect("valid");
        let replaced = self
            .store
            .replace(&self.workspace, "key_editor", &seen, flag);
        assert!(
            replaced.await.expect("replaced").is_some(),
            "unchanged meanwhile"
        );
    }

    async fn delete(&self, name: &str) {
        let seen = self.stored(name).await;
        let deleted = self.store.delete(&self.workspace, "key_x", &seen);
        assert!(deleted.await.expect("deleted"));
    }

    async fn state_and_version(&self, name: &str) -> (String, i64) {
        let stored = self.stored(name).await;
        let state = stored.flag.definition()["state"].clone();
        (state.as_str().expect("a state").to_owned(), stored.version)
    }
}

async fn a_schedule_applies_once_through_the_audited_path(backend: Backend) {
    let f = fixture(backend).await;
    f.flag("checkout").await;
    let schedule = f.schedule("checkout", json!({"state": "ENABLED"})).await;
    assert_eq!(schedule.status, Status::Pending);

    // Its job waits on the internal queue until the time comes.
    let (run_at, unique_key): (i64, String) = pier_db::with_reader!(&f.db, pool => {
        sqlx::query_as("SELECT run_at, unique_key FROM jobs WHERE queue = $1 AND kind = $2")
            .bind(queue().as_str())
            .bind("flag.schedule")
            .fetch_one(pool)
            .await
    })
    .expect("a job");
    assert_eq!(
        (run_at, unique_key.as_str()),
        (schedule.apply_at.as_micros(), schedule.id.as_str())
    );

    // A definition changed meanwhile is patched as it is then.
    let mut definition = f.stored("checkout").await.flag.definition();
    definition["defaultVariant"] = json!("on");
    f.redefine("checkout", &definition).await;

    f.clock.advance(HOUR);
    f.apply(&schedule).await;
    f.apply(&schedule).await;
    assert_eq!(f.state_and_version("checkout").await, ("ENABLED".into(), 3));
    let definition = f.stored("checkout").await.flag.definition();
    assert_eq!(definition["defaultVariant"], "on", "the later edit stays");
    let applied = f.reread(&schedule).await;
    assert_eq!(
        (applied.status, applied.applied_version, applied.ended_at),
        (Status::Applied, Some(3), Some(f.now()))
    );

    let changes = f
        .store
        .changes(&f.workspace, &key("checkout"), None, 10)
        .await
        .expect("trail");
    assert_eq!(
        changes.len(),
        3,
        "one change for the schedule, though run twice"
    );
    assert_eq!(
        (
            changes[0].action,
            changes[0].actor.as_str(),
            &changes[0].diff
        ),
        (
            Action::Updated,
            format!("schedule:{} (by key_planner)", schedule.id).as_str(),
            &json!({"state": "ENABLED"})
        )
    );
}

async fn a_patch_that_no_longer_fits_fails_and_changes_nothing(backend: Backend) {
    let f = fixture(backend).await;
    f.flag("banner").await;
    let schedule = f.schedule("banner", json!({"defaultVariant": "on"})).await;
    // The variant the patch names is renamed before the schedule runs.
    let definition = json!({"state": "DISABLED", "variants": {"yes": true, "off": false},
        "defaultVariant": "off"});
    f.redefine("banner", &definition).await;

    f.apply(&schedule).await;
    let failed = f.reread(&schedule).await;
    assert_eq!(failed.status, Status::Failed);
    let reason = failed.reason.expect("a reason");
    assert!(reason.contains("patch.defaultVariant"), "{reason}");
    assert_eq!(f.state_and_version("banner").await, ("DISABLED".into(), 2));
    let cancel = f
        .schedules
        .cancel(&f.workspace, &key("banner"), &schedule.id)
        .await;
    assert!(matches!(cancel, Err(ScheduleError::Ended(Status::Failed))));
}

async fn cancelling_wins_before_the_job_and_is_refused_after(backend: Backend) {
    let f = fixture(backend).await;
    f.flag("search").await;
    let cancelled = f.schedule("search", json!({"state": "ENABLED"})).await;
    // Ids order schedules made in different microseconds.
    f.clock.advance(Duration::from_millis(1));
    let kept = f.schedule("search", json!({"state": "ENABLED"})).await;
    let done = f
        .schedules
        .cancel(&f.workspace, &key("search"), &cancelled.id)
        .await
        .expect("cancelled");
    assert_eq!((done.status, done.reason), (Status::Cancelled, None));

    f.apply(&cancelled).await;
    assert_eq!(f.state_and_version("search").await, ("DISABLED".into(), 1));
    f.apply(&kept).await;
    assert_eq!(f.state_and_version("search").await, ("ENABLED".into(), 2));
    for schedule in [&cancelled, &kept] {
        let again = f
            .schedules
            .cancel(&f.workspace, &key("search"), &schedule.id)
            .await;
        assert!(matches!(again, Err(ScheduleError::Ended(_))), "{again:?}");
    }

    // Newest first, and only this workspace's, under this flag's key.
    let listed = f
        .schedules
        .list(&f.workspace, &key("search"), None, 10)
        .await
        .expect("listed");
    let ids: Vec<_> = listed.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ids, [kept.id.clone(), cancelled.id.clone()]);
    let other = WorkspaceId::new(f.now());
    let theirs = f.schedules.list(&other, &key("search"), None, 10).await;
    assert!(theirs.expect("listed").is_empty());
    let cancel = f.schedules.cancel(&other, &key("search"), &kept.id).await;
    assert!(matches!(cancel, Err(ScheduleError::NotFound)));
    let applied = f.schedules.apply(&other, &kept.id).await;
    assert!(applied.is_ok(), "another workspace's id finds nothing");
}

async fn deleting_a_flag_cancels_its_pending_schedules(backend: Backend) {
    let f = fixture(backend).await;
    f.flag("legacy").await;
    let schedule = f.schedule("legacy", json!({"state": "ENABLED"})).await;
    f.delete("legacy").await;
    let cancelled = f.reread(&schedule).await;
    assert_eq!(cancelled.status, Status::Cancelled);
    assert_eq!(cancelled.reason.as_deref(), Some("the flag was deleted"));

    // A flag made again under the key is not touched by the old schedule's job.
    f.flag("legacy").await;
    f.apply(&schedule).await;
    assert_eq!(f.state_and_version("legacy").await, ("DISABLED".into(), 1));
}

async fn scheduling_checks_the_time_and_the_patch(backend: Backend) {
    let f = fixture(backend).await;
    f.flag("pricing").await;
    let at = |offset: Duration, later: bool| match later {
        true => f.now().saturating_add(offset),
        false => f.now().saturating_sub(offset),
    };
    let cases = [
        (at(HOUR, false), json!({"state": "ENABLED"}), "apply_at"),
        (
            at(Duration::ZERO, true),
            json!({"state": "ENABLED"}),
            "apply_at",
        ),
        (
            at(400 * 24 * HOUR, true),
            json!({"state": "ENABLED"}),
            "apply_at",
        ),
        (
            at(HOUR, true),
            json!({"defaultVariant": "maybe"}),
            "patch.defaultVariant",
        ),
        (at(HOUR, true), json!({"variants": null}), "patch.variants"),
    ];
    for (apply_at, change, field) in cases {
        let refused = f
            .schedules
            .create(
                &f.workspace,
                "key_p",
                &key("pricing"),
                apply_at,
                patch(change.clone()),
            )
            .await;
        let Err(ScheduleError::Invalid(errors)) = refused else {
            panic!("{change} at {apply_at:?}: {refused:?}");
        };
        let fields: Vec<String> = errors.into_vec().into_iter().map(|e| e.field).collect();
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }
    let missing = f
        .schedules
        .create(
            &f.workspace,
            "key_p",
            &key("nope"),
            at(HOUR, true),
            Map::new(),
        )
        .await;
    assert!(matches!(missing, Err(ScheduleError::FlagNotFound)));
}

async fn old_history_is_pruned_but_each_live_flags_newest_change(backend: Backend) {
    let f = fixture(backend).await;
    let retention = 24 * HOUR;
    f.flag("kept").await;
    f.flag("gone").await;
    let old = f.schedule("kept", json!({"state": "ENABLED"})).await;
    let pending = f.schedule("kept", json!({"metadata": {"a": 1}})).await;
    f.clock.advance(HOUR);
    f.apply(&old).await;
    f.delete("gone").await;

    f.clock.advance(retention + HOUR);
    f.flag("fresh").await;
    let store = f.store.clone().with_history(retention);
    let pruned = store.prune().await.expect("pruned");
    // kept: created (old) goes, its newest (the schedule's update) stays; gone: both go;
    // fresh: younger than the retention; the applied schedule goes, the pending one stays.
    assert_eq!(pruned, 4);
    let trail = |name: &'static str| {
        let store = f.store.clone();
        let workspace = f.workspace.clone();
        async move {
            let changes = store.changes(&workspace, &key(name), None, 10).await;
            changes
                .expect("trail")
                .iter()
                .map(|c| c.action)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(trail("kept").await, [Action::Updated]);
    assert_eq!(trail("gone").await, []);
    assert_eq!(trail("fresh").await, [Action::Created]);
    let left = f.schedules.list(&f.workspace, &key("kept"), None, 10).await;
    let left: Vec<_> = left.expect("listed").into_iter().map(|s| s.id).collect();
    assert_eq!(left, [pending.id]);
    assert_eq!(store.prune().await.expect("pruned"), 0);
}
