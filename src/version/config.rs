//! Configuration of object versioning, with the reasons for its defaults.
//! Re-exported by `config.rs`.

use std::time::Duration;

use crate::error::{Error, Result};

/// Configuration of object versioning: clocks and siblings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionConfig {
    /// How far ahead of the local wall clock a remote hybrid-logical-clock
    /// timestamp may be before it is refused with
    /// [`Error::ClockSkew`]. Default 500 ms: NTP keeps servers on one network
    /// within a few ms, so a larger offset means a broken clock, and letting
    /// it in would push every node's clock (and every LWW decision) forward.
    pub max_clock_skew: Duration,
    /// The most siblings an object keeps. Default 100 (Riak's
    /// `max_siblings`): far more than honest concurrency produces, and a
    /// bound on the object's size when clients write blindly. A blind
    /// write that would pass the cap is refused with `TooManySiblings`; a
    /// write that carries a context never is (see `version::Object`).
    pub max_siblings: usize,
    /// Largest causal-context token accepted from a client, in bytes.
    /// Default 64 KiB: a version vector of a few hundred entries is a few KiB.
    pub max_context_bytes: usize,
}

impl Default for VersionConfig {
    fn default() -> Self {
        VersionConfig {
            max_clock_skew: Duration::from_millis(500),
            max_siblings: 100,
            max_context_bytes: 64 * 1024,
        }
    }
}

impl VersionConfig {
    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        if self.max_siblings == 0 || self.max_context_bytes == 0 {
            return Err(Error::InvalidInput(
                "max_siblings and max_context_bytes must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
