//! `SCAN`: iterating a bucket's keys in token order over the RESP port.
//!
//! Each page is one or more [`Op::Scan`] ops of the client protocol
//! (`docs/protocol.md`, "Scan"), run in the session's bucket at its read
//! quorum. Redis's cursor is an unsigned 64-bit decimal; here it is the
//! token (the position on the ring) the next page starts at: `0` starts,
//! and a returned `0` means the scan is done (a page that is not the
//! last always ends at the end of a token, so the next one starts at a
//! token of at least 1).
//!
//! The client protocol's cursor can also stop *within* a token, after a
//! key, when two keys of the bucket share a token (a 64-bit hash
//! collision) and a page's limit falls between them. A decimal cursor
//! cannot name a key, so then this command asks again from that cursor,
//! within the same command, until the page reaches the end of the token:
//! the keys of one token always come in one reply, so none is skipped or
//! repeated across replies.

use bytes::Bytes;

use super::commands::{buf, exec, glob, not_integer, syntax, unexpected, Ctx, Session};
use super::frame::Value;
use crate::protocol::{Op, ReadOptions, Reply, ScanCursor, MAX_SCAN_LIMIT};
use crate::version::ConflictPolicy;

/// `COUNT` when the command gives none, as in redis.
const DEFAULT_COUNT: u32 = 10;

/// Ops one `SCAN` runs at most to fill its `COUNT` (ranges with none of
/// the bucket's keys answer empty pages): then it answers with what it
/// has and a cursor.
const MAX_OPS: usize = 16;

/// Ops one `SCAN` runs at most to finish a token whose keys share it
/// (see the module documentation): far more than 64-bit hash collisions
/// of one bucket ever need; past it the command fails.
const MAX_TOKEN_OPS: usize = 64;

/// The redis type name of a bucket's keys.
fn type_name(policy: &ConflictPolicy) -> &'static str {
    use crate::crdt::CrdtKind;
    match policy {
        ConflictPolicy::Crdt(CrdtKind::OrSet | CrdtKind::GSet | CrdtKind::TwoPSet) => "set",
        _ => "string",
    }
}

/// The parsed arguments of `SCAN`.
struct Args<'a> {
    cursor: u64,
    pattern: Option<&'a [u8]>,
    count: u32,
    kind: Option<String>,
}

