//! The ring keeper: this node's copy of the hash ring, kept in step with
//! every other node's by gossip, and the token claim of this node's own
//! join and leave.
//!
//! # How rings converge
//!
//! Rings are ordered by (epoch, digest), the digest being the xxh3 of the
//! ring's CBOR encoding. Each gossip interval the keeper sends its ring's
//! epoch and digest ([`Message::RingDigest`]) to one random reachable peer.
//! The receiver compares: if its own ring is greater it sends the whole
//! ring back ([`Message::RingState`]); if the sender's is greater it answers
//! with its own digest, which makes the sender send its ring. A node adopts
//! a ring only if it is greater than its own, so all nodes end on the
//! greatest ring, whatever the order of exchanges.
//!
//! # Who changes the ring
//!
//! Only a node itself claims tokens for itself, with the deterministic
//! claim of [`crate::ring::claim`]: the first node of a cluster (one started
//! without seeds) claims on the empty ring; a joining node waits until it
//! has a ring from a peer, then claims on top of it. Two nodes joining at
//! once both produce a ring of the next epoch; the greater digest wins, and
//! the node missing from the winner claims again on top of it, one epoch
//! later. A leaving node gives its tokens away with `claim_leave` before it
//! stops. Should that ring lose such a race, the lowest-id ALIVE node
//! removes any node the membership reports LEFT that is still in the ring.
//! DOWN nodes stay in the ring: a failure is not a leave.
//!
//! # What it does not do
//!
//! It does not move data (a handoff executor acts on the change) and keeps
//! no history of rings.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tracing::warn;

use super::table::MemberStatus;
use super::{MemberEvent, Outbox, RingEvent};
use crate::codec;
use crate::config::RingConfig;
use crate::error::Result;
use crate::message::{Envelope, Message, NodeId};
use crate::ring::{claim_join, claim_leave, Ring};

/// Peers a leaving node pushes its final ring to directly, so that the
/// leave does not depend on the node staying long enough to be asked.
const LEAVE_PUSH: usize = 3;

/// The ring protocol of one node. See the module documentation.
#[derive(Debug)]
pub struct RingKeeper {
    me: NodeId,
    vnodes: usize,
    interval: Duration,
    ring: Arc<Ring>,
    digest: u64,
    /// The membership's view of every other node, from its events.
    statuses: BTreeMap<NodeId, MemberStatus>,
    seeds: Vec<NodeId>,
    /// Started without seeds: the node that creates the ring.
    founder: bool,
    /// Wants to hold tokens (false once leaving).
    member: bool,
    rng: ChaCha8Rng,
    next_round: Option<Instant>,
}

/// The digest that breaks ties between rings of one epoch.
pub fn ring_digest(ring: &Ring) -> u64 {
    // Encoding a ring cannot fail (it has no maps with non-text keys); if it
    // ever did, every node would compute the same 0 and fall back to
    // comparing epochs only.
    codec::encode(ring).map_or(0, |bytes| xxhash_rust::xxh3::xxh3_64(&bytes))
}

impl RingKeeper {
    /// A keeper for node `me` that joins through `seeds`, or founds the
    /// cluster if `seeds` names no other node. Fails with `InvalidInput` if
    /// `ring` does not validate.
    pub fn new(
        me: NodeId,
        ring: &RingConfig,
        gossip_interval: Duration,
        seeds: &[NodeId],
        rng_seed: u64,
    ) -> Result<Self> {
        ring.validate()?;
        let seeds: Vec<NodeId> = seeds.iter().copied().filter(|&s| s != me).collect();
        let empty = Ring::empty();
        Ok(RingKeeper {
            me,
            vnodes: ring.vnodes_per_node,
            interval: gossip_interval,
            digest: ring_digest(&empty),
            ring: Arc::new(empty),
            statuses: BTreeMap::new(),
            founder: seeds.is_empty(),
            seeds,
            member: true,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            next_round: None,
        })
    }

