//! The membership table: what one node believes about every node it has
//! heard of, and the rule for merging a peer's belief into it.
//!
//! # The merge rule
//!
//! Every entry carries the subject's *incarnation*, a number only the
//! subject itself raises, and a *heartbeat* counter only the subject itself
//! advances. Between two entries about one node:
//!
//! 1. the higher incarnation wins outright (status, heartbeat and address);
//! 2. at equal incarnation the stronger status wins, in the order
//!    ALIVE < SUSPECT < DOWN < LEFT, and the heartbeat is the larger of the
//!    two.
//!
//! So any node may spread SUSPECT or DOWN about another at the incarnation it
//! knows, and only the subject can override that, by raising its
//! incarnation (a *refutation*). The rule is a join (commutative,
//! associative, idempotent), so gossip converges whatever the order of
//! deliveries; the tests below check the laws.
//!
//! # What it does not do
//!
//! No timing and no detection: the table does not know when anything
//! happened. [`super::Membership`] owns the clock-driven parts, including
//! how long a LEFT entry is kept before it is removed (and remembered only as
//! a tombstone outside the table, so that stale gossip cannot bring a
//! departed node back).
//!
//! # Digests
//!
//! The table keeps a digest of its entries in [`DIGEST_BUCKETS`] buckets
//! (by a hash of the node id), updated on every change: the wrapping sum of
//! a 64-bit hash of each entry's node, incarnation, status and address. The
//! heartbeat is left out, so that a table that only saw heartbeats go by
//! has the digest of one that did not. Two nodes compare whole digests to
//! see whether they agree, and bucket digests to find where they do not,
//! so that a gossip message stays small however large the cluster.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// What a node believes about another's liveness.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Heard from recently enough.
    Alive,
    /// Its phi passed the threshold somewhere; not yet convicted.
    Suspect,
    /// Convicted: a suspicion was not refuted in time. Requests route
    /// around it until it refutes with a higher incarnation.
    Down,
    /// It left the cluster gracefully.
    Left,
}

impl MemberStatus {
    /// Precedence at equal incarnation.
    pub(crate) fn rank(self) -> u8 {
        match self {
            MemberStatus::Alive => 0,
            MemberStatus::Suspect => 1,
            MemberStatus::Down => 2,
            MemberStatus::Left => 3,
        }
    }

    /// Whether requests may be sent to a node in this status (ALIVE or
    /// SUSPECT: a suspect is not convicted, and gossip still goes to it so
    /// that it hears the suspicion and can refute it).
    pub fn is_reachable(self) -> bool {
        matches!(self, MemberStatus::Alive | MemberStatus::Suspect)
    }
}

/// One node's entry in a membership table, as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    /// The node the entry is about.
    pub node: NodeId,
    /// Where the node accepts connections.
    pub addr: String,
    /// The node's heartbeat counter, advanced by the node itself each
    /// gossip interval.
    pub heartbeat: u64,
    /// Raised only by the node itself, to refute a suspicion or to leave.
    pub incarnation: u64,
    /// The believed status.
    pub status: MemberStatus,
}

impl MemberEntry {
    /// A fresh ALIVE entry at incarnation 0, heartbeat 0.
    pub fn alive(node: NodeId, addr: impl Into<String>) -> Self {
        MemberEntry {
            node,
            addr: addr.into(),
            heartbeat: 0,
            incarnation: 0,
            status: MemberStatus::Alive,
        }
    }
}

/// What merging one remote entry changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeOutcome {
    /// The entry before the merge (`None`: the node was unknown).
    pub before: Option<MemberEntry>,
    /// Whether the subject's (incarnation, heartbeat) advanced: a heartbeat
    /// arrival for the failure detector.
    pub heartbeat_advanced: bool,
    /// Whether status or incarnation changed.
    pub status_changed: bool,
}

/// A membership table: one entry per known node, this node's own included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipTable {
    entries: BTreeMap<NodeId, MemberEntry>,
    /// Per bucket, the wrapping sum of [`entry_hash`] of its entries.
    buckets: [u64; DIGEST_BUCKETS],
}

impl Default for MembershipTable {
    fn default() -> Self {
        MembershipTable {
            entries: BTreeMap::new(),
            buckets: [0; DIGEST_BUCKETS],
        }
    }
}

/// Buckets of a table's digest. 64: a bucket digest list is about 600
/// bytes of CBOR, and at 1,000 nodes a bucket holds about 16 entries, so
/// one differing entry costs a sync of about a kilobyte.
pub const DIGEST_BUCKETS: usize = 64;