fn parse(args: &[Bytes]) -> Result<Args<'_>, Value> {
    let Some(cursor) = args.get(1) else {
        return Err(super::commands::arity_error("scan"));
    };
    let cursor = std::str::from_utf8(cursor)
        .ok()
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| Value::err("invalid cursor"))?;
    let mut parsed = Args {
        cursor,
        pattern: None,
        count: DEFAULT_COUNT,
        kind: None,
    };
    let mut rest = args[2..].iter();
    while let Some(option) = rest.next() {
        let value = rest.next().ok_or_else(syntax)?;
        match option.to_ascii_lowercase().as_slice() {
            b"match" => parsed.pattern = Some(value),
            b"count" => {
                let n = super::commands::parse_i64(value).ok_or_else(not_integer)?;
                if n < 1 {
                    return Err(syntax());
                }
                // A hint: pages hold at most MAX_SCAN_LIMIT keys.
                parsed.count = n.min(MAX_SCAN_LIMIT as i64) as u32;
            }
            b"type" => parsed.kind = Some(String::from_utf8_lossy(value).to_ascii_lowercase()),
            _ => return Err(syntax()),
        }
    }
    Ok(parsed)
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]` in the session's
/// bucket: `[next cursor, [keys...]]`.
pub(super) async fn scan(ctx: &Ctx, s: &mut Session, args: &[Bytes]) -> Result<Value, Value> {
    let a = parse(args)?;
    let reply = |cursor: u64, keys: Vec<Vec<u8>>| {
        Value::Array(vec![
            Value::Bulk(Bytes::from(cursor.to_string())),
            Value::Array(
                keys.into_iter()
                    .map(|k| Value::Bulk(Bytes::from(k)))
                    .collect(),
            ),
        ])
    };
    let mut bucket = s.bucket.clone();
    if let Some(kind) = &a.kind {
        // Every key of a bucket has the bucket's type: a scan for another
        // type finds nothing, except sets from a string bucket, which are
        // in its companion `<bucket>.sets` (where its SADD puts them).
        let op = Op::GetBucket {
            bucket: buf(&s.bucket),
        };
        match exec(ctx, s, "scan", op).await? {
            Reply::Bucket { props } if type_name(&props.policy) == kind => {}
            Reply::Bucket { props }
                if kind == "set" && !matches!(props.policy, ConflictPolicy::Crdt(_)) =>
            {
                bucket.extend_from_slice(b".sets");
            }
            Reply::Bucket { .. } => return Ok(reply(0, Vec::new())),
            other => return Err(unexpected(&other)),
        }
    }
    let mut cursor = ScanCursor::at_token(a.cursor);
    let (mut keys, mut fetched, mut bytes) = (Vec::new(), 0u32, 0usize);
    let (mut ops, mut token_ops) = (0, 0);
    loop {
        let op = Op::Scan {
            bucket: buf(&bucket),
            cursor: Some(buf(&cursor.to_bytes())),
            limit: a.count.saturating_sub(fetched).max(1),
            options: ReadOptions {
                r: s.r,
                ..ReadOptions::default()
            },
        };
        let (page, next) = match exec(ctx, s, "scan", op).await? {
            Reply::Keys { keys, cursor, .. } => (keys, cursor),
            other => return Err(unexpected(&other)),
        };
        ops += 1;
        fetched = fetched.saturating_add(page.len() as u32);
        for key in page {
            let key = key.into_vec();
            if a.pattern.is_none_or(|p| glob(p, &key)) {
                bytes += key.len();
                keys.push(key);
            }
        }
        let Some(next) = next else {
            return Ok(reply(0, keys));
        };
        cursor = ScanCursor::from_bytes(&next)
            .map_err(|e| Value::err(format!("the node sent a bad cursor: {e}")))?;
        if cursor.after_key.is_some() {
            // Within a token: finish it in this reply.
            token_ops += 1;
            if token_ops > MAX_TOKEN_OPS {
                return Err(Value::err(
                    "too many keys share one token for a redis cursor; use the client \
                     protocol's Scan",
                ));
            }
            continue;
        }
        if fetched >= a.count || ops >= MAX_OPS || bytes >= ctx.max_reply_bytes / 2 {
            return Ok(reply(cursor.token, keys));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<Bytes> {
        a.iter().map(|s| Bytes::from(s.to_string())).collect()
    }

    #[test]
    fn arguments_parse_as_redis_reads_them() {
        let a = args(&["scan", "0"]);
        let p = parse(&a).unwrap();
        assert_eq!((p.cursor, p.count, p.pattern, p.kind), (0, 10, None, None));
        let a = args(&[
            "SCAN",
            "18446744073709551615",
            "match",
            "k*",
            "COUNT",
            "5000",
            "type",
            "STRING",
        ]);
        let p = parse(&a).unwrap();
        assert_eq!(p.cursor, u64::MAX);
        assert_eq!(p.pattern, Some(&b"k*"[..]));
        assert_eq!(p.count, MAX_SCAN_LIMIT);
        assert_eq!(p.kind.as_deref(), Some("string"));
        for bad in [
            &["scan", "x"][..],
            &["scan", "-1"],
            &["scan", "18446744073709551616"],
            &["scan", ""],
        ] {
            assert_eq!(parse(&args(bad)).err(), Some(Value::err("invalid cursor")));
        }
        assert_eq!(
            parse(&args(&["scan", "0", "count", "0"])).err(),
            Some(syntax())
        );
        assert_eq!(
            parse(&args(&["scan", "0", "count", "x"])).err(),
            Some(not_integer())
        );
        assert_eq!(parse(&args(&["scan", "0", "count"])).err(), Some(syntax()));
        assert_eq!(
            parse(&args(&["scan", "0", "nosuch", "1"])).err(),
            Some(syntax())
        );
    }

    #[test]
    fn set_buckets_hold_sets_and_the_others_strings() {
        use crate::crdt::CrdtKind;
        assert_eq!(type_name(&ConflictPolicy::Crdt(CrdtKind::OrSet)), "set");
        assert_eq!(
            type_name(&ConflictPolicy::Crdt(CrdtKind::PnCounter)),
            "string"
        );
        assert_eq!(type_name(&ConflictPolicy::Siblings), "string");
    }
}
