//! The membership machine: gossip, detection, suspicion, refutation, join
//! and leave (see the parent module for the protocol in brief).
//!
//! # One round
//!
//! Each `gossip_interval` a node raises its own heartbeat and sends its
//! whole table to `fanout` random reachable peers (ALIVE or SUSPECT), asking
//! for theirs in return when `push_pull` is on. With probability
//! `down / (reachable + 1)` it also gossips to one DOWN peer, so that a
//! healed partition or a restarted node is found again (Cassandra's rule);
//! a node that knows no reachable peer gossips to its seeds, which is how a
//! new node joins, and a node that does gossips with the same odds to one
//! seed it does not know, so that two nodes that found only each other
//! through their seeds do not stay an island. Every merge that advances a peer's (incarnation,
//! heartbeat) is a heartbeat arrival for that peer's detector, whoever
//! relayed it.
//!
//! # Suspicion and conviction
//!
//! At each tick an ALIVE peer whose phi exceeds `phi_threshold` becomes
//! SUSPECT. A node that holds a suspicion (its own or gossiped) for
//! `suspicion_multiplier x log2 N` intervals without seeing a refutation
//! marks the peer DOWN. A node that hears itself called SUSPECT, DOWN or LEFT
//! at its current incarnation (or any higher one) takes the next incarnation
//! and gossips ALIVE, which overrides the claim everywhere.
//!
//! # The local-pause guard
//!
//! When the machine has not run (neither `tick` nor `step`) for longer than
//! `local_pause_guard`, this node was paused; the silence it observed is its
//! own. It restarts every detector's silence clock and every suspicion timer
//! at `now` instead of convicting, and reports [`MemberEvent::LocalPause`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::phi::PhiDetector;
use super::table::{MemberEntry, MemberStatus, MembershipTable};
use super::{Addressed, MemberEvent, MembershipMsg, Outbox};
use crate::error::Result;
use crate::id::NodeId;
use crate::membership::MembershipConfig;

/// The membership protocol of one node. See the module documentation.
#[derive(Debug)]
pub struct Membership {
    config: MembershipConfig,
    me: NodeId,
    table: MembershipTable,
    detectors: BTreeMap<NodeId, PhiDetector>,
    /// When this node started holding each current suspicion.
    suspected_since: BTreeMap<NodeId, Instant>,
    seeds: Vec<NodeId>,
    rng: ChaCha8Rng,
    /// Last time `tick` or `step` ran, for the local-pause guard.
    last_run: Option<Instant>,
    /// When the next round is due; `None` before the first tick.
    next_round: Option<Instant>,
    leaving: bool,
}

