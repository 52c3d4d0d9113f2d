//! The Transport actor: the node's connection to its peers.
//!
//! It owns a [`Transport`] endpoint and its [`Inbox`]. Envelopes to send
//! arrive as [`Outgoing`]; received envelopes are routed by message kind to
//! the actor whose machine handles them ([`Routes`]): gossip to the
//! failure detector, ring digests and states to the ring manager, replica
//! requests to the replica, replica replies and bucket tables to the
//! coordinator, an operator's asks to the fan-out. A `Ping`
//! is answered with a `Pong` here, since it is the transport's own liveness
//! probe. The inbox is read only once routes are set, so nothing received
//! before the node has started is dropped for want of a route.
//!
//! A send that the transport refuses (full queue, unknown peer, shut down)
//! is logged and dropped: every protocol above treats it as a lost message.

use std::sync::Arc;

use actix::prelude::*;
use tracing::debug;

use crate::id::NodeId;
use crate::message::{Envelope, Message as WireMessage};
use crate::net::{Inbox, Transport};
use crate::replication::coordinator::shard_of_request_id;
use crate::replication::ReplicationMsg;

/// An envelope to send.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Outgoing(pub Envelope);

/// A received envelope, handed to the actor that handles its kind.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Incoming(pub Envelope);

/// Tells the transport where `node` listens.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LearnPeer {
    /// The peer.
    pub node: NodeId,
    /// Its address.
    pub addr: String,
}

/// Where received envelopes go. Sending it starts reading the inbox.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Routes {
    /// Receives `Message::Membership` (gossip).
    pub membership: Recipient<Incoming>,
    /// Receives `Message::Ring` (`RingMsg::Digest` and `RingMsg::State`).
    pub ring: Recipient<Incoming>,
    /// Receive `ReplicationMsg::Replicate` (replica requests from other
    /// nodes' coordinators), one per data shard: a request goes to its
    /// key's shard ([`crate::replication::ReplicaRequest::shard`]), with `try_send`: a full
    /// mailbox drops the request as lost.
    pub replicas: Vec<Recipient<Incoming>>,
    /// Receive `ReplicationMsg::Replicated`, one per data shard: a reply
    /// goes to the shard whose id it carries
    /// ([`shard_of_request_id`]); `Buckets` go to shard 0 (the lead, which
    /// shares them with the others); with `try_send` likewise.
    pub coordinators: Vec<Recipient<Incoming>>,
    /// Receives `Message::Transfer` (`TransferMsg::Pull`, `Batch` and
    /// `Refused`; the handoff actor), with `try_send` likewise.
    pub handoff: Recipient<Incoming>,
    /// Receives `Message::AntiEntropy` (every `AntiEntropyMsg`), with `try_send` likewise.
    pub anti_entropy: Recipient<Incoming>,
    /// Receives `Message::Admin` (an operator's asks run on several nodes,
    /// and their answers; the fan-out actor), with `try_send` likewise.
    pub admin: Recipient<Incoming>,
}

/// Sends envelopes straight into the node's endpoint, on the caller's
/// thread: the data shards' coordinators and replicas send this way, so
/// that a replica request or reply is encoded on its shard's thread and
/// queued on the peer's link without passing through the TransportActor's
/// mailbox on the node's thread (one wake-up and one thread crossing fewer
/// per message). The endpoint is thread-safe and keeps its own tasks on
/// the node's runtime.
#[derive(Clone)]
pub struct PeerSender(Arc<dyn Transport>);

impl PeerSender {
    /// Sends through `transport`.
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        PeerSender(transport)
    }

    /// Queues `envelope`; a refusal (queue full, unknown peer, shutdown)
    /// counts as a lost message, which the asking coordinator's deadline
    /// answers, as for the TransportActor's [`Outgoing`].
    pub fn send(&self, envelope: Envelope) {
        let (to, kind) = (envelope.to, envelope.msg.kind());
        if let Err(e) = self.0.send(envelope) {
            debug!(%to, kind, error = %e, "send refused; treated as lost");
        }
    }
}

/// The actor. See the module documentation.
pub struct TransportActor {
    transport: Arc<dyn Transport>,
    inbox: Option<Inbox>,
    routes: Option<Routes>,
}

