//! Hybrid logical clock: wall-clock time that never runs backwards and
//! respects causality.
//!
//! A [`Timestamp`] is a physical part (milliseconds since the Unix epoch)
//! and a logical counter. [`Hlc::now`] stamps a local event; [`Hlc::observe`]
//! folds in a timestamp received from another node. The clock never issues
//! the same timestamp twice and never goes back, even if the wall clock
//! does: when the wall clock is behind the last timestamp, the physical part
//! stays and the counter rises. A received timestamp more than `max_skew`
//! ahead of the local wall clock is refused with [`Error::ClockSkew`] and
//! counted, so that one node with a bad clock cannot drag every other node's
//! clock (and every last-writer-wins decision) into the future.
//!
//! The clock reads no time itself: callers pass the wall time in (or a
//! [`WallClock`]), so tests and the simulator control it.
//!
//! It does not synchronise clocks; NTP does. It bounds the damage of a
//! clock that NTP failed to fix.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A hybrid logical clock timestamp. Ordered by physical time, then by the
/// logical counter.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch (at least; see [`Hlc`]).
    pub physical_ms: u64,
    /// Orders events within one millisecond.
    pub logical: u32,
}

impl Timestamp {
    /// A timestamp with a zero logical counter.
    pub fn from_ms(physical_ms: u64) -> Self {
        Timestamp {
            physical_ms,
            logical: 0,
        }
    }

    /// The next timestamp after this one. When the counter is exhausted
    /// (four billion events in one millisecond) the physical part is
    /// advanced instead: still monotonic, a millisecond early.
    pub fn next(self) -> Self {
        match self.logical.checked_add(1) {
            Some(logical) => Timestamp {
                physical_ms: self.physical_ms,
                logical,
            },
            None => Timestamp::from_ms(self.physical_ms.saturating_add(1)),
        }
    }
}

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait WallClock {
    /// The current wall time.
    fn now_ms(&self) -> u64;
}

/// The operating system's clock.
#[derive(Copy, Clone, Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 reads as 0; the HLC stays monotonic anyway.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// The newest timestamp seen by one part of a node (its replica: the
/// writes and objects it is sent), for another part's clock (its
/// coordinator's) to observe before it stamps. Shared by `Arc`.
#[derive(Debug, Default)]
pub struct Witness(std::sync::Mutex<Option<Timestamp>>);

impl Witness {
    /// Notes a timestamp seen.
    pub fn note(&self, ts: Timestamp) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *seen = (*seen).max(Some(ts));
    }

    /// The newest timestamp noted since the last call.
    pub fn take(&self) -> Option<Timestamp> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A hybrid logical clock.
///
/// ```
/// use ringkv::version::{Hlc, Timestamp};
/// use std::time::Duration;
/// let mut clock = Hlc::new(Duration::from_millis(500));
/// let a = clock.now(1_000);
/// let b = clock.now(900); // the wall clock went back
/// assert!(b > a);
/// // A remote timestamp 10 s ahead is refused.
/// assert!(clock.observe(Timestamp::from_ms(11_000), 1_000).is_err());
/// assert_eq!(clock.refused(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct Hlc {
    last: Timestamp,
    max_skew_ms: u64,
    refused: u64,
}

impl Hlc {
    /// A clock that refuses remote timestamps more than `max_skew` ahead.
    pub fn new(max_skew: Duration) -> Self {
        Hlc {
            last: Timestamp::default(),
            max_skew_ms: max_skew.as_millis().try_into().unwrap_or(u64::MAX),
            refused: 0,
        }
    }

    /// A timestamp for a local event (a write, a send) at wall time
    /// `wall_ms`: greater than every timestamp this clock issued or
    /// observed.
    pub fn now(&mut self, wall_ms: u64) -> Timestamp {
        self.last = if wall_ms > self.last.physical_ms {
            Timestamp::from_ms(wall_ms)
        } else {
            self.last.next()
        };
        self.last
    }

    /// [`Hlc::now`] reading the wall time from `clock`.
    pub fn now_from(&mut self, clock: &impl WallClock) -> Timestamp {
        self.now(clock.now_ms())
    }

