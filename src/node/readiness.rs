//! Whether a starting node has joined its cluster, and, when it has not
//! within its deadline, why: the words `ringkv-node` prints before it exits
//! instead of claiming to be ready (issue \[15\], "honest readiness").
//!
//! A node has joined once the ring holds it: the ring in force, or the
//! target of the change in progress (its own join, whose ranges may still
//! be moving; it coordinates requests meanwhile, under the ring in force).
//! A founder (no seeds, or `--bootstrap`) claims its tokens on the empty
//! ring at its first tick; a restarted member has its stored ring. Only a
//! new node that joins through seeds has anything to wait for.
//!
//! No I/O here: [`crate::node::Node::wait_until_joined`] gathers the facts
//! (the ring state, and for each seed whether the transport is connected
//! to it and why its last dial failed), and [`why_not_joined`] words them.

use std::time::Duration;

use crate::id::NodeId;
use crate::ring::RingState;

/// Whether `me` is in the ring in force or in the target of the change in
/// progress.
pub fn has_joined(me: NodeId, state: &RingState) -> bool {
    state.ring.is_member(me)
        || state
            .pending
            .as_ref()
            .is_some_and(|p| p.target.is_member(me))
}

/// What the transport says about one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedReport {
    /// The seed's id, as configured.
    pub id: NodeId,
    /// Its address, as configured.
    pub addr: String,
    /// Whether this node has reached it: membership has it alive, or a
    /// connection to it is open now.
    pub connected: bool,
    /// Why the last dial failed, if it did and none succeeded since.
    pub dial_failure: Option<String>,
}

/// Why node `me` has not joined after `waited`, given its seeds and its
/// ring state: one line, saying first the kind of problem (no seed
/// reachable, and why for each; seeds reached but no cluster founded; a
/// ring that has not taken this node in), then the details.
pub fn why_not_joined(
    me: NodeId,
    seeds: &[SeedReport],
    state: &RingState,
    waited: Duration,
) -> String {
    let secs = waited.as_secs_f64();
    let each = |r: &SeedReport| {
        let how = match (&r.dial_failure, r.connected) {
            (_, true) => "connected".to_string(),
            (Some(why), false) => why.clone(),
            (None, false) => "no connection made yet".to_string(),
        };
        format!("seed {} at {}: {how}", r.id, r.addr)
    };
    let reached: Vec<&SeedReport> = seeds.iter().filter(|r| r.connected).collect();
    if seeds.is_empty() {
        return format!(
            "node {me} was not in its own ring after {secs:.1} s, with no seeds to join through"
        );
    }
    if reached.is_empty() {
        let details: Vec<String> = seeds.iter().map(each).collect();
        return format!(
            "no seed could be reached in {secs:.1} s: {}",
            details.join("; ")
        );
    }
    let names: Vec<String> = reached.iter().map(|r| r.id.to_string()).collect();
    if state.ring.is_empty() && state.pending.is_none() {
        return format!(
            "reached {} but learned no ring in {secs:.1} s: no node of this cluster has \
             founded it (start the first node without --seed, or with --bootstrap)",
            names.join(", ")
        );
    }
    let change = match &state.pending {
        Some(p) => format!(
            "a change is in progress ({:?} towards epoch {}), and this node's join waits for it",
            p.change,
            p.target.epoch()
        ),
        None => "no change for this node has begun".to_string(),
    };
    format!(
        "reached {} and learned the ring (epoch {}, nodes {:?}), but it has not taken node \
         {me} in after {secs:.1} s: {change}",
        names.join(", "),
        state.ring.epoch(),
        state.ring.members()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Change, Ring};

    fn ring_of(nodes: &[u64]) -> Ring {
        let mut ring = Ring::empty();
        for &n in nodes {
            ring = crate::ring::claim::claim_join(&ring, NodeId(n), 8).expect("claim");
        }
        ring
    }

    fn seed(id: u64, connected: bool, failure: Option<&str>) -> SeedReport {
        SeedReport {
            id: NodeId(id),
            addr: format!("127.0.0.1:900{id}"),
            connected,
            dial_failure: failure.map(str::to_string),
        }
    }

    #[test]
    fn a_node_has_joined_once_the_ring_or_the_change_in_progress_holds_it() {
        let me = NodeId(3);
        assert!(!has_joined(me, &RingState::settled(Ring::empty())));
        assert!(!has_joined(me, &RingState::settled(ring_of(&[1, 2]))));
        assert!(has_joined(me, &RingState::settled(ring_of(&[1, 2, 3]))));
        let joining = RingState::settled(ring_of(&[1, 2]))
            .begin(Change::Join(me), ring_of(&[1, 2, 3]), 3)
            .expect("a join begins");
        assert!(
            has_joined(me, &joining),
            "admitted: its join is in progress"
        );
        let other = RingState::settled(ring_of(&[1, 2]))
            .begin(Change::Join(NodeId(4)), ring_of(&[1, 2, 4]), 3)
            .expect("a join begins");
        assert!(!has_joined(me, &other), "another node's join");
    }

    #[test]
    fn unreachable_seeds_are_named_with_the_reason_of_each() {
        let why = why_not_joined(
            NodeId(2),
            &[
                seed(1, false, Some("unreachable: connection refused")),
                seed(
                    3,
                    false,
                    Some("cluster secret mismatch: proof did not verify"),
                ),
                seed(4, false, None),
            ],
            &RingState::settled(Ring::empty()),
            Duration::from_secs(5),
        );
        assert!(
            why.starts_with("no seed could be reached in 5.0 s"),
            "{why}"
        );
        assert!(
            why.contains("seed n1 at 127.0.0.1:9001: unreachable: connection refused"),
            "{why}"
        );
        assert!(
            why.contains("seed n3 at 127.0.0.1:9003: cluster secret mismatch"),
            "{why}"
        );
        assert!(
            why.contains("seed n4 at 127.0.0.1:9004: no connection made yet"),
            "{why}"
        );
    }

    #[test]
    fn seeds_reached_without_a_ring_mean_nobody_founded_the_cluster() {
        let why = why_not_joined(
            NodeId(2),
            &[
                seed(1, true, None),
                seed(3, false, Some("unreachable: refused")),
            ],
            &RingState::settled(Ring::empty()),
            Duration::from_secs(5),
        );
        assert!(why.starts_with("reached n1 but learned no ring"), "{why}");
        assert!(why.contains("--bootstrap"), "{why}");
    }

    #[test]
    fn a_ring_that_has_not_taken_the_node_in_says_what_holds_it() {
        let busy = RingState::settled(ring_of(&[1, 2]))
            .begin(Change::Join(NodeId(4)), ring_of(&[1, 2, 4]), 3)
            .expect("a join begins");
        let why = why_not_joined(
            NodeId(3),
            &[seed(1, true, None)],
            &busy,
            Duration::from_secs(9),
        );
        assert!(why.starts_with("reached n1 and learned the ring"), "{why}");
        assert!(why.contains("Join(NodeId(4))"), "{why}");
        let quiet = RingState::settled(ring_of(&[1, 2]));
        let why = why_not_joined(
            NodeId(3),
            &[seed(1, true, None)],
            &quiet,
            Duration::from_secs(9),
        );
        assert!(why.contains("no change for this node has begun"), "{why}");
    }
}
