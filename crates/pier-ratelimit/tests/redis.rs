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

/// A node whose decisions go to Redis through `url`, at `clock`'s time (which also times the
/// breaker), each decision its own call.
async fn node_at(url: &str, clock: &pier_core::ManualClock, timeout: Duration) -> Limiter {
    let store = RedisStore::one_call_per_decision(redis_conn(url).await)
        .deciding_at(Arc::new(clock.clone()));
    Limiter::local(Arc::new(clock.clone()), 1000).with_redis(store, timeout)
}

/// The Redis key holding `policy`'s state for the one caller that used it.
async fn state_key_of(conn: &mut redis::aio::ConnectionManager, policy: &str) -> String {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("pier:rl:*:{policy}:*"))
        .query_async(conn)
        .await
        .expect("keys");
    assert_eq!(keys.len(), 1, "{keys:?}");
    keys.into_iter().next().expect("one key")
}

/// Makes every decision on `key` fail in Redis (its state is too short for the script to
/// read), as a failing Cluster slot would, while every other key decides normally.
async fn break_state(conn: &mut redis::aio::ConnectionManager, key: &str) {
    let () = redis::cmd("SET")
        .arg(key)
        .arg("x")
        .arg("PX")
        .arg(60_000)
        .query_async(conn)
        .await
        .expect("set");
}

/// One caller's failing decision sends that caller (for a second) to its policy's failure mode,
/// not the node: other callers are still decided by Redis. Failures with no success between
/// them for four timeouts are an outage, and then every caller skips Redis for a second.
#[tokio::test]
#[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
async fn a_failure_sends_only_its_caller_to_the_failure_mode_until_redis_looks_down() {
    let url = pier_testkit::redis_url();
    let clock = support::clock();
    let timeout = Duration::from_millis(50);
    let node = node_at(&url, &clock, timeout).await;
    let mut conn = redis_conn(&url).await;
    let name = fresh_key("scoped");
    let policy = Policy::workspace(
        &pier_core::WorkspaceId::new(pier_core::Clock::now(&clock)),
        &name,
        "gcra 2/60s fail_closed".parse().expect("spec"),
    );
    let allowed = async |key: &str| node.check(&policy, key, 1).await.expect("decides").allowed;
    let (broken, healthy) = (fresh_key("broken"), fresh_key("healthy"));
    assert!(allowed(&broken).await);
    let broken_state = state_key_of(&mut conn, &name).await;
    break_state(&mut conn, &broken_state).await;

    assert!(!allowed(&broken).await, "Redis failed: fail_closed refuses");
    // Redis still decides for another caller: fail_closed would refuse.
    assert!(allowed(&healthy).await);
    assert!(allowed(&healthy).await);
    assert!(!allowed(&healthy).await, "Redis counted both");
    // The failing caller skips Redis for a second, even once Redis could answer it.
    let () = redis::cmd("DEL")
        .arg(&broken_state)
        .query_async(&mut conn)
        .await
        .expect("del");
    assert!(!allowed(&broken).await);
    clock.advance(Duration::from_millis(1000));
    assert!(allowed(&broken).await, "back on Redis after a second");

    // An outage: failures on two callers 250 ms apart (over four 50 ms timeouts) and no
    // success between them; then a third, healthy caller skips Redis too.
    break_state(&mut conn, &broken_state).await;
    let other = fresh_key("other");
    let other_policy = Policy::workspace(
        &pier_core::WorkspaceId::new(pier_core::Clock::now(&clock)),
        &format!("{name}-other"),
        "gcra 2/60s fail_closed".parse().expect("spec"),
    );
    assert!(
        node.check(&other_policy, &other, 1)
            .await
            .expect("decides")
            .allowed
    );
    let other_state = state_key_of(&mut conn, &format!("{name}-other")).await;
    break_state(&mut conn, &other_state).await;
    assert!(!allowed(&broken).await);
    clock.advance(Duration::from_millis(250));
    assert!(
        !node
            .check(&other_policy, &other, 1)
            .await
            .expect("decides")
            .allowed
    );
    let fresh = fresh_key("fresh");
    assert!(
        !allowed(&fresh).await,
        "every caller skips Redis during an outage"
    );
    clock.advance(Duration::from_millis(1000));
    assert!(
        allowed(&fresh).await,
        "Redis is probed again after a second"
    );
}

/// A call that timed out may still be applied in Redis (a stalled Redis answers late, or its
/// answer is lost): the decision is made by the `local` failure mode but charged nowhere else,
/// so it counts once, in Redis; what the local store charges while Redis is skipped stays local.
#[tokio::test]
#[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
async fn a_timed_out_decision_is_not_charged_twice() {
    let url = pier_testkit::redis_url();
    let proxy = RedisProxy::start(&url).await;
    let clock = support::clock();
    let node = node_at(&proxy.url, &clock, Duration::from_millis(50)).await;
    let witness = node_at(&url, &clock, Duration::from_secs(5)).await;
    let policy = Policy::server("twice", "gcra 3/60s local".parse().expect("spec"));
    let key = fresh_key("twice");
    let allowed = async || node.check(&policy, &key, 1).await.expect("decides").allowed;
    assert!(allowed().await);
    proxy.mute();
    assert!(allowed().await, "timed out; the local store allows");
    // Skipping Redis now, the local store counts from full: the timed-out decision is not in it.
    let local_run = [
        allowed().await,
        allowed().await,
        allowed().await,
        allowed().await,
    ];
    assert_eq!(local_run, [true, true, true, false]);
    // Redis holds the first decision and the timed-out one, none of the local ones: one unit
    // is left there.
    let shared = witness.peek(&policy, &key, 1).await.expect("peeks");
    assert_eq!((shared.allowed, shared.remaining), (true, 0));
}
