//! The membership machine: monitors and their pings, gossip of news and
//! digests, relays, suspicion, refutation, join, leave and forgetting (see
//! the parent module for the protocol in brief).
//!
//! # Monitors: who watches whom
//!
//! Each node is watched by `monitors` (k) others: the next k members after
//! it on a ring of the hashed ids of the members that are ALIVE or SUSPECT,
//! as the monitor itself sees the table. A monitor pings each node it
//! watches once per `gossip_interval`; the ack's arrival is a heartbeat for
//! the phi detector the monitor keeps for that node, and only monitors keep
//! detectors. So phi sees the arrivals of one link, as regular as the
//! network, instead of heartbeats relayed by gossip, whose arrival times
//! spread by a round or more. The monitor alone decides whom it watches, so
//! two nodes that see the table differently never leave a detector waiting
//! for heartbeats nobody sends.
//!
//! # Gossip: news and digests, never whole tables
//!
//! An entry whose status, incarnation or address changed is *news*: the
//! node that learns it relays it at once to `relay_fanout` random reachable
//! peers, and puts it in every message it sends (gossip, pings, acks) until
//! it has sent it `3 x ceil(log2 (N + 1))` times. Each `gossip_interval` a
//! node also gossips to `fanout` random reachable peers: its news and the
//! digest of its table. Where digests still differ after the news is
//! merged, the two nodes sync: one sends the digest of each of 64 buckets
//! of its table, the other the entries of the buckets that differ, and the
//! first answers with its own entries of those buckets. A message therefore
//! holds a few dozen entries at most, whatever the cluster's size; a
//! joiner's first sync takes several. With probability
//! `down / (reachable + 1)` a round also gossips to one DOWN peer, so that
//! a healed partition or a restarted node is found again (Cassandra's
//! rule); a node that knows no reachable peer gossips to its seeds, which
//! is how a new node joins, and a node that does gossips with the same odds
//! to one seed it does not know, so that two nodes that found only each
//! other through their seeds do not stay an island.
//!
//! # Suspicion, conviction and refutation
//!
//! At each tick a monitor suspects an ALIVE node it watches whose phi
//! exceeds `phi_threshold`, and pings it at every tick from then on. A
//! monitor that holds a suspicion (its own or relayed) for
//! `suspicion_multiplier x gossip_interval` without a refutation marks the
//! node DOWN; any other node waits twice as long, so it convicts on its
//! own only if no monitor's verdict reaches it. A node that hears itself
//! called SUSPECT, DOWN or LEFT at its current incarnation (or any higher
//! one) takes the next incarnation, marks itself ALIVE, and sends that at
//! once to whoever told it and to `relay_fanout` others.
//!
//! A node that heard from a peer directly (any message from the peer
//! itself) within `acceptable_heartbeat_pause + gossip_interval` does not
//! take a relayed verdict of SUSPECT or DOWN about it: it holds the
//! verdict back and forwards it to the peer, whose refutation comes back
//! within one message round trip. If the peer stays silent past that
//! window, the verdict held back is taken then. This is what keeps a
//! healed partition from marking healthy nodes down: each side's verdicts
//! about the other side reach nodes that hear the accused directly.
//!
//! # The local-pause guard
//!
//! When the machine has not run (neither `tick` nor `step`) for longer than
//! `local_pause_guard`, this node was paused; the silence it observed is its
//! own. It restarts every detector's silence clock and every suspicion timer
//! at `now` instead of convicting, and reports [`MemberEvent::LocalPause`].
//! Since its own monitors may have suspected it meanwhile, it also takes the
//! next incarnation and sends it at once to its monitors and relays it: a
//! refutation before the accusation arrives.
//!
//! # Departed nodes
//!
//! A LEFT entry (a graceful leave, or [`Membership::forget`]) is kept for
//! `left_grace` after this node learned it, then removed from the table and
//! remembered as a tombstone: its id and incarnation, neither shown nor
//! gossiped. News about a tombstoned node at that incarnation or below is
//! ignored; if it comes from the node itself (a process that kept running,
//! or restarted with the same id), the node is told it left, and rejoins at
//! a higher incarnation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::phi::PhiDetector;
use super::table::{MemberEntry, MemberStatus, MembershipTable, DIGEST_BUCKETS};
use super::{Addressed, MemberEvent, MembershipMsg, Outbox};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::membership::MembershipConfig;

/// At most this many news entries go in one message. With entries of about
/// 60 bytes of CBOR, 24 keep a message under 2 KB.
pub const NEWS_PER_MESSAGE: usize = 24;

/// At most this many entries go in one [`MembershipMsg::Entries`]: under
/// 4 KB of CBOR with addresses of a few dozen bytes.
pub const ENTRIES_PER_MESSAGE: usize = 48;

/// How many times each node sends a piece of news, per doubling of the
/// cluster (SWIM's lambda).
const NEWS_REPEATS: u32 = 3;

/// How many monitors must suspect a node on their own evidence before a
/// monitor convicts it (fewer if the node has fewer monitors). Two: a
/// monitor that lost a couple of acks just before a node's short pause
/// suspects it early, but a second monitor, which heard the node until the
/// pause began, only suspects it a whole acceptable pause later.
pub const CONFIRMATIONS: usize = 2;

/// The membership protocol of one node. See the module documentation.
#[derive(Debug)]
pub struct Membership {
    config: MembershipConfig,
    me: NodeId,
    table: MembershipTable,
    /// One per node this node monitors, fed by the acks of its pings.
    detectors: BTreeMap<NodeId, PhiDetector>,
    /// Whether the set of monitored nodes must be worked out again (the
    /// table's members or their reachability changed).
    monitors_stale: bool,
    /// The monitoring ring as of the last [`Self::refresh_monitors`].
    ring: Vec<NodeId>,
    /// When this node started holding each current suspicion.
    suspected_since: BTreeMap<NodeId, Instant>,
    /// Per suspect, the incarnation and the monitors that suspected it on
    /// their own evidence (this node included), as far as this node heard.
    accusers: BTreeMap<NodeId, (u64, BTreeSet<NodeId>)>,
    /// Per suspect, when [`CONFIRMATIONS`] monitors had accused it.
    confirmed_at: BTreeMap<NodeId, Instant>,
    /// When each peer last sent this node a message itself.
    last_direct: BTreeMap<NodeId, Instant>,
    /// Relayed verdicts not taken because the accused was heard directly.
    held_back: BTreeMap<NodeId, MemberEntry>,
    /// News, with the number of times each is still to be sent.
    news: BTreeMap<NodeId, u32>,
    /// When this node learned of each LEFT entry, to remove it after
    /// `left_grace`.
    left_since: BTreeMap<NodeId, Instant>,
    /// Nodes removed from the table after they left, with the incarnation
    /// they left at.
    tombstones: BTreeMap<NodeId, u64>,
    seeds: Vec<NodeId>,
    rng: ChaCha8Rng,
    /// Last time `tick` or `step` ran, for the local-pause guard.
    last_run: Option<Instant>,
    /// When the next round is due; `None` before the first tick.
    next_round: Option<Instant>,
    ping_seq: u64,
    /// Pings sent between rounds (to a node whose phi is high, or that is
    /// suspected): their acks show the node alive, but are not samples of
    /// its regular interval.
    extra_pings: BTreeSet<u64>,
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
        let mut machine = Membership {
            config,
            me,
            table,
            detectors: BTreeMap::new(),
            monitors_stale: true,
            ring: vec![me],
            suspected_since: BTreeMap::new(),
            accusers: BTreeMap::new(),
            confirmed_at: BTreeMap::new(),
            last_direct: BTreeMap::new(),
            held_back: BTreeMap::new(),
            news: BTreeMap::new(),
            left_since: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            seeds: seeds.iter().copied().filter(|&s| s != me).collect(),
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            last_run: None,
            next_round: None,
            ping_seq: 0,
            extra_pings: BTreeSet::new(),
            leaving: false,
        };
        // A joiner's own entry is news: the seed relays it at once.
        machine.make_news(me);
        Ok(machine)
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

