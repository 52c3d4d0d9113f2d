//! Summary statistics of repeated measurements: the median of a few runs
//! and percentiles of a latency sample.
//!
//! Percentiles use the nearest-rank definition (the smallest sample with at
//! least `p` percent of the samples at or below it), so every reported
//! figure is a value that was actually measured; no interpolation.

/// The median of `values`; the mean of the two middle values when their
/// number is even. `None` for an empty slice. NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    })
}

/// The nearest-rank `p`-th percentile (`0 < p <= 100`) of `sorted`, which
/// must be in ascending order. `None` for an empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    debug_assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "not sorted");
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let sample: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sample, 50.0), Some(50));
        assert_eq!(percentile(&sample, 99.0), Some(99));
        assert_eq!(percentile(&sample, 100.0), Some(100));
        assert_eq!(percentile(&sample, 0.0), Some(1));
        // Ten samples: p99 is the largest, p50 the fifth.
        let ten: Vec<u64> = (10..20).collect();
        assert_eq!(percentile(&ten, 99.0), Some(19));
        assert_eq!(percentile(&ten, 50.0), Some(14));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
