//! The cache's promises, each against a counting loader under a clock the test moves.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pier_cache::{Cache, Settings};
use pier_core::ManualClock;
use tokio::sync::Notify;

const SETTINGS: Settings = Settings {
    capacity: 10_000,
    ttl: Duration::from_secs(10),
    negative_ttl: Duration::from_secs(1),
    jitter: 0.0,
};

fn cache(settings: Settings) -> (Cache<String>, ManualClock) {
    let clock = ManualClock::starting_now();
    (Cache::new("test", settings, Arc::new(clock.clone())), clock)
}

/// A loader that counts its calls and answers `value`.
fn counting(
    calls: &AtomicUsize,
    value: Option<&str>,
) -> impl Fn() -> std::future::Ready<Result<Option<String>, Infallible>> {
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(value.map(str::to_owned)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_key_is_loaded_once_for_every_concurrent_caller() {
    let (cache, _) = cache(SETTINGS);
    let calls = Arc::new(AtomicUsize::new(0));
    let callers = (0..100).map(|_| {
        let (cache, calls) = (cache.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .get_or_load("hot", || {
                    let calls = calls.clone();
                    async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, Infallible>(Some("value".to_owned()))
                    }
                })
                .await
                .expect("loads")
        })
    });
    for caller in callers.collect::<Vec<_>>() {
        assert_eq!(caller.await.expect("joins").as_deref(), Some("value"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn values_live_their_ttl_and_absences_their_shorter_one() {
    let (cache, clock) = cache(SETTINGS);
    let (found, absent) = (AtomicUsize::new(0), AtomicUsize::new(0));
    for _ in 0..3 {
        let got = cache
            .get_or_load("there", counting(&found, Some("v")))
            .await;
        assert_eq!(got.expect("loads").as_deref(), Some("v"));
        let got = cache.get_or_load("missing", counting(&absent, None)).await;
        assert_eq!(got.expect("loads"), None);
    }
    assert_eq!(
        (found.load(Ordering::SeqCst), absent.load(Ordering::SeqCst)),
        (1, 1)
    );

    clock.advance(SETTINGS.negative_ttl);
    cache
        .get_or_load("there", counting(&found, Some("v")))
        .await
        .expect("loads");
    cache
        .get_or_load("missing", counting(&absent, None))
        .await
        .expect("loads");
    assert_eq!(
        (found.load(Ordering::SeqCst), absent.load(Ordering::SeqCst)),
        (1, 2),
        "the absence expired, the value did not"
    );

    clock.advance(SETTINGS.ttl);
    cache
        .get_or_load("there", counting(&found, Some("v")))
        .await
        .expect("loads");
    assert_eq!(found.load(Ordering::SeqCst), 2, "the value expired");
}

#[tokio::test]
async fn jitter_shortens_lives_within_its_share_and_never_lengthens_them() {
    let settings = Settings {
        jitter: 0.5,
        ..SETTINGS
    };
    let (cache, clock) = cache(settings);
    let calls = AtomicUsize::new(0);
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    for key in &keys {
        cache
            .get_or_load(key, counting(&calls, Some("v")))
            .await
            .expect("loads");
    }
    // Before half the TTL nothing has expired; by the TTL everything has; between, some.
    let reloads = |calls: &AtomicUsize| calls.load(Ordering::SeqCst) - keys.len();
    clock.advance(settings.ttl / 2 - Duration::from_millis(1));
    for key in &keys {
        cache
            .get_or_load(key, counting(&calls, Some("v")))
            .await
            .expect("loads");
    }
    assert_eq!(reloads(&calls), 0);
    clock.advance(settings.ttl / 4);
    for key in &keys {
        cache
            .get_or_load(key, counting(&calls, Some("v")))
            .await
            .expect("loads");
    }
    let between = reloads(&calls);
    assert!(
        between > 0 && between < keys.len(),
        "{between} of {} reloaded",
        keys.len()
    );
}

#[tokio::test]
async fn an_invalidated_key_is_loaded_again() {
    let (cache, _) = cache(SETTINGS);
    let calls = AtomicUsize::new(0);
    cache
        .get_or_load("k", counting(&calls, Some("old")))
        .await
        .expect("loads");
    cache.invalidate("k");
    let got = cache.get_or_load("k", counting(&calls, Some("new"))).await;
    assert_eq!(got.expect("loads").as_deref(), Some("new"));
    cache.clear();
    let got = cache
        .get_or_load("k", counting(&calls, Some("newer")))
        .await;
    assert_eq!(got.expect("loads").as_deref(), Some("newer"));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// The race a cache in front of a database has: a load reads the row, the row is updated and
/// the key invalidated, then the load finishes. Neither a caller that arrived after the
/// invalidation and joined the load (`joined`), nor anyone later, may get the old row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_in_flight_cannot_undo_an_invalidation() {
    for joined in [false, true] {
        load_across_an_invalidation(joined).await;
    }
}

async fn load_across_an_invalidation(joined: bool) {
    let (cache, _) = cache(SETTINGS);
    let row = Arc::new(std::sync::Mutex::new("old".to_owned()));
    let (read, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let slow = {
        let (cache, row, read, release) =
            (cache.clone(), row.clone(), read.clone(), release.clone());
        tokio::spawn(async move {
            cache
                .get_or_load("k", || {
                    let (row, read, release) = (row.clone(), read.clone(), release.clone());
                    async move {
                        let seen = row.lock().expect("row").clone();
                        read.notify_one();
                        release.notified().await;
                        Ok::<_, Infallible>(Some(seen))
                    }
                })
                .await
        })
    };
    read.notified().await;
    *row.lock().expect("row") = "new".to_owned();
    cache.invalidate("k");
    let current = row.clone();
    let read_row = move || {
        let seen = current.lock().expect("row").clone();
        std::future::ready(Ok::<_, Infallible>(Some(seen)))
    };
    let fresh = joined.then(|| {
        let (cache, read_row) = (cache.clone(), read_row.clone());
        tokio::spawn(async move { cache.get_or_load("k", read_row).await })
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    release.notify_one();
    let _ = slow.await.expect("joins");
    if let Some(fresh) = fresh {
        let got = fresh.await.expect("joins").expect("loads");
        assert_eq!(got.as_deref(), Some("new"), "a caller after the write");
    }
    let later = cache.get_or_load("k", read_row).await.expect("loads");
    assert_eq!(
        later.as_deref(),
        Some("new"),
        "the cache never serves the old row"
    );
}

#[tokio::test]
async fn failed_loads_are_not_cached() {
    let (cache, _) = cache(SETTINGS);
    let failing = || std::future::ready(Err::<Option<String>, _>("database down"));
    assert_eq!(
        *cache.get_or_load("k", failing).await.expect_err("fails"),
        "database down"
    );
    let calls = AtomicUsize::new(0);
    let got = cache.get_or_load("k", counting(&calls, Some("v"))).await;
    assert_eq!(got.expect("loads").as_deref(), Some("v"));
}

#[tokio::test]
async fn memory_stays_within_the_capacity() {
    let settings = Settings {
        capacity: 1_000,
        ..SETTINGS
    };
    let (cache, _) = cache(settings);
    let calls = AtomicUsize::new(0);
    for i in 0..20_000 {
        cache
            .get_or_load(&format!("k{i}"), counting(&calls, Some("v")))
            .await
            .expect("loads");
    }
    cache.sync().await;
    assert!(cache.len() <= 1_000, "{} entries", cache.len());
}

/// Every outcome is counted under the cache's name, as Prometheus renders it.
#[tokio::test]
async fn hits_misses_loads_and_evictions_are_counted() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let rendered = recorder.handle();
    let clock = ManualClock::starting_now();
    let settings = Settings {
        capacity: 2,
        ..SETTINGS
    };
    let cache = metrics::with_local_recorder(&recorder, || {
        Cache::new("counted", settings, Arc::new(clock.clone()))
    });
    let calls = AtomicUsize::new(0);
    for key in ["a", "a", "a", "gone", "b", "c", "d"] {
        let value = (key != "gone").then_some("v");
        cache
            .get_or_load(key, counting(&calls, value))
            .await
            .expect("loads");
    }
    let failing = || std::future::ready(Err::<Option<String>, _>("down"));
    cache.get_or_load("e", failing).await.expect_err("fails");
    cache.sync().await;
    let text = rendered.render();
    for line in [
        r#"pier_cache_hits_total{cache="counted"} 2"#,
        r#"pier_cache_misses_total{cache="counted"} 6"#,
        r#"pier_cache_loads_total{cache="counted",outcome="found"} 4"#,
        r#"pier_cache_loads_total{cache="counted",outcome="absent"} 1"#,
        r#"pier_cache_loads_total{cache="counted",outcome="failed"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    let evicted = text
        .lines()
        .find(|l| l.starts_with(r#"pier_cache_evictions_total{cache="counted",reason="size"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        evicted >= 3,
        "5 entries into a capacity of 2: {evicted} evicted\n{text}"
    );
}