    /// Phi of `node` at `now`; `None` for nodes this node does not monitor
    /// (itself, nodes that left, and nodes other monitors watch).
    pub fn phi(&self, node: NodeId, now: Instant) -> Option<f64> {
        self.detectors.get(&node).map(|d| d.phi(now))
    }

    /// The detector of `node`, to read its window's mean and deviation.
    pub fn detector(&self, node: NodeId) -> Option<&PhiDetector> {
        self.detectors.get(&node)
    }

    /// Phi of every node this node monitors, at `now`.
    pub fn phis(&self, now: Instant) -> BTreeMap<NodeId, f64> {
        self.detectors
            .iter()
            .map(|(&n, d)| (n, d.phi(now)))
            .collect()
    }

    /// The nodes this node monitors (pings, and keeps a detector for).
    pub fn monitored(&self) -> Vec<NodeId> {
        self.detectors.keys().copied().collect()
    }

    /// Nodes removed from the table after they left, with the incarnation
    /// they left at.
    pub fn tombstones(&self) -> &BTreeMap<NodeId, u64> {
        &self.tombstones
    }

    /// Whether [`Self::leave`] was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// How long a suspicion must go unrefuted before a monitor of the
    /// suspect convicts: `suspicion_multiplier x gossip_interval`. Other
    /// nodes wait twice as long.
    pub fn suspicion_timeout(&self) -> Duration {
        self.config
            .gossip_interval
            .mul_f64(self.config.suspicion_multiplier)
    }

    /// Learns of `node` at `addr` as ALIVE, without relaying it: for a
    /// cluster whose members are configured rather than discovered (the
    /// simulator starts large clusters this way).
    pub fn add_peer(
        &mut self,
        now: Instant,
        node: NodeId,
        addr: impl Into<String>,
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) {
        if node != self.me {
            let mut news = Vec::new();
            self.absorb(
                now,
                self.me,
                &MemberEntry::alive(node, addr),
                &mut news,
                out,
            );
            for n in news {
                self.news.remove(&n.node);
            }
        }
    }

    /// Advances time: the pause guard, this node's round (heartbeat, pings
    /// and gossip) when due, pings of suspects, detection, conviction, and
    /// the removal of nodes that left long enough ago.
    pub fn tick(&mut self, now: Instant, out: &mut Outbox<MembershipMsg, MemberEvent>) {
        self.guard_pause(now, out);
        self.refresh_monitors(now);
        let round = self.next_round.is_none_or(|due| now >= due);
        if round {
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
            self.ping(now, round, out);
            self.take_held_back(now, out);
            self.detect(now, round, out);
            self.convict(now, out);
        }
        self.forget_departed(now);
    }

    /// Handles one membership message.
    pub fn step(
        &mut self,
        now: Instant,
        envelope: Addressed<MembershipMsg>,
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) {
        self.guard_pause(now, out);
        let from = envelope.from;
        if from == self.me {
            return;
        }
        self.last_direct.insert(from, now);
        let mut news = Vec::new();
        match envelope.msg {
            MembershipMsg::Gossip {
                members,
                digest,
                reply,
            } => {
                self.absorb_all(now, from, &members, &mut news, out);
                if reply {
                    let members = self.news_for(from);
                    let digest = self.table.digest();
                    out.send(
                        self.me,
                        from,
                        MembershipMsg::GossipReply { members, digest },
                    );
                } else if digest != self.table.digest() {
                    self.start_sync(from, out);
                }
            }
            MembershipMsg::GossipReply { members, digest } => {
                self.absorb_all(now, from, &members, &mut news, out);
                if digest != self.table.digest() {
                    self.start_sync(from, out);
                }
            }
            MembershipMsg::Relay { members } => {
                self.absorb_all(now, from, &members, &mut news, out);
            }
            MembershipMsg::Sync { buckets } => self.answer_sync(from, &buckets, out),
            MembershipMsg::Entries {
                members,
                buckets,
                want,
            } => {
                // What a sync brings is old news to the cluster: merged,
                // sent on with later messages, but not relayed at once.
                let mut synced = Vec::new();
                self.absorb_all(now, from, &members, &mut synced, out);
                if want {
                    let buckets: Vec<usize> = buckets
                        .iter()
                        .map(|&b| b as usize)
                        .filter(|&b| b < DIGEST_BUCKETS)
                        .collect();
                    self.send_entries(from, &buckets, false, out);
                }
            }
            MembershipMsg::Ping { seq, members } => {
                self.absorb_all(now, from, &members, &mut news, out);
                let mut answer: Vec<MemberEntry> =
                    self.table.get(self.me).cloned().into_iter().collect();
                answer.extend(
                    self.news_for(from)
                        .into_iter()
                        .filter(|e| e.node != self.me),
                );
                out.send(
                    self.me,
                    from,
                    MembershipMsg::Ack {
                        seq,
                        members: answer,
                    },
                );
            }
            MembershipMsg::Accuse { node, incarnation } => {
                if node == self.me {
                    let mut accused = self.table.get(self.me).cloned();
                    if let Some(e) = accused.as_mut() {
                        e.incarnation = incarnation;
                        e.status = MemberStatus::Suspect;
                    }
                    if let Some(e) = accused {
                        self.maybe_refute(&e, from, out);
                    }
                } else if self
                    .table
                    .get(node)
                    .is_some_and(|e| e.incarnation <= incarnation && e.status.is_reachable())
                {
                    self.accuse(now, node, incarnation, from);
                }
            }
            MembershipMsg::Ack { seq, members } => {
                let extra = self.extra_pings.remove(&seq);
                if let Some(detector) = self.detectors.get_mut(&from) {
                    if extra {
                        detector.restart_silence(now);
                    } else {
                        detector.heartbeat(now);
                    }
                }
                self.absorb_all(now, from, &members, &mut news, out);
            }
        }
        self.tell_if_accused(from, out);
        self.relay(&news, Some(from), out);
    }

