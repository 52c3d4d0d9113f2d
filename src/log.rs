//! Rate-limited logging, for messages that an outside party (or a failing
//! disk) can make a node repeat: refused connections, failed handshakes,
//! wrong passwords, storage work that fails again and again
//! ([`warn_every!`]).
//! Without a limit, a flood of them fills the disk with the same line and
//! buries everything else (a neighbour of a node under a handshake flood
//! once logged 67,077 warnings in 40 s).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one message through per `interval`, and counts the rest: the
/// message that gets through is told how many occurrences it stands for.
#[derive(Debug)]
pub struct RateLimited {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last: Option<Instant>,
    /// Occurrences since the last message that got through, that one
    /// included once it does.
    pending: u64,
}

impl RateLimited {
    /// At most one message per `interval`.
    pub fn new(interval: Duration) -> RateLimited {
        RateLimited {
            interval,
            state: Mutex::new(State {
                last: None,
                pending: 0,
            }),
        }
    }

    /// Records one occurrence; calls `log` with the number of occurrences
    /// it stands for (this one and those held back since the last) when
    /// the interval has passed, and does nothing otherwise.
    pub fn warn(&self, log: impl FnOnce(u64)) {
        self.warn_at(Instant::now(), log)
    }

    fn warn_at(&self, now: Instant, log: impl FnOnce(u64)) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.pending += 1;
        let due = s
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if due {
            let n = std::mem::take(&mut s.pending);
            s.last = Some(now);
            drop(s);
            log(n);
        }
    }
}

/// How often one call site of [`warn_every!`] may log.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// `tracing::warn!` at most once per [`WARN_EVERY`] per call site, with a
/// `repeated` field counting the occurrences the line stands for (itself
/// and those held back since the last). For warnings a failing disk or a
/// misbehaving peer can repeat thousands of times a second: the first is
/// logged at once, the rest are summed up.
///
/// ```text
/// crate::log::warn_every!(error = %e, "storing a batch failed");
/// ```
macro_rules! warn_every {
    ($($arg:tt)+) => {{
        static LIMIT: ::std::sync::OnceLock<$crate::log::RateLimited> =
            ::std::sync::OnceLock::new();
        LIMIT
            .get_or_init(|| $crate::log::RateLimited::new($crate::log::WARN_EVERY))
            .warn(|repeated| ::tracing::warn!(repeated, $($arg)+));
    }};
}
pub(crate) use warn_every;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_per_interval_counting_the_rest() {
        let limited = RateLimited::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let mut logged = Vec::new();
        for i in 0..1000u64 {
            // 1,000 occurrences over 25 s.
            let at = t0 + Duration::from_millis(i * 25);
            limited.warn_at(at, |n| logged.push(n));
        }
        // At 0 s (1 occurrence), 10 s and 20 s (400 each).
        assert_eq!(logged, vec![1, 400, 400]);
        // The 199 since the last message come with the next one.
        limited.warn_at(t0 + Duration::from_secs(40), |n| logged.push(n));
        assert_eq!(logged.last(), Some(&200));
    }
}
