//! Between the client protocol and the coordinator: what a data operation
//! of [`crate::protocol::Op`] asks of the coordinator, and how its
//! [`Answer`] becomes a [`Reply`].
//!
//! Pure functions, so the node's actors only carry their results. Reads
//! are resolved here under the bucket's policy: one value, nothing, or the
//! siblings with the context a client writes back with; counters and sets
//! are read as the value of their CRDT state. A `Script` policy whose
//! resolver fails does not fail the read: the siblings are returned as
//! under `Siblings`, and the failure is logged. Nor does a `Get` of a CRDT
//! bucket's key whose siblings do not decode as its kind (written under
//! another policy): the raw siblings are what a client needs to see the
//! key and delete it with the context. The counter and set reads of such
//! a key fail with `InvalidInput` naming the key ([`to_reply_for`]).
//!
//! Not here: the ops that are not data (hello, buckets, ring, status),
//! which the node answers itself.

use std::time::Duration;

use serde_bytes::ByteBuf;

use crate::crdt::{CrdtOp, CrdtValue};
use crate::error::{Error, Result};
use crate::protocol::{Op, ReadOptions, Reply, SiblingView, WriteOptions};
use crate::replication::coordinator::{Answer, ClientOp, RequestOptions};
use crate::replication::BucketProps;
use crate::replication::Receipt;
use crate::storage::MAX_VALUE_BYTES;
use crate::version::VersionConfig;
use crate::version::{CausalContext, ConflictPolicy, Object, Payload, Resolved, Resolvers};

/// What shape of reply a data operation expects.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// `Reply::Object`.
    Object,
    /// `Reply::Written`.
    Written,
    /// `Reply::Counter`.
    Counter,
    /// `Reply::Set`.
    Set,
    /// `Reply::Set` without its members: the count of members an add or
    /// a remove changed only.
    SetCount,
}

impl ReplyKind {
    /// The reply to a set add or remove: with its members, or the count
    /// alone.
    fn set_op(count_only: bool) -> ReplyKind {
        if count_only {
            ReplyKind::SetCount
        } else {
            ReplyKind::Set
        }
    }
}

/// Translates a data operation into a coordinator operation and the reply
/// kind it expects. `Ok(None)` for ops that are not data operations.
/// Fails on bad arguments (an undecodable context, a zero timeout).
pub fn to_client_op(op: Op, version: &VersionConfig) -> Result<Option<(ClientOp, ReplyKind)>> {
    let context = |c: Option<ByteBuf>| -> Result<CausalContext> {
        match c {
            None => Ok(CausalContext::empty()),
            Some(bytes) => CausalContext::from_bytes(&bytes, version.max_context_bytes),
        }
    };
    let get = |bucket: ByteBuf, key: ByteBuf, options: ReadOptions| -> Result<ClientOp> {
        Ok(ClientOp::Get {
            bucket: bucket.into_vec(),
            key: key.into_vec(),
            options: read_options(options)?,
        })
    };
    let update = |bucket: ByteBuf, key: ByteBuf, op: CrdtOp, options: WriteOptions| {
        Ok::<_, Error>(ClientOp::Update {
            bucket: bucket.into_vec(),
            key: key.into_vec(),
            op,
            options: write_options(options)?,
        })
    };
    Ok(Some(match op {
        Op::Get {
            bucket,
            key,
            options,
        } => (get(bucket, key, options)?, ReplyKind::Object),
        Op::CounterGet {
            bucket,
            key,
            options,
        } => (get(bucket, key, options)?, ReplyKind::Counter),
        Op::SetMembers {
            bucket,
            key,
            options,
        } => (get(bucket, key, options)?, ReplyKind::Set),
        Op::Put {
            bucket,
            key,
            value,
            context: ctx,
            options,
        } => {
            crate::replication::limits::check_value(value.len())?;
            let op = ClientOp::Put {
                bucket: bucket.into_vec(),
                key: key.into_vec(),
                payload: Payload::Value(value.into_vec()),
                context: context(ctx)?,
                options: write_options(options)?,
            };
            (op, ReplyKind::Written)
        }
        Op::Delete {
            bucket,
            key,
            context: ctx,
            options,
        } => {
            let op = ClientOp::Put {
                bucket: bucket.into_vec(),
                key: key.into_vec(),
                payload: Payload::Tombstone,
                context: context(ctx)?,
                options: write_options(options)?,
            };
            (op, ReplyKind::Written)
        }
        Op::CounterAdd {
            bucket,
            key,
            by,
            options,
        } => (
            update(bucket, key, CrdtOp::Add(by), options)?,
            ReplyKind::Counter,
        ),
        Op::SetAdd {
            bucket,
            key,
            members,
            options,
            count_only,
        } => (
            update(bucket, key, CrdtOp::SetAdd(members), options)?,
            ReplyKind::set_op(count_only),
        ),
        Op::SetRemove {
            bucket,
            key,
            members,
            options,
            count_only,
        } => (
            update(bucket, key, CrdtOp::SetRemove(members), options)?,
            ReplyKind::set_op(count_only),
        ),
        _ => return Ok(None),
    }))
}

