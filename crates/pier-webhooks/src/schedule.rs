//! When a failed delivery is tried again: a fixed schedule of delays with jitter, stretched to
//! honour a receiver's `Retry-After` within a bound.

use std::time::Duration;

use rand::Rng;

/// The delays before each attempt: the first is usually zero (send at once), and one attempt is
/// made per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

/// How far each delay is spread, as a fraction of it either way, so endpoints that failed
/// together (an outage) are not retried together.
const JITTER: f64 = 0.1;

impl RetrySchedule {
    /// `delays` must not be empty.
    pub fn new(delays: Vec<Duration>) -> Result<Self, String> {
        if delays.is_empty() {
            return Err("must list at least one delay".to_owned());
        }
        Ok(Self(delays))
    }

    /// Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h: eight attempts over about a
    /// day and a half.
    pub fn standard() -> Self {
        let secs = [0, 5, 300, 1800, 7200, 18_000, 36_000, 36_000];
        Self(secs.into_iter().map(Duration::from_secs).collect())
    }

    /// How far apart two failures of an endpoint may be and still belong to one streak:
    /// twice the longest a delivery waits between attempts (the longest delay jittered up, or
    /// a `Retry-After` up to `max_retry_after`), leaving room for the retry to be picked up
    /// late. Failures further apart are not one outage being retried.
    pub fn streak_gap(&self, max_retry_after: Duration) -> Duration {
        let longest = self.0.iter().max().copied().unwrap_or_default();
        longest.mul_f64(1.0 + JITTER).max(max_retry_after) * 2
    }

    /// Attempts in all.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }

    /// The wait after failed attempt number `attempt` (1 for the first), jittered, or `None`
    /// when that was the last one. A `Retry-After` longer than the schedule's wait replaces
    /// it, capped at `max_retry_after`.
    pub fn after_failure(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        max_retry_after: Duration,
    ) -> Option<Duration> {
        let next = self.0.get(usize::try_from(attempt).ok()?)?;
        let jittered = next.mul_f64(1.0 + rand::rng().random_range(-JITTER..=JITTER));
        Some(match retry_after {
            Some(asked) => jittered.max(asked.min(max_retry_after)),
            None => jittered,
        })
    }
}

/// The most attempts a schedule may list.
pub const MAX_ATTEMPTS: usize = 50;

impl std::str::FromStr for RetrySchedule {
    type Err = String;

    /// Delays separated by commas or spaces: `0, 5s, 5m, 30m, 2h, 5h, 10h, 10h`.
    fn from_str(text: &str) -> Result<Self, String> {
        let delays = text
            .split([',', ' '])
            .filter(|part| !part.is_empty())
            .map(|part| {
                pier_core::clock::parse_seconds(part)
                    .map(Duration::from_secs)
                    .ok_or_else(|| {
                        format!("`{part}` is not a delay (a whole number with s, m, h or d)")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > MAX_ATTEMPTS {
            return Err(format!("must list at most {MAX_ATTEMPTS} delays"));
        }
        Self::new(delays)
    }
}

impl std::fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|d| match d.as_secs() {
                0 => "0".to_owned(),
                s if s % 3600 == 0 => format!("{}h", s / 3600),
                s if s % 60 == 0 => format!("{}m", s / 60),
                s => format!("{s}s"),
            })
            .collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_schedule_with_bounded_jitter_then_stops() {
        let schedule = RetrySchedule::standard();
        assert_eq!(schedule.attempts(), 8);
        let cap = Duration::from_secs(3600);
        let five = schedule
            .after_failure(1, None, cap)
            .expect("second attempt");
        assert!((4500..=5500).contains(&five.as_millis()), "{five:?}");
        let last = schedule
            .after_failure(7, None, cap)
            .expect("eighth attempt");
        assert!((32_400..=39_600).contains(&last.as_secs()), "{last:?}");
        assert_eq!(schedule.after_failure(8, None, cap), None);
    }

    #[test]
    fn reads_and_shows_the_written_form() {
        let schedule: RetrySchedule = "0, 5s, 5m, 30m, 2h, 5h, 10h, 10h".parse().expect("valid");
        assert_eq!(schedule, RetrySchedule::standard());
        assert_eq!(schedule.to_string(), "0, 5s, 5m, 30m, 2h, 5h, 10h, 10h");
        assert!("".parse::<RetrySchedule>().is_err());
        assert!("5x".parse::<RetrySchedule>().is_err());
        assert!("1 ".repeat(51).parse::<RetrySchedule>().is_err());
    }

    #[test]
    fn retry_after_stretches_the_wait_within_its_bound() {
        let schedule = RetrySchedule::standard();
        let cap = Duration::from_secs(600);
        let asked = schedule.after_failure(1, Some(Duration::from_secs(120)), cap);
        assert_eq!(asked, Some(Duration::from_secs(120)));
        let capped = schedule.after_failure(1, Some(Duration::from_secs(86_400)), cap);
        assert_eq!(capped, Some(cap));
        // A shorter Retry-After does not hurry the schedule.
        let shorter = schedule
            .after_failure(2, Some(Duration::from_secs(1)), cap)
            .expect("third attempt");
        assert!(shorter >= Duration::from_secs(270), "{shorter:?}");
    }
}
