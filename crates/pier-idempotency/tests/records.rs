//! Idempotency records on both backends: replays, mismatches, fenced takeovers, and nothing
//! readable at rest.

use std::sync::Arc;
use std::time::Duration;

use pier_core::{ManualClock, MasterKey};
use pier_db::with_reader;
use pier_idempotency::{Claim, IdempotencyStore, LOCK_TIMEOUT, Request, StoredResponse};
use pier_testkit::{Backend, TestDb, on_both_backends};

on_both_backends!(
    replays_mismatches_and_in_flight,
    a_taken_over_claim_is_fenced,
    records_reveal_nothing_without_the_server_key,
);

struct Records {
    store: IdempotencyStore,
    clock: ManualClock,
    test_db: TestDb,
}

async fn records(backend: Backend) -> Records {
    let test_db = TestDb::new(
        &backend,
        &[pier_db::MIGRATIONS, pier_idempotency::MIGRATIONS],
    )
    .await;
    let clock = ManualClock::starting_now();
    let store = IdempotencyStore::new(
        test_db.db.clone(),
        Arc::new(clock.clone()),
        &MasterKey::generate(),
    );
    Records {
        store,
        clock,
        test_db,
    }
}

fn request<'a>(key: &'a str, body: &'a [u8]) -> Request<'a> {
    Request {
        caller: "key_01m8hpqca6yrpxjm9wy9jmw19v",
        key,
        method: "POST",
        target: "/v1/api-keys",
        body,
    }
}

fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![("location".into(), "/v1/api-keys/key_1".into())],
        body: body.as_bytes().to_vec(),
    }
}

fn lease(claim: Claim) -> pier_idempotency::Lease {
    match claim {
        Claim::Proceed(lease) => lease,
        other => panic!("expected to proceed, got {other:?}"),
    }
}

async fn replays_mismatches_and_in_flight(backend: Backend) {
    let r = records(backend).await;
    let first = lease(r.store.claim(&request("k1", b"{}")).await.expect("claim"));
    assert!(matches!(
        r.store.claim(&request("k1", b"{}")).await.expect("claim"),
        Claim::InFlight
    ));
    assert!(
        r.store
            .complete(&first, &response("done"))
            .await
            .expect("complete")
    );
    match r.store.claim(&request("k1", b"{}")).await.expect("claim") {
        Claim::Replay(stored) => assert_eq!(stored, response("done")),
        other => panic!("expected a replay, got {other:?}"),
    }
    assert!(matches!(
        r.store
            .claim(&request("k1", b"{\"other\": 1}"))
            .await
            .expect("claim"),
        Claim::Mismatch
    ));
    // A released key can be used again.
    let failed = lease(r.store.claim(&request("k2", b"{}")).await.expect("claim"));
    r.store.release(&failed).await.expect("release");
    lease(r.store.claim(&request("k2", b"{}")).await.expect("claim"));
    // Records expire.
    r.clock
        .advance(pier_idempotency::RETENTION + Duration::from_secs(1));
    lease(
        r.store
            .claim(&request("k1", b"{\"other\": 1}"))
            .await
            .expect("claim"),
    );
    assert_eq!(
        r.store.prune().await.expect("prune"),
        1,
        "k2's expired claim"
    );
}

/// The first request stalls past the lock timeout; a retry takes the claim over. When the first
/// request finally ends, it can neither store its response nor release the retry's claim.
async fn a_taken_over_claim_is_fenced(backend: Backend) {
    let r = records(backend).await;
    let slow = lease(r.store.claim(&request("k", b"{}")).await.expect("claim"));
    r.clock.advance(LOCK_TIMEOUT + Duration::from_secs(1));
    let retry = lease(r.store.claim(&request("k", b"{}")).await.expect("takeover"));
    assert!(
        !r.store
            .complete(&slow, &response("slow"))
            .await
            .expect("complete"),
        "the stale claim stores nothing"
    );
    r.store.release(&slow).await.expect("release");
    assert!(
        matches!(
            r.store.claim(&request("k", b"{}")).await.expect("claim"),
            Claim::InFlight
        ),
        "the retry still owns the key"
    );
    assert!(
        r.store
            .complete(&retry, &response("retry"))
            .await
            .expect("complete")
    );
    match r.store.claim(&request("k", b"{}")).await.expect("claim") {
        Claim::Replay(stored) => assert_eq!(stored, response("retry")),
        other => panic!("expected a replay, got {other:?}"),
    }
}

async fn records_reveal_nothing_without_the_server_key(backend: Backend) {
    let r = records(backend).await;
    let secret = "pier_TheSecretThatMustNeverRestInTheClear00";
    let key = "my-idempotency-key-123";
    let lease = lease(
        r.store
            .claim(&request(key, b"{\"name\": \"ci\"}"))
            .await
            .expect("claim"),
    );
    assert!(
        r.store
            .complete(&lease, &response(secret))
            .await
            .expect("complete")
    );
    let rows: Vec<(String, String, Option<Vec<u8>>)> = with_reader!(&r.test_db.db, pool => {
        sqlx::query_as("SELECT lookup, fingerprint, response FROM idempotency_records")
            .fetch_all(pool)
            .await
    })
    .expect("rows");
    assert_eq!(rows.len(), 1);
    let (lookup, fingerprint, response) = &rows[0];
    let stored = format!(
        "{lookup} {fingerprint} {}",
        String::from_utf8_lossy(response.as_deref().unwrap_or_default())
    );
    for clear in [secret, key, "ci", "api-keys"] {
        assert!(!stored.contains(clear), "`{clear}` is readable at rest");
    }
    // Another server key cannot read or even find it.
    let other = IdempotencyStore::new(
        r.test_db.db.clone(),
        Arc::new(r.clock.clone()),
        &MasterKey::generate(),
    );
    assert!(matches!(
        other
            .claim(&request(key, b"{\"name\": \"ci\"}"))
            .await
            .expect("claim"),
        Claim::Proceed(_)
    ));
}
