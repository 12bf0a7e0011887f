//! Workflows: steps released as their dependencies complete, with their results as inputs;
//! sagas compensating in reverse completion order; cancellation; tenants; the release of one
//! step by two dependencies completing at once on PostgreSQL; and the Rust handler's side.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pier_core::WorkspaceId;
use pier_db::{Outbox, Publishing, Tx, with_reader, with_tx};
use pier_jobs::{
    ClaimedJob, Completion, Failure, Held, JobContext, JobError, JobFailure, JobSpec, JobState,
    PoolOptions, Retention, StepSpec, Worker, WorkerPool, Workflow, WorkflowSpec, WorkflowState,
};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::support::{Backend, Jobs, eventually, on_both_backends};

on_both_backends!(
    steps_run_after_their_dependencies_with_their_results,
    a_step_failing_for_good_compensates_in_reverse_completion_order,
    a_failed_compensation_fails_the_workflow,
    cancelling_stops_every_step_not_finished,
    a_workflow_is_invisible_to_other_workspaces,
    finished_workflows_are_pruned_after_their_jobs,
    handlers_get_their_inputs_and_complete_in_their_own_transaction,
);

/// The events announced, in order (the transaction is not needed to record them here).
#[derive(Debug, Default)]
struct Announced(Mutex<Vec<(String, Value)>>);

impl Outbox for Announced {
    fn publish<'a>(
        &'a self,
        _tx: &'a mut Tx,
        _workspace: &'a str,
        event_type: &'static str,
        payload: Value,
    ) -> Publishing<'a> {
        self.0
            .lock()
            .expect("events")
            .push((event_type.to_owned(), payload));
        Box::pin(async { Ok(()) })
    }
}

/// Records what `jobs` announces from now on.
fn announced(jobs: &Jobs) -> Arc<Announced> {
    let announced = Arc::new(Announced::default());
    jobs.store
        .announce_discards(&(announced.clone() as Arc<dyn Outbox>));
    announced
}

fn step(name: &str, after: &[&str]) -> StepSpec {
    StepSpec::new(name, JobSpec::new(name).queue("flow")).after(after.iter().copied())
}

async fn create(jobs: &Jobs, spec: WorkflowSpec) -> Workflow {
    let new = spec.build(500).expect("a valid workflow");
    jobs.store
        .create_workflow(&jobs.workspace, new)
        .await
        .expect("create")
}

async fn read(jobs: &Jobs, workflow: &Workflow) -> Workflow {
    jobs.store
        .workflow(&jobs.workspace, &workflow.id)
        .await
        .expect("read")
        .expect("the workflow")
}

fn held(job: &ClaimedJob) -> Held {
    Held::new(job.workspace_id.clone(), job.id.clone(), &job.lease_token).expect("token")
}

/// Claims everything due on the queue, by kind.
async fn claim_kinds(jobs: &Jobs) -> Vec<ClaimedJob> {
    let mut claimed = jobs.claim("flow", 50).await;
    claimed.sort_by(|a, b| a.kind.cmp(&b.kind));
    claimed
}

async fn complete(jobs: &Jobs, job: &ClaimedJob, result: Value) {
    let completion = Completion::new(held(job))
        .with_result(&result)
        .expect("small");
    jobs.store.complete(completion).await.expect("complete");
}

async fn discard(jobs: &Jobs, job: &ClaimedJob, error: &str) {
    let failure = Failure {
        job: held(job),
        error: error.into(),
        retry_at: None,
        discard: true,
    };
    assert_eq!(
        jobs.store.fail(failure).await.expect("fail"),
        JobState::Discarded
    );
}

fn kinds(claimed: &[ClaimedJob]) -> Vec<&str> {
    claimed.iter().map(|j| j.kind.as_str()).collect()
}

fn states(workflow: &Workflow) -> Vec<(&str, Option<JobState>)> {
    workflow
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.state))
        .collect()
}

