//! The phi-accrual failure detector for one peer.
//!
//! Instead of a yes/no timeout, the detector gives a suspicion level
//! *phi* that grows continuously with the silence since the last heartbeat
//! (Hayashibara et al., "The phi accrual failure detector", 2004). It keeps
//! a sliding window of heartbeat inter-arrival times and models them as a
//! normal distribution; phi is `-log10` of the probability that a heartbeat
//! would still arrive after a silence this long. Phi 1 means a 10% chance of
//! being wrong to suspect, phi 8 one in 10^8.
//!
//! Two adjustments make it usable on real networks: the mean is raised by an
//! *acceptable heartbeat pause* (a GC pause or a burst of loss of that
//! length is normal), and the standard deviation has a floor, so that a very
//! regular link does not make the smallest jitter look fatal.
//!
//! The normal tail is computed through the complementary error function,
//! `1 - F(y) = erfc(y / sqrt 2) / 2`, with the Chebyshev fit of erfc from
//! Numerical Recipes (relative error below 1.2e-7 everywhere), and phi is
//! taken from its logarithm, so it stays finite and exact far into the
//! tail. The logistic approximation some detectors use
//! (`1 / (1 + exp(y (1.5976 + 0.070566 y^2)))`) is within 1.4e-4 in absolute
//! terms but overstates phi where it matters: 7.30 instead of 6.54 at five
//! deviations, so "phi 8" would not mean one in 10^8.
//!
//! What it does not do: it knows nothing of clocks or peers; the caller
//! reports arrivals and asks for phi at an instant.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Phi for a peer, from a window of heartbeat inter-arrival times.
#[derive(Clone, Debug)]
pub struct PhiDetector {
    /// Inter-arrival times in milliseconds, oldest first.
    intervals: VecDeque<f64>,
    max_samples: usize,
    sum: f64,
    sum_sq: f64,
    min_std_ms: f64,
    pause_ms: f64,
    last_arrival: Instant,
}

impl PhiDetector {
    /// A detector whose first heartbeat arrived at `now`.
    ///
    /// The window starts with two samples, `first_estimate` plus and minus a
    /// quarter of it, so that phi is meaningful before a second heartbeat
    /// arrives: a peer heard from once and never again is still detected.
    pub fn new(
        now: Instant,
        first_estimate: Duration,
        max_samples: usize,
        min_std_deviation: Duration,
        acceptable_pause: Duration,
    ) -> Self {
        let mut d = PhiDetector {
            intervals: VecDeque::with_capacity(max_samples.min(64)),
            max_samples: max_samples.max(2),
            sum: 0.0,
            sum_sq: 0.0,
            min_std_ms: min_std_deviation.as_secs_f64() * 1e3,
            pause_ms: acceptable_pause.as_secs_f64() * 1e3,
            last_arrival: now,
        };
        let mean = first_estimate.as_secs_f64() * 1e3;
        d.record(mean - mean / 4.0);
        d.record(mean + mean / 4.0);
        d
    }

    /// Records a heartbeat arriving at `now`.
    pub fn heartbeat(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last_arrival);
        self.record(gap.as_secs_f64() * 1e3);
        self.last_arrival = now;
    }

    /// Restarts the silence clock at `now` without recording the gap as a
    /// sample. Used when the silence says nothing about the peer (this node
    /// itself was paused).
    pub fn restart_silence(&mut self, now: Instant) {
        self.last_arrival = self.last_arrival.max(now);
    }

    /// When the last heartbeat arrived.
    pub fn last_arrival(&self) -> Instant {
        self.last_arrival
    }

    /// Mean inter-arrival time of the window, in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        self.sum / self.intervals.len() as f64
    }

    /// Standard deviation of the window, in milliseconds (before the floor).
    pub fn std_dev_ms(&self) -> f64 {
        let n = self.intervals.len() as f64;
        let mean = self.sum / n;
        (self.sum_sq / n - mean * mean).max(0.0).sqrt()
    }

    /// Phi at `now`: `-log10` of the probability that the next heartbeat
    /// comes later than `now`, under the window's distribution shifted by the
    /// acceptable pause. 0 right after a heartbeat, growing without bound
    /// (up to infinity) with silence.
    pub fn phi(&self, now: Instant) -> f64 {
        let silence = now
            .saturating_duration_since(self.last_arrival)
            .as_secs_f64()
            * 1e3;
        phi_of(
            silence,
            self.mean_ms() + self.pause_ms,
            self.std_dev_ms().max(self.min_std_ms),
        )
    }

    fn record(&mut self, ms: f64) {
        if self.intervals.len() == self.max_samples {
            if let Some(old) = self.intervals.pop_front() {
                self.sum -= old;
                self.sum_sq -= old * old;
            }
        }
        self.intervals.push_back(ms);
        self.sum += ms;
        self.sum_sq += ms * ms;
    }
}

