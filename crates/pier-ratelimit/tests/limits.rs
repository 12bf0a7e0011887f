//! The limiter against reference models under a fake clock, under concurrency, and with bounded
//! memory; each suite runs on the local store and (with PIER_TEST_REDIS_URL) on Redis.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pier_core::{Clock, ManualClock};
use pier_ratelimit::{Algorithm, FailureMode, LocalStore, Policy, PolicySpec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::{Model, Store, clock, fresh_key, limiter, now_ms};

fn spec_strategy(algorithm: Algorithm) -> impl Strategy<Value = PolicySpec> {
    (1u64..=20, 1u64..=4, 1u64..=25).prop_map(move |(limit, period, burst)| {
        let burst = (algorithm == Algorithm::Gcra).then_some(burst);
        PolicySpec::new(algorithm, limit, period, burst, FailureMode::Local).expect("valid spec")
    })
}

/// Gaps between requests (often none, sometimes several periods) and a cost seed.
fn arrivals() -> impl Strategy<Value = Vec<(i64, u64)>> {
    let gap = prop_oneof![Just(0i64), 0i64..80, 0i64..9000];
    prop::collection::vec((gap, 0u64..1000), 1..120)
}

/// Every decision equals the model's, remaining quota included; a refusal's `retry_after` is
/// the first moment the model would admit the same request.
async fn agrees_with_model(
    limiter: &pier_ratelimit::Limiter,
    clock: &ManualClock,
    spec: PolicySpec,
    arrivals: Vec<(i64, u64)>,
) -> Result<(), TestCaseError> {
    let policy = Policy::server("model", spec);
    let key = fresh_key("model");
    clock.set(support::clock().now());
    let mut model = Model::new(spec, now_ms(clock));
    for (gap, seed) in arrivals {
        clock.advance(Duration::from_millis(gap.unsigned_abs()));
        let now = now_ms(clock);
        let cost = 1 + seed % spec.capacity();
        let icost = i64::try_from(cost).expect("small");
        let (allowed, remaining) = model.admits(now, icost);
        let d = limiter.check(&policy, &key, cost).await.expect("decides");
        prop_assert_eq!(d.allowed, allowed, "at {} cost {}", now, cost);
        prop_assert_eq!(d.remaining, u64::try_from(remaining).expect("non-negative"));
        prop_assert_eq!(d.limit, spec.limit());
        if allowed {
            model.admit(now, icost);
            prop_assert_eq!(d.retry_after, Duration::ZERO);
        } else {
            let wait = i64::try_from(d.retry_after.as_millis()).expect("small");
            prop_assert!(wait > 0);
            prop_assert!(
                model.admits(now + wait, icost).0,
                "not admitted after retry_after"
            );
            prop_assert!(
                !model.admits(now + wait - 1, icost).0,
                "retry_after is late"
            );
        }
    }
    if let Some((per_window, most_in_a_span)) = model.window_totals() {
        let limit = i64::try_from(spec.limit()).expect("small");
        prop_assert!(per_window.values().all(|&n| n <= limit));
        prop_assert!(most_in_a_span < 2 * limit || spec.algorithm() == Algorithm::FixedWindow);
    }
    Ok(())
}

fn property(store: Store, algorithm: Algorithm) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let clock = clock();
    let limiter = rt.block_on(limiter(store, &clock));
    let cases = match store {
        Store::Local => 200,
        Store::Redis => 40,
    };
    let mut runner = TestRunner::new(Config {
        cases,
        ..Config::default()
    });
    runner
        .run(
            &(spec_strategy(algorithm), arrivals()),
            |(spec, arrivals)| rt.block_on(agrees_with_model(&limiter, &clock, spec, arrivals)),
        )
        .expect("the limiter agrees with the model");
}

