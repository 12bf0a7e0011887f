//! The per-state counters under concurrent transactions.

use std::sync::Arc;

use serde_json::json;

use crate::support::{Backend, Jobs, job, on_both_backends};

on_both_backends!(transactions_moving_the_same_queues_in_any_order_never_deadlock);

/// Many transactions each move jobs of the same queues, listed in opposite orders; counter rows
/// are updated in one fixed order, so none waits on another in a cycle and none fails.
async fn transactions_moving_the_same_queues_in_any_order_never_deadlock(backend: Backend) {
    let jobs = Arc::new(Jobs::new(backend).await);
    let queues: Vec<String> = (0..8).map(|i| format!("q{i}")).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8 {
        let (jobs, mut order) = (jobs.clone(), queues.clone());
        if task % 2 == 1 {
            order.reverse();
        }
        tasks.spawn(async move {
            for round in 0..15 {
                let batch = order
                    .iter()
                    .map(|q| job("k", q, json!({ "round": round })))
                    .collect();
                jobs.store
                    .enqueue(&jobs.workspace, batch)
                    .await
                    .expect("no enqueue is lost to a deadlock");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    jobs.assert_counters_match_rows().await;
}
