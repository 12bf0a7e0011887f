//! What only the Redis store has: the script's lifecycle, key hygiene, Redis's own clock, several
//! nodes sharing one quota, and each failure mode when Redis stops or stalls.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pier_core::SystemClock;
use pier_ratelimit::{Limiter, Policy, RedisStore};
use support::{RedisProxy, fresh_key, redis_conn};

async fn shared_limiter(url: &str, timeout: Duration) -> Limiter {
    Limiter::local(Arc::new(SystemClock), 10_000)
        .with_redis(RedisStore::new(redis_conn(url).await), timeout)
}

#[tokio::test]
#[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
async fn the_script_is_sent_again_after_redis_forgets_it() {
    let url = pier_testkit::redis_url();
    let limiter = shared_limiter(&url, Duration::from_secs(5)).await;
    let policy = Policy::server("reload", "gcra 3/60s".parse().expect("spec"));
    let key = fresh_key("reload");
    assert!(
        limiter
            .check(&policy, &key, 1)
            .await
            .expect("decides")
            .allowed
    );
    let mut conn = redis_conn(&url).await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("flush");
    let d = limiter.check(&policy, &key, 1).await.expect("decides");
    assert!(d.allowed);
    assert_eq!(
        d.remaining, 1,
        "the state survived; only the script was reloaded"
    );
}