impl TransportActor {
    /// Wraps an endpoint and its inbox.
    pub fn new(transport: Arc<dyn Transport>, inbox: Inbox) -> Self {
        TransportActor {
            transport,
            inbox: Some(inbox),
            routes: None,
        }
    }
}

impl Actor for TransportActor {
    type Context = Context<Self>;
}

impl Handler<Outgoing> for TransportActor {
    type Result = ();

    fn handle(&mut self, Outgoing(envelope): Outgoing, _: &mut Context<Self>) {
        let (to, kind) = (envelope.to, envelope.msg.kind());
        if let Err(e) = self.transport.send(envelope) {
            debug!(%to, kind, error = %e, "send refused; treated as lost");
        }
    }
}

impl Handler<LearnPeer> for TransportActor {
    type Result = ();

    fn handle(&mut self, msg: LearnPeer, _: &mut Context<Self>) {
        if let Err(e) = self.transport.learn_peer(msg.node, &msg.addr) {
            debug!(node = %msg.node, addr = %msg.addr, error = %e, "peer address refused");
        }
    }
}

impl Handler<Routes> for TransportActor {
    type Result = ();

    fn handle(&mut self, routes: Routes, ctx: &mut Context<Self>) {
        self.routes = Some(routes);
        if let Some(inbox) = self.inbox.take() {
            let stream = futures_util::stream::unfold(inbox, |mut inbox| async move {
                inbox.recv().await.map(|envelope| (envelope, inbox))
            });
            ctx.add_stream(stream);
        }
    }
}

impl StreamHandler<Envelope> for TransportActor {
    fn handle(&mut self, envelope: Envelope, _: &mut Context<Self>) {
        let Some(routes) = &self.routes else {
            return;
        };
        match &envelope.msg {
            WireMessage::Membership(_) => routes.membership.do_send(Incoming(envelope)),
            WireMessage::Ring(_) => routes.ring.do_send(Incoming(envelope)),
            WireMessage::Replication(ReplicationMsg::Replicate { request, .. }) => {
                let shard = request.shard(routes.replicas.len());
                if let Err(e) = routes.replicas[shard].try_send(Incoming(envelope)) {
                    debug!(error = %e, "replica mailbox full; request dropped as lost");
                }
            }
            WireMessage::Replication(
                ReplicationMsg::Replicated { .. } | ReplicationMsg::Buckets { .. },
            ) => {
                let shard = match &envelope.msg {
                    WireMessage::Replication(ReplicationMsg::Replicated { reply }) => {
                        shard_of_request_id(reply.req(), routes.coordinators.len())
                    }
                    _ => 0,
                };
                if let Err(e) = routes.coordinators[shard].try_send(Incoming(envelope)) {
                    debug!(error = %e, "coordinator mailbox full; message dropped as lost");
                }
            }
            WireMessage::Transfer(_) => {
                if let Err(e) = routes.handoff.try_send(Incoming(envelope)) {
                    debug!(error = %e, "handoff mailbox full; message dropped as lost");
                }
            }
            WireMessage::AntiEntropy(_) => {
                if let Err(e) = routes.anti_entropy.try_send(Incoming(envelope)) {
                    debug!(error = %e, "anti-entropy mailbox full; message dropped as lost");
                }
            }
            WireMessage::Admin(_) => {
                if let Err(e) = routes.admin.try_send(Incoming(envelope)) {
                    debug!(error = %e, "fan-out mailbox full; message dropped as lost");
                }
            }
            WireMessage::Ping { seq, payload } => {
                let pong = WireMessage::Pong {
                    seq: *seq,
                    payload: payload.clone(),
                };
                let reply = Envelope::new(envelope.to, envelope.from, pong);
                if let Err(e) = self.transport.send(reply) {
                    debug!(error = %e, "pong refused");
                }
            }
            other => debug!(kind = other.kind(), "no route for message"),
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The inbox closed: the endpoint shut down. The actor stays, so
        // that sends fail with a logged `Shutdown` rather than a closed
        // mailbox.
        debug!(node = %self.transport.local_id(), "transport inbox closed");
    }
}
