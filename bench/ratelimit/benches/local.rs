//! One rate-limit decision on the in-process store: Pier against governor's keyed limiter, in
//! the same run, for one key and for 100,000 keys, on one thread and on two.
//!
//! - `pier_check`: `Limiter::check`, the path a request takes (reads the wall clock, counts the
//!   decision in metrics); its future completes on the first poll, so it is polled once with a
//!   no-op waker instead of running on a runtime.
//! - `pier_decide`: `LocalStore::decide` at a precomputed time (the store alone).
//! - `governor`: `RateLimiter::keyed(quota).check_key(&key)` (`DashMap<String, _>`, quanta clock).
//!
//! Both are keyed by the same `String`s. The quota is 10 per second with a burst of 10^9 on both
//! sides, so every decision in a run is allowed (checked after each benchmark) and every key's
//! state stays live: with a quota such as 10^9/s a key's state runs out within a millisecond and
//! Pier's store, by design, forgets it, so the next visit would measure an insertion instead of a
//! decision. Two threads share one limiter; each makes half of the decisions and the time
//! reported is wall time over all decisions (so a perfect scaling halves it).
//!
//! Last, the group `prometheus_recorder` measures `Limiter::check` again, on one key and on
//! 100,000, with a Prometheus recorder installed as `pier serve` does (metrics then cost a
//! registry look-up per decision).

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use pier_core::{Clock, SystemClock};
use pier_ratelimit::{Limiter, LocalStore, Policy, PolicySpec};

const SPEC: &str = "gcra 10/1s burst=1000000000";
const RATE_PER_SECOND: u32 = 10;
const BURST: u32 = 1_000_000_000;
const MANY_KEYS: usize = 100_000;
/// Room for every key in every shard of Pier's store (it holds its share of this per shard).
const MAX_KEYS: usize = 1_000_000;

fn policy() -> Policy {
    Policy::server("bench", SPEC.parse::<PolicySpec>().expect("valid spec"))
}

fn governor() -> DefaultKeyedRateLimiter<String> {
    let rate = NonZeroU32::new(RATE_PER_SECOND).expect("non-zero");
    let burst = NonZeroU32::new(BURST).expect("non-zero");
    RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
}

fn now_ms() -> i64 {
    SystemClock.now().as_micros().div_euclid(1000)
}

/// The output of a future that must complete on its first poll (a local decision never waits).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a local decision never waits"),
    }
}

/// One decision for a key, allowed or not: what each contender is measured doing.
trait Decide: Sync {
    // governor's limiter is keyed by `String` and checks a `&String`.
    #[expect(clippy::ptr_arg, reason = "governor's check_key takes &K")]
    fn decide(&self, key: &String) -> bool;
}

/// `Limiter::check`, the path a request takes.
struct PierCheck {
    limiter: Limiter,
    policy: Policy,
}

impl Decide for PierCheck {
    #[inline]
    fn decide(&self, key: &String) -> bool {
        ready(self.limiter.check(&self.policy, key, 1))
            .expect("cost 1 fits the policy")
            .allowed
    }
}

/// `LocalStore::decide` at a time read once.
struct PierDecide {
    store: LocalStore,
    policy: Policy,
    now: i64,
}

impl Decide for PierDecide {
    #[inline]
    fn decide(&self, key: &String) -> bool {
        self.store
            .decide(&self.policy, key, 1, true, self.now)
            .allowed
    }
}

/// governor's keyed limiter.
struct Governor(DefaultKeyedRateLimiter<String>);

impl Decide for Governor {
    #[inline]
    fn decide(&self, key: &String) -> bool {
        self.0.check_key(key).is_ok()
    }
}

/// `iters` decisions split between two threads on a shared contender; wall time from both
/// starting to both finishing. Thread `t` walks the keys from position `t × len / 2`.
fn two_threads<D: Decide>(contender: &D, keys: &[String], iters: u64) -> Duration {
    let barrier = Barrier::new(2);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let barrier = &barrier;
                let share = iters / 2 + u64::from(t == 0) * (iters % 2);
                scope.spawn(move || {
                    let mut i = t * keys.len() / 2;
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..share {
                        black_box(contender.decide(black_box(&keys[i])));
                        i += 1;
                        if i == keys.len() {
                            i = 0;
                        }
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker finished"))
            .collect()
    });
    let start = spans.iter().map(|s| s.0).min().expect("two spans");
    let end = spans.iter().map(|s| s.1).max().expect("two spans");
    end - start
}

/// Measures `contender` (fresh, having decided once for every key so that no measured decision
/// creates a key's state) on `keys`, and checks it still allows afterwards.
fn bench_one<D: Decide>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    contender: D,
    keys: &[String],
    threads: usize,
) {
    for key in keys {
        assert!(
            contender.decide(key),
            "the first decision for {key} is allowed"
        );
    }
    group.bench_function(name, |b| {
        if threads == 1 {
            let mut i = 0;
            b.iter(|| {
                let allowed = contender.decide(black_box(&keys[i]));
                i += 1;
                if i == keys.len() {
                    i = 0;
                }
                allowed
            });
        } else {
            b.iter_custom(|iters| two_threads(&contender, keys, iters));
        }
    });
    // Allowed until the end: the benchmark measured decisions that admit, as intended.
    assert!(
        keys.iter().take(1000).all(|k| contender.decide(k)),
        "{name}: a decision was refused; raise the burst"
    );
}

fn bench_case(c: &mut Criterion, case: &str, keys: &[String], threads: usize) {
    let mut group = c.benchmark_group(case);
    let check = PierCheck {
        limiter: Limiter::local(Arc::new(SystemClock), MAX_KEYS),
        policy: policy(),
    };
    bench_one(&mut group, "pier_check", check, keys, threads);
    let decide = PierDecide {
        store: LocalStore::new(MAX_KEYS),
        policy: policy(),
        now: now_ms(),
    };
    bench_one(&mut group, "pier_decide", decide, keys, threads);
    bench_one(&mut group, "governor", Governor(governor()), keys, threads);
    group.finish();
}

fn local(c: &mut Criterion) {
    let one = vec!["user:0".to_owned()];
    let many: Vec<String> = (0..MANY_KEYS).map(|i| format!("user:{i}")).collect();
    bench_case(c, "1key_1thread", &one, 1);
    bench_case(c, "1key_2threads", &one, 2);
    bench_case(c, "100k_keys_1thread", &many, 1);
    bench_case(c, "100k_keys_2threads", &many, 2);
    with_recorder(c, &one, &many);
}

/// `Limiter::check` as in `pier serve`, which installs a Prometheus recorder: every decision then
/// also updates its counter there. Last, because the recorder is process-wide from then on.
fn with_recorder(c: &mut Criterion, one: &[String], many: &[String]) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    metrics::set_global_recorder(recorder).expect("no recorder installed before");
    let mut group = c.benchmark_group("prometheus_recorder");
    for (name, keys) in [("pier_check_1key", one), ("pier_check_100k_keys", many)] {
        let check = PierCheck {
            limiter: Limiter::local(Arc::new(SystemClock), MAX_KEYS),
            policy: policy(),
        };
        bench_one(&mut group, name, check, keys, 1);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = local
}
criterion_main!(benches);