/// Eight tasks hammering one key at one instant admit exactly the limit.
async fn eight_tasks_admit_exactly_the_limit(store: Store) {
    let clock = clock();
    let limiter = Arc::new(limiter(store, &clock).await);
    for text in [
        "gcra 50/60s",
        "sliding_window 50/60s",
        "fixed_window 50/60s",
    ] {
        let policy = Policy::server("hammer", text.parse().expect("spec"));
        let key = fresh_key("hammer");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (limiter, policy, key) = (limiter.clone(), policy.clone(), key.clone());
                tokio::spawn(async move {
                    let mut admitted = 0;
                    for _ in 0..40 {
                        if limiter
                            .check(&policy, &key, 1)
                            .await
                            .expect("decides")
                            .allowed
                        {
                            admitted += 1;
                        }
                    }
                    admitted
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.expect("task");
        }
        assert_eq!(total, 50, "{text}");
    }
}

/// A batch consumes on every policy or on none, and peeking spends nothing.
async fn batches_are_all_or_nothing(store: Store) {
    let clock = clock();
    let limiter = limiter(store, &clock).await;
    let wide = Policy::server("wide", "gcra 5/60s".parse().expect("spec"));
    let narrow = Policy::server("narrow", "fixed_window 3/60s".parse().expect("spec"));
    let both = [wide.clone(), narrow.clone()];
    let key = fresh_key("batch");
    for _ in 0..3 {
        let verdict = limiter
            .check_all(&both, &key, 1, true)
            .await
            .expect("decides");
        assert!(verdict.allowed);
    }
    let refused = limiter
        .check_all(&both, &key, 1, true)
        .await
        .expect("decides");
    assert!(!refused.allowed);
    assert!(refused.decisions[0].allowed && !refused.decisions[1].allowed);
    // The wide policy spent nothing on the refused batch.
    let wide_now = limiter.peek(&wide, &key, 1).await.expect("peeks");
    assert_eq!(wide_now.remaining, 1);
    assert_eq!(limiter.peek(&wide, &key, 1).await.expect("peeks"), wide_now);
    // A dry run answers like the real thing and spends nothing either.
    let dry = limiter
        .check_all(&both, &key, 1, false)
        .await
        .expect("decides");
    assert_eq!(dry, refused);
    limiter.reset(&narrow, &key).await.expect("resets");
    assert!(
        limiter
            .check_all(&both, &key, 2, true)
            .await
            .expect("decides")
            .allowed
    );
    assert!(
        !limiter
            .check(&wide, &key, 1)
            .await
            .expect("decides")
            .allowed
    );
}

/// Costs outside 1..=capacity are refused before any store is asked.
async fn impossible_costs_are_errors(store: Store) {
    let clock = clock();
    let limiter = limiter(store, &clock).await;
    let policy = Policy::server("small", "gcra 10/1s burst=4".parse().expect("spec"));
    assert!(limiter.check(&policy, "k", 0).await.is_err());
    let err = limiter
        .check(&policy, "k", 5)
        .await
        .expect_err("over capacity");
    assert!(err.to_string().contains("capacity"), "{err}");
    assert!(limiter.check(&policy, "k", 4).await.expect("fits").allowed);
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Store::Local).await
                }
            )*
            #[test]
            fn gcra_agrees_with_a_token_bucket() {
                super::property(super::Store::Local, super::Algorithm::Gcra);
            }
            #[test]
            fn fixed_windows_agree_with_a_request_log() {
                super::property(super::Store::Local, super::Algorithm::FixedWindow);
            }
            #[test]
            fn sliding_windows_agree_with_a_request_log() {
                super::property(super::Store::Local, super::Algorithm::SlidingWindow);
            }
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
                async fn $name() {
                    super::$name(super::Store::Redis).await
                }
            )*
            #[test]
            #[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
            fn gcra_agrees_with_a_token_bucket() {
                super::property(super::Store::Redis, super::Algorithm::Gcra);
            }
            #[test]
            #[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
            fn fixed_windows_agree_with_a_request_log() {
                super::property(super::Store::Redis, super::Algorithm::FixedWindow);
            }
            #[test]
            #[ignore = "needs Redis: set PIER_TEST_REDIS_URL"]
            fn sliding_windows_agree_with_a_request_log() {
                super::property(super::Store::Redis, super::Algorithm::SlidingWindow);
            }
        }
    };
}

on_both_stores!(
    eight_tasks_admit_exactly_the_limit,
    batches_are_all_or_nothing,
    impossible_costs_are_errors,
);

#[test]
fn a_million_keys_stay_within_the_cap_and_idle_keys_go() {
    let store = LocalStore::new(100_000);
    let policy = Policy::server("churn", "gcra 10/1s".parse().expect("spec"));
    let start = now_ms(&clock());
    for i in 0..1_000_000 {
        let key = format!("caller-{i}");
        assert!(store.decide(&policy, &key, 1, true, start).allowed);
    }
    assert!(store.len() <= store.capacity(), "{} keys", store.len());
    assert!(store.len() >= store.capacity() * 9 / 10, "the cap is used");
    // A known key keeps its state while the store churns... unless evicted: the most recent
    // ones are live.
    assert!(
        !store
            .decide(&policy, "caller-999999", 10, true, start)
            .allowed
    );
    // Once every entry has run out, the next inserts sweep them away.
    let later = start + 2000;
    for i in 0..10_000 {
        store.decide(&policy, &format!("late-{i}"), 1, true, later);
    }
    assert!(
        store.len() <= 10_000,
        "{} keys after the sweep",
        store.len()
    );
}
