//! The arithmetic of the cluster benchmark's open loop: operations issued
//! on a fixed timetable at an offered rate, whatever the system's replies
//! do, with each latency taken from the operation's scheduled start.
//!
//! A closed loop (each client sends its next request when the last one is
//! answered) slows down with the system it measures, so it reports the
//! latency of a saturated system only, and when the system stalls it simply
//! issues fewer requests: the stall hurts a handful of samples instead of
//! every request that should have been sent meanwhile ("coordinated
//! omission", in Gil Tene's words; wrk2 and HdrHistogram correct for it the
//! same way). In the open loop, operation `n` is due `n / rate` seconds
//! after the phase starts, whatever happened before it; its latency runs
//! from that due time to its reply, so the time it waited for a free
//! connection, or for a generator that fell behind, counts.
//!
//! This module owns the timetable ([`Schedule`]), what one operation's
//! three timestamps say ([`Timing`]), and the rate that is half a measured
//! maximum ([`half_rate`]). The pacing itself (a thread releasing permits
//! as operations fall due) and the clients are in the `cluster` binary.

use std::time::{Duration, Instant};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The highest offered rate, in operations per second: one operation a
/// nanosecond would make the timetable's offsets collide.
pub const MAX_RATE: u64 = 100_000_000;

/// An operation sent this long or longer after its due time is late: the
/// generator had no free connection for it, or no CPU. The pacer wakes
/// within microseconds of a due time on an idle core, so a millisecond is
/// far above its own jitter.
pub const LATE: Duration = Duration::from_millis(1);

/// The timetable of an open loop at `rate` operations per second:
/// operation `n` (from 0) is due `ceil(n * 10^9 / rate)` nanoseconds after
/// the start. Integer nanoseconds, so that "due by" and "due before" agree
/// exactly with the offsets at every boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    rate: u64,
}

impl Schedule {
    /// The timetable at `rate` operations per second; `None` for a rate of
    /// 0 or above [`MAX_RATE`].
    pub fn new(rate: u64) -> Option<Schedule> {
        (1..=MAX_RATE).contains(&rate).then_some(Schedule { rate })
    }

    /// Operations per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// When operation `n` is due, after the start.
    pub fn offset(&self, n: u64) -> Duration {
        let nanos = (u128::from(n) * NANOS_PER_SEC).div_ceil(u128::from(self.rate));
        duration_from_nanos(nanos)
    }

    /// How many operations are due at or before `elapsed` after the start
    /// (operation 0 is due at once, so at least 1).
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        // offset(n) <= e  <=>  n * 10^9 / rate <= e (e an integer).
        let due = elapsed.as_nanos() * u128::from(self.rate) / NANOS_PER_SEC + 1;
        u64::try_from(due).unwrap_or(u64::MAX)
    }

    /// How many operations are due strictly before `elapsed` after the
    /// start.
    pub fn due_before(&self, elapsed: Duration) -> u64 {
        match elapsed.as_nanos().checked_sub(1) {
            None => 0,
            Some(last) => self.due_by(duration_from_nanos(last)),
        }
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    Duration::new(secs, (nanos % NANOS_PER_SEC) as u32)
}

/// What the three instants of one open-loop operation say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// From the due time to the reply: the latency reported.
    pub latency: Duration,
    /// From sending to the reply: what a closed loop would report.
    pub service: Duration,
    /// From the due time to sending: the generator's delay.
    pub lag: Duration,
    /// `lag` is [`LATE`] or more.
    pub late: bool,
}

impl Timing {
    /// The timing of an operation due at `due`, sent at `sent` and
    /// answered at `finished`. An instant before the one it follows (which
    /// the generator never produces) counts as equal to it.
    pub fn of(due: Instant, sent: Instant, finished: Instant) -> Timing {
        let lag = sent.saturating_duration_since(due);
        Timing {
            latency: finished.saturating_duration_since(due),
            service: finished.saturating_duration_since(sent),
            lag,
            late: lag >= LATE,
        }
    }
}

