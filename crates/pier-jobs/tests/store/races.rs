//! The engine under concurrency: interleavings that READ COMMITTED allows on PostgreSQL, and a
//! randomized stress run whose invariants are checked after every round.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pier_core::Clock;
use pier_db::{Tx, with_reader, with_tx};
use pier_jobs::{Completion, Failure, JobId, JobSpec, JobState, Retention};
use serde_json::json;

use crate::support::{Backend, Jobs, assert_counters_match_rows, job, limits, on_both_backends};

on_both_backends!(
    completion_needs_a_running_job_and_its_token,
    a_corrupt_error_history_fails_loudly,
    concurrent_claims_cancels_retries_and_promotion_keep_every_promise,
    unique_keys_changing_hands_mid_enqueue_are_defined,
);

/// Runs `sql` (binding the job id as `$1`) in an open transaction, holding its row locks.
async fn hold(jobs: &Jobs, sql: &str, id: &JobId) -> Tx {
    let mut tx = jobs.db.begin().await.expect("begin");
    with_tx!(&mut tx, conn => sqlx::query(sql).bind(id.as_str()).execute(conn).await.map(drop))
        .expect("statement in the holding transaction");
    tx
}

async fn state_of(jobs: &Jobs, id: &JobId) -> (String, Option<String>) {
    with_reader!(&jobs.db, pool => {
        sqlx::query_as("SELECT state, lease_token FROM jobs WHERE id = $1")
            .bind(id.as_str())
            .fetch_one(pool)
            .await
    })
    .expect("job row")
}

/// A due retryable job, as promotion finds it.
async fn due_retryable(jobs: &Jobs) -> JobId {
    let spec = JobSpec::new("k")
        .queue("q")
        .run_at(jobs.clock.now().saturating_add(Duration::from_secs(10)));
    let id = jobs.enqueue(vec![spec.build().expect("valid")]).await[0]
        .job
        .id
        .clone();
    jobs.clock.advance(Duration::from_secs(11));
    id
}