async fn steps_run_after_their_dependencies_with_their_results(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let announced = announced(&jobs);
    // a → b, a → c, (b, c) → d: d is the batch callback of b and c.
    let workflow = create(
        &jobs,
        WorkflowSpec::new("diamond")
            .step(step("d", &["b", "c"]))
            .step(step("a", &[]))
            .step(step("b", &["a"]))
            .step(step("c", &["a"])),
    )
    .await;
    assert_eq!(workflow.state, WorkflowState::Running);
    let created = states(&workflow);
    assert_eq!(created[0], ("d", Some(JobState::Pending)));
    assert_eq!(created[1], ("a", Some(JobState::Available)));
    jobs.assert_counters_match_rows().await;

    let first = claim_kinds(&jobs).await;
    assert_eq!(
        kinds(&first),
        ["a"],
        "only the step without dependencies runs"
    );
    assert_eq!(first[0].inputs, None);
    complete(&jobs, &first[0], json!({"charged": 42})).await;

    let second = claim_kinds(&jobs).await;
    assert_eq!(kinds(&second), ["b", "c"]);
    for job in &second {
        assert_eq!(job.inputs, Some(json!({"a": {"charged": 42}})));
    }
    complete(&jobs, &second[0], json!("b done")).await;
    assert!(claim_kinds(&jobs).await.is_empty(), "d waits for c as well");
    complete(&jobs, &second[1], json!(null)).await;

    let last = claim_kinds(&jobs).await;
    assert_eq!(kinds(&last), ["d"]);
    let inputs = json!({"b": "b done", "c": null});
    assert_eq!(last[0].inputs, Some(inputs.clone()));
    let shown = jobs
        .store
        .get(&jobs.workspace, &last[0].id)
        .await
        .expect("read")
        .expect("job");
    assert_eq!(shown.inputs, Some(inputs));
    assert_eq!(shown.workflow, Some((workflow.id.clone(), "d".to_owned())));
    complete(&jobs, &last[0], json!({})).await;

    let done = read(&jobs, &workflow).await;
    assert_eq!(
        (done.state, done.steps_completed),
        (WorkflowState::Completed, 4)
    );
    assert!(done.finished_at.is_some());
    let events = announced.0.lock().expect("events").clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "workflow.completed");
    assert_eq!(events[0].1["id"], workflow.id.as_str());
    jobs.assert_counters_match_rows().await;
}

/// charge (refund) → reserve (release) → email; the e-mail fails for good: the workflow
/// cancels nothing more (nothing waits), releases the stock, then refunds, each compensation
/// with its step's result, one at a time; a step cannot be retried meanwhile.
async fn a_step_failing_for_good_compensates_in_reverse_completion_order(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let announced = announced(&jobs);
    let workflow = create(
        &jobs,
        WorkflowSpec::new("order-42")
            .step(step("charge", &[]).compensate(JobSpec::new("refund").queue("flow")))
            .step(step("reserve", &["charge"]).compensate(JobSpec::new("release").queue("flow")))
            .step(step("email", &["reserve"]))
            .step(step("archive", &["email"])),
    )
    .await;
    let charge = claim_kinds(&jobs).await;
    complete(&jobs, &charge[0], json!({"charge": "ch_1"})).await;
    let reserve = claim_kinds(&jobs).await;
    complete(&jobs, &reserve[0], json!({"reservation": 7})).await;
    let email = claim_kinds(&jobs).await;
    assert_eq!(kinds(&email), ["email"]);
    discard(&jobs, &email[0], "mailbox gone").await;

    let compensating = read(&jobs, &workflow).await;
    assert_eq!(compensating.state, WorkflowState::Compensating);
    assert_eq!(compensating.failed_step.as_deref(), Some("email"));
    assert_eq!(
        states(&compensating)[3],
        ("archive", Some(JobState::Cancelled)),
        "the step that waited is cancelled"
    );
    let retried = jobs.store.retry(&jobs.workspace, &email[0].id).await;
    assert!(
        matches!(
            retried,
            Err(JobError::WorkflowState(WorkflowState::Compensating))
        ),
        "{retried:?}"
    );

    let release = claim_kinds(&jobs).await;
    assert_eq!(
        kinds(&release),
        ["release"],
        "the latest completed step first, alone"
    );
    assert_eq!(
        release[0].inputs,
        Some(json!({"reserve": {"reservation": 7}}))
    );
    complete(&jobs, &release[0], json!(null)).await;
    let refund = claim_kinds(&jobs).await;
    assert_eq!(kinds(&refund), ["refund"]);
    assert_eq!(
        refund[0].inputs,
        Some(json!({"charge": {"charge": "ch_1"}}))
    );
    complete(&jobs, &refund[0], json!(null)).await;

    let compensated = read(&jobs, &workflow).await;
    assert_eq!(compensated.state, WorkflowState::Compensated);
    let compensations: Vec<Option<JobState>> = compensated
        .steps
        .iter()
        .map(|s| s.compensation.as_ref().and_then(|c| c.state))
        .collect();
    assert_eq!(
        compensations,
        [
            Some(JobState::Completed),
            Some(JobState::Completed),
            None,
            None
        ]
    );
    let events: Vec<String> = announced
        .0
        .lock()
        .expect("events")
        .iter()
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(events, ["job.discarded", "workflow.compensated"]);
    jobs.assert_counters_match_rows().await;
}

