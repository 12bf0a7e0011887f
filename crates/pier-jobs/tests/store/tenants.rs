//! What one tenant can reach, and what every resource is bounded by.

use std::time::Duration;

use pier_core::{Patch, WorkspaceId};
use pier_jobs::{
    ClaimLimits, ClaimTarget, JobFilter, JobSpec, MAX_QUEUE_SETTINGS, QueueName, QueuePatch,
};
use serde_json::json;

use crate::support::{Backend, Jobs, job, limits, on_both_backends, queue_name};

on_both_backends!(
    pier_queues_are_out_of_tenants_reach,
    claims_stop_at_their_byte_budget,
    queue_settings_are_bounded_and_merge,
    listing_queues_pages_in_one_query,
    counters_do_not_outlive_their_queues,
    pier_queues_are_claimed_in_turns_across_workspaces,
);

async fn pier_queues_are_out_of_tenants_reach(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let refused = JobSpec::new("k").queue("pier.webhooks").build();
    assert!(refused.is_err(), "tenants cannot name a reserved queue");
    assert!(ClaimTarget::internal(queue_name("default")).is_none());

    let internal = QueueName::internal("deliveries");
    let pier_job = job("deliver", "default", json!({})).on_queue(internal.clone());
    let id = jobs
        .enqueue(vec![pier_job, job("mine", "default", json!({}))])
        .await[0]
        .job
        .id
        .clone();
    let listed = jobs
        .store
        .list(&jobs.workspace, &JobFilter::default(), None, 10)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "Pier's own jobs are not listed");
    assert!(
        jobs.store
            .get(&jobs.workspace, &id)
            .await
            .expect("get")
            .is_none()
    );
    assert!(jobs.store.cancel(&jobs.workspace, &id).await.is_err());
    assert!(jobs.store.retry(&jobs.workspace, &id).await.is_err());
    let queues = jobs
        .store
        .queues(&jobs.workspace, None, 10)
        .await
        .expect("queues");
    assert_eq!(
        queues.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(),
        ["default"]
    );
    // A workspace-bound claim never reaches it; Pier's own pool does, across workspaces.
    assert_eq!(jobs.claim("default", 10).await.len(), 1);
    let target = ClaimTarget::internal(internal).expect("internal");
    let claimed = jobs
        .store
        .claim(&target, limits(10), None, None)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].workspace_id, jobs.workspace);
}

async fn claims_stop_at_their_byte_budget(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let big = "x".repeat(300 * 1024);
    jobs.enqueue((0..6).map(|_| job("k", "big", json!(big))).collect())
        .await;
    let budget = ClaimLimits {
        max: 10,
        budget_bytes: 1024 * 1024,
    };
    let claimed = jobs
        .store
        .claim(&jobs.target("big"), budget, None, None)
        .await
        .expect("claim");
    assert_eq!(
        claimed.len(),
        3,
        "three 300 KiB payloads fit in 1 MiB, four do not"
    );
    let tiny = ClaimLimits {
        max: 10,
        budget_bytes: 1,
    };
    let claimed = jobs
        .store
        .claim(&jobs.target("big"), tiny, None, None)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "a claim always makes progress");
}

async fn queue_settings_are_bounded_and_merge(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let queue = queue_name("settings");
    let limit = QueuePatch::new(None, Patch::Set(3)).expect("a limit in bounds");
    let info = jobs
        .store
        .update_queue(&jobs.workspace, &queue, limit)
        .await
        .expect("limit");
    assert_eq!(info.concurrency_limit, Some(3));
    let info = jobs
        .store
        .update_queue(&jobs.workspace, &queue, QueuePatch::default())
        .await
        .expect("empty patch");
    assert_eq!(
        info.concurrency_limit,
        Some(3),
        "an empty patch changes nothing"
    );
    let clear = QueuePatch::new(None, Patch::Clear).expect("no limit");
    let info = jobs
        .store
        .update_queue(&jobs.workspace, &queue, clear)
        .await
        .expect("clear");
    assert_eq!(info.concurrency_limit, None);
    assert!(
        jobs.store
            .queue(&jobs.workspace, &queue)
            .await
            .expect("queue")
            .is_none(),
        "back at the defaults, a queue without jobs leaves nothing behind"
    );

    let pause = QueuePatch::paused(true);
    for i in 0..MAX_QUEUE_SETTINGS {
        jobs.store
            .update_queue(&jobs.workspace, &queue_name(&format!("p{i}")), pause)
            .await
            .expect("pause");
    }
    let err = jobs
        .store
        .update_queue(&jobs.workspace, &queue_name("one-too-many"), pause)
        .await
        .expect_err("bounded");
    assert!(
        matches!(err, pier_jobs::JobError::TooManyQueues(_)),
        "{err}"
    );
    let other = WorkspaceId::new(pier_core::Timestamp::from_micros(0));
    jobs.store
        .update_queue(&other, &queue_name("one-too-many"), pause)
        .await
        .expect("another workspace has its own bound");
}

