//! ringkv's own commands on the RESP port, under the `RINGKV.` prefix:
//! siblings with their context (`RINGKV.GET`), writes and deletes with a
//! context (`RINGKV.PUT`, `RINGKV.DEL`), what the previous command's ops
//! did (`RINGKV.RECEIPT`), a bucket's properties (`RINGKV.PROPS`), and the
//! ring and the node's view of the cluster (`RINGKV.RING`,
//! `RINGKV.STATUS`). `docs/resp.md` gives their replies.

use bytes::Bytes;
use serde_bytes::ByteBuf;

use super::super::frame::Value;
use super::{buf, exec, syntax, unexpected, Ctx, Session};
use crate::protocol::{Op, Reply, SiblingView, WriteOptions};
use crate::replication::Receipt;

/// Receipts one command keeps for `RINGKV.RECEIPT` (a multi-key command
/// runs one op per key; the first ones are kept).
pub const MAX_RECEIPTS: usize = 64;

/// A context as the RESP port shows and takes it: lowercase hex, so that
/// it can be copied from `redis-cli` and typed back.
pub fn context_hex(context: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(context.len() * 2);
    for b in context {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The bytes of a hex context; `None` when it is not hex.
pub fn parse_context(hex: &[u8]) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    hex.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

fn bad_context() -> Value {
    Value::err(
        "a context is the hex string RINGKV.GET answered (empty: a blind write, which adds a \
         sibling under the Siblings policy)",
    )
}

fn int(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn field(name: &str, v: Value) -> (Value, Value) {
    (Value::text(name), v)
}

fn nodes(ids: impl IntoIterator<Item = crate::id::NodeId>) -> Value {
    Value::Array(ids.into_iter().map(|n| int(n.0)).collect())
}

fn sibling(s: SiblingView) -> Value {
    Value::Map(vec![
        field(
            "value",
            s.value
                .map(|v| Value::Bulk(Bytes::from(v.into_vec())))
                .unwrap_or(Value::Null),
        ),
        field("timestamp_ms", int(s.timestamp_ms)),
        field("node", int(s.node.0)),
    ])
}

/// A receipt as a map: the nodes asked, those that answered, the
/// fallbacks that answered for a down primary, the nodes read-repaired.
pub fn receipt_value(r: &Receipt) -> Value {
    Value::Map(vec![
        field("asked", nodes(r.asked.iter().copied())),
        field("answered", nodes(r.answered.iter().copied())),
        field(
            "fallbacks",
            Value::Array(
                r.fallbacks
                    .iter()
                    .map(|(f, owner)| {
                        Value::Map(vec![field("node", int(f.0)), field("for", int(owner.0))])
                    })
                    .collect(),
            ),
        ),
        field("repaired", nodes(r.repaired.iter().copied())),
    ])
}

/// Runs a `RINGKV.` command other than `RINGKV.BUCKET` and
/// `RINGKV.CONSISTENCY`.
pub async fn run(ctx: &Ctx, s: &Session, name: &str, args: &[Bytes]) -> Result<Value, Value> {
    match name {
        "ringkv.get" => {
            let (value, siblings, context) = super::get(ctx, s, name, &args[1]).await?;
            // One shape whatever the key holds: the values (one, none, or
            // the siblings) and the context to write back with.
            let values: Vec<Value> = match value {
                Some(v) => vec![Value::Map(vec![
                    field("value", Value::Bulk(Bytes::from(v.into_vec()))),
                    field("timestamp_ms", Value::Null),
                    field("node", Value::Null),
                ])],
                None => siblings.into_iter().map(sibling).collect(),
            };
            Ok(Value::Map(vec![
                field("siblings", Value::Array(values)),
                field("context", Value::text(context_hex(&context))),
            ]))
        }
        "ringkv.put" | "ringkv.del" => {
            let (value, hex) = if name == "ringkv.put" {
                if args.len() != 4 {
                    return Err(super::arity_error(name));
                }
                (Some(&args[2]), &args[3])
            } else {
                if args.len() != 3 {
                    return Err(super::arity_error(name));
                }
                (None, &args[2])
            };
            let context = parse_context(hex).ok_or_else(bad_context)?;
            let context = (!context.is_empty()).then(|| ByteBuf::from(context));
            let options = WriteOptions {
                w: s.w,
                ..WriteOptions::default()
            };
            let op = match value {
                Some(v) => Op::Put {
                    bucket: buf(&s.bucket),
                    key: buf(&args[1]),
                    value: buf(v),
                    context,
                    options,
                },
                None => Op::Delete {
                    bucket: buf(&s.bucket),
                    key: buf(&args[1]),
                    context,
                    options,
                },
            };
            match exec(ctx, s, name, op).await? {
                Reply::Written { context, .. } => Ok(Value::text(context_hex(&context))),
                other => Err(unexpected(&other)),
            }
        }
        "ringkv.receipt" => {
            let receipts = s.receipts();
            Ok(Value::Array(receipts.iter().map(receipt_value).collect()))
        }
        "ringkv.props" => {
            let bucket = match args.len() {
                1 => s.bucket.clone(),
                2 => args[1].to_vec(),
                _ => return Err(super::arity_error(name)),
            };
            let op = Op::GetBucket {
                bucket: ByteBuf::from(bucket.clone()),
            };
            let Reply::Bucket { props } = exec(ctx, s, name, op).await? else {
                return Err(Value::err("unexpected reply from the node"));
            };
            Ok(Value::Map(vec![
                field("bucket", Value::Bulk(Bytes::from(bucket))),
                field("n", int(u64::from(props.n))),
                field("r", Value::text(format!("{:?}", props.r).to_lowercase())),
                field("w", Value::text(format!("{:?}", props.w).to_lowercase())),
                field("policy", Value::text(format!("{:?}", props.policy))),
                field("sloppy_quorum", Value::Int(i64::from(props.sloppy_quorum))),
                field("timeout_ms", int(props.timeout_ms)),
            ]))
        }
        "ringkv.ring" => match exec(ctx, s, name, Op::Ring).await? {
            Reply::Ring(ring) => {
                let nodes = ring
                    .nodes
                    .iter()
                    .map(|n| {
                        Value::Map(vec![
                            field("node", int(n.node.0)),
                            field("vnodes", int(u64::from(n.vnodes))),
                            field("share", Value::text(format!("{:.4}", n.share))),
                        ])
                    })
                    .collect();
                let change = match &ring.change {
                    None => Value::Null,
                    Some(c) => Value::Map(vec![
                        field("kind", Value::text(c.kind.clone())),
                        field("node", int(c.node.0)),
                        field("target_epoch", int(c.target_epoch)),
                        field("moves", int(u64::from(c.moves))),
                        field("done", int(u64::from(c.done))),
                    ]),
                };
                Ok(Value::Map(vec![
                    field("epoch", int(ring.epoch)),
                    field("nodes", Value::Array(nodes)),
                    field("change", change),
                ]))
            }
            other => Err(unexpected(&other)),
        },
        "ringkv.status" => match exec(ctx, s, name, Op::Status).await? {
            Reply::Status(st) => {
                let members = st
                    .members
                    .iter()
                    .map(|m| {
                        Value::Map(vec![
                            field("node", int(m.node.0)),
                            field("addr", Value::text(m.addr.clone())),
                            field("state", Value::text(m.state.clone())),
                            field("phi", Value::text(format!("{:.2}", m.phi))),
                            field("incarnation", int(m.incarnation)),
                        ])
                    })
                    .collect();
                Ok(Value::Map(vec![
                    field("node", int(st.node.0)),
                    field("cluster", Value::text(st.cluster.clone())),
                    field("engine", Value::text(st.engine.clone())),
                    field("keys", int(st.keys)),
                    field("hints", int(st.hints)),
                    field("in_flight", int(st.in_flight)),
                    field("corruptions", int(st.corruptions)),
                    field("anti_entropy_rounds", int(st.anti_entropy.rounds)),
                    field("members", Value::Array(members)),
                ]))
            }
            other => Err(unexpected(&other)),
        },
        _ => Err(syntax()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_round_trip_through_hex_and_bad_hex_is_refused() {
        let bytes: Vec<u8> = (0..=255).collect();
        let hex = context_hex(&bytes);
        assert_eq!(hex.len(), 512);
        assert!(hex.starts_with("000102") && hex.ends_with("fdfeff"));
        assert_eq!(parse_context(hex.as_bytes()).unwrap(), bytes);
        assert_eq!(parse_context(b"ABcd").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(parse_context(b"").unwrap(), Vec::<u8>::new());
        for bad in [&b"a"[..], b"0g", b"zz", b" 0", b"0x00"] {
            assert_eq!(parse_context(bad), None, "{bad:?}");
        }
    }
}
