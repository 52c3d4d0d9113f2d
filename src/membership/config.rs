//! Configuration of membership, with the reasons for its defaults.
//! Re-exported by `config.rs`.

use std::time::Duration;

use crate::error::{Error, Result};

/// Configuration of membership: gossip, the phi-accrual failure detector,
/// suspicion and leaving.
///
/// The detector defaults are Akka's and Cassandra's, which have run for
/// years on real networks: they tolerate a GC pause or a slow link of a few
/// seconds without a false conviction, and still find a crashed node in
/// well under ten seconds. `docs/membership.md` measures them.
#[derive(Clone, Debug, PartialEq)]
pub struct MembershipConfig {
    /// How often a node raises its heartbeat and gossips. Default 1 s: a
    /// full table for 100 nodes is about 6 KB, so a gossip per second costs
    /// nothing, and detection in seconds needs heartbeats in seconds.
    pub gossip_interval: Duration,
    /// Peers gossiped to per interval. Default 1: with push-pull, one
    /// exchange per round already spreads a change to every node in about
    /// log3 N rounds; more peers multiply traffic for a small gain.
    pub fanout: usize,
    /// Whether the receiver of a gossip answers with its own table
    /// (push-pull). Default true: pulling makes the last few uninformed
    /// nodes learn a change quickly, where push alone needs ln N extra
    /// rounds to reach them.
    pub push_pull: bool,
    /// Phi above which a peer becomes SUSPECT. Default 8: phi 8 means the
    /// detector would be wrong about once in 10^8 heartbeats if inter-arrival
    /// times were normal; Akka and Cassandra both use 8.
    pub phi_threshold: f64,
    /// Inter-arrival times kept per peer. Default 1000 (Akka's): about 17
    /// minutes of history at 1 s, enough for a stable mean and deviation,
    /// small enough (8 KB per peer) to follow a network that changes.
    pub max_sample_size: usize,
    /// Floor of the standard deviation used by phi. Default 100 ms: on a
    /// quiet LAN the measured deviation is close to zero, and without a
    /// floor the smallest jitter would send phi through the roof.
    pub min_std_deviation: Duration,
    /// Silence beyond the mean interval that is still normal: added to the
    /// mean before phi is computed. Default 3 s: covers a stop-the-world GC
    /// pause or a burst of packet loss of a few seconds, the causes of false
    /// suspicion in practice (Akka's cluster default).
    pub acceptable_heartbeat_pause: Duration,
    /// How long a suspicion may go unrefuted before the suspect is DOWN, in
    /// gossip intervals per doubling of the cluster: the timeout is
    /// `suspicion_multiplier x log2(N) x gossip_interval` (at least one
    /// interval's worth of log2 N = 1). Default 2: a refutation needs the
    /// suspicion to reach the suspect and the refutation to come back, two
    /// spreads of about 0.6 log2 N rounds each with push-pull, so 2 log2 N
    /// leaves a margin of more than one and a half.
    pub suspicion_multiplier: f64,
    /// A gap this long between two consecutive runs of this node's own
    /// machine means that the node itself was paused (GC, SIGSTOP, an
    /// overloaded host); it then restarts every peer's silence clock instead
    /// of convicting peers it could not hear. Default 2 s: twice the gossip
    /// interval, which a healthy node never goes without a tick.
    pub local_pause_guard: Duration,
    /// After a graceful leave, how long the node keeps gossiping its LEFT
    /// status before it stops. Default 3 s: three rounds of push-pull reach
    /// most of a small cluster directly, and gossip carries it the rest of
    /// the way.
    pub leave_linger: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            gossip_interval: Duration::from_secs(1),
            fanout: 1,
            push_pull: true,
            phi_threshold: 8.0,
            max_sample_size: 1000,
            min_std_deviation: Duration::from_millis(100),
            acceptable_heartbeat_pause: Duration::from_secs(3),
            suspicion_multiplier: 2.0,
            local_pause_guard: Duration::from_secs(2),
            leave_linger: Duration::from_secs(3),
        }
    }
}

impl MembershipConfig {
    /// The defaults with every duration multiplied by `interval / 1 s`, so
    /// that the protocol behaves the same, in rounds, at a faster pace. For
    /// tests and experiments.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ringkv::config::MembershipConfig;
    /// let fast = MembershipConfig::scaled(Duration::from_millis(50));
    /// assert_eq!(fast.acceptable_heartbeat_pause, Duration::from_millis(150));
    /// ```
    pub fn scaled(interval: Duration) -> Self {
        let d = MembershipConfig::default();
        let k = interval.as_secs_f64() / d.gossip_interval.as_secs_f64();
        MembershipConfig {
            gossip_interval: interval,
            min_std_deviation: d.min_std_deviation.mul_f64(k),
            acceptable_heartbeat_pause: d.acceptable_heartbeat_pause.mul_f64(k),
            local_pause_guard: d.local_pause_guard.mul_f64(k),
            leave_linger: d.leave_linger.mul_f64(k),
            ..d
        }
    }

    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(Error::InvalidInput(format!("membership config: {why}")));
        if self.gossip_interval.is_zero() {
            return bad("gossip_interval must be positive");
        }
        if self.fanout == 0 {
            return bad("fanout must be at least 1");
        }
        if !(self.phi_threshold.is_finite() && self.phi_threshold > 0.0) {
            return bad("phi_threshold must be a positive number");
        }
        if self.max_sample_size < 2 {
            return bad("max_sample_size must be at least 2");
        }
        if self.min_std_deviation.is_zero() {
            return bad("min_std_deviation must be positive");
        }
        if !(self.suspicion_multiplier.is_finite() && self.suspicion_multiplier > 0.0) {
            return bad("suspicion_multiplier must be a positive number");
        }
        if self.local_pause_guard <= self.gossip_interval {
            return bad("local_pause_guard must be longer than gossip_interval");
        }
        Ok(())
    }
}