/// Promotion picks a due job; a claim of that job commits while promotion waits for its row
/// lock. The running job must stay running, its lease intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn promotion_never_undoes_a_claim_that_committed_first() {
    let jobs = Jobs::new(Backend::postgres()).await;
    let id = due_retryable(&jobs).await;
    // The claim's transaction: the job is running under a lease, not yet committed.
    let claim = hold(
        &jobs,
        "UPDATE jobs SET state = 'running', attempt = attempt + 1, \
         lease_token = '0123456789abcdef0123456789abcdef', lease_expires_at = run_at + 30000000 \
         WHERE id = $1",
        &id,
    )
    .await;
    let store = jobs.store.clone();
    let promote = tokio::spawn(async move { store.promote_due().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    claim.commit().await.expect("the claim commits");
    promote
        .await
        .expect("promotion task")
        .expect("promotion runs");
    let (state, token) = state_of(&jobs, &id).await;
    assert_eq!(state, "running", "promotion put a claimed job back");
    assert!(token.is_some());
}

/// A cancel commits while promotion waits: the job stays cancelled and is never handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn promotion_never_revives_a_cancelled_job() {
    let jobs = Jobs::new(Backend::postgres()).await;
    let id = due_retryable(&jobs).await;
    let cancel = hold(
        &jobs,
        "UPDATE jobs SET state = 'cancelled', finalized_at = run_at WHERE id = $1",
        &id,
    )
    .await;
    let store = jobs.store.clone();
    let promote = tokio::spawn(async move { store.promote_due().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.commit().await.expect("the cancel commits");
    promote.await.expect("task").expect("promotion runs");
    assert_eq!(state_of(&jobs, &id).await.0, "cancelled");
    assert!(jobs.claim("q", 10).await.is_empty(), "a cancelled job ran");
}

/// Pruning picks an old completed job; a retry of it commits while pruning waits. The retried
/// job must survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn pruning_never_deletes_a_job_retried_meanwhile() {
    let jobs = Jobs::new(Backend::postgres()).await;
    let id = jobs.enqueue(vec![job("k", "q", json!({}))]).await[0]
        .job
        .id
        .clone();
    let claimed = jobs.claim("q", 1).await;
    jobs.store
        .complete(Completion::new(held(&jobs, &claimed[0])))
        .await
        .expect("complete");
    jobs.clock.advance(Duration::from_secs(3 * 24 * 3600));
    let retry = hold(
        &jobs,
        "UPDATE jobs SET state = 'available', finalized_at = NULL WHERE id = $1",
        &id,
    )
    .await;
    let store = jobs.store.clone();
    let prune = tokio::spawn(async move { store.prune(&Retention::default()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    retry.commit().await.expect("the retry commits");
    prune.await.expect("task").expect("pruning runs");
    assert_eq!(
        state_of(&jobs, &id).await.0,
        "available",
        "the retried job survives"
    );
}

fn held(jobs: &Jobs, claimed: &pier_jobs::ClaimedJob) -> pier_jobs::Held {
    pier_jobs::Held::new(
        jobs.workspace.clone(),
        claimed.id.clone(),
        &claimed.lease_token,
    )
    .expect("a claimed token")
}

/// A lease token exists only on a running job: the database refuses any other row that holds one,
/// so matching a token is matching a running job held under it, and a transition that forgot to
/// clear the token would fail instead of leaving a job that a stale worker could still complete.
async fn completion_needs_a_running_job_and_its_token(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    jobs.enqueue(vec![job("k", "q", json!({}))]).await;
    let claimed = jobs.claim("q", 1).await;
    let job = held(&jobs, &claimed[0]);
    let mut tx = jobs.db.begin().await.expect("begin");
    let corrupt = with_tx!(&mut tx, conn => sqlx::query("UPDATE jobs SET state = 'available' WHERE id = $1")
        .bind(job.id.as_str())
        .execute(conn)
        .await
        .map(drop));
    assert!(
        corrupt.is_err(),
        "a non-running job holding a lease token is refused"
    );
    drop(tx);
    let other_token = pier_jobs::Held::new(jobs.workspace.clone(), job.id.clone(), &"0".repeat(32))
        .expect("token");
    let done = jobs
        .store
        .complete_many(&[Completion::new(other_token), Completion::new(job.clone())])
        .await
        .expect("complete");
    assert_eq!(done, [false, true], "only the current token completes");
    let again = jobs
        .store
        .complete_many(&[Completion::new(job)])
        .await
        .expect("complete");
    assert_eq!(again, [false], "a completed job holds no token");

    // The same for heartbeats and failures that name one job twice, current token second.
    jobs.enqueue(vec![crate::support::job("k", "q", json!({}))])
        .await;
    let claimed = jobs.claim("q", 1).await;
    let current = held(&jobs, &claimed[0]);
    let stale = pier_jobs::Held::new(jobs.workspace.clone(), current.id.clone(), &"f".repeat(32))
        .expect("token");
    let beats = jobs
        .store
        .heartbeat_many(&[(stale.clone(), None), (current.clone(), None)])
        .await
        .expect("heartbeat");
    assert_eq!((beats[0].is_some(), beats[1].is_some()), (false, true));
    let failure = |job: pier_jobs::Held| Failure {
        job,
        error: "boom".into(),
        retry_at: None,
        discard: false,
    };
    let failed = jobs
        .store
        .fail_many(&[failure(stale), failure(current)])
        .await
        .expect("fail");
    assert_eq!((failed[0], failed[1].is_some()), (None, true));
}

async fn a_corrupt_error_history_fails_loudly(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    jobs.enqueue(vec![job("k", "q", json!({}))]).await;
    let claimed = jobs.claim("q", 1).await;
    let mut tx = jobs.db.begin().await.expect("begin");
    with_tx!(&mut tx, conn => sqlx::query("UPDATE jobs SET errors = '[{\"attempt\": ' WHERE id = $1")
        .bind(claimed[0].id.as_str())
        .execute(conn)
        .await
        .map(drop))
    .expect("corrupt the history");
    tx.commit().await.expect("commit");
    let failure = Failure {
        job: held(&jobs, &claimed[0]),
        error: "boom".into(),
        retry_at: None,
        discard: false,
    };
    assert!(
        jobs.store.fail(failure).await.is_err(),
        "a corrupt history is an error"
    );
    let errors: String = with_reader!(&jobs.db, pool => {
        sqlx::query_scalar("SELECT errors FROM jobs WHERE id = $1")
            .bind(claimed[0].id.as_str())
            .fetch_one(pool)
            .await
    })
    .expect("errors");
    assert_eq!(errors, "[{\"attempt\": ", "the history was not overwritten");
}

/// Jobs handed out and not yet reported, and jobs cancelled while waiting.
#[derive(Default)]
struct Ledger {
    held: HashMap<String, String>,
    cancelled: HashSet<String>,
    violations: Vec<String>,
}

/// Claimers, cancels, retries and promotion race for rounds of jobs; after each round: no job
/// outside `running` holds a lease token, no cancelled job was handed out, no job was held under
/// two leases at once, and the counters equal the rows.
async fn concurrent_claims_cancels_retries_and_promotion_keep_every_promise(backend: Backend) {
    let jobs = Arc::new(Jobs::new(backend).await);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for round in 0..6 {
        let now = jobs.clock.now();
        let batch: Vec<_> = (0..60)
            .map(|i| {
                // Half are due retries in disguise: scheduled in the past, so claims and
                // promotion compete for them.
                let mut spec = JobSpec::new("k").queue("race").payload(json!({ "i": i }));
                if i % 2 == 0 {
                    spec = spec.run_at(now.saturating_add(Duration::from_millis(10)));
                }
                spec.build().expect("valid")
            })
            .collect();
        let ids: Vec<JobId> = jobs
            .enqueue(batch)
            .await
            .into_iter()
            .map(|e| e.job.id)
            .collect();
        jobs.clock.advance(Duration::from_millis(20));
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..4 {
            let (jobs, ledger) = (jobs.clone(), ledger.clone());
            tasks.spawn(async move {
                for _ in 0..12 {
                    let claimed = jobs
                        .store
                        .claim(&jobs.target("race"), limits(5), None, None)
                        .await
                        .expect("claim");
                    {
                        let mut ledger = ledger.lock().expect("ledger");
                        for c in &claimed {
                            let id = c.id.to_string();
                            if ledger.cancelled.contains(&id) {
                                ledger.violations.push(format!("cancelled {id} handed out"));
                            }
                            if let Some(other) =
                                ledger.held.insert(id.clone(), c.lease_token.clone())
                            {
                                ledger
                                    .violations
                                    .push(format!("{id} held under {other} and {}", c.lease_token));
                            }
                        }
                    }
                    for (n, c) in claimed.iter().enumerate() {
                        let job = pier_jobs::Held::new(
                            jobs.workspace.clone(),
                            c.id.clone(),
                            &c.lease_token,
                        )
                        .expect("token");
                        // Forgotten just before reporting: a retry may hand it out again as soon
                        // as the report commits, and that is no violation.
                        ledger
                            .lock()
                            .expect("ledger")
                            .held
                            .remove(&c.id.to_string());
                        if (n + worker) % 3 == 0 {
                            let failure = Failure {
                                job,
                                error: "nope".into(),
                                retry_at: None,
                                discard: false,
                            };
                            jobs.store.fail_many(&[failure]).await.expect("fail");
                        } else {
                            jobs.store
                                .complete_many(&[Completion::new(job)])
                                .await
                                .expect("complete");
                        }
                    }
                }
            });
        }
        {
            let (jobs, ledger, ids) = (jobs.clone(), ledger.clone(), ids.clone());
            tasks.spawn(async move {
                for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 5 == 0) {
                    match jobs.store.cancel(&jobs.workspace, id).await {
                        Ok(job) if job.state == JobState::Cancelled => {
                            ledger
                                .lock()
                                .expect("ledger")
                                .cancelled
                                .insert(id.to_string());
                        }
                        Ok(_) | Err(pier_jobs::JobError::WrongState(_)) => {}
                        Err(err) => panic!("cancel {i}: {err}"),
                    }
                }
            });
        }
        {
            let (jobs, ids) = (jobs.clone(), ids.clone());
            tasks.spawn(async move {
                // Never a job the cancel task cancels: a retried cancelled job may run.
                for (_, id) in ids
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % 7 == 2 && i % 5 != 0)
                {
                    match jobs.store.retry(&jobs.workspace, id).await {
                        Ok(_) | Err(pier_jobs::JobError::WrongState(_)) => {}
                        Err(err) => panic!("retry: {err}"),
                    }
                }
            });
        }
        {
            let jobs = jobs.clone();
            tasks.spawn(async move {
                for _ in 0..20 {
                    jobs.store.promote_due().await.expect("promote");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a racing task failed");
        }
        let states: Vec<(String, String, Option<String>)> = with_reader!(&jobs.db, pool => {
            sqlx::query_as("SELECT id, state, lease_token FROM jobs")
                .fetch_all(pool)
                .await
        })
        .expect("rows");
        {
            let mut ledger = ledger.lock().expect("ledger");
            for (id, state, token) in &states {
                if state != "running" && token.is_some() {
                    ledger
                        .violations
                        .push(format!("round {round}: {state} job {id} holds a lease"));
                }
                if ledger.cancelled.contains(id) && state != "cancelled" {
                    ledger
                        .violations
                        .push(format!("round {round}: cancelled job {id} is {state}"));
                }
            }
            assert!(ledger.violations.is_empty(), "{:#?}", ledger.violations);
        }
        assert_counters_match_rows(&jobs.db).await;
    }
}

/// While a job holds a unique key, enqueues of that key return it; when it finishes between an
/// enqueue's insert and its lookup of the holder, the enqueue creates a fresh job instead of
/// failing.
async fn unique_keys_changing_hands_mid_enqueue_are_defined(backend: Backend) {
    let jobs = Arc::new(Jobs::new(backend).await);
    let keyed = || {
        JobSpec::new("k")
            .queue("keyed")
            .unique_key("the-key")
            .build()
            .expect("valid")
    };
    jobs.enqueue(vec![keyed()]).await;
    let finisher = {
        let jobs = jobs.clone();
        tokio::spawn(async move {
            for _ in 0..500 {
                for c in jobs.claim("keyed", 1).await {
                    let job = pier_jobs::Held::new(jobs.workspace.clone(), c.id, &c.lease_token)
                        .expect("token");
                    jobs.store
                        .complete(Completion::new(job))
                        .await
                        .expect("complete");
                }
            }
        })
    };
    for _ in 0..1000 {
        jobs.store
            .enqueue(&jobs.workspace, vec![keyed()])
            .await
            .expect("an enqueue racing its key's holder never fails");
    }
    finisher.await.expect("finisher");
    let holders: i64 = with_reader!(&jobs.db, pool => {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE unique_key = 'the-key' AND state <> 'completed'",
        )
        .fetch_one(pool)
        .await
    })
    .expect("count");
    assert!(holders <= 1, "{holders} unfinished holders of one key");
    assert_counters_match_rows(&jobs.db).await;
}