async fn a_failed_compensation_fails_the_workflow(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let announced = announced(&jobs);
    let workflow = create(
        &jobs,
        WorkflowSpec::new("w")
            .step(step("charge", &[]).compensate(JobSpec::new("refund").queue("flow")))
            .step(step("ship", &["charge"])),
    )
    .await;
    let charge = claim_kinds(&jobs).await;
    complete(&jobs, &charge[0], json!(1)).await;
    let ship = claim_kinds(&jobs).await;
    discard(&jobs, &ship[0], "no stock").await;
    let refund = claim_kinds(&jobs).await;
    discard(&jobs, &refund[0], "card closed").await;
    let failed = read(&jobs, &workflow).await;
    assert_eq!(failed.state, WorkflowState::Failed);
    assert_eq!(
        (
            failed.failed_step.as_deref(),
            failed.failed_compensation.as_deref()
        ),
        (Some("ship"), Some("charge"))
    );
    let last = announced.0.lock().expect("events").last().cloned();
    let (event, payload) = last.expect("an event");
    assert_eq!(event, "workflow.failed");
    assert_eq!(payload["failed_compensation"], "charge");

    // Nothing to compensate: a failure ends the workflow `failed` at once.
    let plain = create(&jobs, WorkflowSpec::new("plain").step(step("only", &[]))).await;
    let only = claim_kinds(&jobs).await;
    discard(&jobs, &only[0], "no").await;
    assert_eq!(read(&jobs, &plain).await.state, WorkflowState::Failed);
    jobs.assert_counters_match_rows().await;
}

async fn cancelling_stops_every_step_not_finished(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let workflow = create(
        &jobs,
        WorkflowSpec::new("w")
            .step(step("a", &[]))
            .step(step("b", &[]))
            .step(step("c", &["a", "b"])),
    )
    .await;
    let running = jobs.claim("flow", 1).await;
    let cancelled = jobs
        .store
        .cancel_workflow(&jobs.workspace, &workflow.id)
        .await
        .expect("cancel");
    assert_eq!(cancelled.state, WorkflowState::Cancelled);
    let by_state: Vec<Option<JobState>> = cancelled.steps.iter().map(|s| s.state).collect();
    assert_eq!(
        by_state
            .iter()
            .filter(|s| **s == Some(JobState::Cancelled))
            .count(),
        2
    );
    let job = jobs
        .store
        .get(&jobs.workspace, &running[0].id)
        .await
        .expect("read")
        .expect("job");
    assert!(job.cancel_requested, "the running step is asked to stop");
    complete(&jobs, &running[0], json!(null)).await;
    assert!(
        jobs.claim("flow", 10).await.is_empty(),
        "nothing is released"
    );
    let again = jobs
        .store
        .cancel_workflow(&jobs.workspace, &workflow.id)
        .await
        .expect("cancelling twice changes nothing");
    assert_eq!(again.state, WorkflowState::Cancelled);

    let done = create(&jobs, WorkflowSpec::new("done").step(step("x", &[]))).await;
    let x = jobs.claim("flow", 1).await;
    complete(&jobs, &x[0], json!(null)).await;
    assert!(matches!(
        jobs.store.cancel_workflow(&jobs.workspace, &done.id).await,
        Err(JobError::WorkflowState(WorkflowState::Completed))
    ));
    jobs.assert_counters_match_rows().await;
}

