//! Layer 0: the one shape of what a machine wants done.
//!
//! Every role machine of a node (the coordinator, handoff, the ring
//! manager, anti-entropy) answers its inputs with a list of [`Effect`]s,
//! and its runner (an actor in a node, the simulator's driver) carries
//! them out in order:
//!
//! - [`Effect::Send`]: a message `M` to a node (to this node's own role
//!   when addressed to itself);
//! - [`Effect::Store`]: storage work `W` for an executor (a blocking
//!   thread in a node, inline in the simulator), whose result comes back
//!   to the machine as an input;
//! - [`Effect::Emit`]: an event `E` for whoever waits on the machine (a
//!   client's answer, a finished transfer, a new ring); a machine with
//!   no events (anti-entropy) has an event type with no value.
//!
//! The lower protocol machines (membership, the ring keeper) fill an
//! `Outbox` of messages and events, the same shape without storage work;
//! `membership::Outbox::into_effects` turns one into these.

use crate::id::NodeId;

/// Something a machine wants done. See the module documentation.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect<M, W, E> {
    /// A message to node `to`.
    Send {
        /// The node.
        to: NodeId,
        /// The message.
        msg: M,
    },
    /// Storage work for the executor.
    Store(W),
    /// An event for the machine's listener.
    Emit(E),
}

impl<M, W, E> Effect<M, W, E> {
    /// The message, if this is a send.
    pub fn as_send(&self) -> Option<(NodeId, &M)> {
        match self {
            Effect::Send { to, msg } => Some((*to, msg)),
            _ => None,
        }
    }

    /// The storage work, if this is some.
    pub fn as_store(&self) -> Option<&W> {
        match self {
            Effect::Store(w) => Some(w),
            _ => None,
        }
    }

    /// The event, if this is one.
    pub fn as_emit(&self) -> Option<&E> {
        match self {
            Effect::Emit(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_pick_their_variant_only() {
        let effects: Vec<Effect<u8, &str, bool>> = vec![
            Effect::Send {
                to: NodeId(3),
                msg: 7,
            },
            Effect::Store("work"),
            Effect::Emit(true),
        ];
        let sends: Vec<_> = effects.iter().filter_map(Effect::as_send).collect();
        assert_eq!(sends, vec![(NodeId(3), &7)]);
        let work: Vec<_> = effects.iter().filter_map(Effect::as_store).collect();
        assert_eq!(work, vec![&"work"]);
        let events: Vec<_> = effects.iter().filter_map(Effect::as_emit).collect();
        assert_eq!(events, vec![&true]);
    }
}
