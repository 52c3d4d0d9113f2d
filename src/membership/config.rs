//! Configuration of membership, with the reasons for its defaults.
//! Re-exported by `config.rs`.

use std::time::Duration;

use crate::error::{Error, Result};

/// Configuration of membership: gossip, the phi-accrual failure detector,
/// suspicion and leaving.
///
/// The threshold, interval and deviation floor are Akka's and Cassandra's,
/// which have run for years on real networks; each node is watched directly
/// by a few monitors (Akka's design), and news is relayed at once, so that
/// a crash is DOWN everywhere within about five seconds while a 2.5 s pause
/// convicts no one. `docs/membership.md` measures them.
#[derive(Clone, Debug, PartialEq)]
pub struct MembershipConfig {
    /// How often a node raises its heartbeat, gossips, and pings the nodes it
    /// monitors. Default 1 s: a round costs a few small messages per node,
    /// and detection in seconds needs heartbeats in seconds.
    pub gossip_interval: Duration,
    /// Peers gossiped to per interval (news and the table's digest, and a
    /// sync of the buckets where digests differ). Default 1: with
    /// push-pull, one exchange per round already spreads a change to every
    /// node in about log3 N rounds, even without relays.
    pub fanout: usize,
    /// Whether the receiver of a round's gossip answers with its own news and
    /// digest (push-pull). Default true: pulling makes the last few
    /// uninformed nodes learn a change quickly, where push alone needs ln N
    /// extra rounds to reach them.
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
    /// mean before phi is computed. Default 1.25 s. Phi is fed only by a
    /// monitor's own pings and their acks (see `monitors`), whose arrivals
    /// are as regular as the network, so the pause covers real stalls
    /// rather than the jitter of relayed gossip: with 1 s pings, the 100 ms
    /// deviation floor and threshold 8, a silent peer is SUSPECT after about
    /// 2.8 s without an ack, and a node paused for 2.5 s (a long GC pause)
    /// is back before or just after it is suspected, and refutes well
    /// within the suspicion timeout. `docs/membership.md` measures the
    /// trade between this, false suspicions and detection time.
    pub acceptable_heartbeat_pause: Duration,
    /// How long a suspicion may go unrefuted before the suspect is DOWN, in
    /// gossip intervals: the timeout is `suspicion_multiplier x
    /// gossip_interval` at a monitor of the suspect, counted from the moment
    /// once two monitors have suspected the node on their own evidence
    /// (see `membership::gossip::CONFIRMATIONS`), and three times that at
    /// any node that took the suspicion, if no monitor's verdict reached it
    /// first. Default 1.25: suspicions and refutations are relayed at once,
    /// not once per round, so a live suspect's refutation comes back in a
    /// few network delays; the timeout covers a lost message and the
    /// monitor's next ping (sent every tick while it suspects).
    pub suspicion_multiplier: f64,
    /// How many monitors watch each node. A node is monitored by the next
    /// `monitors` members after it on a ring of the members' hashed ids
    /// (ALIVE and SUSPECT ones), as each monitor sees it; a monitor pings
    /// its monitored nodes every interval and feeds their phi detectors
    /// with the acks. Default 5 (Akka's `monitored-by-nr-of-members`): a
    /// crash is seen by five independent detectors, and a node stays
    /// watched while up to four of its monitors are down at once (a down
    /// monitor leaves the ring and the next member takes its place).
    pub monitors: usize,
    /// Peers that news (a change of status, incarnation or address that
    /// this node had not seen) is relayed to at once, before the next
    /// round. Default 3: relaying to three random peers reaches almost
    /// every node within a few network delays (each node misses the relay
    /// with odds of about e^-3), and the rest within a round, from the
    /// news that every message carries; 0 leaves the spreading to rounds.
    pub relay_fanout: usize,
    /// How long a LEFT entry (a graceful leave, or a node forgotten by an
    /// operator) is kept and shown before it is removed from the table.
    /// The node is then remembered only as a tombstone (its id and the
    /// incarnation it left at, not gossiped or shown), so that stale gossip
    /// cannot bring it back. Default 1 h: long enough for the news to reach
    /// a node that was cut off for a while, short enough that departed nodes
    /// do not crowd the status of a cluster that changes often.
    pub left_grace: Duration,
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
            acceptable_heartbeat_pause: Duration::from_millis(1250),
            suspicion_multiplier: 1.25,
            monitors: 5,
            relay_fanout: 3,
            left_grace: Duration::from_secs(3600),
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
    /// assert_eq!(fast.acceptable_heartbeat_pause, Duration::from_micros(62_500));
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
            left_grace: d.left_grace.mul_f64(k),
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
        if self.monitors == 0 {
            return bad("monitors must be at least 1");
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