async fn a_workflow_is_invisible_to_other_workspaces(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let workflow = create(&jobs, WorkflowSpec::new("mine").step(step("a", &[]))).await;
    let other = WorkspaceId::new(pier_core::Clock::now(&jobs.clock));
    assert_eq!(
        jobs.store
            .workflow(&other, &workflow.id)
            .await
            .expect("read"),
        None
    );
    assert!(
        jobs.store
            .workflows(&other, None, 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(matches!(
        jobs.store.cancel_workflow(&other, &workflow.id).await,
        Err(JobError::WorkflowNotFound)
    ));
    let listed = jobs
        .store
        .workflows(&jobs.workspace, None, 10)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].steps.is_empty(), "lists leave the steps out");
}

async fn finished_workflows_are_pruned_after_their_jobs(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let done = create(&jobs, WorkflowSpec::new("done").step(step("a", &[]))).await;
    let a = claim_kinds(&jobs).await;
    complete(&jobs, &a[0], json!(null)).await;
    let running = create(&jobs, WorkflowSpec::new("running").step(step("b", &[]))).await;
    let retention = Retention::default();
    jobs.clock
        .advance(retention.completed + Duration::from_secs(1));
    jobs.store.prune(&retention).await.expect("prune");
    assert!(
        jobs.store
            .workflow(&jobs.workspace, &done.id)
            .await
            .expect("read")
            .is_some(),
        "kept as long as its longest-kept jobs may be"
    );
    jobs.clock.advance(retention.discarded);
    jobs.store.prune(&retention).await.expect("prune");
    assert_eq!(
        jobs.store
            .workflow(&jobs.workspace, &done.id)
            .await
            .expect("read"),
        None
    );
    assert_eq!(read(&jobs, &running).await.state, WorkflowState::Running);
    let steps: i64 = with_reader!(&jobs.db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM workflow_steps WHERE workflow_id = $1")
            .bind(done.id.as_str())
            .fetch_one(pool)
            .await
    })
    .expect("steps");
    assert_eq!(steps, 0, "its steps go with it");
    jobs.assert_counters_match_rows().await;
}

/// Two dependencies of one step complete at once on two connections. Both wait on the
/// workflow's lock, held here; released, they take turns, and the step is released exactly
/// once, with both results.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: set PIER_TEST_DATABASE_URL"]
async fn two_dependencies_completing_at_once_release_their_step_once() {
    let jobs = Arc::new(Jobs::new(Backend::postgres()).await);
    let workflow = create(
        &jobs,
        WorkflowSpec::new("join")
            .step(step("left", &[]))
            .step(step("right", &[]))
            .step(step("join", &["left", "right"])),
    )
    .await;
    let claimed = claim_kinds(&jobs).await;
    assert_eq!(kinds(&claimed), ["left", "right"]);
    let mut lock = jobs.db.begin().await.expect("begin");
    with_tx!(&mut lock, conn => {
        sqlx::query("SELECT id FROM workflows WHERE id = $1 FOR UPDATE")
            .bind(workflow.id.as_str())
            .fetch_one(conn)
            .await
            .map(drop)
    })
    .expect("hold the workflow's lock");
    let mut completing = Vec::new();
    for job in claimed {
        let jobs = jobs.clone();
        completing.push(tokio::spawn(async move {
            let result = json!({ "side": job.kind });
            complete(&jobs, &job, result).await;
        }));
    }
    // Both completions have marked their jobs and wait for the workflow's row.
    eventually("both completions wait on the workflow", || async {
        let waiting: i64 = with_reader!(&jobs.db, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock'",
            )
            .fetch_one(pool)
            .await
        })
        .expect("locks");
        waiting >= 2
    })
    .await;
    lock.commit().await.expect("release the lock");
    for task in completing {
        task.await.expect("completion");
    }
    let join = claim_kinds(&jobs).await;
    assert_eq!(kinds(&join), ["join"], "released once");
    assert_eq!(
        join[0].inputs,
        Some(json!({"left": {"side": "left"}, "right": {"side": "right"}}))
    );
    let waiting_on: i64 = with_reader!(&jobs.db, pool => {
        sqlx::query_scalar("SELECT waiting_on FROM workflow_steps WHERE name = 'join'")
            .fetch_one(pool)
            .await
    })
    .expect("step");
    assert_eq!(waiting_on, 0);
    assert_eq!(read(&jobs, &workflow).await.steps_completed, 2);
    jobs.assert_counters_match_rows().await;
}

