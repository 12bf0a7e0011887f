//! Shared by the limiter suites: reference models, the two stores, and a Redis proxy that can
//! be stopped.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pier_core::{Clock, ManualClock, Timestamp};
use pier_ratelimit::{Algorithm, Limiter, PolicySpec, RedisStore};
use redis::aio::ConnectionManager;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A clock at a whole second, so window boundaries fall where the tests expect.
pub fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_micros(1_767_225_600_000_000))
}

pub fn now_ms(clock: &ManualClock) -> i64 {
    clock.now().as_micros() / 1000
}

/// Which store a suite runs on.
#[derive(Debug, Clone, Copy)]
pub enum Store {
    Local,
    Redis,
}

pub async fn redis_conn(url: &str) -> ConnectionManager {
    redis::Client::open(url)
        .expect("valid Redis URL")
        .get_connection_manager()
        .await
        .expect("Redis is reachable")
}

/// A limiter on `store`, deciding at `clock`'s time.
pub async fn limiter(store: Store, clock: &ManualClock) -> Limiter {
    let local = Limiter::local(Arc::new(clock.clone()), 100_000);
    match store {
        Store::Local => local,
        Store::Redis => {
            let conn = redis_conn(&pier_testkit::redis_url()).await;
            let redis = RedisStore::new(conn).deciding_at(Arc::new(clock.clone()));
            local.with_redis(redis, Duration::from_secs(5))
        }
    }
}

/// A key no other test (or earlier run) uses.
pub fn fresh_key(prefix: &str) -> String {
    format!("{prefix}-{}", rand::random::<u64>())
}

/// The reference a limiter must agree with: the same policy, written the obvious way.
#[derive(Debug, Clone)]
pub enum Model {
    /// A token bucket holding up to `burst` tokens, refilled by `limit` per period; tokens are
    /// scaled by the period in ms so refills stay whole.
    Bucket {
        tokens: i128,
        at: i64,
        spec: PolicySpec,
    },
    /// Every admitted request, `(ms, cost)`.
    Log {
        admitted: Vec<(i64, i64)>,
        spec: PolicySpec,
    },
}

impl Model {
    pub fn new(spec: PolicySpec, start: i64) -> Self {
        match spec.algorithm() {
            Algorithm::Gcra => Self::Bucket {
                tokens: i128::from(spec.burst()) * period(&spec),
                at: start,
                spec,
            },
            _ => Self::Log {
                admitted: Vec::new(),
                spec,
            },
        }
    }

    /// Whether `cost` would be admitted at `now`, and the units that would remain.
    pub fn admits(&self, now: i64, cost: i64) -> (bool, i64) {
        match self {
            Self::Bucket { tokens, at, spec } => {
                let p = period(spec);
                let full = i128::from(spec.burst()) * p;
                let have = (tokens + i128::from(now - at) * i128::from(spec.limit())).min(full);
                let allowed = have >= i128::from(cost) * p;
                let left = if allowed {
                    have - i128::from(cost) * p
                } else {
                    have
                };
                (allowed, i64::try_from(left / p).expect("small"))
            }
            Self::Log { admitted, spec } => {
                let p = i64::try_from(period(spec)).expect("small");
                let l = i64::try_from(spec.limit()).expect("small");
                let index = now.div_euclid(p);
                let in_window = |i: i64| -> i64 {
                    admitted
                        .iter()
                        .filter(|(t, _)| t.div_euclid(p) == i)
                        .map(|(_, c)| c)
                        .sum()
                };
                let current = in_window(index);
                match spec.algorithm() {
                    Algorithm::FixedWindow => {
                        let allowed = current + cost <= l;
                        (allowed, l - current - if allowed { cost } else { 0 })
                    }
                    _ => {
                        // previous × (p − elapsed) / p + current + cost ≤ limit, times p.
                        let weighted = in_window(index - 1) * (p - (now - index * p));
                        let allowed = weighted + (current + cost) * p <= l * p;
                        let held = current + if allowed { cost } else { 0 };
                        (allowed, ((l * p - weighted) / p - held).max(0))
                    }
                }
            }
        }
    }

    /// Records an admitted request.
    pub fn admit(&mut self, now: i64, cost: i64) {
        match self {
            Self::Bucket { tokens, at, spec } => {
                let p = period(spec);
                let full = i128::from(spec.burst()) * p;
                *tokens = (*tokens + i128::from(now - *at) * i128::from(spec.limit())).min(full)
                    - i128::from(cost) * p;
                *at = now;
            }
            Self::Log { admitted, .. } => admitted.push((now, cost)),
        }
    }

    /// Admitted units per epoch-aligned window, and the most admitted in any span of one period.
    pub fn window_totals(&self) -> Option<(BTreeMap<i64, i64>, i64)> {
        let Self::Log { admitted, spec } = self else {
            return None;
        };
        let p = i64::try_from(period(spec)).expect("small");
        let mut per_window = BTreeMap::new();
        for (t, c) in admitted {
            *per_window.entry(t.div_euclid(p)).or_insert(0) += c;
        }
        let most_in_a_span = admitted
            .iter()
            .map(|(start, _)| {
                admitted
                    .iter()
                    .filter(|(t, _)| *t >= *start && *t < start + p)
                    .map(|(_, c)| c)
                    .sum::<i64>()
            })
            .max()
            .unwrap_or(0);
        Some((per_window, most_in_a_span))
    }
}

fn period(spec: &PolicySpec) -> i128 {
    i128::from(u32::try_from(spec.period().as_millis()).expect("small period"))
}

/// A TCP proxy in front of Redis that a test can stop (connections reset, nothing listening)
/// or mute (requests reach Redis, answers never come back).
#[derive(Debug)]
pub struct RedisProxy {
    pub url: String,
    tasks: JoinSet<()>,
    muted: Arc<AtomicBool>,
}

impl RedisProxy {
    pub async fn start(target: &str) -> Self {
        let target = target
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("redis://{}", listener.local_addr().expect("addr"));
        let muted = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        let mute = muted.clone();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let mute = mute.clone();
                connections.spawn(async move {
                    tokio::io::copy(&mut client_read, &mut server_write)
                        .await
                        .ok();
                });
                connections.spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                        if !mute.load(Ordering::SeqCst)
                            && client_write.write_all(&buf[..n]).await.is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        Self { url, tasks, muted }
    }

    /// Keeps connections open but drops every answer, as a stalled Redis would.
    pub fn mute(&self) {
        self.muted.store(true, Ordering::SeqCst);
    }

    /// Stops forwarding: every connection closes and nothing listens any more.
    pub fn stop(&mut self) {
        self.tasks.abort_all();
    }
}