fn timeout(ms: Option<u64>) -> Result<Option<Duration>> {
    match ms {
        Some(0) => Err(Error::InvalidInput("timeout_ms must be positive".into())),
        other => Ok(other.map(Duration::from_millis)),
    }
}

fn read_options(o: ReadOptions) -> Result<RequestOptions> {
    Ok(RequestOptions {
        r: o.r,
        sloppy_quorum: o.sloppy_quorum,
        repair: o.repair.unwrap_or_default(),
        timeout: timeout(o.timeout_ms)?,
        ..RequestOptions::default()
    })
}

fn write_options(o: WriteOptions) -> Result<RequestOptions> {
    Ok(RequestOptions {
        w: o.w,
        sloppy_quorum: o.sloppy_quorum,
        timeout: timeout(o.timeout_ms)?,
        ..RequestOptions::default()
    })
}

/// [`to_reply`] for `bucket`/`key`: a stored state that does not decode
/// as the bucket's CRDT kind, or a counter beyond 64 bits, fails with
/// `InvalidInput` naming the key (the key stays so until it is deleted or
/// added back into range: retrying cannot help).
pub fn to_reply_for(
    bucket: &[u8],
    key: &[u8],
    kind: ReplyKind,
    answer: Answer,
    props: &BucketProps,
    resolvers: &Resolvers,
) -> Result<Reply> {
    to_reply(kind, answer, props, resolvers).map_err(|e| match (&props.policy, e) {
        (ConflictPolicy::Crdt(crdt), Error::Decode { reason, .. }) => Error::InvalidInput(format!(
            "{} does not hold a {crdt:?} state (was it written under another policy?): \
                 {reason}; read it with Get and delete it with the context",
            crate::replication::key_name(bucket, key)
        )),
        (ConflictPolicy::Crdt(_), Error::InvalidInput(reason)) => Error::InvalidInput(format!(
            "{}: {reason}",
            crate::replication::key_name(bucket, key)
        )),
        (_, other) => other,
    })
}

