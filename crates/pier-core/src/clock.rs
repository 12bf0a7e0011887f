//! Time is injected (`docs/architecture.md`, invariant 5): code asks a [`Clock`], tests move a [`ManualClock`]
//! instead of sleeping. Timestamps are whole microseconds since the Unix epoch so that both
//! backends store, compare and order them identically as 64-bit integers.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time with microsecond precision, serialized as RFC 3339 in UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (any offset); `None` when the text is not a valid timestamp.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| Self(t.with_timezone(&Utc).timestamp_micros()))
    }

    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_micros(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// Whole seconds since the epoch, as HTTP headers and JWT claims want them.
    pub const fn as_unix_seconds(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }

    #[must_use]
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }

    /// How long after `earlier` this is; zero when it is not after it.
    pub fn duration_since(self, earlier: Self) -> Duration {
        Duration::from_micros(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse_rfc3339(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("`{text}` is not an RFC 3339 timestamp"))
        })
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .examples([serde_json::json!("2026-01-31T12:00:00.000000Z")])
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

/// The source of "now" for everything that stores or compares time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> Timestamp;

    /// Milliseconds since the epoch, for hot paths that need no finer resolution (a rate-limit
    /// decision): the same time as [`now`](Self::now), possibly read more cheaply.
    fn millis(&self) -> i64 {
        self.now().as_micros().div_euclid(1000)
    }
}

/// Wall-clock time, read cheaply: each thread anchors the CPU's cycle counter to the system
/// clock and re-anchors at least once a second, so a reading costs a counter read (about 10 ns
/// here, against about 40 ns for the system clock) and strays from the system clock by no more
/// than the counter drifts in a second (microseconds at worst). The rate limiter reads the time
/// on every decision, so this matters. Where the counter is unreliable, `quanta` falls back to
/// the OS clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// How long a thread's anchor is trusted, in nanoseconds of the counter.
const REANCHOR_NANOS: u64 = 1_000_000_000;

fn counter() -> &'static quanta::Clock {
    static COUNTER: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    COUNTER.get_or_init(quanta::Clock::new)
}

fn system_micros() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

thread_local! {
    /// (counter reading, wall-clock micros at that reading); zero until first used.
    static ANCHOR: std::cell::Cell<(u64, i64)> = const { std::cell::Cell::new((0, 0)) };
}

/// Whether this process keeps `quanta`'s recent time fresh (a thread refreshing it every
/// millisecond). Started on first use; if another owner runs it, we do not rely on it.
fn recent_time_kept() -> bool {
    static KEPT: std::sync::OnceLock<Option<quanta::Handle>> = std::sync::OnceLock::new();
    KEPT.get_or_init(|| quanta::Upkeep::new(Duration::from_millis(1)).start().ok())
        .is_some()
}

thread_local! {
    /// (recent instant, wall-clock milliseconds then), for [`SystemClock::millis`].
    static MILLIS_ANCHOR: std::cell::Cell<Option<(quanta::Instant, i64)>> =
        const { std::cell::Cell::new(None) };
}

impl Clock for SystemClock {
    /// The recent time a background thread refreshes every millisecond (about 1 ns to read),
    /// anchored to the system clock per thread and re-anchored each second.
    fn millis(&self) -> i64 {
        if !recent_time_kept() {
            return self.now().as_micros().div_euclid(1000);
        }
        let recent = quanta::Instant::recent();
        MILLIS_ANCHOR.with(|anchor| match anchor.get() {
            Some((at, wall))
                if recent >= at && recent.duration_since(at) < Duration::from_secs(1) =>
            {
                wall + i64::try_from(recent.duration_since(at).as_millis()).unwrap_or(0)
            }
            _ => {
                let wall = system_micros().div_euclid(1000);
                anchor.set(Some((recent, wall)));
                wall
            }
        })
    }

    fn now(&self) -> Timestamp {
        let counter = counter();
        let raw = counter.raw();
        ANCHOR.with(|anchor| {
            let (at, wall) = anchor.get();
            let elapsed = counter.delta_as_nanos(at, raw);
            if at == 0 || raw < at || elapsed >= REANCHOR_NANOS {
                let wall = system_micros();
                anchor.set((raw, wall));
                Timestamp(wall)
            } else {
                Timestamp(wall + i64::try_from(elapsed / 1000).unwrap_or(0))
            }
        })
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }

    /// Starts at the current wall-clock time, so data looks realistic.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    pub fn advance(&self, by: Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.0.fetch_add(micros, Ordering::SeqCst);
    }

    pub fn set(&self, to: Timestamp) {
        self.0.store(to.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// A span of time as settings write it, in seconds: `60`, `60s`, `5m`, `1h` or `1d` (a whole
/// number, seconds when it has no unit).
pub fn parse_seconds(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_microseconds() {
        let t = Timestamp::parse_rfc3339("2026-11-28T10:00:00.123456+02:00").expect("valid");
        assert_eq!(t.to_rfc3339(), "2026-11-28T08:00:00.123456Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn the_system_clock_follows_the_wall_clock() {
        for _ in 0..3 {
            let ours = SystemClock.now().as_micros();
            let millis = SystemClock.millis();
            let wall = Utc::now().timestamp_micros();
            assert!((wall - ours).abs() < 50_000, "{ours} vs {wall}");
            assert!((wall / 1000 - millis).abs() < 50, "{millis} vs {wall}");
            std::thread::sleep(Duration::from_millis(600));
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_micros(1_000_000));
        let shared = clock.clone();
        clock.advance(Duration::from_millis(1500));
        assert_eq!(shared.now(), Timestamp::from_micros(2_500_000));
        assert_eq!(shared.now().as_unix_seconds(), 2);
    }
}
