//! The turns of throttled endpoints on this node. When an endpoint's rate limit refuses a
//! delivery, the delivery is given back to the job engine until a turn: the first after the
//! limiter's `Retry-After` that no other delivery of that endpoint on this node has taken, one
//! rate interval after the last one handed out. A backlog thus goes back to the queue spread
//! over its turns (500 deliveries at 5/s: one every 200 ms for 100 s) instead of all coming due
//! together and being refused again. A turn is a hint, not a right: a delivery that comes due
//! asks the limiter again (another node may have used the capacity), so the rate holds across
//! nodes whatever the turns say.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use pier_core::Timestamp;

/// Endpoints whose turns are remembered at most; beyond it, turns already past are forgotten
/// (and at worst a refused delivery falls back to the limiter's own `Retry-After`).
const MAX_ENDPOINTS: usize = 10_000;

/// The next free turn of each throttled endpoint, keyed by workspace and endpoint id.
#[derive(Debug, Default)]
pub(super) struct Turns(Mutex<HashMap<(String, String), Timestamp>>);

impl Turns {
    /// Hands out the next turn of `endpoint` (workspace and endpoint id) no earlier than `earliest`, and moves its next free
    /// turn one `interval` later.
    pub(super) fn reserve(
        &self,
        endpoint: (&str, &str),
        earliest: Timestamp,
        interval: Duration,
        now: Timestamp,
    ) -> Timestamp {
        let mut turns = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if turns.len() >= MAX_ENDPOINTS {
            turns.retain(|_, next| *next > now);
        }
        let key = (endpoint.0.to_owned(), endpoint.1.to_owned());
        let next = turns.entry(key).or_insert(earliest);
        let turn = (*next).max(earliest);
        *next = turn.saturating_add(interval);
        turn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_is_spread_over_turns_at_the_rate() {
        let turns = Turns::default();
        let endpoint = ("ws_1", "ep_1");
        let now = Timestamp::from_micros(1_000_000);
        let earliest = now.saturating_add(Duration::from_millis(200));
        let interval = Duration::from_millis(200);
        let handed: Vec<i64> = (0..4)
            .map(|_| turns.reserve(endpoint, earliest, interval, now).as_micros())
            .collect();
        assert_eq!(handed, [1_200_000, 1_400_000, 1_600_000, 1_800_000]);
        // A later refusal whose Retry-After lies beyond the free turn starts from there.
        let late = now.saturating_add(Duration::from_secs(5));
        assert_eq!(turns.reserve(endpoint, late, interval, now), late);
        // Another endpoint has turns of its own.
        let other = ("ws_1", "ep_2");
        assert_eq!(turns.reserve(other, earliest, interval, now), earliest);
    }

    #[test]
    fn the_map_forgets_past_turns_when_full() {
        let turns = Turns::default();
        let now = Timestamp::from_micros(10_000_000);
        let past = Timestamp::from_micros(1);
        for i in 0..MAX_ENDPOINTS {
            let endpoint = format!("ep_{i}");
            turns.reserve(("ws_1", &endpoint), past, Duration::from_millis(1), past);
        }
        turns.reserve(("ws_2", "ep_new"), now, Duration::from_millis(1), now);
        let kept = turns.0.lock().expect("lock").len();
        assert_eq!(
            kept, 1,
            "turns in the past are forgotten once the map is full"
        );
    }
}