    /// Folds in `remote`, a timestamp received from another node, at local
    /// wall time `wall_ms`, and returns a timestamp for the receive event,
    /// greater than both. Refuses (and counts) a remote timestamp more than
    /// `max_skew` ahead of `wall_ms`, leaving the clock unchanged.
    pub fn observe(&mut self, remote: Timestamp, wall_ms: u64) -> Result<Timestamp> {
        if remote.physical_ms > wall_ms.saturating_add(self.max_skew_ms) {
            self.refused += 1;
            return Err(Error::ClockSkew {
                remote_ms: remote.physical_ms,
                local_ms: wall_ms,
                max_skew_ms: self.max_skew_ms,
            });
        }
        let highest = self.last.max(remote);
        self.last = if wall_ms > highest.physical_ms {
            Timestamp::from_ms(wall_ms)
        } else {
            highest.next()
        };
        Ok(self.last)
    }

    /// The last timestamp issued.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// How many remote timestamps were refused for skew.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wall_clock_drives_the_physical_part() {
        let mut c = Hlc::new(Duration::from_millis(100));
        assert_eq!(c.now(5), Timestamp::from_ms(5));
        assert_eq!(
            c.now(5),
            Timestamp {
                physical_ms: 5,
                logical: 1
            }
        );
        assert_eq!(c.now(7), Timestamp::from_ms(7));
        assert_eq!(
            c.now(3),
            Timestamp {
                physical_ms: 7,
                logical: 1
            }
        );
    }

    #[test]
    fn observe_jumps_past_a_remote_within_skew() {
        let mut c = Hlc::new(Duration::from_millis(100));
        c.now(1_000);
        let remote = Timestamp {
            physical_ms: 1_050,
            logical: 4,
        };
        assert_eq!(
            c.observe(remote, 1_000).unwrap(),
            Timestamp {
                physical_ms: 1_050,
                logical: 5
            }
        );
        assert!(c.now(1_001) > remote);
    }

    #[test]
    fn skewed_remote_is_refused_and_counted() {
        let mut c = Hlc::new(Duration::from_millis(100));
        let before = c.now(1_000);
        let err = c.observe(Timestamp::from_ms(1_101), 1_000).unwrap_err();
        assert!(matches!(
            err,
            Error::ClockSkew {
                remote_ms: 1_101,
                local_ms: 1_000,
                max_skew_ms: 100
            }
        ));
        assert!(!err.is_retryable());
        assert_eq!(c.refused(), 1);
        assert_eq!(c.last(), before);
        // Exactly at the limit is accepted.
        assert!(c.observe(Timestamp::from_ms(1_100), 1_000).is_ok());
    }

    #[test]
    fn counter_overflow_advances_the_millisecond() {
        let mut c = Hlc::new(Duration::from_millis(100));
        c.last = Timestamp {
            physical_ms: 9,
            logical: u32::MAX,
        };
        assert_eq!(c.now(1), Timestamp::from_ms(10));
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }

    proptest! {
        /// Whatever the wall clock and remote clocks do, issued timestamps
        /// strictly increase and exceed every accepted remote timestamp.
        #[test]
        fn monotonic_under_any_wall_clock(
            events in proptest::collection::vec((any::<bool>(), 0u64..10_000, 0u64..10_500, 0u32..4), 1..200)
        ) {
            let mut c = Hlc::new(Duration::from_millis(200));
            let mut prev = Timestamp::default();
            for (remote, wall, remote_ms, logical) in events {
                let ts = if remote {
                    let r = Timestamp { physical_ms: remote_ms, logical };
                    match c.observe(r, wall) {
                        Ok(ts) => { prop_assert!(ts > r); ts }
                        Err(_) => { prop_assert!(remote_ms > wall + 200); continue; }
                    }
                } else {
                    c.now(wall)
                };
                prop_assert!(ts > prev);
                prop_assert!(ts.physical_ms >= wall);
                prev = ts;
            }
        }
    }
}