/// Turns a coordinator's answer into the reply of `kind`, under the
/// bucket's properties.
pub fn to_reply(
    kind: ReplyKind,
    answer: Answer,
    props: &BucketProps,
    resolvers: &Resolvers,
) -> Result<Reply> {
    let (object, receipt, changed) = match answer {
        Answer::Got(g) => (g.object, g.receipt, None),
        Answer::Put(p) => (Some(p.object), p.receipt, p.changed),
        Answer::Scanned(_) => {
            return Err(Error::InvalidInput(
                "a scan's answer is not an object's".into(),
            ))
        }
    };
    match kind {
        ReplyKind::Written => {
            let context = object.map(|o| o.context()).unwrap_or_default();
            Ok(Reply::Written {
                context: ByteBuf::from(context.to_bytes()?),
                receipt,
            })
        }
        ReplyKind::Object => object_reply(object, receipt, &props.policy, resolvers),
        ReplyKind::SetCount => Ok(Reply::Set {
            members: Vec::new(),
            receipt,
            changed,
        }),
        ReplyKind::Counter | ReplyKind::Set => {
            let ConflictPolicy::Crdt(crdt) = &props.policy else {
                return Err(Error::InvalidInput(format!(
                    "the bucket's policy is {:?}, not a CRDT",
                    props.policy
                )));
            };
            let state = match &object {
                None => Vec::new(),
                Some(o) => match props.policy.resolve(o, resolvers, MAX_VALUE_BYTES)? {
                    Resolved::Value(v) => v,
                    Resolved::Absent | Resolved::Siblings(_) => Vec::new(),
                },
            };
            match (kind, crdt.value(&state, MAX_VALUE_BYTES)?) {
                (ReplyKind::Counter, CrdtValue::Counter(v)) => Ok(Reply::Counter {
                    value: i64::try_from(v).map_err(|_| {
                        Error::InvalidInput(format!("counter value {v} does not fit in 64 bits"))
                    })?,
                    receipt,
                }),
                (ReplyKind::Set, CrdtValue::Set(members)) => Ok(Reply::Set {
                    members: members.into_iter().map(ByteBuf::from).collect(),
                    receipt,
                    changed,
                }),
                (_, _) => Err(Error::InvalidInput(format!(
                    "a {crdt:?} bucket holds neither a counter nor a set as asked"
                ))),
            }
        }
    }
}

fn object_reply(
    object: Option<Object>,
    receipt: Receipt,
    policy: &ConflictPolicy,
    resolvers: &Resolvers,
) -> Result<Reply> {
    let Some(object) = object else {
        return Ok(Reply::Object {
            value: None,
            siblings: Vec::new(),
            context: ByteBuf::new(),
            receipt,
        });
    };
    let context = ByteBuf::from(object.context().to_bytes()?);
    let resolved = match policy.resolve(&object, resolvers, MAX_VALUE_BYTES) {
        Ok(r) => r,
        // A failed resolver, or CRDT siblings that are not states of the
        // bucket's kind: the siblings, as stored.
        Err(e) if matches!(policy, ConflictPolicy::Script(_) | ConflictPolicy::Crdt(_)) => {
            crate::log::warn_every!(error = %e, ?policy, "conflict policy failed; returning siblings");
            Resolved::Siblings(object.siblings().to_vec())
        }
        Err(e) => return Err(e),
    };
    let (value, siblings) = match resolved {
        Resolved::Absent => (None, Vec::new()),
        Resolved::Value(v) => (Some(ByteBuf::from(v)), Vec::new()),
        Resolved::Siblings(s) => (
            None,
            s.into_iter()
                .map(|s| SiblingView {
                    value: match s.payload {
                        Payload::Value(v) => Some(ByteBuf::from(v)),
                        Payload::Tombstone => None,
                    },
                    timestamp_ms: s.timestamp.physical_ms,
                    node: crate::replication::replica::actor_node(s.dot.node),
                })
                .collect(),
        ),
    };
    Ok(Reply::Object {
        value,
        siblings,
        context,
        receipt,
    })
}

