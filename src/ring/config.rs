//! Configuration of the hash ring and token claim, with the reasons for
//! its defaults. Re-exported by `config.rs`.

use std::time::Duration;

use crate::error::{Error, Result};

/// Configuration of the hash ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Virtual nodes (tokens) a physical node claims when it joins. Default
    /// [`DEFAULT_VNODES_PER_NODE`].
    pub vnodes_per_node: usize,
    /// How long a node that gains a range in a pending change must stay
    /// DOWN before the lowest live node waives its moves (marks them done
    /// without data) so that the change, and every change after it, can
    /// finish. Default [`DEFAULT_WAIVE_DOWN_AFTER`].
    pub waive_down_after: Duration,
}

/// How long a gainer must be DOWN before its moves are waived by default:
/// 60 s. A shorter outage, or a partition, waits: waiving the moves of a
/// gainer that comes back would leave it a replica without the range's
/// data (read repair and anti-entropy bring it later). A node gone for
/// good is removed (`RemoveNode`) or, once LEFT, waived at once. Shorter
/// suits a test cluster, whose crashed nodes stay crashed.
pub const DEFAULT_WAIVE_DOWN_AFTER: Duration = Duration::from_secs(60);

/// Virtual nodes per physical node by default: 160.
///
/// The literature's range is 150 to 200. With random tokens the spread of a
/// node's share shrinks as one over the square root of this number (about 8%
/// at 160); with the balancing claim in `ring::claim` the residual imbalance
/// is about one token's worth of range, 1/160 of a node's share. A ring of
/// 100 nodes then has 16,000 tokens: 256 KiB in memory, a binary search of
/// 14 steps, and a gossip frame far below the frame limit. More tokens buy
/// little balance and cost gossip size and handoff bookkeeping.
pub const DEFAULT_VNODES_PER_NODE: usize = 160;

/// Replicas per key that token claim balances for: 3.
///
/// Claim balances not only which node is first for each key but how much
/// each node stores as one of `n` replicas, which depends on `n`. Three is
/// the usual bucket `n` (Dynamo's and Riak's default); a bucket with another
/// `n` is still placed correctly, only its replica shares are balanced less
/// tightly.
pub const DEFAULT_CLAIM_REPLICAS: usize = 3;

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            vnodes_per_node: DEFAULT_VNODES_PER_NODE,
            waive_down_after: DEFAULT_WAIVE_DOWN_AFTER,
        }
    }
}

impl RingConfig {
    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        if self.vnodes_per_node == 0 || self.vnodes_per_node > 4096 {
            return Err(Error::InvalidInput(format!(
                "vnodes_per_node must be in 1..=4096, got {}",
                self.vnodes_per_node
            )));
        }
        if self.waive_down_after.is_zero() {
            return Err(Error::InvalidInput(
                "waive_down_after must be above zero: a gainer briefly DOWN would lose its \
                 ranges' data"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_refuses_no_tokens_too_many_and_an_instant_waive() {
        assert!(RingConfig::default().validate().is_ok());
        for vnodes in [0, 4097] {
            let c = RingConfig {
                vnodes_per_node: vnodes,
                ..RingConfig::default()
            };
            assert!(c.validate().is_err(), "{vnodes} vnodes");
        }
        let c = RingConfig {
            waive_down_after: Duration::ZERO,
            ..RingConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("waive_down_after"), "{err}");
    }
}
