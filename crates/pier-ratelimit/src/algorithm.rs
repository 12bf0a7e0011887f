//! The three algorithms as pure functions of (quota, stored state, now, cost).
//!
//! Time is whole milliseconds and every quantity an integer, so a decision is exact and the Redis
//! script (`decide.lua`, which mirrors this file line for line in Lua's doubles) reaches the same
//! one: [`Quota::new`] keeps every intermediate value below 2^53, where doubles are exact.
//!
//! - **GCRA** (the generic cell rate algorithm, a token bucket that stores one time instead of a
//!   count): each unit of cost pushes the key's *theoretical arrival time* (TAT) `period / limit`
//!   into the future; a request is admitted while the TAT stays within `burst` units of now. So a
//!   quiet key may spend `burst` units at once and then `limit` per `period`, smoothly. To stay
//!   exact when `period / limit` is not a whole number of milliseconds, the TAT is kept in units of
//!   `1 / limit` ms (`tat` in ms plus `frac`).
//! - **Fixed window**: at most `limit` per window, windows aligned to the Unix epoch.
//! - **Sliding window**: the count of the current window plus the previous window's count weighted
//!   by how much of it the sliding period still covers. It stores two counters, not a log, and is
//!   an estimate: it assumes the previous window's requests were spread evenly. The bound: every
//!   epoch-aligned window admits at most `limit`, and any span of one period admits fewer than
//!   `2 × limit` (reached only when the previous window's requests all came at its very end).

use std::time::Duration;

use crate::policy::Algorithm;

/// A policy's numbers in the units the algorithms use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub algorithm: Algorithm,
    pub limit: i64,
    pub period_ms: i64,
    /// The most units spendable at once: `burst` for GCRA, `limit` for the windows.
    pub capacity: i64,
}

/// What a store keeps for one key. Absent state and state that has run out (see
/// [`Outcome::expires_at`]) mean the same: a full quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The theoretical arrival time: `tat` ms plus `frac / limit` ms.
    Gcra { tat: i64, frac: i64 },
    /// The count of the window numbered `index` (`now / period`) and of the one before it (kept
    /// by the sliding window only).
    Window {
        index: i64,
        count: i64,
        previous: i64,
    },
}

/// One policy's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The policy's limit per period.
    pub limit: u64,
    /// Units that could still be spent now, after this request.
    pub remaining: u64,
    /// How long until the quota is whole again.
    pub reset_after: Duration,
    /// How long until the same request would be allowed; zero when it was.
    pub retry_after: Duration,
}

/// A decision and, when it consumed quota, the state to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    /// The new state, `None` when nothing changes.
    pub next: Option<State>,
    /// When the stored state becomes equivalent to no state at all (the store may forget it).
    pub expires_at: i64,
}

/// Decides `cost` units for a key whose stored state is `state`, at `now` (ms since the epoch).
/// `consume: false` answers without spending (peek, dry runs, or a batch with a refusal in it).
/// `cost` must be from 1 to `quota.capacity`.
pub fn decide(quota: &Quota, state: Option<State>, now: i64, cost: i64, consume: bool) -> Outcome {
    match quota.algorithm {
        Algorithm::Gcra => gcra(quota, state, now, cost, consume),
        Algorithm::FixedWindow => fixed_window(quota, state, now, cost, consume),
        Algorithm::SlidingWindow => sliding_window(quota, state, now, cost, consume),
    }
}

fn gcra(q: &Quota, state: Option<State>, now: i64, cost: i64, consume: bool) -> Outcome {
    let l = q.limit;
    // Debt: how far the TAT is ahead of now, in 1/limit ms (one unit of cost is `period` of it).
    let debt = match state {
        Some(State::Gcra { tat, frac }) if tat >= now => (tat - now) * l + frac,
        _ => 0,
    };
    let capacity = q.capacity * q.period_ms;
    let need = cost * q.period_ms;
    let allowed = debt + need <= capacity;
    let after = if allowed && consume {
        debt + need
    } else {
        debt
    };
    let held = if allowed { debt + need } else { debt };
    // One division gives the new TAT, its remainder and when it runs out.
    let (whole, frac) = (after / l, after % l);
    let runs_out = whole + i64::from(frac > 0);
    Outcome {
        decision: Decision {
            allowed,
            limit: to_u64(l),
            remaining: to_u64((capacity - held) / q.period_ms),
            reset_after: millis(if held == after {
                runs_out
            } else {
                ceil_div(held, l)
            }),
            retry_after: millis(if allowed {
                0
            } else {
                ceil_div(debt + need - capacity, l)
            }),
        },
        next: (allowed && consume).then_some(State::Gcra {
            tat: now + whole,
            frac,
        }),
        expires_at: now + runs_out,
    }
}

