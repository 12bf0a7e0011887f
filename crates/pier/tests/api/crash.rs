//! The crash test: the real `pier` binary is killed with SIGKILL while workers drain 2,000 jobs,
//! then started again. Every job must complete; none may be lost (duplicates are allowed by
//! at-least-once delivery, and counted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::process::server;
use crate::support::receiver::{Receiver, Reply};
use crate::support::{Backend, on_both_backends};

on_both_backends!(
    killed_mid_run_loses_no_job,
    killed_mid_delivery_delivers_after_restart
);

const JOBS: usize = 2000;

/// One HTTP worker: claim, record, complete; it rides out the server's absence.
async fn work(
    base: String,
    key: String,
    seen: Arc<Mutex<HashMap<String, u32>>>,
    done: Arc<AtomicBool>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    while !done.load(Ordering::SeqCst) {
        let claimed = client
            .post(format!("{base}/v1/queues/crash/claim"))
            .bearer_auth(&key)
            .json(&json!({"max": 25, "lease_seconds": 2, "wait_seconds": 1}))
            .send()
            .await;
        let Ok(response) = claimed else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(body) = response.json::<Value>().await else {
            continue;
        };
        for job in body["jobs"].as_array().cloned().unwrap_or_default() {
            let id = job["id"].as_str().expect("id").to_owned();
            *seen.lock().expect("lock").entry(id.clone()).or_default() += 1;
            let _ = client
                .post(format!("{base}/v1/jobs/{id}/complete"))
                .bearer_auth(&key)
                .json(&json!({"lease_token": job["lease_token"]}))
                .send()
                .await;
        }
    }
}

async fn killed_mid_run_loses_no_job(backend: Backend) {
    let server = server(&backend, &[]).await;
    let mut child = server.start().await;
    let client = reqwest::Client::new();
    for chunk in 0..JOBS / 1000 {
        let jobs: Vec<Value> = (0..1000)
            .map(|i| json!({"kind": "crash", "queue": "crash", "payload": {"n": chunk * 1000 + i}}))
            .collect();
        let response = client
            .post(format!("{}/v1/jobs/batch", server.base))
            .bearer_auth(&server.key)
            .json(&json!({"jobs": jobs}))
            .send()
            .await
            .expect("enqueue");
        assert_eq!(response.status(), 201);
    }

    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(work(
                server.base.clone(),
                server.key.clone(),
                seen.clone(),
                done.clone(),
            ))
        })
        .collect();

    // Kill the server without warning once a third of the jobs were handed out.
    for _ in 0..600 {
        if seen.lock().expect("lock").len() >= JOBS / 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("killed");
    let seen_at_crash = seen.lock().expect("lock").len();
    assert!(
        seen_at_crash < JOBS,
        "the crash happened mid-run ({seen_at_crash} handed out)"
    );

    let mut child = server.start().await;
    let mut completed = 0;
    for _ in 0..600 {
        let queues: Value = client
            .get(format!("{}/v1/queues", server.base))
            .bearer_auth(&server.key)
            .send()
            .await
            .expect("queues")
            .json()
            .await
            .expect("json");
        completed = queues["data"][0]["counts"]["completed"]
            .as_u64()
            .unwrap_or(0);
        if completed == JOBS as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("worker");
    }
    assert_eq!(completed, JOBS as u64, "every job completed");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), JOBS, "every job was handed to a worker");
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {seen_at_crash} jobs handed out before SIGKILL; {duplicates} ran twice (at-least-once)"
    );
    child.start_kill().expect("stop");
    let _ = child.wait().await;
}

/// A delivery in flight when the server dies is sent again once it is back (its job's lease
/// runs out and the job is rescued): delayed, never lost.
async fn killed_mid_delivery_delivers_after_restart(backend: Backend) {
    let server = server(
        &backend,
        &[
            "--allow-private-webhook-targets",
            "true",
            "--jobs-default-lease-secs",
            "2",
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    // The first request hangs until long after the server is gone.
    receiver.answer([Reply::status(200).after(Duration::from_secs(60))]);
    let mut child = server.start().await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{}{path}", server.base))
            .bearer_auth(&server.key)
            .json(&body)
            .send()
    };
    let created = post("/v1/webhook-endpoints", json!({"url": receiver.url}))
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let event: Value = post("/v1/events", json!({"type": "crash", "payload": {}}))
        .await
        .expect("publish")
        .json()
        .await
        .expect("json");
    receiver.wait_for(1).await;
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("killed");

    let _child = server.start().await;
    let received = receiver.wait_for(2).await;
    assert_eq!(received[1].header("webhook-id"), event["id"]);
    let path = format!(
        "{}/v1/events/{}/deliveries",
        server.base,
        event["id"].as_str().expect("id")
    );
    let mut state = Value::Null;
    for _ in 0..100 {
        let page: Value = client
            .get(&path)
            .bearer_auth(&server.key)
            .send()
            .await
            .expect("deliveries")
            .json()
            .await
            .expect("json");
        state = page["data"][0]["state"].clone();
        if state == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "succeeded");
}