    /// Leaves gracefully: raises the incarnation, marks itself LEFT and
    /// sends that at once. The caller keeps ticking for `leave_linger` so
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
        self.make_news(self.me);
        let own: Vec<MemberEntry> = self.table.get(self.me).cloned().into_iter().collect();
        self.relay(&own, None, out);
        self.gossip_round(out);
    }

    /// Forgets `node` for good: an operator's word that it is gone and will
    /// not come back (a machine lost with its disk). The node becomes LEFT
    /// at the incarnation this node knows, which outranks ALIVE, SUSPECT and
    /// DOWN there, and the news spreads like a graceful leave; after
    /// `left_grace` every node drops it from its table. Should the node in
    /// fact be running, it hears of this and refutes, as it would a false
    /// suspicion. Fails with `InvalidInput` for this node itself, and with
    /// `UnknownPeer` for a node not in the table.
    pub fn forget(
        &mut self,
        now: Instant,
        node: NodeId,
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) -> Result<()> {
        if node == self.me {
            return Err(Error::InvalidInput(
                "a node cannot forget itself; leave instead".into(),
            ));
        }
        let Some(entry) = self.table.get(node) else {
            return Err(Error::UnknownPeer(node));
        };
        if entry.status == MemberStatus::Left {
            return Ok(());
        }
        let mut gone = entry.clone();
        gone.status = MemberStatus::Left;
        let mut news = Vec::new();
        self.held_back.remove(&node);
        self.last_direct.remove(&node);
        self.absorb(now, self.me, &gone, &mut news, out);
        self.relay(&news, None, out);
        Ok(())
    }

    /// Rewrites this node's own entry, which only it writes.
    fn update_own(&mut self, change: impl FnOnce(&mut MemberEntry)) {
        if let Some(mut own) = self.table.get(self.me).cloned() {
            change(&mut own);
            self.table.set(own);
        }
    }

    /// Marks `node`'s entry as news, to be sent a bounded number of times.
    fn make_news(&mut self, node: NodeId) {
        let n = self.table.len() as f64 + 1.0;
        let repeats = NEWS_REPEATS * (n.log2().ceil() as u32).max(1);
        self.news.insert(node, repeats);
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
                for heard in self.last_direct.values_mut() {
                    *heard = now;
                }
                out.event(MemberEvent::LocalPause { gap });
                if !self.leaving {
                    // Refute before being told: the monitors may have
                    // suspected this node while it was stopped.
                    self.update_own(|own| own.incarnation += 1);
                    let incarnation = self.table.get(self.me).map_or(0, |e| e.incarnation);
                    out.event(MemberEvent::Refuted { incarnation });
                    self.make_news(self.me);
                    let own: Vec<MemberEntry> =
                        self.table.get(self.me).cloned().into_iter().collect();
                    for monitor in self.my_monitors() {
                        out.send(
                            self.me,
                            monitor,
                            MembershipMsg::Relay {
                                members: own.clone(),
                            },
                        );
                    }
                    self.relay(&own, None, out);
                }
            }
        }
        self.last_run = Some(self.last_run.map_or(now, |last| last.max(now)));
    }

    /// The members on the monitoring ring (ALIVE and SUSPECT, this node
    /// included), ordered by hashed id.
    fn monitor_ring(&self) -> Vec<NodeId> {
        let mut ring: Vec<(u64, NodeId)> = self
            .table
            .entries()
            .filter(|e| e.node == self.me || e.status.is_reachable())
            .map(|e| (ring_hash(e.node), e.node))
            .collect();
        ring.sort_unstable();
        ring.into_iter().map(|(_, n)| n).collect()
    }

    /// The nodes that monitor this one, as this node sees the ring.
    fn my_monitors(&self) -> Vec<NodeId> {
        self.monitors_of(self.me)
    }

    /// Works out again, if the table changed, which nodes this node
    /// monitors (the `monitors` members before it on the ring), starting a
    /// detector for each new one and dropping those of the others.
    fn refresh_monitors(&mut self, now: Instant) {
        if !self.monitors_stale {
            return;
        }
        self.monitors_stale = false;
        self.ring = self.monitor_ring();
        let ring = &self.ring;
        let mut watched = BTreeSet::new();
        if let Some(at) = ring.iter().position(|&n| n == self.me) {
            let k = self.config.monitors.min(ring.len() - 1);
            for i in 1..=k {
                watched.insert(ring[(at + ring.len() - i) % ring.len()]);
            }
        }
        self.detectors.retain(|node, _| watched.contains(node));
        for node in watched {
            if !self.detectors.contains_key(&node) {
                let detector = self.new_detector(now);
                self.detectors.insert(node, detector);
            }
        }
    }

    /// The news to send to `to`: the freshest pieces, each counted as sent
    /// once, and `to`'s own entry if this node sees it as other than ALIVE
    /// (so that it refutes).
    fn news_for(&mut self, to: NodeId) -> Vec<MemberEntry> {
        let mut members = Vec::new();
        if let Some(e) = self.table.get(to) {
            if e.status != MemberStatus::Alive {
                members.push(e.clone());
            }
        }
        let mut pieces: Vec<(u32, NodeId)> = self
            .news
            .iter()
            .filter(|(&n, _)| n != to || members.is_empty())
            .map(|(&n, &left)| (left, n))
            .collect();
        // Most sends left first: the newest news.
        pieces.sort_unstable_by(|a, b| b.cmp(a));
        for (_, node) in pieces.into_iter().take(NEWS_PER_MESSAGE) {
            if let Some(e) = self.table.get(node) {
                members.push(e.clone());
            }
            if let Some(left) = self.news.get_mut(&node) {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.news.remove(&node);
                }
            }
        }
        members
    }

    /// Relays `news` at once to `relay_fanout` random reachable peers other
    /// than `except` (the node it came from).
    fn relay(
        &mut self,
        news: &[MemberEntry],
        except: Option<NodeId>,
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) {
        if news.is_empty() || self.config.relay_fanout == 0 {
            return;
        }
        let peers: Vec<NodeId> = self
            .table
            .entries()
            .filter(|e| e.node != self.me && Some(e.node) != except && e.status.is_reachable())
            .map(|e| e.node)
            .collect();
        let mut targets: Vec<NodeId> = peers
            .choose_multiple(&mut self.rng, self.config.relay_fanout)
            .copied()
            .collect();
        // And the next node on the monitoring ring: random relays miss
        // each node with odds of about e^-fanout, which at a hundred nodes
        // leaves someone out of almost every wave; a node's ring
        // predecessor has almost always heard, and sends it on at once.
        if let Some(&next) = self.my_monitors().first() {
            if Some(next) != except && !targets.contains(&next) && peers.contains(&next) {
                targets.push(next);
            }
        }
        for chunk in news.chunks(ENTRIES_PER_MESSAGE) {
            for &to in &targets {
                out.send(
                    self.me,
                    to,
                    MembershipMsg::Relay {
                        members: chunk.to_vec(),
                    },
                );
            }
        }
    }

    /// Tells `peer` at once if this node sees it as other than ALIVE, so
    /// that a live node refutes a verdict as soon as it talks to anyone who
    /// holds it.
    fn tell_if_accused(&mut self, peer: NodeId, out: &mut Outbox<MembershipMsg, MemberEvent>) {
        let accusation = match self.table.get(peer) {
            Some(e) if e.status != MemberStatus::Alive => e.clone(),
            Some(_) => return,
            None => match self.tombstones.get(&peer) {
                Some(&incarnation) => {
                    let mut e = MemberEntry::alive(peer, "");
                    e.incarnation = incarnation;
                    e.status = MemberStatus::Left;
                    e
                }
                None => return,
            },
        };
        out.send(
            self.me,
            peer,
            MembershipMsg::Relay {
                members: vec![accusation],
            },
        );
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
        let digest = self.table.digest();
        for to in targets {
            let members = self.news_for(to);
            out.send(
                self.me,
                to,
                MembershipMsg::Gossip {
                    members,
                    digest,
                    reply: self.config.push_pull,
                },
            );
        }
    }

    /// Pings the nodes this node monitors: all of them on a round, and at
    /// every tick those it suspects or whose phi is past half the
    /// threshold. The extra pings give a node whose acks were lost a few
    /// more chances before it is suspected (loss, not a crash, is what
    /// makes most false suspicions), and a suspect a quick way to refute;
    /// their acks show the node alive but are not samples of its interval.
    fn ping(&mut self, now: Instant, round: bool, out: &mut Outbox<MembershipMsg, MemberEvent>) {
        let early = self.config.phi_threshold / 2.0;
        let targets: Vec<(NodeId, bool)> = self
            .detectors
            .iter()
            .filter_map(|(&n, d)| {
                if round {
                    Some((n, false))
                } else if self.status(n) == Some(MemberStatus::Suspect) || d.phi(now) > early {
                    Some((n, true))
                } else {
                    None
                }
            })
            .collect();
        for (to, extra) in targets {
            self.ping_seq += 1;
            if extra {
                self.extra_pings.insert(self.ping_seq);
                // Bounded: an ack older than a thousand pings is long lost.
                while self.extra_pings.len() > 1024 {
                    self.extra_pings.pop_first();
                }
            }
            let members = self.news_for(to);
            out.send(
                self.me,
                to,
                MembershipMsg::Ping {
                    seq: self.ping_seq,
                    members,
                },
            );
        }
    }

    /// Asks `peer` for the buckets where its table differs from this one.
    fn start_sync(&mut self, peer: NodeId, out: &mut Outbox<MembershipMsg, MemberEvent>) {
        out.send(
            self.me,
            peer,
            MembershipMsg::Sync {
                buckets: self.table.bucket_digests(),
            },
        );
    }

    fn answer_sync(
        &mut self,
        peer: NodeId,
        theirs: &[u64],
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) {
        if theirs.len() != DIGEST_BUCKETS {
            return;
        }
        let differing: Vec<usize> = self
            .table
            .bucket_digests()
            .iter()
            .zip(theirs)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i)
            .collect();
        self.send_entries(peer, &differing, true, out);
    }

    /// Sends `peer` this node's entries in `buckets`, a few buckets per
    /// message so that each stays under [`ENTRIES_PER_MESSAGE`] entries
    /// (unless one bucket alone holds more).
    fn send_entries(
        &mut self,
        peer: NodeId,
        buckets: &[usize],
        want: bool,
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) {
        let mut members: Vec<MemberEntry> = Vec::new();
        let mut covered: Vec<u32> = Vec::new();
        for &bucket in buckets {
            let entries: Vec<MemberEntry> = self
                .table
                .entries_in(&[bucket])
                .into_iter()
                .cloned()
                .collect();
            if !covered.is_empty() && members.len() + entries.len() > ENTRIES_PER_MESSAGE {
                out.send(
                    self.me,
                    peer,
                    MembershipMsg::Entries {
                        members: std::mem::take(&mut members),
                        buckets: std::mem::take(&mut covered),
                        want,
                    },
                );
            }
            members.extend(entries);
            covered.push(bucket as u32);
        }
        if !covered.is_empty() {
            out.send(
                self.me,
                peer,
                MembershipMsg::Entries {
                    members,
                    buckets: covered,
                    want,
                },
            );
        }
    }

    fn absorb_all(
        &mut self,
        now: Instant,
        from: NodeId,
        members: &[MemberEntry],
        news: &mut Vec<MemberEntry>,
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) {
        for entry in members {
            self.absorb(now, from, entry, news, out);
        }
    }

    /// Merges one entry heard from `from` (this node itself for its own
    /// verdicts and configured peers), with its consequences; an entry
    /// that changed the table is pushed on `news`.
    fn absorb(
        &mut self,
        now: Instant,
        from: NodeId,
        remote: &MemberEntry,
        news: &mut Vec<MemberEntry>,
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) {
        let node = remote.node;
        if node == self.me {
            self.maybe_refute(remote, from, out);
            return;
        }
        if let Some(&left_at) = self.tombstones.get(&node) {
            if remote.incarnation <= left_at {
                return;
            }
            // A new life of a node that left: forget the tombstone.
            self.tombstones.remove(&node);
        }
        if self.hold_back(now, from, remote, out) {
            return;
        }
        let Some(outcome) = self.table.merge(remote) else {
            return;
        };
        let Some(entry) = self.table.get(node).cloned() else {
            return;
        };
        if !outcome.status_changed && outcome.before.is_some() {
            // A heartbeat only: not news.
            return;
        }
        self.make_news(node);
        news.push(entry.clone());
        let was = outcome.before.as_ref().map(|b| b.status);
        let reachable_changed = was.is_none_or(|w| w.is_reachable() != entry.status.is_reachable());
        if reachable_changed {
            self.monitors_stale = true;
        }
        if entry.status != MemberStatus::Suspect {
            self.suspected_since.remove(&node);
            self.accusers.remove(&node);
            self.confirmed_at.remove(&node);
        }
        if entry.status == MemberStatus::Left {
            self.left_since.insert(node, now);
        }
        if entry.status == MemberStatus::Alive {
            // Back from a suspicion or a conviction: the silence before the
            // refutation is not a sample of how often it answers.
            if let Some(detector) = self.detectors.get_mut(&node) {
                detector.restart_silence(now);
            }
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

    /// Whether to hold back a relayed verdict of SUSPECT or DOWN about a
    /// node this node heard from directly within the window (see the module
    /// documentation); if so the verdict is kept to be taken later, and
    /// forwarded to the accused so that it refutes.
    fn hold_back(
        &mut self,
        now: Instant,
        from: NodeId,
        remote: &MemberEntry,
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) -> bool {
        let node = remote.node;
        if from == self.me
            || from == node
            || !matches!(remote.status, MemberStatus::Suspect | MemberStatus::Down)
        {
            return false;
        }
        let Some(local) = self.table.get(node) else {
            return false;
        };
        let worsens = remote.incarnation > local.incarnation
            || (remote.incarnation == local.incarnation
                && remote.status.rank() > local.status.rank());
        if !worsens || local.status != MemberStatus::Alive {
            return false;
        }
        let window = self.config.acceptable_heartbeat_pause + self.config.gossip_interval;
        let heard = self
            .last_direct
            .get(&node)
            .is_some_and(|&at| now.saturating_duration_since(at) < window);
        if !heard {
            return false;
        }
        let keep = match self.held_back.get(&node) {
            Some(held) => {
                (remote.incarnation, remote.status.rank()) > (held.incarnation, held.status.rank())
            }
            None => true,
        };
        if keep {
            self.held_back.insert(node, remote.clone());
            out.send(
                self.me,
                node,
                MembershipMsg::Relay {
                    members: vec![remote.clone()],
                },
            );
        }
        true
    }

    /// Takes the verdicts held back about nodes not heard from directly
    /// for the whole window, and drops those a refutation overtook.
    fn take_held_back(&mut self, now: Instant, out: &mut Outbox<MembershipMsg, MemberEvent>) {
        if self.held_back.is_empty() {
            return;
        }
        let window = self.config.acceptable_heartbeat_pause + self.config.gossip_interval;
        let mut take = Vec::new();
        let table = &self.table;
        let last_direct = &self.last_direct;
        self.held_back.retain(|&node, held| {
            let Some(local) = table.get(node) else {
                return false;
            };
            if local.incarnation > held.incarnation || local.status != MemberStatus::Alive {
                return false;
            }
            let silent = last_direct
                .get(&node)
                .is_none_or(|&at| now.saturating_duration_since(at) >= window);
            if silent {
                take.push(held.clone());
                return false;
            }
            true
        });
        let mut news = Vec::new();
        for verdict in take {
            self.last_direct.remove(&verdict.node);
            self.absorb(now, self.me, &verdict, &mut news, out);
        }
        self.relay(&news, None, out);
    }

    fn maybe_refute(
        &mut self,
        remote: &MemberEntry,
        from: NodeId,
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) {
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
            self.table.set(own.clone());
            out.event(MemberEvent::Refuted { incarnation });
            self.make_news(self.me);
            if from != self.me {
                out.send(
                    self.me,
                    from,
                    MembershipMsg::Relay {
                        members: vec![own.clone()],
                    },
                );
            }
            self.relay(&[own], Some(from), out);
        }
    }

    /// Suspects the ALIVE nodes this node monitors whose phi is over the
    /// threshold, and tells the other monitors of each node it suspects on
    /// its own evidence: at once, and again every round while it does.
    fn detect(&mut self, now: Instant, round: bool, out: &mut Outbox<MembershipMsg, MemberEvent>) {
        let threshold = self.config.phi_threshold;
        let over: Vec<NodeId> = self
            .detectors
            .iter()
            .filter(|(node, d)| {
                matches!(
                    self.status(**node),
                    Some(MemberStatus::Alive | MemberStatus::Suspect)
                ) && d.phi(now) > threshold
            })
            .map(|(&node, _)| node)
            .collect();
        let mut news = Vec::new();
        for node in over {
            if self.table.set_status(node, MemberStatus::Suspect) {
                self.suspected_since.insert(node, now);
                self.held_back.remove(&node);
                let Some(entry) = self.table.get(node).cloned() else {
                    continue;
                };
                out.event(MemberEvent::Suspect {
                    node,
                    incarnation: entry.incarnation,
                });
                self.make_news(node);
                news.push(entry);
            }
            let incarnation = self.table.get(node).map_or(0, |e| e.incarnation);
            let first = self.accuse(now, node, incarnation, self.me);
            if first || round {
                for monitor in self.monitors_of(node) {
                    if monitor != self.me {
                        out.send(
                            self.me,
                            monitor,
                            MembershipMsg::Accuse { node, incarnation },
                        );
                    }
                }
            }
        }
        self.relay(&news, None, out);
    }

    /// Records that `by` suspects `node` at `incarnation` on its own
    /// evidence; returns whether that is new.
    fn accuse(&mut self, now: Instant, node: NodeId, incarnation: u64, by: NodeId) -> bool {
        let entry = self
            .accusers
            .entry(node)
            .or_insert_with(|| (incarnation, BTreeSet::new()));
        if entry.0 != incarnation {
            if incarnation < entry.0 {
                return false;
            }
            *entry = (incarnation, BTreeSet::new());
            self.confirmed_at.remove(&node);
        }
        let added = entry.1.insert(by);
        let count = entry.1.len();
        let needed = CONFIRMATIONS.min(self.monitors_of(node).len()).max(1);
        if count >= needed {
            self.confirmed_at.entry(node).or_insert(now);
        }
        added
    }

    /// The monitors of `node` as this node sees the ring: the next
    /// `monitors` members after it.
    fn monitors_of(&self, node: NodeId) -> Vec<NodeId> {
        let ring = &self.ring;
        let Some(at) = ring.iter().position(|&n| n == node) else {
            return Vec::new();
        };
        let k = self.config.monitors.min(ring.len() - 1);
        (1..=k).map(|i| ring[(at + i) % ring.len()]).collect()
    }

    /// Marks DOWN the suspects whose suspicion went unrefuted long
    /// enough: at a monitor, `suspicion_timeout` after the suspicion was
    /// confirmed by [`CONFIRMATIONS`] monitors' own evidence; anywhere, three
    /// timeouts after this node took the suspicion, if no monitor's verdict
    /// came first (all the monitors down, or cut off from this node).
    fn convict(&mut self, now: Instant, out: &mut Outbox<MembershipMsg, MemberEvent>) {
        let timeout = self.suspicion_timeout();
        let mut convicted = Vec::new();
        let table = &self.table;
        let detectors = &self.detectors;
        let confirmed_at = &self.confirmed_at;
        self.suspected_since.retain(|&node, since| {
            let still = table.get(node).map(|e| e.status) == Some(MemberStatus::Suspect);
            let confirmed = detectors.contains_key(&node)
                && confirmed_at
                    .get(&node)
                    .is_some_and(|&at| now.saturating_duration_since(at) >= timeout);
            let fallback = now.saturating_duration_since(*since) >= timeout * 3;
            if still && (confirmed || fallback) {
                convicted.push(node);
                return false;
            }
            still
        });
        let mut news = Vec::new();
        for node in convicted {
            self.accusers.remove(&node);
            self.confirmed_at.remove(&node);
            if self.table.set_status(node, MemberStatus::Down) {
                self.monitors_stale = true;
                let Some(entry) = self.table.get(node).cloned() else {
                    continue;
                };
                out.event(MemberEvent::Down {
                    node,
                    incarnation: entry.incarnation,
                });
                self.make_news(node);
                news.push(entry);
            }
        }
        self.relay(&news, None, out);
    }

    /// Removes from the table the nodes that left more than `left_grace`
    /// ago, keeping a tombstone of each.
    fn forget_departed(&mut self, now: Instant) {
        let grace = self.config.left_grace;
        let due: Vec<NodeId> = self
            .left_since
            .iter()
            .filter(|(_, &since)| now.saturating_duration_since(since) >= grace)
            .map(|(&n, _)| n)
            .collect();
        for node in due {
            self.left_since.remove(&node);
            match self.table.get(node) {
                Some(e) if e.status == MemberStatus::Left => {}
                _ => continue,
            }
            if let Some(entry) = self.table.remove(node) {
                self.tombstones.insert(node, entry.incarnation);
            }
            self.news.remove(&node);
            self.detectors.remove(&node);
            self.last_direct.remove(&node);
            self.held_back.remove(&node);
            self.suspected_since.remove(&node);
            self.accusers.remove(&node);
            self.confirmed_at.remove(&node);
            self.seeds.retain(|&s| s != node);
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

/// The position of `node` on the monitoring ring.
fn ring_hash(node: NodeId) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&node.0.to_le_bytes())
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
    fn suspicion_timeout_is_a_fixed_number_of_intervals() {
        // Verdicts and refutations are relayed at once, not once per round,
        // so the timeout does not grow with the cluster.
        let t = |n| Cluster::new(n).nodes[&NodeId(1)].suspicion_timeout();
        assert_eq!(t(2), Duration::from_millis(1250));
        assert_eq!(t(100), Duration::from_millis(1250));
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
            MembershipMsg::Relay {
                members: vec![accusation],
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

    /// Acks every ping in `out` from the nodes in `answering`, at `t`.
    fn ack_pings(
        m: &mut Membership,
        t: Instant,
        answering: &[u64],
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) {
        let pings: Vec<_> = out
            .messages
            .drain(..)
            .filter(|a| matches!(a.msg, MembershipMsg::Ping { .. }))
            .collect();
        for p in pings.into_iter().filter(|p| answering.contains(&p.to.0)) {
            let ack = MembershipMsg::Ack {
                seq: 0,
                members: vec![],
            };
            m.step(t, Addressed::new(p.to, NodeId(1), ack), out);
        }
    }

    #[test]
    fn a_suspicion_two_monitors_confirm_is_down_one_timeout_later() {
        let now = Instant::now();
        let mut m = lone(now, config());
        let mut out = Outbox::new();
        m.tick(now, &mut out);
        // Nodes 3 and 4, monitors of node 2 like node 1, accuse it, and
        // node 3's suspicion is relayed. Node 1 never heard from node 2.
        for from in [3, 4] {
            let accuse = MembershipMsg::Accuse {
                node: NodeId(2),
                incarnation: 0,
            };
            m.step(
                now,
                Addressed::new(NodeId(from), NodeId(1), accuse),
                &mut out,
            );
        }
        m.step(
            now,
            relay(3, 1, vec![entry(2, 0, MemberStatus::Suspect)]),
            &mut out,
        );
        assert_eq!(m.status(NodeId(2)), Some(MemberStatus::Suspect));
        let timeout = m.suspicion_timeout();
        assert_eq!(timeout, Duration::from_millis(1250)); // 1.25 x 1 s
        let mut t = now;
        while t + MS(250) < now + timeout {
            t += MS(250);
            m.tick(t, &mut out);
            ack_pings(&mut m, t, &[3, 4], &mut out);
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
    fn one_monitors_suspicion_alone_waits_three_timeouts() {
        // Node 1 never hears from node 2, so its own detector suspects node
        // 2 too, but no second monitor agrees: only the fallback convicts.
        let now = Instant::now();
        let mut m = lone(now, config());
        let mut out = Outbox::new();
        m.tick(now, &mut out);
        m.step(
            now,
            relay(3, 1, vec![entry(2, 0, MemberStatus::Suspect)]),
            &mut out,
        );
        let timeout = m.suspicion_timeout();
        let mut t = now;
        while t + MS(250) < now + timeout * 3 {
            t += MS(250);
            m.tick(t, &mut out);
            ack_pings(&mut m, t, &[3, 4], &mut out);
            assert_eq!(m.status(NodeId(2)), Some(MemberStatus::Suspect), "at {t:?}");
        }
        // It accused node 2 to the other monitors on its own evidence.
        m.tick(now + timeout * 3, &mut out);
        assert_eq!(m.status(NodeId(2)), Some(MemberStatus::Down));
    }

    #[test]
    fn a_node_whose_regular_acks_are_lost_is_saved_by_the_extra_pings() {
        // Node 2's acks to the pings of every round are lost; it answers
        // the extra pings that node 1 sends once phi passes half the
        // threshold. It is never suspected; without the extra pings it
        // would be within three seconds.
        let now = Instant::now();
        let mut m = lone(now, config());
        let mut out = Outbox::new();
        let mut t = now;
        let mut extra_answered = 0;
        for tick in 0..240u32 {
            m.tick(t, &mut out);
            let round = tick % 4 == 0;
            let pings: Vec<_> = out
                .messages
                .drain(..)
                .filter(|a| matches!(a.msg, MembershipMsg::Ping { .. }))
                .collect();
            for p in pings {
                let MembershipMsg::Ping { seq, .. } = p.msg else {
                    continue;
                };
                if p.to == NodeId(2) && round {
                    continue;
                }
                if p.to == NodeId(2) {
                    extra_answered += 1;
                }
                let ack = MembershipMsg::Ack {
                    seq,
                    members: vec![],
                };
                m.step(t, Addressed::new(p.to, NodeId(1), ack), &mut out);
            }
            assert_eq!(
                m.status(NodeId(2)),
                Some(MemberStatus::Alive),
                "at tick {tick}"
            );
            t += MS(250);
        }
        assert!(extra_answered > 10, "{extra_answered}");
    }

    #[test]
    fn a_monitor_tells_the_other_monitors_and_an_accused_node_refutes() {
        let now = Instant::now();
        let mut m = lone(now, config());
        let mut out = Outbox::new();
        let mut t = now;
        // Node 2 stops answering; 3 and 4 keep answering.
        let mut accused = false;
        while t < now + Duration::from_secs(4) && !accused {
            t += MS(250);
            m.tick(t, &mut out);
            accused = out.messages.iter().any(|a| {
                a.msg
                    == MembershipMsg::Accuse {
                        node: NodeId(2),
                        incarnation: 0,
                    }
            });
            let to: BTreeSet<NodeId> = out
                .messages
                .iter()
                .filter(|a| matches!(a.msg, MembershipMsg::Accuse { .. }))
                .map(|a| a.to)
                .collect();
            if accused {
                assert_eq!(to, [NodeId(3), NodeId(4)].into(), "the other monitors of 2");
            }
            ack_pings(&mut m, t, &[3, 4], &mut out);
        }
        assert!(accused, "node 1 never accused node 2");
        assert!(t >= now + Duration::from_millis(2500), "{:?}", t - now);
        // An accusation about node 1 itself makes it refute.
        out.messages.clear();
        let accuse = MembershipMsg::Accuse {
            node: NodeId(1),
            incarnation: 0,
        };
        m.step(t, Addressed::new(NodeId(3), NodeId(1), accuse), &mut out);
        assert_eq!(m.table().get(NodeId(1)).unwrap().incarnation, 1);
        assert!(out.messages.iter().any(|a| a.to == NodeId(3)));
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
        let gossip = MembershipMsg::Relay {
            members: vec![suspect],
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

    /// Node 1 knowing peers 2 to 4, started at `now`.
    fn lone(now: Instant, config: MembershipConfig) -> Membership {
        let mut m = Membership::new(config, NodeId(1), "n1", &[], 1).unwrap();
        let mut out = Outbox::new();
        for p in 2..=4 {
            m.add_peer(now, NodeId(p), format!("n{p}"), &mut out);
        }
        m
    }

    fn entry(node: u64, incarnation: u64, status: MemberStatus) -> MemberEntry {
        MemberEntry {
            node: NodeId(node),
            addr: format!("n{node}"),
            heartbeat: 0,
            incarnation,
            status,
        }
    }

    fn relay(from: u64, to: u64, members: Vec<MemberEntry>) -> Addressed<MembershipMsg> {
        Addressed::new(NodeId(from), NodeId(to), MembershipMsg::Relay { members })
    }

    /// Ticks `m` every 250 ms (so that its pause guard stays quiet) from
    /// `from` up to `to`.
    fn tick_until(
        m: &mut Membership,
        from: Instant,
        to: Instant,
        out: &mut Outbox<MembershipMsg, MemberEvent>,
    ) {
        let mut t = from;
        while t < to {
            t = (t + MS(250)).min(to);
            m.tick(t, out);
        }
    }

    #[test]
    fn a_verdict_about_a_node_heard_directly_is_held_back_and_sent_to_it() {
        let now = Instant::now();
        let mut m = lone(now, config());
        let mut out = Outbox::new();
        m.tick(now, &mut out);
        // Node 2 talks to node 1 itself.
        let ping = MembershipMsg::Ping {
            seq: 1,
            members: vec![],
        };
        m.step(now, Addressed::new(NodeId(2), NodeId(1), ping), &mut out);
        out.messages.clear();
        // Node 3, from the other side of a healed partition, says 2 is DOWN.
        m.step(
            now,
            relay(3, 1, vec![entry(2, 0, MemberStatus::Down)]),
            &mut out,
        );
        assert_eq!(m.status(NodeId(2)), Some(MemberStatus::Alive));
        assert!(
            out.messages.iter().any(|a| a.to == NodeId(2)
                && a.msg
                    == MembershipMsg::Relay {
                        members: vec![entry(2, 0, MemberStatus::Down)]
                    }),
            "the accused is told: {:?}",
            out.messages
        );
        assert!(!out
            .events
            .iter()
            .any(|e| matches!(e, MemberEvent::Down { .. })));
        // Silent for the whole window (pause 1.25 s + interval 1 s): the
        // verdict held back is taken.
        let window = config().acceptable_heartbeat_pause + config().gossip_interval;
        tick_until(&mut m, now, now + window - MS(250), &mut out);
        assert_eq!(m.status(NodeId(2)), Some(MemberStatus::Alive));
        tick_until(&mut m, now + window - MS(250), now + window, &mut out);
        assert_eq!(m.status(NodeId(2)), Some(MemberStatus::Down));
    }

    #[test]
    fn a_refutation_overtakes_a_verdict_held_back() {
        let now = Instant::now();
        let mut m = lone(now, config());
        let mut out = Outbox::new();
        m.tick(now, &mut out);
        m.step(now, relay(2, 1, vec![]), &mut out);
        m.step(
            now,
            relay(3, 1, vec![entry(2, 0, MemberStatus::Suspect)]),
            &mut out,
        );
        // The accused refutes, and keeps answering.
        m.step(
            now + MS(20),
            relay(2, 1, vec![entry(2, 1, MemberStatus::Alive)]),
            &mut out,
        );
        let mut t = now;
        while t < now + Duration::from_secs(6) {
            t += MS(250);
            m.tick(t, &mut out);
            // Node 2 answers every ping; 3 and 4 too.
            let pings: Vec<_> = out
                .messages
                .drain(..)
                .filter(|a| matches!(a.msg, MembershipMsg::Ping { .. }))
                .collect();
            for p in pings {
                let ack = MembershipMsg::Ack {
                    seq: 0,
                    members: vec![],
                };
                m.step(t, Addressed::new(p.to, NodeId(1), ack), &mut out);
            }
        }
        let e = m.table().get(NodeId(2)).unwrap();
        assert_eq!((e.status, e.incarnation), (MemberStatus::Alive, 1));
        assert!(
            !out.events
                .iter()
                .any(|e| matches!(e, MemberEvent::Suspect { .. } | MemberEvent::Down { .. })),
            "{:?}",
            out.events
        );
    }

    #[test]
    fn a_node_is_monitored_by_k_others_and_only_monitors_keep_detectors() {
        let mut c = Cluster::new(12);
        c.round();
        let mut watchers: BTreeMap<NodeId, usize> = BTreeMap::new();
        for m in c.nodes.values() {
            assert_eq!(m.monitored().len(), 5, "node {} watches 5", m.me());
            for n in m.monitored() {
                assert_ne!(n, m.me());
                *watchers.entry(n).or_default() += 1;
            }
        }
        // Each watched by exactly 5: the monitors' views agree.
        assert_eq!(watchers.len(), 12);
        assert!(watchers.values().all(|&k| k == 5), "{watchers:?}");
        // A small cluster: everyone watches everyone.
        let mut small = Cluster::new(3);
        small.round();
        for m in small.nodes.values() {
            assert_eq!(m.monitored().len(), 2);
        }
        // A crashed node leaves the ring once DOWN: its place is taken.
        c.dead.push(NodeId(4));
        for _ in 0..10 {
            c.round();
        }
        for m in c.nodes.values().filter(|m| m.me() != NodeId(4)) {
            assert!(!m.monitored().contains(&NodeId(4)));
            assert_eq!(m.monitored().len(), 5);
        }
    }

    #[test]
    fn tables_that_differ_are_synced_by_bucket_in_small_messages() {
        let now = Instant::now();
        let mut a = Membership::new(config(), NodeId(1), "n1", &[], 1).unwrap();
        let mut b = Membership::new(config(), NodeId(2), "n2", &[], 2).unwrap();
        let mut sink = Outbox::new();
        for p in 1..=200 {
            a.add_peer(now, NodeId(p), format!("n{p}"), &mut sink);
            b.add_peer(now, NodeId(p), format!("n{p}"), &mut sink);
        }
        // b knows 100 more nodes, and that node 7 left.
        for p in 201..=300 {
            b.add_peer(now, NodeId(p), format!("n{p}"), &mut sink);
        }
        b.step(
            now,
            relay(9, 2, vec![entry(7, 1, MemberStatus::Left)]),
            &mut sink,
        );
        b.news.clear();
        assert_ne!(a.table().digest(), b.table().digest());
        // b's round reaches a: news (none) and its digest.
        let gossip = MembershipMsg::Gossip {
            members: vec![],
            digest: b.table().digest(),
            reply: false,
        };
        let mut queue = vec![Addressed::new(NodeId(2), NodeId(1), gossip)];
        let mut entries_messages = 0;
        while let Some(env) = queue.pop() {
            if let MembershipMsg::Entries { members, .. } = &env.msg {
                entries_messages += 1;
                assert!(members.len() <= ENTRIES_PER_MESSAGE, "{}", members.len());
            }
            let mut out = Outbox::new();
            match env.to {
                NodeId(1) => a.step(now, env, &mut out),
                NodeId(2) => b.step(now, env, &mut out),
                _ => continue,
            }
            queue.extend(out.messages.into_iter().filter(|m| {
                matches!(
                    m.msg,
                    MembershipMsg::Sync { .. } | MembershipMsg::Entries { .. }
                )
            }));
        }
        assert_eq!(a.table().digest(), b.table().digest());
        assert_eq!(a.table().len(), 300);
        assert_eq!(a.status(NodeId(7)), Some(MemberStatus::Left));
        assert!(entries_messages >= 4, "{entries_messages}");
    }

    #[test]
    fn a_departed_node_is_removed_after_the_grace_and_cannot_come_back_stale() {
        let now = Instant::now();
        let cfg = MembershipConfig {
            left_grace: Duration::from_secs(10),
            ..config()
        };
        let mut m = lone(now, cfg);
        let mut out = Outbox::new();
        m.tick(now, &mut out);
        m.step(
            now,
            relay(3, 1, vec![entry(2, 1, MemberStatus::Left)]),
            &mut out,
        );
        assert_eq!(m.status(NodeId(2)), Some(MemberStatus::Left));
        tick_until(&mut m, now, now + Duration::from_secs(9), &mut out);
        assert_eq!(m.status(NodeId(2)), Some(MemberStatus::Left));
        tick_until(
            &mut m,
            now + Duration::from_secs(9),
            now + Duration::from_secs(10),
            &mut out,
        );
        assert_eq!(m.status(NodeId(2)), None);
        assert_eq!(m.tombstones().get(&NodeId(2)), Some(&1));
        let t = now + Duration::from_secs(10);
        // Stale news from a third node does not bring it back.
        m.step(
            t,
            relay(
                3,
                1,
                vec![
                    entry(2, 1, MemberStatus::Left),
                    entry(2, 0, MemberStatus::Alive),
                ],
            ),
            &mut out,
        );
        assert_eq!(m.status(NodeId(2)), None);
        // The node itself, restarted with its old incarnation, is told it
        // left...
        out.messages.clear();
        m.step(
            t,
            relay(2, 1, vec![entry(2, 0, MemberStatus::Alive)]),
            &mut out,
        );
        assert_eq!(m.status(NodeId(2)), None);
        assert!(out.messages.iter().any(|a| a.to == NodeId(2)
            && matches!(&a.msg, MembershipMsg::Relay { members }
                if members.iter().any(|e| e.node == NodeId(2) && e.status == MemberStatus::Left && e.incarnation == 1))));
        // ...and rejoins above it.
        m.step(
            t,
            relay(2, 1, vec![entry(2, 2, MemberStatus::Alive)]),
            &mut out,
        );
        assert_eq!(m.status(NodeId(2)), Some(MemberStatus::Alive));
        assert!(m.tombstones().is_empty());
    }

    #[test]
    fn a_forgotten_node_is_left_everywhere_and_a_live_one_refutes() {
        let mut c = Cluster::new(5);
        for _ in 0..3 {
            c.round();
        }
        c.dead.push(NodeId(3));
        for _ in 0..15 {
            c.round();
        }
        assert_eq!(c.status(1, 3), Some(MemberStatus::Down));
        let mut out = Outbox::new();
        let now = c.now;
        let m = c.nodes.get_mut(&NodeId(1)).unwrap();
        assert!(matches!(
            m.forget(now, NodeId(1), &mut out),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            m.forget(now, NodeId(99), &mut out),
            Err(Error::UnknownPeer(_))
        ));
        m.forget(now, NodeId(3), &mut out).unwrap();
        c.deliver(out.messages);
        for at in [1, 2, 4, 5] {
            assert_eq!(c.status(at, 3), Some(MemberStatus::Left), "at n{at}");
        }
        // Forgetting a node that is in fact running: it refutes.
        let mut out = Outbox::new();
        c.nodes
            .get_mut(&NodeId(1))
            .unwrap()
            .forget(now, NodeId(2), &mut out)
            .unwrap();
        c.deliver(out.messages);
        for _ in 0..3 {
            c.round();
        }
        for at in [1, 4, 5] {
            let e = c.nodes[&NodeId(at)].table().get(NodeId(2)).unwrap();
            assert_eq!(
                (e.status, e.incarnation),
                (MemberStatus::Alive, 1),
                "at n{at}"
            );
        }
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