/// The digest bucket of `node`.
pub fn bucket_of(node: NodeId) -> usize {
    // splitmix64's finaliser: node ids are often small and consecutive.
    let mut z = node.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % DIGEST_BUCKETS as u64) as usize
}

/// The hash of an entry as digests count it: everything but the heartbeat.
pub fn entry_hash(entry: &MemberEntry) -> u64 {
    let mut bytes = Vec::with_capacity(17 + entry.addr.len());
    bytes.extend_from_slice(&entry.node.0.to_le_bytes());
    bytes.extend_from_slice(&entry.incarnation.to_le_bytes());
    bytes.push(entry.status.rank());
    bytes.extend_from_slice(entry.addr.as_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

impl MembershipTable {
    /// An empty table.
    pub fn new() -> Self {
        MembershipTable::default()
    }

    /// The entry about `node`.
    pub fn get(&self, node: NodeId) -> Option<&MemberEntry> {
        self.entries.get(&node)
    }

    /// Every entry, in node order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &MemberEntry> + '_ {
        self.entries.values()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Replaces the entry about `entry.node` unconditionally. For the
    /// node's own entry, which only it writes.
    pub fn set(&mut self, entry: MemberEntry) {
        let bucket = bucket_of(entry.node);
        self.buckets[bucket] = self.buckets[bucket].wrapping_add(entry_hash(&entry));
        if let Some(old) = self.entries.insert(entry.node, entry) {
            self.buckets[bucket] = self.buckets[bucket].wrapping_sub(entry_hash(&old));
        }
    }

    /// Removes the entry of `node`, returning it.
    pub fn remove(&mut self, node: NodeId) -> Option<MemberEntry> {
        let old = self.entries.remove(&node)?;
        let bucket = bucket_of(node);
        self.buckets[bucket] = self.buckets[bucket].wrapping_sub(entry_hash(&old));
        Some(old)
    }

    /// The digest of the whole table: equal tables (heartbeats aside) have
    /// equal digests.
    pub fn digest(&self) -> u64 {
        let mut bytes = [0u8; DIGEST_BUCKETS * 8];
        for (chunk, b) in bytes.chunks_exact_mut(8).zip(self.buckets) {
            chunk.copy_from_slice(&b.to_le_bytes());
        }
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    /// The digest of each bucket.
    pub fn bucket_digests(&self) -> Vec<u64> {
        self.buckets.to_vec()
    }

    /// The entries whose node falls in one of `buckets`.
    pub fn entries_in(&self, buckets: &[usize]) -> Vec<&MemberEntry> {
        let mut wanted = [false; DIGEST_BUCKETS];
        for &b in buckets {
            if let Some(w) = wanted.get_mut(b) {
                *w = true;
            }
        }
        self.entries
            .values()
            .filter(|e| wanted[bucket_of(e.node)])
            .collect()
    }

    /// Merges a remote claim by the rule in the module doc. Returns what
    /// changed, or `None` when the claim brought nothing new.
    pub fn merge(&mut self, remote: &MemberEntry) -> Option<MergeOutcome> {
        let outcome = self.merge_entry(remote)?;
        let bucket = bucket_of(remote.node);
        if let Some(before) = &outcome.before {
            self.buckets[bucket] = self.buckets[bucket].wrapping_sub(entry_hash(before));
        }
        if let Some(now) = self.entries.get(&remote.node) {
            self.buckets[bucket] = self.buckets[bucket].wrapping_add(entry_hash(now));
        }
        Some(outcome)
    }

    fn merge_entry(&mut self, remote: &MemberEntry) -> Option<MergeOutcome> {
        match self.entries.get_mut(&remote.node) {
            None => {
                self.entries.insert(remote.node, remote.clone());
                Some(MergeOutcome {
                    before: None,
                    heartbeat_advanced: true,
                    status_changed: true,
                })
            }
            Some(local) => {
                // Most entries of a gossip carry nothing new: decide that
                // before cloning anything.
                let stale = remote.incarnation < local.incarnation
                    || (remote.incarnation == local.incarnation
                        && remote.status.rank() <= local.status.rank()
                        && remote.heartbeat <= local.heartbeat);
                if stale {
                    return None;
                }
                let before = local.clone();
                match remote.incarnation.cmp(&local.incarnation) {
                    Ordering::Less => return None,
                    Ordering::Greater => *local = remote.clone(),
                    Ordering::Equal => {
                        if remote.status.rank() > local.status.rank() {
                            local.status = remote.status;
                        }
                        local.heartbeat = local.heartbeat.max(remote.heartbeat);
                    }
                }
                if *local == before {
                    return None;
                }
                let heartbeat_advanced =
                    (local.incarnation, local.heartbeat) > (before.incarnation, before.heartbeat);
                let status_changed =
                    local.incarnation != before.incarnation || local.status != before.status;
                Some(MergeOutcome {
                    before: Some(before),
                    heartbeat_advanced,
                    status_changed,
                })
            }
        }
    }

    /// Sets the status of a known node at its current incarnation, if that
    /// is a change. Returns whether it changed.
    pub fn set_status(&mut self, node: NodeId, status: MemberStatus) -> bool {
        match self.entries.get(&node) {
            Some(entry) if entry.status != status => {
                let mut entry = entry.clone();
                entry.status = status;
                self.set(entry);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(node: u64, inc: u64, status: MemberStatus, hb: u64) -> MemberEntry {
        MemberEntry {
            node: NodeId(node),
            addr: format!("n{node}"),
            heartbeat: hb,
            incarnation: inc,
            status,
        }
    }

    use MemberStatus::{Alive, Down, Left, Suspect};

    #[test]
    fn unknown_nodes_are_added() {
        let mut t = MembershipTable::new();
        let out = t.merge(&entry(1, 0, Alive, 3)).unwrap();
        assert_eq!(out.before, None);
        assert_eq!(t.get(NodeId(1)).unwrap().heartbeat, 3);
    }

    #[test]
    fn higher_heartbeat_advances_without_status_change() {
        let mut t = MembershipTable::new();
        t.merge(&entry(1, 0, Alive, 3));
        let out = t.merge(&entry(1, 0, Alive, 5)).unwrap();
        assert!(out.heartbeat_advanced && !out.status_changed);
        assert!(t.merge(&entry(1, 0, Alive, 4)).is_none(), "older heartbeat");
        assert_eq!(t.get(NodeId(1)).unwrap().heartbeat, 5);
    }

    #[test]
    fn suspicion_at_the_same_incarnation_wins_and_keeps_the_heartbeat() {
        let mut t = MembershipTable::new();
        t.merge(&entry(1, 2, Alive, 10));
        let out = t.merge(&entry(1, 2, Suspect, 7)).unwrap();
        assert!(out.status_changed && !out.heartbeat_advanced);
        assert_eq!(t.get(NodeId(1)).unwrap(), &entry(1, 2, Suspect, 10));
        // ALIVE at the same incarnation does not clear it, even with a newer
        // heartbeat: only a refutation does.
        let out = t.merge(&entry(1, 2, Alive, 11)).unwrap();
        assert!(out.heartbeat_advanced && !out.status_changed);
        assert_eq!(t.get(NodeId(1)).unwrap().status, Suspect);
    }

    #[test]
    fn refutation_by_higher_incarnation_wins_over_down() {
        let mut t = MembershipTable::new();
        t.merge(&entry(1, 2, Down, 10));
        let out = t.merge(&entry(1, 3, Alive, 0)).unwrap();
        assert!(out.status_changed && out.heartbeat_advanced);
        assert_eq!(t.get(NodeId(1)).unwrap(), &entry(1, 3, Alive, 0));
        // And an older incarnation's news is ignored.
        assert!(t.merge(&entry(1, 2, Left, 99)).is_none());
    }

    #[test]
    fn status_order_at_equal_incarnation() {
        let order = [Alive, Suspect, Down, Left];
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                let mut t = MembershipTable::new();
                t.merge(&entry(1, 0, *a, 0));
                t.merge(&entry(1, 0, *b, 0));
                let want = order[i.max(j)];
                assert_eq!(t.get(NodeId(1)).unwrap().status, want, "{a:?} then {b:?}");
            }
        }
    }

    /// Merge is a join: any order of the same claims gives the same table.
    #[test]
    fn merge_is_order_independent() {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let statuses = [Alive, Suspect, Down, Left];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for _ in 0..200 {
            let claims: Vec<MemberEntry> = (0..8)
                .map(|k| {
                    entry(
                        k % 3,
                        rand::Rng::random_range(&mut rng, 0..3),
                        statuses[rand::Rng::random_range(&mut rng, 0..4)],
                        rand::Rng::random_range(&mut rng, 0..5),
                    )
                })
                .collect();
            let mut first = MembershipTable::new();
            for c in &claims {
                first.merge(c);
            }
            let mut shuffled = claims.clone();
            shuffled.shuffle(&mut rng);
            let mut second = MembershipTable::new();
            for c in &shuffled {
                second.merge(c);
                second.merge(c); // idempotent
            }
            // Addresses come with the winning incarnation; equal-incarnation
            // claims here share an address, so whole entries must match.
            assert_eq!(first, second, "claims {claims:?}");
        }
    }
}