impl Membership {
    /// A node `me` reachable at `addr`, knowing only itself, which joins
    /// through `seeds` (node ids whose addresses the transport has been
    /// told). All its random choices come from `rng_seed`. Fails with
    /// `InvalidInput` if the configuration does not validate.
    pub fn new(
        config: MembershipConfig,
        me: NodeId,
        addr: impl Into<String>,
        seeds: &[NodeId],
        rng_seed: u64,
    ) -> Result<Self> {
        config.validate()?;
        let mut table = MembershipTable::new();
        table.set(MemberEntry::alive(me, addr));
        Ok(Membership {
            config,
            me,
            table,
            detectors: BTreeMap::new(),
            suspected_since: BTreeMap::new(),
            seeds: seeds.iter().copied().filter(|&s| s != me).collect(),
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            last_run: None,
            next_round: None,
            leaving: false,
        })
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The configuration.
    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// The membership table as this node sees it.
    pub fn table(&self) -> &MembershipTable {
        &self.table
    }

    /// The status of `node` as this node sees it.
    pub fn status(&self, node: NodeId) -> Option<MemberStatus> {
        self.table.get(node).map(|e| e.status)
    }

    /// Phi of `node` at `now`; `None` for this node, unknown nodes and nodes
    /// that left.
    pub fn phi(&self, node: NodeId, now: Instant) -> Option<f64> {
        self.detectors.get(&node).map(|d| d.phi(now))
    }

    /// The detector of `node`, to read its window's mean and deviation.
    pub fn detector(&self, node: NodeId) -> Option<&PhiDetector> {
        self.detectors.get(&node)
    }

    /// Phi of every peer with a detector at `now`.
    pub fn phis(&self, now: Instant) -> BTreeMap<NodeId, f64> {
        self.detectors
            .iter()
            .map(|(&n, d)| (n, d.phi(now)))
            .collect()
    }

    /// Whether [`Self::leave`] was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// How long a suspicion must go unrefuted before conviction, for the
    /// current cluster size N (nodes known and not LEFT):
    /// `suspicion_multiplier x max(1, log2 N) x gossip_interval`.
    pub fn suspicion_timeout(&self) -> Duration {
        let n = self
            .table
            .entries()
            .filter(|e| e.status != MemberStatus::Left)
            .count();
        let rounds = (n.max(2) as f64).log2().max(1.0) * self.config.suspicion_multiplier;
        self.config.gossip_interval.mul_f64(rounds)
    }

    /// Learns of `node` at `addr` as if its first heartbeat arrived now: for
    /// a cluster whose members are configured rather than discovered (the
    /// simulator starts large clusters this way).
    pub fn add_peer(
        &mut self,
        now: Instant,
        node: NodeId,
        addr: impl Into<String>,
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) {
        if node != self.me {
            self.absorb(now, &MemberEntry::alive(node, addr), out);
        }
    }

    /// Advances time: the pause guard, this node's round (heartbeat and
    /// gossip) when due, detection and conviction.
    pub fn tick(&mut self, now: Instant, out: &mut Outbox<MembershipMsg, MemberEvent>) {
        self.guard_pause(now, out);
        if self.next_round.is_none_or(|due| now >= due) {
            if !self.leaving {
                self.update_own(|own| own.heartbeat += 1);
            }
            self.gossip_round(out);
            let interval = self.config.gossip_interval;
            let next = self.next_round.map_or(now, |due| due + interval);
            // A late tick does not cause a burst of catch-up rounds.
            self.next_round = Some(if next <= now { now + interval } else { next });
        }
        if !self.leaving {
            self.detect(now, out);
            self.convict(now, out);
        }
    }

    /// Handles one message of membership gossip.
    pub fn step(
        &mut self,
        now: Instant,
        envelope: Addressed<MembershipMsg>,
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) {
        self.guard_pause(now, out);
        let MembershipMsg::Gossip { members, reply } = envelope.msg;
        for entry in &members {
            self.absorb(now, entry, out);
        }
        if reply && envelope.from != self.me {
            out.send(self.me, envelope.from, self.gossip_message(false));
        }
    }

    /// Leaves gracefully: raises the incarnation, marks itself LEFT and
    /// gossips that at once. The caller keeps ticking for `leave_linger` so
    /// the news spreads, then stops the node.
    pub fn leave(&mut self, now: Instant, out: &mut Outbox<MembershipMsg, MemberEvent>) {
        self.guard_pause(now, out);
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.update_own(|own| {
            own.incarnation += 1;
            own.status = MemberStatus::Left;
        });
        self.gossip_round(out);
    }

    /// Rewrites this node's own entry, which only it writes.
    fn update_own(&mut self, change: impl FnOnce(&mut MemberEntry)) {
        if let Some(mut own) = self.table.get(self.me).cloned() {
            change(&mut own);
            self.table.set(own);
        }
    }

    fn guard_pause(&mut self, now: Instant, out: &mut Outbox<MembershipMsg, MemberEvent>) {
        if let Some(last) = self.last_run {
            let gap = now.saturating_duration_since(last);
            if gap > self.config.local_pause_guard {
                for detector in self.detectors.values_mut() {
                    detector.restart_silence(now);
                }
                for since in self.suspected_since.values_mut() {
                    *since = now;
                }
                out.event(MemberEvent::LocalPause { gap });
            }
        }
        self.last_run = Some(self.last_run.map_or(now, |last| last.max(now)));
    }

    fn gossip_message(&self, reply: bool) -> MembershipMsg {
        MembershipMsg::Gossip {
            members: self.table.entries().cloned().collect(),
            reply,
        }
    }

    fn gossip_round(&mut self, out: &mut Outbox<MembershipMsg, MemberEvent>) {
        let mut reachable = Vec::new();
        let mut down = Vec::new();
        for e in self.table.entries().filter(|e| e.node != self.me) {
            match e.status {
                MemberStatus::Alive | MemberStatus::Suspect => reachable.push(e.node),
                MemberStatus::Down => down.push(e.node),
                MemberStatus::Left => {}
            }
        }
        let mut targets: Vec<NodeId> = reachable
            .choose_multiple(&mut self.rng, self.config.fanout)
            .copied()
            .collect();
        if targets.is_empty() {
            targets = self
                .seeds
                .choose_multiple(&mut self.rng, self.config.fanout)
                .copied()
                .collect();
        } else {
            // A seed not known reachable may be in another island: two
            // nodes that started through each other as seeds, each finding
            // only the other, would otherwise never look further. With the
            // same odds as a DOWN peer, gossip to one such seed too.
            let strangers: Vec<NodeId> = self
                .seeds
                .iter()
                .copied()
                .filter(|s| !reachable.contains(s) && !down.contains(s))
                .filter(|&s| {
                    self.table
                        .get(s)
                        .is_none_or(|e| e.status != MemberStatus::Left)
                })
                .collect();
            if !strangers.is_empty() {
                let p = strangers.len() as f64 / (reachable.len() + 1) as f64;
                if self.rng.random_bool(p.min(1.0)) {
                    if let Some(&node) = strangers.choose(&mut self.rng) {
                        targets.push(node);
                    }
                }
            }
        }
        if !down.is_empty() {
            let p = down.len() as f64 / (reachable.len() + 1) as f64;
            if self.rng.random_bool(p.min(1.0)) {
                if let Some(&node) = down.choose(&mut self.rng) {
                    targets.push(node);
                }
            }
        }
        if targets.is_empty() {
            return;
        }
        let msg = self.gossip_message(self.config.push_pull);
        for to in targets {
            out.send(self.me, to, msg.clone());
        }
    }

    /// Merges one remote entry, with its consequences.
    fn absorb(
        &mut self,
        now: Instant,
        remote: &MemberEntry,
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) {
        if remote.node == self.me {
            self.maybe_refute(remote, out);
            return;
        }
        let Some(outcome) = self.table.merge(remote) else {
            return;
        };
        let Some(entry) = self.table.get(remote.node).cloned() else {
            return;
        };
        let node = entry.node;
        let was = outcome.before.as_ref().map(|b| b.status);
        if entry.status == MemberStatus::Left {
            self.detectors.remove(&node);
        } else if outcome.heartbeat_advanced {
            let fresh = matches!(was, None | Some(MemberStatus::Down | MemberStatus::Left));
            match self.detectors.get_mut(&node) {
                Some(detector) if !fresh => detector.heartbeat(now),
                _ => {
                    self.detectors.insert(node, self.new_detector(now));
                }
            }
        }
        if !outcome.status_changed {
            return;
        }
        if entry.status != MemberStatus::Suspect {
            self.suspected_since.remove(&node);
        }
        match entry.status {
            MemberStatus::Alive if was != Some(MemberStatus::Alive) => {
                out.event(MemberEvent::Up {
                    node,
                    addr: entry.addr.clone(),
                    incarnation: entry.incarnation,
                });
            }
            MemberStatus::Alive => {}
            MemberStatus::Suspect => {
                self.suspected_since.insert(node, now);
                out.event(MemberEvent::Suspect {
                    node,
                    incarnation: entry.incarnation,
                });
            }
            MemberStatus::Down => out.event(MemberEvent::Down {
                node,
                incarnation: entry.incarnation,
            }),
            MemberStatus::Left => out.event(MemberEvent::Left { node }),
        }
    }

    fn maybe_refute(&mut self, remote: &MemberEntry, out: &mut Outbox<MembershipMsg, MemberEvent>) {
        if self.leaving {
            return;
        }
        let Some(own) = self.table.get(self.me) else {
            return;
        };
        let accused = remote.incarnation >= own.incarnation && remote.status != MemberStatus::Alive;
        // A higher incarnation of this node than its own: a previous process
        // of this node was known under it. Take the next one.
        if accused || remote.incarnation > own.incarnation {
            let mut own = own.clone();
            own.incarnation = remote.incarnation + 1;
            own.status = MemberStatus::Alive;
            let incarnation = own.incarnation;
            self.table.set(own);
            out.event(MemberEvent::Refuted { incarnation });
        }
    }

    fn detect(&mut self, now: Instant, out: &mut Outbox<MembershipMsg, MemberEvent>) {
        let threshold = self.config.phi_threshold;
        let suspects: Vec<NodeId> = self
            .detectors
            .iter()
            .filter(|(node, d)| {
                self.status(**node) == Some(MemberStatus::Alive) && d.phi(now) > threshold
            })
            .map(|(&node, _)| node)
            .collect();
        for node in suspects {
            if self.table.set_status(node, MemberStatus::Suspect) {
                self.suspected_since.insert(node, now);
                let incarnation = self.table.get(node).map_or(0, |e| e.incarnation);
                out.event(MemberEvent::Suspect { node, incarnation });
            }
        }
    }

    fn convict(&mut self, now: Instant, out: &mut Outbox<MembershipMsg, MemberEvent>) {
        let timeout = self.suspicion_timeout();
        let mut convicted = Vec::new();
        self.suspected_since.retain(|&node, since| {
            let still = self.table.get(node).map(|e| e.status) == Some(MemberStatus::Suspect);
            if still && now.saturating_duration_since(*since) >= timeout {
                convicted.push(node);
                return false;
            }
            still
        });
        for node in convicted {
            if self.table.set_status(node, MemberStatus::Down) {
                let incarnation = self.table.get(node).map_or(0, |e| e.incarnation);
                out.event(MemberEvent::Down { node, incarnation });
            }
        }
    }

    fn new_detector(&self, now: Instant) -> PhiDetector {
        PhiDetector::new(
            now,
            self.config.gossip_interval,
            self.config.max_sample_size,
            self.config.min_std_deviation,
            self.config.acceptable_heartbeat_pause,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn config() -> MembershipConfig {
        MembershipConfig::default()
    }

    /// Nodes 1..=n, all knowing each other, delivering instantly.
    struct Cluster {
        nodes: BTreeMap<NodeId, Membership>,
        events: Vec<(NodeId, MemberEvent)>,
        dead: Vec<NodeId>,
        now: Instant,
    }

    impl Cluster {
        fn new(n: u64) -> Self {
            let now = Instant::now();
            let mut nodes = BTreeMap::new();
            for id in 1..=n {
                let mut m =
                    Membership::new(config(), NodeId(id), format!("n{id}"), &[], id).unwrap();
                let mut out = Outbox::new();
                for peer in 1..=n {
                    m.add_peer(now, NodeId(peer), format!("n{peer}"), &mut out);
                }
                nodes.insert(NodeId(id), m);
            }
            Cluster {
                nodes,
                events: Vec::new(),
                dead: Vec::new(),
                now,
            }
        }

        fn deliver(&mut self, mut queue: Vec<Addressed<MembershipMsg>>) {
            while let Some(env) = queue.pop() {
                if self.dead.contains(&env.to) || self.dead.contains(&env.from) {
                    continue;
                }
                let to = env.to;
                if let Some(node) = self.nodes.get_mut(&to) {
                    let mut out = Outbox::new();
                    node.step(self.now, env, &mut out);
                    self.events.extend(out.events.into_iter().map(|e| (to, e)));
                    queue.extend(out.messages);
                }
            }
        }

        /// Advances by one interval and ticks every live node.
        fn round(&mut self) {
            self.now += config().gossip_interval;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                if self.dead.contains(&id) {
                    continue;
                }
                let mut out = Outbox::new();
                let now = self.now;
                if let Some(node) = self.nodes.get_mut(&id) {
                    node.tick(now, &mut out);
                }
                self.events.extend(out.events.into_iter().map(|e| (id, e)));
                self.deliver(out.messages);
            }
        }

        fn status(&self, at: u64, of: u64) -> Option<MemberStatus> {
            self.nodes[&NodeId(at)].status(NodeId(of))
        }
    }

    #[test]
    fn suspicion_timeout_grows_with_log_n() {
        let t = |n| Cluster::new(n).nodes[&NodeId(1)].suspicion_timeout();
        // 2 x log2(N) x 1 s, at least 2 s.
        assert_eq!(t(2), Duration::from_secs(2));
        assert_eq!(t(4), Duration::from_secs(4));
        assert_eq!(t(16), Duration::from_secs(8));
        assert!(t(100) > t(16));
    }

    #[test]
    fn healthy_cluster_never_suspects() {
        let mut c = Cluster::new(5);
        for _ in 0..300 {
            c.round();
        }
        let bad: Vec<_> = c
            .events
            .iter()
            .filter(|(_, e)| !matches!(e, MemberEvent::Up { .. }))
            .collect();
        assert!(bad.is_empty(), "{bad:?}");
        for at in 1..=5 {
            for of in 1..=5 {
                assert_eq!(c.status(at, of), Some(MemberStatus::Alive));
            }
        }
    }

    #[test]
    fn crashed_node_is_suspected_then_down_on_every_peer() {
        let mut c = Cluster::new(5);
        for _ in 0..30 {
            c.round();
        }
        let crash = c.now;
        c.dead.push(NodeId(3));
        let mut first_suspect = None;
        for _ in 0..60 {
            c.round();
            if first_suspect.is_none()
                && c.events.iter().any(
                    |(_, e)| matches!(e, MemberEvent::Suspect { node, .. } if *node == NodeId(3)),
                )
            {
                first_suspect = Some(c.now - crash);
            }
        }
        for at in [1, 2, 4, 5] {
            assert_eq!(c.status(at, 3), Some(MemberStatus::Down), "at n{at}");
        }
        // Phi 8 with 1 s heartbeats, 3 s pause and 100 ms floor: about
        // 1 + 3 + 0.6 s of silence, plus the relay delay of gossip.
        let first = first_suspect.unwrap();
        assert!(first >= Duration::from_secs(4), "{first:?}");
        assert!(first <= Duration::from_secs(9), "{first:?}");
        // Nothing about live nodes.
        assert!(!c.events.iter().any(|(_, e)| matches!(e,
            MemberEvent::Suspect { node, .. } | MemberEvent::Down { node, .. } if *node != NodeId(3))));
    }

    #[test]
    fn a_suspected_live_node_refutes_with_a_higher_incarnation() {
        let mut c = Cluster::new(3);
        for _ in 0..5 {
            c.round();
        }
        // Node 1 falsely suspects node 2 and gossips it.
        let inc = c.nodes[&NodeId(1)]
            .table()
            .get(NodeId(2))
            .unwrap()
            .incarnation;
        let mut accusation = c.nodes[&NodeId(1)].table().get(NodeId(2)).unwrap().clone();
        accusation.status = MemberStatus::Suspect;
        let env = Addressed::new(
            NodeId(1),
            NodeId(2),
            MembershipMsg::Gossip {
                members: vec![accusation],
                reply: true,
            },
        );
        c.deliver(vec![env]);
        assert!(c.events.contains(&(
            NodeId(2),
            MemberEvent::Refuted {
                incarnation: inc + 1
            }
        )));
        for _ in 0..10 {
            c.round();
        }
        for at in 1..=3 {
            let e = c.nodes[&NodeId(at)].table().get(NodeId(2)).unwrap();
            assert_eq!((e.status, e.incarnation), (MemberStatus::Alive, inc + 1));
        }
    }

    #[test]
    fn an_unrefuted_suspicion_becomes_down_after_the_timeout() {
        let now = Instant::now();
        let mut m = Membership::new(config(), NodeId(1), "n1", &[], 1).unwrap();
        let mut out = Outbox::new();
        for p in 2..=4 {
            m.add_peer(now, NodeId(p), format!("n{p}"), &mut out);
        }
        let mut suspect = MemberEntry::alive(NodeId(2), "n2");
        suspect.status = MemberStatus::Suspect;
        let gossip = MembershipMsg::Gossip {
            members: vec![suspect],
            reply: false,
        };
        m.step(now, Addressed::new(NodeId(3), NodeId(1), gossip), &mut out);
        assert_eq!(m.status(NodeId(2)), Some(MemberStatus::Suspect));
        let timeout = m.suspicion_timeout();
        assert_eq!(timeout, Duration::from_secs(4)); // 2 x log2(4) x 1 s
                                                     // Tick every 500 ms so the pause guard stays quiet.
        let mut t = now;
        while t + MS(500) < now + timeout {
            t += MS(500);
            m.tick(t, &mut out);
            assert_eq!(m.status(NodeId(2)), Some(MemberStatus::Suspect), "at {t:?}");
        }
        m.tick(now + timeout, &mut out);
        assert_eq!(m.status(NodeId(2)), Some(MemberStatus::Down));
        assert!(out.events.contains(&MemberEvent::Down {
            node: NodeId(2),
            incarnation: 0
        }));
    }

    #[test]
    fn a_node_back_from_its_own_pause_does_not_convict() {
        let now = Instant::now();
        let mut m = Membership::new(config(), NodeId(1), "n1", &[], 1).unwrap();
        let mut out = Outbox::new();
        for p in 2..=4 {
            m.add_peer(now, NodeId(p), format!("n{p}"), &mut out);
        }
        m.tick(now, &mut out);
        // Thirty seconds without running: every peer's phi is enormous.
        let back = now + Duration::from_secs(30);
        assert!(m.phi(NodeId(2), back).unwrap() > 100.0);
        out.events.clear();
        m.tick(back, &mut out);
        assert!(matches!(
            out.events.first(),
            Some(MemberEvent::LocalPause { gap }) if *gap == Duration::from_secs(30)
        ));
        assert!(
            !out.events
                .iter()
                .any(|e| matches!(e, MemberEvent::Suspect { .. } | MemberEvent::Down { .. })),
            "{:?}",
            out.events
        );
        assert!(m.phi(NodeId(2), back).unwrap() < 0.5);
        // The same silence without a pause on this side does convict: the
        // guard is what made the difference.
        let mut steady = Membership::new(config(), NodeId(1), "n1", &[], 1).unwrap();
        for p in 2..=4 {
            steady.add_peer(now, NodeId(p), format!("n{p}"), &mut out);
        }
        out.events.clear();
        let mut t = now;
        while t < back {
            t += MS(500);
            steady.tick(t, &mut out);
        }
        assert!(out
            .events
            .iter()
            .any(|e| matches!(e, MemberEvent::Suspect { .. })));
    }

    #[test]
    fn pause_guard_also_restarts_suspicion_timers() {
        let now = Instant::now();
        let mut m = Membership::new(config(), NodeId(1), "n1", &[], 1).unwrap();
        let mut out = Outbox::new();
        for p in 2..=4 {
            m.add_peer(now, NodeId(p), format!("n{p}"), &mut out);
        }
        let mut suspect = MemberEntry::alive(NodeId(2), "n2");
        suspect.status = MemberStatus::Suspect;
        let gossip = MembershipMsg::Gossip {
            members: vec![suspect],
            reply: false,
        };
        m.step(now, Addressed::new(NodeId(3), NodeId(1), gossip), &mut out);
        // Paused for longer than the suspicion timeout: not a conviction.
        m.tick(now + Duration::from_secs(10), &mut out);
        assert_eq!(m.status(NodeId(2)), Some(MemberStatus::Suspect));
    }

    #[test]
    fn a_new_node_joins_through_a_seed_and_everyone_learns_it() {
        let mut c = Cluster::new(4);
        let mut joiner = Membership::new(config(), NodeId(9), "n9", &[NodeId(1)], 9).unwrap();
        let mut out = Outbox::new();
        joiner.tick(c.now, &mut out);
        assert_eq!(out.messages.len(), 1);
        assert_eq!(
            out.messages[0].to,
            NodeId(1),
            "first gossip goes to the seed"
        );
        c.nodes.insert(NodeId(9), joiner);
        c.deliver(out.messages);
        // The seed's answer gave the joiner the whole table.
        assert_eq!(c.nodes[&NodeId(9)].table().len(), 5);
        for _ in 0..10 {
            c.round();
        }
        for at in 1..=4 {
            assert_eq!(c.status(at, 9), Some(MemberStatus::Alive), "at n{at}");
        }
    }

    #[test]
    fn a_graceful_leave_reaches_everyone_and_is_not_refuted() {
        let mut c = Cluster::new(5);
        for _ in 0..3 {
            c.round();
        }
        let mut out = Outbox::new();
        let now = c.now;
        c.nodes.get_mut(&NodeId(4)).unwrap().leave(now, &mut out);
        c.deliver(out.messages);
        for _ in 0..3 {
            c.round();
        }
        c.dead.push(NodeId(4));
        for _ in 0..30 {
            c.round();
        }
        for at in [1, 2, 3, 5] {
            assert_eq!(c.status(at, 4), Some(MemberStatus::Left), "at n{at}");
            assert_eq!(c.nodes[&NodeId(at)].phi(NodeId(4), c.now), None);
        }
        assert!(!c
            .events
            .iter()
            .any(|(_, e)| matches!(e, MemberEvent::Suspect { .. } | MemberEvent::Down { .. })));
    }

    #[test]
    fn bad_config_is_refused() {
        let cfg = MembershipConfig {
            fanout: 0,
            ..config()
        };
        assert!(Membership::new(cfg, NodeId(1), "n1", &[], 0).is_err());
    }
}
