//! The last-writer-wins register.

use serde::{Deserialize, Serialize};

use super::Crdt;
use crate::id::NodeId;
use crate::version::Timestamp;

/// A register holding the value of the write with the highest (timestamp,
/// node). The node breaks timestamp ties, and the value breaks ties between
/// two writes claiming the same timestamp and node (which a correct HLC
/// never issues), so merge is a join even on corrupt input. A write with a
/// lower timestamp than the current one is lost, even if it happened later
/// in real time: see `docs/data-model.md`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwRegister<T> {
    /// The current value; `None` before any write.
    pub value: Option<T>,
    /// The timestamp of the write that set it.
    pub timestamp: crate::version::Timestamp,
    /// The node that wrote it.
    pub node: NodeId,
}

impl<T> Default for LwwRegister<T> {
    fn default() -> Self {
        LwwRegister {
            value: None,
            timestamp: Timestamp::default(),
            node: NodeId::default(),
        }
    }
}

impl<T: Ord> LwwRegister<T> {
    /// An unset register.
    pub fn new() -> Self {
        LwwRegister::default()
    }

    /// Sets `value` as written by `node` at `timestamp`; has no effect if
    /// the register holds a later write.
    pub fn set(&mut self, node: NodeId, timestamp: Timestamp, value: T) {
        let incoming = LwwRegister {
            value: Some(value),
            timestamp,
            node,
        };
        if incoming.key() > self.key() {
            *self = incoming;
        }
    }

    fn key(&self) -> (Timestamp, NodeId, Option<&T>) {
        (self.timestamp, self.node, self.value.as_ref())
    }
}

impl<T> Crdt for LwwRegister<T>
where
    T: Ord + Clone + Serialize + serde::de::DeserializeOwned,
{
    fn merge(&mut self, other: &Self) {
        if other.key() > self.key() {
            *self = other.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::laws;
    use proptest::prelude::*;

    fn arb_reg() -> impl Strategy<Value = LwwRegister<u8>> {
        proptest::collection::vec((0u64..3, 0u64..4, any::<u8>()), 0..4).prop_map(|ws| {
            let mut r = LwwRegister::new();
            for (n, t, v) in ws {
                r.set(NodeId(n), Timestamp::from_ms(t), v);
            }
            r
        })
    }

    #[test]
    fn the_higher_timestamp_wins_whatever_the_order() {
        let mut r = LwwRegister::new();
        r.set(NodeId(1), Timestamp::from_ms(10), "new");
        r.set(NodeId(2), Timestamp::from_ms(5), "old");
        assert_eq!(r.value, Some("new"));
    }

    proptest! {
        #[test]
        fn merge_is_a_join(a in arb_reg(), b in arb_reg(), c in arb_reg()) {
            laws::check_join(&a, &b, &c)?;
        }

        #[test]
        fn replicas_converge(rs in proptest::collection::vec(arb_reg(), 1..4), order in proptest::collection::vec(0usize..4, 0..6)) {
            laws::check_convergence(rs, &order)?;
        }
    }
}