fn fixed_window(q: &Quota, state: Option<State>, now: i64, cost: i64, consume: bool) -> Outcome {
    let index = now.div_euclid(q.period_ms);
    let count = match state {
        Some(State::Window {
            index: stored,
            count,
            ..
        }) if stored == index => count,
        _ => 0,
    };
    let allowed = count + cost <= q.limit;
    let held = if allowed { count + cost } else { count };
    let ends = (index + 1) * q.period_ms;
    Outcome {
        decision: Decision {
            allowed,
            limit: to_u64(q.limit),
            remaining: to_u64(q.limit - held),
            reset_after: millis(if held > 0 { ends - now } else { 0 }),
            retry_after: millis(if allowed { 0 } else { ends - now }),
        },
        next: (allowed && consume).then_some(State::Window {
            index,
            count: held,
            previous: 0,
        }),
        expires_at: ends,
    }
}

fn sliding_window(q: &Quota, state: Option<State>, now: i64, cost: i64, consume: bool) -> Outcome {
    let (p, l) = (q.period_ms, q.limit);
    let index = now.div_euclid(p);
    let elapsed = now - index * p;
    let (count, previous) = match state {
        Some(State::Window {
            index: stored,
            count,
            previous,
        }) if stored == index => (count, previous),
        Some(State::Window {
            index: stored,
            count,
            ..
        }) if stored == index - 1 => (0, count),
        _ => (0, 0),
    };
    // Everything is scaled by the period: the estimate is `previous × (p − elapsed) / p + count`.
    let weighted = previous * (p - elapsed);
    let allowed = weighted + (count + cost) * p <= l * p;
    let held = if allowed { count + cost } else { count };
    let remaining = ((l * p - weighted) / p - held).max(0);
    let window_end = (index + 1) * p;
    let reset_at = if held > 0 {
        window_end + p
    } else if previous > 0 {
        window_end
    } else {
        now
    };
    let retry_at = if allowed {
        now
    } else if count + cost <= l {
        // Later in this window, once the previous window's weight has fallen far enough.
        index * p + p - ((l - count - cost) * p) / previous
    } else {
        // In the next window, where this window's count is the one that fades.
        window_end + p - ((l - cost) * p) / count
    };
    Outcome {
        decision: Decision {
            allowed,
            limit: to_u64(l),
            remaining: to_u64(remaining),
            reset_after: millis(reset_at - now),
            retry_after: millis(retry_at - now),
        },
        next: (allowed && consume).then_some(State::Window {
            index,
            count: held,
            previous,
        }),
        expires_at: if held > 0 { window_end + p } else { window_end },
    }
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1).div_euclid(b)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(to_u64(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(algorithm: Algorithm, limit: i64, period_ms: i64, capacity: i64) -> Quota {
        Quota {
            algorithm,
            limit,
            period_ms,
            capacity,
        }
    }

    /// Applies a run of checks, each `(ms after start, cost)`, and returns what was allowed.
    fn run(q: &Quota, arrivals: &[(i64, i64)]) -> Vec<bool> {
        let mut state = None;
        let start = 1_700_000_000_000;
        arrivals
            .iter()
            .map(|&(at, cost)| {
                let out = decide(q, state, start + at, cost, true);
                if let Some(next) = out.next {
                    state = Some(next);
                }
                out.decision.allowed
            })
            .collect()
    }

    #[test]
    fn gcra_spends_the_burst_then_one_unit_per_interval() {
        // 10 per second (one per 100 ms), bursts of 3.
        let q = quota(Algorithm::Gcra, 10, 1000, 3);
        let got = run(
            &q,
            &[(0, 1), (0, 1), (0, 1), (0, 1), (99, 1), (100, 1), (150, 1)],
        );
        assert_eq!(got, [true, true, true, false, false, true, false]);
    }

    #[test]
    fn gcra_stays_exact_when_the_interval_is_a_fraction_of_a_millisecond() {
        // 3 per 1 ms: after the burst, exactly 3 more per millisecond, never 4.
        let q = quota(Algorithm::Gcra, 3, 1, 3);
        let mut state = None;
        let mut admitted = 0;
        for now in 0..1000 {
            for _ in 0..5 {
                let out = decide(&q, state, now, 1, true);
                if out.decision.allowed {
                    admitted += 1;
                    state = out.next;
                }
            }
        }
        assert_eq!(admitted, 3 + 3 * 999);
    }

    #[test]
    fn gcra_reports_when_a_refused_request_would_pass() {
        let q = quota(Algorithm::Gcra, 10, 1000, 10);
        let mut state = None;
        for _ in 0..10 {
            state = decide(&q, state, 0, 1, true).next;
        }
        let refused = decide(&q, state, 0, 2, true);
        assert!(!refused.decision.allowed);
        assert_eq!(refused.decision.retry_after, Duration::from_millis(200));
        assert_eq!(refused.decision.reset_after, Duration::from_millis(1000));
        assert_eq!(refused.decision.remaining, 0);
        assert!(decide(&q, state, 200, 2, true).decision.allowed);
        assert!(!decide(&q, state, 199, 2, true).decision.allowed);
    }

    #[test]
    fn fixed_windows_reset_on_epoch_boundaries() {
        let q = quota(Algorithm::FixedWindow, 2, 1000, 2);
        // Start is a multiple of 1000 ms, so the window ends 1000 ms in.
        let got = run(&q, &[(0, 1), (500, 1), (999, 1), (1000, 2), (1001, 1)]);
        assert_eq!(got, [true, true, false, true, false]);
    }

    #[test]
    fn sliding_windows_weigh_the_previous_window() {
        let q = quota(Algorithm::SlidingWindow, 10, 1000, 10);
        let mut state = None;
        for _ in 0..10 {
            state = decide(&q, state, 900, 1, true).next;
        }
        // 250 ms into the next window, the previous 10 weigh 7.5: two more fit, not three.
        let at = 1250;
        let out = decide(&q, state, at, 2, false);
        assert!(out.decision.allowed);
        assert_eq!(out.decision.remaining, 0);
        let refused = decide(&q, state, at, 3, true);
        assert!(!refused.decision.allowed);
        // 10 × (1000 − e) / 1000 + 3 ≤ 10 ⇔ e ≥ 300.
        assert_eq!(refused.decision.retry_after, Duration::from_millis(50));
        assert!(decide(&q, state, 1300, 3, true).decision.allowed);
    }

    #[test]
    fn a_sliding_window_full_in_this_window_waits_for_the_next() {
        let q = quota(Algorithm::SlidingWindow, 4, 1000, 4);
        let mut state = None;
        for _ in 0..4 {
            state = decide(&q, state, 100, 1, true).next;
        }
        let refused = decide(&q, state, 200, 1, true);
        assert!(!refused.decision.allowed);
        // Next window: 4 × (1000 − e) / 1000 + 1 ≤ 4 ⇔ e ≥ 250, i.e. at 1250.
        assert_eq!(refused.decision.retry_after, Duration::from_millis(1050));
        assert_eq!(refused.decision.reset_after, Duration::from_millis(1800));
    }

    #[test]
    fn peeking_never_changes_state() {
        for algorithm in [
            Algorithm::Gcra,
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
        ] {
            let q = quota(algorithm, 5, 1000, 5);
            let out = decide(&q, None, 0, 1, false);
            assert!(out.decision.allowed);
            assert_eq!(out.next, None);
            assert_eq!(out.decision.remaining, 4);
        }
    }
}