/// Half of a measured maximum throughput, as a whole offered rate in
/// operations per second (rounded down); `None` when the maximum is not a
/// positive finite number or its half is below 1 operation per second,
/// since no open loop can be run at it.
pub fn half_rate(max_ops_per_sec: f64) -> Option<u64> {
    if !max_ops_per_sec.is_finite() {
        return None;
    }
    let half = (max_ops_per_sec / 2.0).floor();
    (1.0..=MAX_RATE as f64)
        .contains(&half)
        .then_some(half as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_n_over_rate_rounded_up_to_the_nanosecond() {
        let s = Schedule::new(1_000).unwrap();
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_millis(1));
        assert_eq!(s.offset(2_500), Duration::from_millis(2_500));
        let third = Schedule::new(3).unwrap();
        assert_eq!(third.offset(1), Duration::from_nanos(333_333_334));
        assert_eq!(third.offset(3), Duration::from_secs(1));
        assert_eq!(Schedule::new(0), None);
        assert_eq!(Schedule::new(MAX_RATE + 1), None);
        assert_eq!(Schedule::new(MAX_RATE).map(|s| s.rate()), Some(MAX_RATE));
    }

    #[test]
    fn due_counts_agree_with_the_offsets_at_every_boundary() {
        let s = Schedule::new(1_000).unwrap();
        assert_eq!(s.due_by(Duration::ZERO), 1);
        assert_eq!(s.due_before(Duration::ZERO), 0);
        assert_eq!(s.due_by(Duration::from_nanos(999_999)), 1);
        assert_eq!(s.due_by(Duration::from_millis(1)), 2);
        assert_eq!(s.due_before(Duration::from_millis(1)), 1);
        // A 2 s warm-up and 8 s recorded at 1,000/s: operations 2,000 to
        // 9,999 are recorded.
        let (warmup, end) = (Duration::from_secs(2), Duration::from_secs(10));
        assert_eq!((s.due_before(warmup), s.due_before(end)), (2_000, 10_000));
        let third = Schedule::new(3).unwrap();
        assert_eq!(third.due_by(Duration::from_nanos(333_333_333)), 1);
        assert_eq!(third.due_by(Duration::from_nanos(333_333_334)), 2);
        for rate in [1, 3, 7, 1_000, 12_345, 99_999_989] {
            let s = Schedule::new(rate).unwrap();
            for n in (0..50).chain([1_000, 123_456, 10_000_000]) {
                let at = s.offset(n);
                assert_eq!(s.due_by(at), n + 1, "rate {rate} n {n}");
                assert_eq!(s.due_before(at), n, "rate {rate} n {n}");
                assert!(s.offset(n + 1) > at, "rate {rate} n {n}");
            }
        }
    }

    #[test]
    fn latency_runs_from_the_due_time_and_late_sends_are_flagged() {
        let due = Instant::now();
        let at = |us: u64| due + Duration::from_micros(us);
        // Sent 3 ms late (no free connection), answered 2 ms later: the
        // latency is 5 ms, though the system took 2.
        let t = Timing::of(due, at(3_000), at(5_000));
        assert_eq!(
            t,
            Timing {
                latency: Duration::from_millis(5),
                service: Duration::from_millis(2),
                lag: Duration::from_millis(3),
                late: true,
            }
        );
        // On time within the pacer's jitter: not late.
        let t = Timing::of(due, at(200), at(700));
        assert_eq!(
            (t.latency, t.service, t.late),
            (
                Duration::from_micros(700),
                Duration::from_micros(500),
                false
            )
        );
        assert!(Timing::of(due, at(1_000), at(1_000)).late);
        assert!(!Timing::of(due, at(999), at(1_000)).late);
    }

    #[test]
    fn half_rate_rounds_down_and_refuses_what_cannot_be_run() {
        assert_eq!(half_rate(25_001.0), Some(12_500));
        assert_eq!(half_rate(24_999.9), Some(12_499));
        assert_eq!(half_rate(2.0), Some(1));
        assert_eq!(half_rate(1.9), None);
        assert_eq!(half_rate(0.0), None);
        assert_eq!(half_rate(-4.0), None);
        assert_eq!(half_rate(f64::NAN), None);
        assert_eq!(half_rate(f64::INFINITY), None);
    }
}
