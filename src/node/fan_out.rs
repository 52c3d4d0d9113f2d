//! The FanOut actor: how an operator's [`Op::OnNodes`] reaches the other
//! nodes.
//!
//! The node that a client asks sends each other node an
//! [`AdminMsg::Ask`] over the node-to-node links, which are mutually
//! authenticated (only members of the cluster send them), and waits for
//! the [`AdminMsg::Answer`]s. A node that receives an `Ask` runs the op
//! on itself, as its own client port would, and answers. It runs only the
//! ops [`Op::runs_on_nodes`] allows (views and storage upkeep, never a
//! data op, a membership change or another `OnNodes`), so a member can
//! make another member do nothing an admin client could not.
//!
//! An ask that is not answered within its timeout is forgotten: its
//! waiter sees the channel close, and a late answer is dropped.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use serde_bytes::ByteBuf;
use tokio::sync::oneshot;

use super::transport::{Incoming, Outgoing, TransportActor};
use super::Node;
use crate::codec;
use crate::config::DEFAULT_MAX_FRAME_BYTES;
use crate::error::Error;
use crate::id::NodeId;
use crate::message::{Envelope, Message as WireMessage};
use crate::protocol::{AdminMsg, ErrorCode, ErrorReply, Op, Reply};

/// What a node answers for one node of an `OnNodes`.
pub type NodeResult = Result<Reply, ErrorReply>;

/// Gives the actor the node it runs asks on (sent once, at start).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetNode(pub Node);

/// Asks `to` to run `op`; the answer comes on `reply`, or the channel
/// closes after `timeout`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AskPeer {
    /// The node to ask.
    pub to: NodeId,
    /// What it runs.
    pub op: Op,
    /// How long to wait for its answer.
    pub timeout: Duration,
    /// Where the answer goes.
    pub reply: oneshot::Sender<NodeResult>,
}

/// The actor. See the module documentation.
pub struct FanOut {
    me: NodeId,
    transport: Addr<TransportActor>,
    node: Option<Node>,
    next_id: u64,
    /// Asks not answered yet: the node asked, and the waiter.
    waiting: HashMap<u64, (NodeId, oneshot::Sender<NodeResult>)>,
}

impl FanOut {
    /// The fan-out of node `me`, sending through `transport`.
    pub fn new(me: NodeId, transport: Addr<TransportActor>) -> Self {
        FanOut {
            me,
            transport,
            node: None,
            next_id: 1,
            waiting: HashMap::new(),
        }
    }

    fn send(&self, to: NodeId, msg: AdminMsg) {
        let envelope = Envelope::new(self.me, to, WireMessage::Admin(msg));
        self.transport.do_send(Outgoing(envelope));
    }

    /// Runs a peer's ask on this node and sends the answer back.
    fn run_ask(&self, from: NodeId, id: u64, op: ByteBuf, ctx: &mut Context<Self>) {
        let answer = move |result: &NodeResult| match codec::encode(result) {
            Ok(bytes) => Some(AdminMsg::Answer {
                id,
                result: ByteBuf::from(bytes),
            }),
            Err(e) => {
                tracing::warn!(%from, id, error = %e, "admin answer does not encode");
                None
            }
        };
        let op = match codec::decode::<Op>(&op, DEFAULT_MAX_FRAME_BYTES) {
            Ok(op) if op.runs_on_nodes() => op,
            Ok(op) => {
                let refused: NodeResult = Err(ErrorReply::new(
                    ErrorCode::InvalidArgument,
                    format!("{} does not run {} for a peer", self.me, op.name()),
                    false,
                ));
                if let Some(msg) = answer(&refused) {
                    self.send(from, msg);
                }
                return;
            }
            Err(e) => {
                let refused: NodeResult = Err(ErrorReply::from(&e));
                if let Some(msg) = answer(&refused) {
                    self.send(from, msg);
                }
                return;
            }
        };
        let Some(node) = self.node.clone() else {
            let refused: NodeResult = Err(ErrorReply::from(&Error::Shutdown));
            if let Some(msg) = answer(&refused) {
                self.send(from, msg);
            }
            return;
        };
        let me = self.me;
        let transport = self.transport.clone();
        ctx.spawn(
            async move {
                let result: NodeResult = node.execute(op).await.map_err(|e| ErrorReply::from(&e));
                if let Some(msg) = answer(&result) {
                    let envelope = Envelope::new(me, from, WireMessage::Admin(msg));
                    transport.do_send(Outgoing(envelope));
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for FanOut {
    type Context = Context<Self>;
}

impl Handler<SetNode> for FanOut {
    type Result = ();

    fn handle(&mut self, SetNode(node): SetNode, _: &mut Context<Self>) {
        self.node = Some(node);
    }
}

impl Handler<AskPeer> for FanOut {
    type Result = ();

    fn handle(&mut self, ask: AskPeer, ctx: &mut Context<Self>) {
        let op = match codec::encode(&ask.op) {
            Ok(bytes) => ByteBuf::from(bytes),
            Err(e) => {
                let _ = ask.reply.send(Err(ErrorReply::from(&e)));
                return;
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.insert(id, (ask.to, ask.reply));
        self.send(ask.to, AdminMsg::Ask { id, op });
        ctx.run_later(ask.timeout, move |act, _| {
            act.waiting.remove(&id);
        });
    }
}

impl Handler<Incoming> for FanOut {
    type Result = ();

    fn handle(&mut self, Incoming(envelope): Incoming, ctx: &mut Context<Self>) {
        let from = envelope.from;
        let WireMessage::Admin(msg) = envelope.msg else {
            return;
        };
        match msg {
            AdminMsg::Ask { id, op } => self.run_ask(from, id, op, ctx),
            AdminMsg::Answer { id, result } => {
                // Late (its waiter gave up), never asked, or from another
                // node than the one asked: dropped.
                if self
                    .waiting
                    .get(&id)
                    .is_none_or(|(asked, _)| *asked != from)
                {
                    return;
                }
                let Some((_, waiter)) = self.waiting.remove(&id) else {
                    return;
                };
                let result = codec::decode::<NodeResult>(&result, DEFAULT_MAX_FRAME_BYTES)
                    .unwrap_or_else(|e| Err(ErrorReply::from(&e)));
                let _ = waiter.send(result);
            }
        }
    }
}
