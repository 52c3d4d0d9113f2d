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
//! happened. [`super::Membership`] owns the clock-driven parts. LEFT entries
//! are kept forever (they are a few bytes), so that stale gossip cannot bring
//! a departed node back.

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
    fn rank(self) -> u8 {
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipTable {
    entries: BTreeMap<NodeId, MemberEntry>,
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
        self.entries.insert(entry.node, entry);
    }

    /// Merges a remote claim by the rule in the module doc. Returns what
    /// changed, or `None` when the claim brought nothing new.
    pub fn merge(&mut self, remote: &MemberEntry) -> Option<MergeOutcome> {
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
        match self.entries.get_mut(&node) {
            Some(entry) if entry.status != status => {
                entry.status = status;
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