    /// The current ring.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// Takes in a membership event.
    pub fn on_member_event(&mut self, event: &MemberEvent) {
        let (node, status) = match *event {
            MemberEvent::Up { node, .. } => (node, MemberStatus::Alive),
            MemberEvent::Suspect { node, .. } => (node, MemberStatus::Suspect),
            MemberEvent::Down { node, .. } => (node, MemberStatus::Down),
            MemberEvent::Left { node } => (node, MemberStatus::Left),
            MemberEvent::Refuted { .. } | MemberEvent::LocalPause { .. } => return,
        };
        if node != self.me {
            self.statuses.insert(node, status);
        }
    }

    /// Advances time: claims if this node should and can, cleans up LEFT
    /// nodes if this node is the one to, and gossips the digest when due.
    pub fn tick(&mut self, now: Instant, out: &mut Outbox<RingEvent>) {
        if self.member && !self.ring.is_member(self.me) && (self.founder || !self.ring.is_empty()) {
            match claim_join(&self.ring, self.me, self.vnodes) {
                Ok(ring) => self.install(ring, out),
                Err(e) => warn!(node = %self.me, error = %e, "token claim failed"),
            }
        }
        self.remove_departed(out);
        if self.next_round.is_none_or(|due| now >= due) {
            self.next_round = Some(now + self.interval);
            let targets = self.reachable();
            let pool = if targets.is_empty() {
                &self.seeds
            } else {
                &targets
            };
            if let Some(&to) = pool.choose(&mut self.rng) {
                out.send(self.me, to, self.digest_message());
            }
        }
    }

    /// Handles one envelope; messages that are not ring gossip are ignored.
    pub fn step(&mut self, _now: Instant, envelope: Envelope, out: &mut Outbox<RingEvent>) {
        match envelope.msg {
            Message::RingDigest { epoch, digest } => {
                match (self.ring.epoch(), self.digest).cmp(&(epoch, digest)) {
                    Ordering::Greater => out.send(
                        self.me,
                        envelope.from,
                        Message::RingState {
                            ring: (*self.ring).clone(),
                        },
                    ),
                    Ordering::Less => out.send(self.me, envelope.from, self.digest_message()),
                    Ordering::Equal => {}
                }
            }
            Message::RingState { ring } => {
                let digest = ring_digest(&ring);
                if (ring.epoch(), digest) > (self.ring.epoch(), self.digest) {
                    self.ring = Arc::new(ring);
                    self.digest = digest;
                    out.event(RingEvent::Changed(Arc::clone(&self.ring)));
                }
            }
            _ => {}
        }
    }

    /// Leaves: gives this node's tokens away and pushes the new ring to a
    /// few peers at once.
    pub fn leave(&mut self, out: &mut Outbox<RingEvent>) {
        self.member = false;
        if !self.ring.is_member(self.me) {
            return;
        }
        match claim_leave(&self.ring, self.me) {
            Ok(ring) => {
                self.install(ring, out);
                let mut targets = self.reachable();
                targets.retain(|&n| self.ring.is_member(n));
                for &to in targets.choose_multiple(&mut self.rng, LEAVE_PUSH) {
                    out.send(
                        self.me,
                        to,
                        Message::RingState {
                            ring: (*self.ring).clone(),
                        },
                    );
                }
            }
            Err(e) => warn!(node = %self.me, error = %e, "leave claim failed"),
        }
    }

    fn digest_message(&self) -> Message {
        Message::RingDigest {
            epoch: self.ring.epoch(),
            digest: self.digest,
        }
    }

    fn reachable(&self) -> Vec<NodeId> {
        self.statuses
            .iter()
            .filter(|(_, s)| s.is_reachable())
            .map(|(&n, _)| n)
            .collect()
    }

    fn install(&mut self, ring: Ring, out: &mut Outbox<RingEvent>) {
        self.digest = ring_digest(&ring);
        self.ring = Arc::new(ring);
        out.event(RingEvent::Changed(Arc::clone(&self.ring)));
    }