/// Adds its inputs up and completes in its own transaction, writing its effect there too.
struct Adder;

impl Worker for Adder {
    const KIND: &'static str = "add";
    type Payload = Value;

    async fn run(&self, ctx: JobContext, payload: Value) -> Result<(), JobFailure> {
        let base = payload["n"].as_i64().unwrap_or(0);
        let from_inputs: i64 = ctx
            .inputs
            .as_ref()
            .and_then(Value::as_object)
            .map(|inputs| inputs.values().filter_map(Value::as_i64).sum())
            .unwrap_or(0);
        let sum = base + from_inputs;
        if payload["in_tx"] == true {
            let mut tx = ctx.store().db().begin().await.map_err(JobFailure::from)?;
            with_tx!(&mut tx, conn => {
                sqlx::query("INSERT INTO effects (job_id, total) VALUES ($1, $2)")
                    .bind(ctx.id.as_str())
                    .bind(sum)
                    .execute(conn)
                    .await
                    .map(drop)
            })
            .map_err(JobFailure::from)?;
            ctx.complete_in(&mut tx, Some(&json!(sum))).await?;
            tx.commit().await.map_err(JobFailure::from)?;
        } else {
            ctx.set_result(json!(sum));
        }
        Ok(())
    }
}

async fn handlers_get_their_inputs_and_complete_in_their_own_transaction(backend: Backend) {
    let jobs = Jobs::new(backend).await;
    let mut tx = jobs.db.begin().await.expect("begin");
    with_tx!(&mut tx, conn => {
        sqlx::query("CREATE TABLE effects (job_id TEXT PRIMARY KEY, total BIGINT NOT NULL)")
            .execute(conn)
            .await
            .map(drop)
    })
    .expect("a table of the handler's own");
    tx.commit().await.expect("commit");
    let add = |n: i64, in_tx: bool| {
        JobSpec::new("add")
            .queue("sums")
            .payload(json!({"n": n, "in_tx": in_tx}))
    };
    let workflow = create(
        &jobs,
        WorkflowSpec::new("sums")
            .step(StepSpec::new("one", add(1, false)))
            .step(StepSpec::new("two", add(2, true)))
            .step(StepSpec::new("total", add(100, true)).after(["one", "two"])),
    )
    .await;
    let (stop, stopped) = watch::channel(false);
    let options = PoolOptions {
        concurrency: 4,
        poll_interval: Duration::from_millis(50),
        ..PoolOptions::default()
    };
    let pool = WorkerPool::new(jobs.store.clone(), jobs.target("sums"), options)
        .register(Adder)
        .spawn(stopped);
    eventually("the workflow completes", || async {
        read(&jobs, &workflow).await.state == WorkflowState::Completed
    })
    .await;
    stop.send(true).expect("stop");
    pool.await.expect("pool stops");
    let total_id = read(&jobs, &workflow).await.steps[2].job_id.clone();
    let total = jobs
        .store
        .get(&jobs.workspace, &total_id)
        .await
        .expect("read")
        .expect("job");
    assert_eq!(total.inputs, Some(json!({"one": 1, "two": 2})));
    assert_eq!(total.result, Some(json!(103)));
    let effect: i64 = with_reader!(&jobs.db, pool => {
        sqlx::query_scalar("SELECT total FROM effects WHERE job_id = $1")
            .bind(total_id.as_str())
            .fetch_one(pool)
            .await
    })
    .expect("the handler's write committed with the completion");
    assert_eq!(effect, 103);
    jobs.assert_counters_match_rows().await;
}