async fn listing_queues_pages_in_one_query(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    jobs.enqueue(
        (0..25)
            .map(|i| job("k", &format!("q{i:02}"), json!({})))
            .collect(),
    )
    .await;
    jobs.clock.advance(Duration::from_secs(5));
    let first = jobs
        .store
        .queues(&jobs.workspace, None, 10)
        .await
        .expect("page");
    assert_eq!(first.len(), 10);
    assert_eq!(first[0].name, "q00");
    assert_eq!(first[0].counts["available"], 1);
    assert!((first[0].oldest_available_age_secs - 5.0).abs() < 0.01);
    let next = jobs
        .store
        .queues(&jobs.workspace, Some("q09"), 100)
        .await
        .expect("page");
    assert_eq!(next.len(), 15);
    assert_eq!(next[0].name, "q10");
}

/// A workspace that used many queue names once keeps no counter rows for them after pruning.
async fn counters_do_not_outlive_their_queues(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    jobs.enqueue(
        (0..40)
            .map(|i| job("k", &format!("once-{i}"), json!({})))
            .collect(),
    )
    .await;
    jobs.enqueue(vec![job("k", "kept", json!({}))]).await;
    for i in 0..40 {
        for c in jobs.claim(&format!("once-{i}"), 1).await {
            let held =
                pier_jobs::Held::new(jobs.workspace.clone(), c.id, &c.lease_token).expect("token");
            jobs.store
                .complete(pier_jobs::Completion::new(held))
                .await
                .expect("complete");
        }
    }
    jobs.clock.advance(Duration::from_secs(2 * 24 * 3600));
    let pruned = jobs
        .store
        .prune(&pier_jobs::Retention::default())
        .await
        .expect("prune");
    assert_eq!(pruned, 40);
    let rows: Vec<(String,)> = pier_db::with_reader!(&jobs.db, pool => {
        sqlx::query_as("SELECT DISTINCT queue FROM job_counts").fetch_all(pool).await
    })
    .expect("counters");
    assert_eq!(
        rows,
        [("kept".to_owned(),)],
        "only the queue with a job keeps counters"
    );
    jobs.assert_counters_match_rows().await;
    let queues = jobs
        .store
        .queues(&jobs.workspace, None, 100)
        .await
        .expect("queues");
    assert_eq!(queues.len(), 1);
}

/// A backlog in one workspace does not hold back another's jobs in Pier's own queues: claims
/// take turns across the workspaces with due jobs, and never more jobs than asked for.
async fn pier_queues_are_claimed_in_turns_across_workspaces(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let internal = QueueName::internal("deliveries");
    let pier_job = || job("deliver", "default", json!({})).on_queue(internal.clone());
    jobs.enqueue((0..50).map(|_| pier_job()).collect()).await;
    let other = WorkspaceId::new(pier_core::Clock::now(&jobs.clock));
    jobs.store
        .enqueue(&other, vec![pier_job(), pier_job()])
        .await
        .expect("enqueue");
    let target = ClaimTarget::internal(internal).expect("internal");
    let claim = |max| {
        let (store, target) = (jobs.store.clone(), target.clone());
        async move {
            store
                .claim(&target, limits(max), None, None)
                .await
                .expect("claim")
        }
    };
    // Three slots between two workspaces: each gets a turn, and the third goes to one of them.
    let first = claim(3).await;
    assert_eq!(first.len(), 3, "no more jobs than free slots");
    let theirs = first.iter().filter(|j| j.workspace_id == other).count();
    assert!(
        (1..=2).contains(&theirs),
        "{theirs} of 3 for the small workspace"
    );
    // The small workspace's last job, if it has one left, comes in the next claim, not after
    // the backlog (which then gets its share of two; the slot the small one leaves is taken by
    // the next claim); with none left, the backlog gets every slot.
    let second = claim(4).await;
    let left = 2 - theirs;
    assert_eq!(
        second.iter().filter(|j| j.workspace_id == other).count(),
        left
    );
    assert_eq!(second.len(), if left == 0 { 4 } else { 2 + left });
}

/// Claimers on several nodes working one workspace's backlog in Pier's own queue: while one
/// claim holds the first jobs' row locks, another takes the next ones instead of none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn a_claim_in_turns_skips_what_another_claim_holds() {
    let jobs = Jobs::new(Backend::postgres()).await;
    let internal = QueueName::internal("deliveries");
    let pier_job = || job("deliver", "default", json!({})).on_queue(internal.clone());
    jobs.enqueue((0..10).map(|_| pier_job()).collect()).await;
    let mut other_claim = jobs.db.begin().await.expect("begin");
    pier_db::with_tx!(&mut other_claim, conn => {
        sqlx::query(
            "SELECT id FROM jobs WHERE queue = 'pier.deliveries' ORDER BY priority, run_at, id \
             LIMIT 5 FOR UPDATE",
        )
        .execute(conn)
        .await
        .map(drop)
    })
    .expect("the other claim locks five");
    let target = ClaimTarget::internal(internal).expect("internal");
    let claimed = jobs
        .store
        .claim(&target, limits(5), None, None)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 5, "the five nobody holds");
    other_claim.rollback().await.expect("rollback");
}