/// The ring as the protocol shows it.
pub fn ring_view(state: &crate::ring::RingState) -> crate::protocol::RingView {
    let ring = &state.ring;
    let change = state.pending.as_ref().map(|p| {
        let (kind, node) = match p.change {
            crate::ring::Change::Join(n) => ("join", n),
            crate::ring::Change::Leave(n) => ("leave", n),
            crate::ring::Change::Remove(n) => ("remove", n),
        };
        crate::protocol::RingChangeView {
            kind: kind.into(),
            node,
            target_epoch: p.target.epoch(),
            moves: p.moves(ring).len() as u32,
            done: p.done.len() as u32,
        }
    });
    let mut vnodes: std::collections::BTreeMap<crate::id::NodeId, u32> =
        std::collections::BTreeMap::new();
    for v in ring.vnodes() {
        *vnodes.entry(v.node).or_insert(0) += 1;
    }
    let owned = ring.ownership();
    let space = 2f64.powi(64);
    crate::protocol::RingView {
        epoch: ring.epoch(),
        nodes: vnodes
            .into_iter()
            .map(|(node, count)| crate::protocol::RingNode {
                node,
                vnodes: count,
                share: owned.get(&node).copied().unwrap_or(0) as f64 / space,
            })
            .collect(),
        change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::CrdtKind;
    use crate::id::NodeId;
    use crate::replication::get::GetReply;
    use crate::replication::put::PutReply;
    use crate::version::Timestamp;

    fn b(s: &str) -> ByteBuf {
        ByteBuf::from(s.as_bytes().to_vec())
    }

    #[test]
    fn data_ops_translate_and_others_do_not() {
        let v = VersionConfig::default();
        let (op, kind) = to_client_op(
            Op::Delete {
                bucket: b("b"),
                key: b("k"),
                context: None,
                options: WriteOptions::default(),
            },
            &v,
        )
        .unwrap()
        .unwrap();
        assert_eq!(kind, ReplyKind::Written);
        assert!(matches!(
            op,
            ClientOp::Put {
                payload: Payload::Tombstone,
                ..
            }
        ));
        assert!(to_client_op(Op::Ring, &v).unwrap().is_none());
        let bad_context = Op::Put {
            bucket: b("b"),
            key: b("k"),
            value: b("v"),
            context: Some(b("\u{ff}garbage")),
            options: WriteOptions::default(),
        };
        assert!(matches!(
            to_client_op(bad_context, &v),
            Err(Error::Decode { .. })
        ));
        let zero = Op::Get {
            bucket: b("b"),
            key: b("k"),
            options: ReadOptions {
                timeout_ms: Some(0),
                ..ReadOptions::default()
            },
        };
        assert!(matches!(
            to_client_op(zero, &v),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn reads_resolve_under_the_policy() {
        let mut o = Object::new();
        let siblings = ConflictPolicy::Siblings;
        for (node, v) in [(1, "a"), (2, "b")] {
            siblings
                .put(
                    &mut o,
                    NodeId(node),
                    &CausalContext::empty(),
                    Payload::Value(v.as_bytes().to_vec()),
                    Timestamp::from_ms(node),
                    10,
                )
                .unwrap();
        }
        let got = |o: Option<Object>| {
            Answer::Got(GetReply {
                object: o,
                receipt: Receipt::default(),
            })
        };
        let props = BucketProps::default();
        let r = to_reply(
            ReplyKind::Object,
            got(Some(o.clone())),
            &props,
            &Resolvers::new(),
        );
        let Ok(Reply::Object {
            value: None,
            siblings: s,
            context,
            ..
        }) = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].value.as_deref().map(|v| v.as_slice()), Some(&b"b"[..]));
        assert_eq!(s[1].node, NodeId(2));
        assert_eq!(
            CausalContext::from_bytes(&context, 1024).unwrap(),
            o.context()
        );
        let lww = BucketProps {
            policy: ConflictPolicy::Lww,
            ..props.clone()
        };
        let r = to_reply(
            ReplyKind::Object,
            got(Some(o.clone())),
            &lww,
            &Resolvers::new(),
        );
        assert!(matches!(r, Ok(Reply::Object { value: Some(v), .. }) if v.as_slice() == b"b"));
        let r = to_reply(ReplyKind::Object, got(None), &props, &Resolvers::new());
        assert!(
            matches!(r, Ok(Reply::Object { value: None, ref siblings, .. }) if siblings.is_empty())
        );
        // A script policy whose resolver is missing falls back to siblings.
        let script = BucketProps {
            policy: ConflictPolicy::Script("nope".into()),
            ..props
        };
        let r = to_reply(ReplyKind::Object, got(Some(o)), &script, &Resolvers::new());
        assert!(matches!(r, Ok(Reply::Object { ref siblings, .. }) if siblings.len() == 2));
    }

    /// A put's answer: `state` stored under `props`' policy as one value.
    fn put_answer(props: &BucketProps, state: Vec<u8>, changed: Option<u64>) -> Answer {
        let mut o = Object::new();
        props
            .policy
            .put(
                &mut o,
                NodeId(1),
                &CausalContext::empty(),
                Payload::Value(state),
                Timestamp::from_ms(1),
                10,
            )
            .unwrap();
        Answer::Put(PutReply {
            object: o,
            receipt: Receipt::default(),
            changed,
        })
    }

    /// A set op answers with its members, or with the count alone when
    /// asked (`count_only`): then the set is not decoded at all, so even
    /// a state that would not decode is not looked at.
    #[test]
    fn a_set_op_answers_its_members_or_its_count_alone() {
        let kind = CrdtKind::OrSet;
        let props = BucketProps {
            policy: ConflictPolicy::Crdt(kind),
            ..BucketProps::default()
        };
        let version = VersionConfig::default();
        let op = |count_only: bool| Op::SetAdd {
            bucket: ByteBuf::from(b"b".to_vec()),
            key: ByteBuf::from(b"k".to_vec()),
            members: vec![ByteBuf::from(b"m".to_vec())],
            options: WriteOptions::default(),
            count_only,
        };
        let kind_of = |o: Op| to_client_op(o, &version).unwrap().unwrap().1;
        assert_eq!(kind_of(op(false)), ReplyKind::Set);
        assert_eq!(kind_of(op(true)), ReplyKind::SetCount);
        let stored = |state: Vec<u8>| put_answer(&props, state, Some(1));
        let state = kind
            .apply(
                &[],
                &CrdtOp::SetAdd(vec![ByteBuf::from(b"m".to_vec())]),
                NodeId(1),
                Timestamp::from_ms(1),
                1 << 20,
            )
            .unwrap();
        let r = to_reply(ReplyKind::Set, stored(state), &props, &Resolvers::new());
        assert!(
            matches!(&r, Ok(Reply::Set { members, changed: Some(1), .. }) if members.len() == 1),
            "{r:?}"
        );
        let r = to_reply(
            ReplyKind::SetCount,
            stored(b"not a set".to_vec()),
            &props,
            &Resolvers::new(),
        );
        assert!(
            matches!(&r, Ok(Reply::Set { members, changed: Some(1), .. }) if members.is_empty()),
            "{r:?}"
        );
    }

    #[test]
    fn counters_read_their_value() {
        let kind = CrdtKind::PnCounter;
        let props = BucketProps {
            policy: ConflictPolicy::Crdt(kind),
            ..BucketProps::default()
        };
        let state = kind
            .apply(
                &[],
                &CrdtOp::Add(-4),
                NodeId(1),
                Timestamp::from_ms(1),
                1 << 20,
            )
            .unwrap();
        let put = put_answer(&props, state, None);
        let r = to_reply(ReplyKind::Counter, put, &props, &Resolvers::new());
        assert!(matches!(r, Ok(Reply::Counter { value: -4, .. })), "{r:?}");
        let none = Answer::Got(GetReply {
            object: None,
            receipt: Receipt::default(),
        });
        let r = to_reply(ReplyKind::Counter, none.clone(), &props, &Resolvers::new());
        assert!(matches!(r, Ok(Reply::Counter { value: 0, .. })));
        let r = to_reply(ReplyKind::Set, none.clone(), &props, &Resolvers::new());
        assert!(r.is_err(), "a counter is not a set");
        let r = to_reply(
            ReplyKind::Counter,
            none,
            &BucketProps::default(),
            &Resolvers::new(),
        );
        assert!(matches!(r, Err(Error::InvalidInput(_))));
    }
}