    /// Removes ring members the membership reports LEFT, if this node is
    /// the lowest-id ALIVE node (so that one node, not all, does it).
    fn remove_departed(&mut self, out: &mut Outbox<RingEvent>) {
        if !self.member {
            return;
        }
        let lowest_alive = self
            .statuses
            .iter()
            .filter(|(_, s)| **s == MemberStatus::Alive)
            .map(|(&n, _)| n)
            .chain(std::iter::once(self.me))
            .min();
        if lowest_alive != Some(self.me) {
            return;
        }
        let departed: Vec<NodeId> = self
            .ring
            .members()
            .into_iter()
            .filter(|n| self.statuses.get(n) == Some(&MemberStatus::Left))
            .collect();
        for node in departed {
            match claim_leave(&self.ring, node) {
                Ok(ring) => self.install(ring, out),
                Err(e) => warn!(node = %node, error = %e, "removing a departed node failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keeper(id: u64, seeds: &[u64]) -> RingKeeper {
        let seeds: Vec<NodeId> = seeds.iter().map(|&s| NodeId(s)).collect();
        let cfg = RingConfig {
            vnodes_per_node: 16,
        };
        RingKeeper::new(NodeId(id), &cfg, Duration::from_secs(1), &seeds, id).unwrap()
    }

    fn up(node: u64) -> MemberEvent {
        MemberEvent::Up {
            node: NodeId(node),
            addr: String::new(),
            incarnation: 0,
        }
    }

    /// Ticks every keeper `rounds` times, delivering all messages at once.
    fn run(keepers: &mut BTreeMap<NodeId, RingKeeper>, rounds: usize) {
        let mut now = Instant::now();
        for _ in 0..rounds {
            now += Duration::from_secs(1);
            let mut queue = Vec::new();
            for k in keepers.values_mut() {
                let mut out = Outbox::new();
                k.tick(now, &mut out);
                queue.extend(out.messages);
            }
            while let Some(env) = queue.pop() {
                if let Some(k) = keepers.get_mut(&env.to) {
                    let mut out = Outbox::new();
                    k.step(now, env, &mut out);
                    queue.extend(out.messages);
                }
            }
        }
    }

    #[test]
    fn concurrent_joins_converge_on_one_ring_holding_everyone() {
        let mut keepers = BTreeMap::new();
        keepers.insert(NodeId(1), keeper(1, &[]));
        for id in 2..=4 {
            keepers.insert(NodeId(id), keeper(id, &[1]));
        }
        for (&id, k) in keepers.iter_mut() {
            for other in 1..=4 {
                if NodeId(other) != id {
                    k.on_member_event(&up(other));
                }
            }
        }
        run(&mut keepers, 30);
        let rings: Vec<Arc<Ring>> = keepers.values().map(|k| Arc::clone(k.ring())).collect();
        for ring in &rings {
            assert_eq!(**ring, *rings[0]);
        }
        let members: Vec<NodeId> = rings[0].members().into_iter().collect();
        assert_eq!(members, (1..=4).map(NodeId).collect::<Vec<_>>());
        // Three joiners raced on the founder's epoch-1 ring, so at least
        // one of them had to claim again.
        assert!(rings[0].epoch() >= 4);
    }

    #[test]
    fn a_leave_removes_the_node_everywhere() {
        let mut keepers = BTreeMap::new();
        keepers.insert(NodeId(1), keeper(1, &[]));
        for id in 2..=3 {
            keepers.insert(NodeId(id), keeper(id, &[1]));
        }
        for (&id, k) in keepers.iter_mut() {
            for other in 1..=3 {
                if NodeId(other) != id {
                    k.on_member_event(&up(other));
                }
            }
        }
        run(&mut keepers, 20);
        let mut out = Outbox::new();
        keepers.get_mut(&NodeId(2)).unwrap().leave(&mut out);
        assert!(!keepers[&NodeId(2)].ring().is_member(NodeId(2)));
        for env in out.messages {
            let mut sink = Outbox::new();
            if let Some(k) = keepers.get_mut(&env.to) {
                k.step(Instant::now(), env, &mut sink);
            }
        }
        keepers.remove(&NodeId(2));
        for k in keepers.values_mut() {
            k.on_member_event(&MemberEvent::Left { node: NodeId(2) });
        }
        run(&mut keepers, 10);
        for k in keepers.values() {
            let members: Vec<NodeId> = k.ring().members().into_iter().collect();
            assert_eq!(members, vec![NodeId(1), NodeId(3)]);
        }
    }
}