#[tokio::test]
#[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
async fn every_key_expires_when_its_state_runs_out_and_holds_no_caller_text() {
    let url = pier_testkit::redis_url();
    let limiter = shared_limiter(&url, Duration::from_secs(5)).await;
    let key = fresh_key("hygiene-caller");
    let policies = [
        Policy::server("h-gcra", "gcra 10/10s".parse().expect("spec")),
        Policy::server("h-fixed", "fixed_window 10/10s".parse().expect("spec")),
        Policy::server("h-sliding", "sliding_window 10/10s".parse().expect("spec")),
    ];
    assert!(
        limiter
            .check_all(&policies, &key, 2, true)
            .await
            .expect("decides")
            .allowed
    );
    let mut conn = redis_conn(&url).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("pier:rl:*:h-*")
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert!(keys.len() >= 3);
    for k in &keys {
        assert!(!k.contains("hygiene-caller"), "{k}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .expect("pttl");
        // GCRA runs out after 2 units × 1 s; the windows by the end of the next window.
        assert!(ttl > 0 && ttl <= 20_000, "{k} expires in {ttl} ms");
    }
}

/// Nodes whose clocks disagree by an hour still share one window: Redis's clock decides.
#[tokio::test]
#[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
async fn three_nodes_share_one_quota_by_redis_time() {
    let url = pier_testkit::redis_url();
    let skewed = pier_core::ManualClock::new(
        pier_core::Clock::now(&SystemClock).saturating_sub(Duration::from_secs(3600)),
    );
    let mut nodes = Vec::new();
    for clock in [
        Arc::new(SystemClock) as Arc<dyn pier_core::Clock>,
        Arc::new(skewed),
        Arc::new(SystemClock),
    ] {
        let limiter = Limiter::local(clock, 1000).with_redis(
            RedisStore::new(redis_conn(&url).await),
            Duration::from_secs(5),
        );
        nodes.push(Arc::new(limiter));
    }
    let policy = Policy::server("nodes", "gcra 30/3600s".parse().expect("spec"));
    let key = fresh_key("nodes");
    let tasks: Vec<_> = nodes
        .iter()
        .flat_map(|node| std::iter::repeat_n(node.clone(), 3))
        .map(|node| {
            let (policy, key) = (policy.clone(), key.clone());
            tokio::spawn(async move {
                let mut admitted = 0;
                for _ in 0..20 {
                    admitted +=
                        u32::from(node.check(&policy, &key, 1).await.expect("decides").allowed);
                }
                admitted
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("task");
    }
    assert_eq!(total, 30);
}

/// Without coalescing (Redis Cluster), every decision is its own call and just as exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
async fn one_call_per_decision_decides_the_same() {
    let url = pier_testkit::redis_url();
    let store = RedisStore::one_call_per_decision(redis_conn(&url).await);
    let limiter = Arc::new(
        Limiter::local(Arc::new(SystemClock), 1000).with_redis(store, Duration::from_secs(5)),
    );
    let policies = [
        Policy::server("single-a", "gcra 25/3600s".parse().expect("spec")),
        Policy::server("single-b", "fixed_window 1000/1d".parse().expect("spec")),
    ];
    let key = fresh_key("single");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (limiter, policies, key) = (limiter.clone(), policies.clone(), key.clone());
            tokio::spawn(async move {
                let mut admitted = 0;
                for _ in 0..10 {
                    let verdict = limiter.check_all(&policies, &key, 1, true).await;
                    admitted += u32::from(verdict.expect("decides").allowed);
                }
                admitted
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("task");
    }
    assert_eq!(total, 25);
    let day = limiter.peek(&policies[1], &key, 1).await.expect("peeks");
    assert_eq!(day.remaining, 1000 - 25 - 1);
}

/// Stopped Redis: each policy's failure mode decides, at once and without waiting for Redis.
#[tokio::test]
#[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
async fn a_stopped_redis_leaves_each_policy_to_its_failure_mode() {
    let mut proxy = RedisProxy::start(&pier_testkit::redis_url()).await;
    let limiter = shared_limiter(&proxy.url, Duration::from_millis(50)).await;
    let open = Policy::server("open", "gcra 2/60s fail_open".parse().expect("spec"));
    let closed = Policy::server("closed", "gcra 2/60s fail_closed".parse().expect("spec"));
    let local = Policy::server("local", "gcra 2/60s local".parse().expect("spec"));
    let key = fresh_key("stop");
    for policy in [&open, &closed, &local] {
        assert!(
            limiter
                .check(policy, &key, 2)
                .await
                .expect("decides")
                .allowed
        );
    }
    proxy.stop();
    let started = Instant::now();
    for _ in 0..3 {
        assert!(
            limiter
                .check(&open, &key, 1)
                .await
                .expect("decides")
                .allowed
        );
        let refused = limiter.check(&closed, &key, 1).await.expect("decides");
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, pier_ratelimit::FAIL_CLOSED_RETRY);
    }
    // The local store counts on its own from here: two allowed, then refused.
    let local_run: Vec<bool> = [
        limiter.check(&local, &key, 1).await,
        limiter.check(&local, &key, 1).await,
        limiter.check(&local, &key, 1).await,
    ]
    .into_iter()
    .map(|d| d.expect("decides").allowed)
    .collect();
    assert_eq!(local_run, [true, true, false]);
    // Nine decisions with Redis gone, none of them waiting out a retry or reconnect.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Stalled Redis: each decision waits the timeout, no longer, then the failure mode decides.
#[tokio::test]
#[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
async fn a_stalled_redis_is_given_up_on_after_the_timeout() {
    let proxy = RedisProxy::start(&pier_testkit::redis_url()).await;
    let limiter = shared_limiter(&proxy.url, Duration::from_millis(50)).await;
    let closed = Policy::server(
        "stalled",
        "fixed_window 5/60s fail_closed".parse().expect("spec"),
    );
    let key = fresh_key("stall");
    assert!(
        limiter
            .check(&closed, &key, 1)
            .await
            .expect("decides")
            .allowed
    );
    proxy.mute();
    let started = Instant::now();
    let refused = limiter.check(&closed, &key, 1).await.expect("decides");
    let waited = started.elapsed();
    assert!(!refused.allowed);
    assert!(waited >= Duration::from_millis(50), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    // For a second after, decisions do not wait for the stalled Redis (20 timeouts would take
    // a second).
    let started = Instant::now();
    for _ in 0..20 {
        assert!(
            !limiter
                .check(&closed, &key, 1)
                .await
                .expect("decides")
                .allowed
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
}

/// A state that lasts longer than 10^14 ms (a burst spent under a policy of one a year) is
/// written with its expiry in whole digits: Lua's own number-to-text would give `3.16224e+15`,
/// which Redis refuses as an expiry, failing the decision.
#[tokio::test]
#[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
async fn a_state_lasting_millennia_is_still_written() {
    let url = pier_testkit::redis_url();
    let limiter = shared_limiter(&url, Duration::from_secs(5)).await;
    let policy = Policy::server(
        "yearly",
        "gcra 1/366d burst=100000 fail_closed"
            .parse()
            .expect("spec"),
    );
    let key = fresh_key("yearly");
    let spent = limiter
        .check(&policy, &key, 100_000)
        .await
        .expect("decides");
    assert!(
        spent.allowed,
        "Redis decided and wrote the state: {spent:?}"
    );
    let next = limiter.check(&policy, &key, 1).await.expect("decides");
    assert!(!next.allowed);
    assert!(next.retry_after > Duration::from_secs(3600 * 24 * 365));
}