/// Phi of a silence of `silence` ms under a normal distribution of mean
/// `mean` and standard deviation `std` (all in the same unit):
/// `-log10(1 - F((silence - mean) / std))`.
///
/// ```
/// use ringkv::membership::phi::phi_of;
/// // At the mean the tail is one half.
/// assert!((phi_of(1000.0, 1000.0, 100.0) - 2f64.log10()).abs() < 1e-6);
/// ```
pub fn phi_of(silence: f64, mean: f64, std: f64) -> f64 {
    let y = (silence - mean) / std;
    let z = y.abs() / std::f64::consts::SQRT_2;
    // erfc(z) = t * exp(-z^2 + poly(t)) for z >= 0.
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    // ln(erfc(z) / 2), computed in logs so it does not underflow.
    let ln_half_erfc = (0.5 * t).ln() - z * z + poly;
    let ln_tail = if y >= 0.0 {
        ln_half_erfc
    } else {
        // 1 - F(y) = 1 - erfc(z) / 2 for y < 0.
        (-ln_half_erfc.exp()).ln_1p()
    };
    (-ln_tail / std::f64::consts::LN_10).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// -log10 of the exact normal tail at y standard deviations, from
    /// tables: 1 - F(1) = 0.158655, 1 - F(2) = 0.0227501, 1 - F(3) =
    /// 0.00134990, 1 - F(5) = 2.86652e-7.
    #[test]
    fn phi_matches_the_normal_tail() {
        let cases = [
            (0.0, 0.5f64),
            (1.0, 0.158655),
            (2.0, 0.0227501),
            (3.0, 0.00134990),
            (5.0, 2.86652e-7),
        ];
        for (y, tail) in cases {
            let exact = -tail.log10();
            let got = phi_of(1000.0 + y * 100.0, 1000.0, 100.0);
            assert!(
                (got - exact).abs() <= 1e-5 * exact.max(1.0),
                "y={y}: phi {got}, exact {exact}"
            );
        }
        assert!((phi_of(1000.0, 1000.0, 100.0) - 2f64.log10()).abs() < 1e-6);
        assert!(phi_of(0.0, 1000.0, 100.0) < 1e-6);
        // Phi 8 is 5.612 deviations (1 - F(5.612) = 1.0e-8).
        assert!((phi_of(1561.2, 1000.0, 100.0) - 8.0).abs() < 0.01);
        // Far in the tail it stays finite and keeps growing.
        let far = phi_of(1000.0 + 60.0 * 100.0, 1000.0, 100.0);
        assert!(far.is_finite() && far > 700.0, "{far}");
    }

    #[test]
    fn phi_grows_with_silence_and_resets_on_heartbeat() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = PhiDetector::new(t0, ms(1000), 100, ms(100), ms(0));
        let mut t = t0;
        for _ in 0..20 {
            t += ms(1000);
            d.heartbeat(t);
        }
        assert!((d.mean_ms() - 1000.0).abs() < 30.0, "{}", d.mean_ms());
        let mut last = 0.0;
        for k in 1..30 {
            let phi = d.phi(t + ms(100 * k));
            assert!(phi >= last, "phi must not fall with silence");
            last = phi;
        }
        // Mean 1000, std floored at 100 (the window's own is ~75): 1.5 s of
        // silence is 5 deviations, phi 6.54; 2 s is 10 deviations.
        let at_1500 = d.phi(t + ms(1500));
        assert!((6.3..6.8).contains(&at_1500), "{at_1500}");
        assert!(d.phi(t + ms(2000)) > 12.0);
        d.heartbeat(t + ms(2000));
        assert!(d.phi(t + ms(2000)) < 0.01);
    }

    #[test]
    fn acceptable_pause_shifts_the_curve() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let strict = PhiDetector::new(t0, ms(1000), 100, ms(100), ms(0));
        let lenient = PhiDetector::new(t0, ms(1000), 100, ms(100), ms(3000));
        assert!(strict.phi(t0 + ms(3000)) > 8.0);
        assert!(lenient.phi(t0 + ms(3000)) < 1.0);
        // The same phi is reached exactly 3 s later.
        let a = strict.phi(t0 + ms(1400));
        let b = lenient.phi(t0 + ms(4400));
        assert!((a - b).abs() < 1e-9);
    }

    #[test]
    fn window_is_bounded_and_slides() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = PhiDetector::new(t0, ms(1000), 10, ms(1), ms(0));
        let mut t = t0;
        for _ in 0..50 {
            t += ms(200);
            d.heartbeat(t);
        }
        assert_eq!(d.intervals.len(), 10);
        assert!((d.mean_ms() - 200.0).abs() < 1e-6);
        assert!(d.std_dev_ms() < 1e-3);
    }

    #[test]
    fn restart_silence_does_not_record_the_gap() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = PhiDetector::new(t0, ms(1000), 100, ms(100), ms(0));
        let mean = d.mean_ms();
        d.restart_silence(t0 + ms(60_000));
        assert_eq!(d.mean_ms(), mean);
        assert!(d.phi(t0 + ms(60_000)) < 0.01);
    }
}
