//! Range scans: a bucket's keys in token order, one page at a time.
//!
//! A scan walks the token space from 0 to `u64::MAX` (the same tokens the
//! ring places keys by, [`crate::ring::key_token`]), one *segment* per
//! request: the tokens from the cursor through the end of the virtual
//! node range the cursor falls in. Every key of a segment has the same
//! preference list, so the coordinator asks that segment's replicas
//! ([`ScanRequest`]), exactly as a get of any of its keys would, and the
//! quorum argument of a get holds for each key: with `r + w > n`, a key
//! whose write was acknowledged before the page was read is listed.
//!
//! Each replica lists its stored objects of the bucket from the cursor on
//! ([`ReplicaStore::scan_keys`]), tombstones included and values stripped
//! (a sibling keeps its dot, timestamp and whether it is a tombstone), up
//! to a count and a byte bound, and says how far its listing is complete
//! ([`ScanAnswer::through`]). The coordinator merges the answers of `r`
//! replicas ([`merge_page`]): only up to the least complete position of
//! them (beyond it some replica has not looked), each key's objects merged
//! under the bucket's policy as a get merges them, and a key whose merged
//! object holds only tombstones is left out. The page's cursor is the
//! position after what it covered.
//!
//! # Positions and equal tokens
//!
//! A position is a token and, within it, a key: keys of a bucket are
//! stored ordered by (token, key) (the engine key is the token, then the
//! bucket, then the key). A page ends either at the end of a token (the
//! usual case: the cursor is then just the next token) or, only when two
//! keys of the bucket share a token and the page's limit falls between
//! them, after a key within the token (the cursor then carries that key).
//! So a key is never skipped or listed twice however tokens collide, and
//! a front end whose cursors can only name a token (the RESP port) asks
//! again from a key-carrying cursor until it reaches the end of the token.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::replica::{parse_object_key, ReplicaStore};
use super::{Outbox, Receipt, ReplicaError, ReplicaReply, ReplicaRequest, Target};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::storage::KeyRange;
use crate::version::{ConflictPolicy, Object, Payload, Sibling, VersionVector};

/// The most keys one page may ask for.
pub const MAX_SCAN_LIMIT: u32 = 1000;

/// The most bytes of keys one page holds (and one replica's answer lists,
/// counting a key's bytes and its versions): past it the page ends early,
/// with a cursor. With keys of at most 8 KiB, one key always fits.
pub const MAX_SCAN_BYTES: usize = 4 * 1024 * 1024;

/// The most stored objects (of any bucket) one replica reads for one page
/// before it answers with what it found: bounds the work of a page of a
/// small bucket in a store that holds large ones.
pub const MAX_SCAN_VISITED: usize = 20_000;

/// Where a page starts: keys whose token is above `token`, and those at
/// `token` itself after `after_key` (all of them when `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScanCursor {
    /// The first token of the page.
    pub token: u64,
    /// Within `token`, the last key already listed.
    #[serde(with = "serde_bytes")]
    pub after_key: Option<Vec<u8>>,
}

/// The version byte opening a cursor's bytes.
const CURSOR_V1: u8 = 1;

impl ScanCursor {
    /// The start of a scan: token 0.
    pub fn start() -> Self {
        ScanCursor::default()
    }

    /// A cursor at the start of `token`.
    pub fn at_token(token: u64) -> Self {
        ScanCursor {
            token,
            after_key: None,
        }
    }

    /// The cursor's bytes, opaque to clients: a version byte, the token
    /// (8 bytes, big-endian), then, when the cursor is within a token,
    /// the last key listed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let key = self.after_key.as_deref();
        let mut out = Vec::with_capacity(10 + key.map_or(0, <[u8]>::len));
        out.push(CURSOR_V1);
        out.extend_from_slice(&self.token.to_be_bytes());
        if let Some(key) = key {
            out.push(1);
            out.extend_from_slice(key);
        }
        out
    }

    /// Decodes a cursor's bytes; empty bytes are the start. Anything
    /// else malformed (another version, a short token, a key past the
    /// key limit) is `InvalidInput`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::InvalidInput("malformed scan cursor".into());
        if bytes.is_empty() {
            return Ok(ScanCursor::start());
        }
        if bytes[0] != CURSOR_V1 || bytes.len() < 9 {
            return Err(bad());
        }
        let token = u64::from_be_bytes(bytes[1..9].try_into().map_err(|_| bad())?);
        let after_key = match &bytes[9..] {
            [] => None,
            [1, key @ ..] if key.len() <= super::limits::MAX_KEY_BYTES => Some(key.to_vec()),
            _ => return Err(bad()),
        };
        Ok(ScanCursor { token, after_key })
    }

    /// Whether the key at (`token`, `key`) comes at or after the cursor.
    pub fn admits(&self, token: u64, key: &[u8]) -> bool {
        match token.cmp(&self.token) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => self.after_key.as_deref().is_none_or(|a| key > a),
        }
    }
}

/// How far a listing is complete: every key up to (`token`, `key`)
/// inclusive, or through the whole of `token` when `key` is `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Through {
    /// The token.
    pub token: u64,
    /// The last key within the token, or `None` for all of it.
    #[serde(with = "serde_bytes")]
    pub key: Option<Vec<u8>>,
}

impl Ord for Through {
    fn cmp(&self, other: &Self) -> Ordering {
        self.token
            .cmp(&other.token)
            .then_with(|| match (&self.key, &other.key) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }
}

impl PartialOrd for Through {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Through {
    /// The whole of `token`.
    pub fn token(token: u64) -> Self {
        Through { token, key: None }
    }

    /// Whether the key at (`token`, `key`) lies at or before this.
    pub fn covers(&self, token: u64, key: &[u8]) -> bool {
        match token.cmp(&self.token) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => self.key.as_deref().is_none_or(|k| key <= k),
        }
    }

    /// The cursor just after this; `None` past the last token.
    pub fn next(&self) -> Option<ScanCursor> {
        match &self.key {
            Some(k) => Some(ScanCursor {
                token: self.token,
                after_key: Some(k.clone()),
            }),
            None => self.token.checked_add(1).map(ScanCursor::at_token),
        }
    }
}

/// What a replica is asked to list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanPart {
    /// The bucket.
    #[serde(with = "serde_bytes")]
    pub bucket: Vec<u8>,
    /// Where to start.
    pub from: ScanCursor,
    /// The last token of the segment (inclusive).
    pub end: u64,
    /// The most keys to list.
    pub limit: u32,
}

/// One key a replica holds: its position and its versions, values
/// stripped (see [`strip_values`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanEntry {
    /// The key's token.
    pub token: u64,
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Its stored versions, every value replaced by an empty one.
    pub object: Object,
}

/// A replica's listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanAnswer {
    /// The keys it holds from the cursor on, in (token, key) order,
    /// tombstones included.
    pub entries: Vec<ScanEntry>,
    /// Its listing holds every key it stores from the cursor through here.
    pub through: Through,
}

/// How `object` looks with every value replaced by an empty one: the same
/// dots, timestamps, tombstones and context, so it merges with another
/// replica's stripped copy exactly as the full objects would.
pub fn strip_values(object: &Object) -> Result<Object> {
    // The object's own serde shape; its fields are private to `version`.
    #[derive(Serialize)]
    struct Shape {
        siblings: Vec<Sibling>,
        context: VersionVector,
    }
    let shape = Shape {
        siblings: object
            .siblings()
            .iter()
            .map(|s| Sibling {
                dot: s.dot,
                payload: match s.payload {
                    Payload::Value(_) => Payload::Value(Vec::new()),
                    Payload::Tombstone => Payload::Tombstone,
                },
                timestamp: s.timestamp,
            })
            .collect(),
        context: object.context().0,
    };
    crate::codec::decode(
        &crate::codec::encode(&shape)?,
        super::limits::MAX_OBJECT_BYTES,
    )
}

/// The bytes a listed entry counts for against [`MAX_SCAN_BYTES`]: its key
/// and an allowance for its versions.
fn entry_bytes(key: &[u8], object: &Object) -> usize {
    key.len() + 32 + 40 * object.siblings().len() + 16 * object.context().0.iter().count()
}

impl ReplicaStore {
    /// Lists the objects of `part.bucket` from `part.from` through token
    /// `part.end`, at most `part.limit` of them and [`MAX_SCAN_BYTES`],
    /// reading at most `max_visited` stored objects (of any bucket).
    /// One consistent snapshot of the engine.
    pub fn scan_keys(&self, part: &ScanPart, max_visited: usize) -> Result<ScanAnswer> {
        let mut lo = vec![super::replica::OBJECT_SPACE_TAG];
        lo.extend_from_slice(&part.from.token.to_be_bytes());
        let hi = super::replica::object_range(
            crate::ring::Token(part.from.token),
            crate::ring::Token(part.end.max(part.from.token)),
        )
        .end;
        let range = KeyRange {
            start: std::ops::Bound::Included(lo),
            end: hi,
        };
        let limit = part.limit.max(1) as usize;
        let mut entries: Vec<ScanEntry> = Vec::new();
        let (mut bytes, mut visited) = (0usize, 0usize);
        for item in self.engine().scan(range)? {
            let (k, v) = item?;
            let (token, bucket, key) = parse_object_key(&k)?;
            let token = token.0;
            visited += 1;
            if bucket == part.bucket.as_slice() && part.from.admits(token, key) {
                if entries.len() >= limit || bytes >= MAX_SCAN_BYTES {
                    // Full: this next key says whether the last one ended
                    // its token.
                    let last = entries.last().expect("a full listing holds a key");
                    let through = if last.token == token {
                        Through {
                            token,
                            key: Some(last.key.clone()),
                        }
                    } else {
                        Through::token(last.token)
                    };
                    return Ok(ScanAnswer { entries, through });
                }
                let object = strip_values(&super::replica::decode_stored(&v)?)?;
                bytes += entry_bytes(key, &object);
                entries.push(ScanEntry {
                    token,
                    key: key.to_vec(),
                    object,
                });
            } else if visited > max_visited && token > part.from.token {
                // Enough work: everything before this token was seen.
                return Ok(ScanAnswer {
                    entries,
                    through: Through::token(token - 1),
                });
            }
        }
        Ok(ScanAnswer {
            entries,
            through: Through::token(part.end),
        })
    }
}

/// A page of keys as the coordinator answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    /// The live keys, in (token, key) order.
    pub keys: Vec<Vec<u8>>,
    /// Where the next page starts; `None` when the scan is done.
    pub next: Option<ScanCursor>,
    /// Who was asked and who answered.
    pub receipt: Receipt,
}

/// Merges replicas' listings of one segment into a page of at most
/// `limit` live keys: up to the least complete of them, each key's copies
/// merged under `policy`, keys holding only tombstones left out. Returns
/// the keys and how far the page covers.
pub fn merge_page(
    policy: &ConflictPolicy,
    answers: &[ScanAnswer],
    limit: usize,
) -> (Vec<Vec<u8>>, Through) {
    let Some(mut bound) = answers.iter().map(|a| a.through.clone()).min() else {
        return (Vec::new(), Through::token(0));
    };
    let mut merged: BTreeMap<(u64, &[u8]), Object> = BTreeMap::new();
    for answer in answers {
        for e in &answer.entries {
            if !bound.covers(e.token, &e.key) {
                continue;
            }
            match merged.get_mut(&(e.token, e.key.as_slice())) {
                Some(m) => {
                    policy.merge(m, &e.object);
                }
                None => {
                    merged.insert((e.token, e.key.as_slice()), e.object.clone());
                }
            }
        }
    }
    let live: Vec<(u64, &[u8])> = merged
        .iter()
        .filter(|(_, o)| o.siblings().iter().any(|s| s.payload != Payload::Tombstone))
        .map(|(pos, _)| *pos)
        .collect();
    // Cut at `limit` keys and MAX_SCAN_BYTES, at the end of a token when
    // the next live key is in another one.
    let mut keys = Vec::new();
    let mut bytes = 0;
    for (i, &(token, key)) in live.iter().enumerate() {
        if keys.len() >= limit || (bytes >= MAX_SCAN_BYTES && !keys.is_empty()) {
            let (last_token, last_key) = live[i - 1];
            bound = if last_token == token {
                Through {
                    token,
                    key: Some(last_key.to_vec()),
                }
            } else {
                Through::token(last_token)
            };
            break;
        }
        bytes += key.len();
        keys.push(key.to_vec());
    }
    (keys, bound)
}

/// One scan page in flight at the coordinator: asks the segment's targets,
/// and answers with the merge of the first `r` listings (or an error).
#[derive(Debug)]
pub struct ScanRequest {
    id: u64,
    policy: ConflictPolicy,
    limit: usize,
    r: usize,
    targets: Vec<Target>,
    timeout: Duration,
    deadline: Instant,
    answers: Vec<ScanAnswer>,
    failed: usize,
    receipt: Receipt,
    reply: Option<Result<ScanPage>>,
    done: bool,
}

impl ScanRequest {
    /// Starts page `part` with request id `id`, asking every target; fails
    /// at once with [`Error::Unavailable`] when fewer than `r` exist.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        id: u64,
        part: ScanPart,
        policy: ConflictPolicy,
        targets: Vec<Target>,
        r: usize,
        timeout: Duration,
        out: &mut Outbox,
    ) -> Self {
        let mut scan = ScanRequest {
            id,
            policy,
            limit: part.limit.max(1) as usize,
            r,
            targets,
            timeout,
            deadline: now + timeout,
            answers: Vec::new(),
            failed: 0,
            receipt: Receipt::default(),
            reply: None,
            done: false,
        };
        if scan.targets.len() < r {
            scan.reply = Some(Err(Error::Unavailable {
                needed: r,
                got: scan.targets.len(),
                indefinite: false,
            }));
            scan.done = true;
            return scan;
        }
        for t in &scan.targets {
            scan.receipt.ask(t.node);
            out.push((
                t.node,
                ReplicaRequest::Scan {
                    req: id,
                    part: part.clone(),
                },
            ));
        }
        scan
    }

    /// When the request times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether it has nothing left to do.
    pub fn is_finished(&self) -> bool {
        self.done
    }

    /// The answer, once (then `None`).
    pub fn take_reply(&mut self) -> Option<Result<ScanPage>> {
        self.reply.take()
    }

    /// A replica's reply.
    pub fn step(&mut self, from: NodeId, reply: ReplicaReply) {
        if self.done {
            return;
        }
        let ReplicaReply::Scanned { req, result } = reply else {
            return;
        };
        if req != self.id {
            return;
        }
        let Some(target) = self.targets.iter().find(|t| t.node == from).copied() else {
            return;
        };
        if self.receipt.answered.contains(&from) {
            return;
        }
        match result {
            Ok(answer) => {
                self.receipt.answer(target);
                self.answers.push(answer);
            }
            Err(e) => {
                self.failed += 1;
                if self.targets.len() - self.failed < self.r {
                    self.reply = Some(Err(match e {
                        ReplicaError::Refused(reason) => Error::InvalidInput(reason),
                        _ => Error::Unavailable {
                            needed: self.r,
                            got: self.answers.len(),
                            indefinite: false,
                        },
                    }));
                    self.done = true;
                }
                return;
            }
        }
        if self.answers.len() >= self.r {
            let (keys, through) = merge_page(&self.policy, &self.answers, self.limit);
            self.reply = Some(Ok(ScanPage {
                keys,
                next: through.next(),
                receipt: std::mem::take(&mut self.receipt),
            }));
            self.done = true;
        }
    }

    /// Fails the request with [`Error::QuorumTimeout`] once its deadline
    /// has passed.
    pub fn tick(&mut self, now: Instant) {
        if !self.done && now >= self.deadline {
            self.reply = Some(Err(Error::QuorumTimeout {
                needed: self.r,
                got: self.answers.len(),
                after: self.timeout,
                indefinite: false,
            }));
            self.done = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;
    use crate::ring::key_token;
    use crate::storage::{MemoryEngine, WriteBatch};
    use crate::version::{CausalContext, Timestamp};

    const B: &[u8] = b"bkt";

    fn store(node: u64) -> ReplicaStore {
        ReplicaStore::open(NodeId(node), Arc::new(MemoryEngine::new()), 10, 10).unwrap()
    }

    /// An object written once by `actor` with `value` (or a tombstone).
    fn written(actor: u64, value: Option<&[u8]>, ms: u64) -> Object {
        let mut o = Object::new();
        let payload = value.map_or(Payload::Tombstone, |v| Payload::Value(v.to_vec()));
        o.put(
            NodeId(actor),
            &CausalContext::empty(),
            payload,
            Timestamp::from_ms(ms),
            10,
        )
        .unwrap();
        o
    }

    /// `o` deleted by a write with its context (a delete after a read).
    fn deleted(o: &Object, actor: u64, ms: u64) -> Object {
        let mut d = o.clone();
        d.put(
            NodeId(actor),
            &o.context(),
            Payload::Tombstone,
            Timestamp::from_ms(ms),
            10,
        )
        .unwrap();
        d
    }

    /// Stores `object` for `key` at `token` (which need not be the key's
    /// own: to make keys that share a token).
    fn put_at(s: &ReplicaStore, token: u64, bucket: &[u8], key: &[u8], object: &Object) {
        let mut k = vec![super::super::replica::OBJECT_SPACE_TAG];
        k.extend_from_slice(&token.to_be_bytes());
        k.extend_from_slice(&(bucket.len() as u16).to_be_bytes());
        k.extend_from_slice(bucket);
        k.extend_from_slice(key);
        let mut batch = WriteBatch::default();
        batch.put(k, crate::codec::encode(object).unwrap());
        s.engine().write(batch).unwrap();
    }

    fn put(s: &ReplicaStore, bucket: &[u8], key: &[u8], object: &Object) {
        put_at(s, key_token(bucket, key).0, bucket, key, object);
    }

    /// Every page of a scan of `stores` (all of them answering), with
    /// the token space cut into segments at `cuts`: the keys in order, and
    /// the number of pages.
    fn walk(stores: &[&ReplicaStore], limit: u32, cuts: &[u64]) -> (Vec<Vec<u8>>, usize) {
        let mut cursor = Some(ScanCursor::start());
        let (mut keys, mut pages) = (Vec::new(), 0);
        while let Some(from) = cursor {
            pages += 1;
            assert!(pages < 100_000, "the scan does not end");
            let end = cuts
                .iter()
                .copied()
                .filter(|&c| c >= from.token)
                .min()
                .unwrap_or(u64::MAX);
            let part = ScanPart {
                bucket: B.to_vec(),
                from: from.clone(),
                end,
                limit,
            };
            let answers: Vec<ScanAnswer> = stores
                .iter()
                .map(|s| s.scan_keys(&part, MAX_SCAN_VISITED).unwrap())
                .collect();
            for a in &answers {
                assert!(a.entries.len() <= limit as usize);
                assert!(a.through.token <= end);
            }
            let (page, through) = merge_page(&ConflictPolicy::Siblings, &answers, limit as usize);
            assert!(
                page.len() <= limit as usize,
                "a page holds at most its limit"
            );
            let next = through.next();
            if let Some(n) = &next {
                // Progress: the cursor moves forward.
                assert!(
                    (n.token, n.after_key.clone()) > (from.token, from.after_key.clone())
                        || n.token > from.token,
                    "{from:?} -> {n:?}"
                );
            }
            keys.extend(page);
            cursor = next;
        }
        (keys, pages)
    }

    fn in_token_order(keys: &BTreeSet<Vec<u8>>) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = keys.iter().cloned().collect();
        v.sort_by_key(|k| (key_token(B, k), k.clone()));
        v
    }

    #[test]
    fn cursor_bytes_round_trip_and_refuse_garbage() {
        for c in [
            ScanCursor::start(),
            ScanCursor::at_token(u64::MAX),
            ScanCursor {
                token: 7,
                after_key: Some(b"k".to_vec()),
            },
            ScanCursor {
                token: 7,
                after_key: Some(Vec::new()),
            },
        ] {
            assert_eq!(ScanCursor::from_bytes(&c.to_bytes()).unwrap(), c);
        }
        assert_eq!(ScanCursor::from_bytes(&[]).unwrap(), ScanCursor::start());
        for bad in [
            &[2, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[1, 0, 0][..],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 7][..],
        ] {
            assert!(ScanCursor::from_bytes(bad).is_err(), "{bad:?}");
        }
        let mut long = ScanCursor {
            token: 1,
            after_key: Some(vec![0; crate::replication::limits::MAX_KEY_BYTES + 1]),
        }
        .to_bytes();
        assert!(ScanCursor::from_bytes(&long).is_err());
        long.pop();
        assert!(ScanCursor::from_bytes(&long).is_ok());
    }

    #[test]
    fn through_orders_a_whole_token_after_its_keys() {
        let k = |t, k: &[u8]| Through {
            token: t,
            key: Some(k.to_vec()),
        };
        assert!(k(5, b"z") < Through::token(5));
        assert!(Through::token(5) < k(6, b""));
        assert!(k(5, b"a") < k(5, b"b"));
        assert!(Through::token(5).covers(5, b"anything"));
        assert!(!k(5, b"b").covers(5, b"c"));
        assert!(k(5, b"b").covers(5, b"b"));
        assert_eq!(Through::token(u64::MAX).next(), None);
        assert_eq!(Through::token(3).next(), Some(ScanCursor::at_token(4)));
    }

    #[test]
    fn an_empty_bucket_is_one_empty_page() {
        let s = store(1);
        // Other buckets' keys are not listed.
        for i in 0..50u32 {
            put(&s, b"other", &i.to_be_bytes(), &written(1, Some(b"v"), 1));
        }
        let (keys, pages) = walk(&[&s], 10, &[]);
        assert!(keys.is_empty());
        assert_eq!(pages, 1);
        let (keys, pages) = walk(&[&s], 10, &[1 << 62, 1 << 63, u64::MAX - 5]);
        assert!(keys.is_empty());
        assert_eq!(pages, 4);
    }

    /// 60 keys, every seventh deleted, other buckets' keys around them:
    /// at every limit from 1 to past the count, and with and without
    /// segment cuts, the scan lists every live key once, in token order,
    /// and no deleted one.
    #[test]
    fn every_limit_lists_each_live_key_once() {
        let s = store(1);
        let mut live = BTreeSet::new();
        for i in 0..60u32 {
            let key = format!("key{i}").into_bytes();
            let o = written(1, Some(b"v"), 1);
            put(&s, b"bk", &key, &o);
            if i % 7 == 3 {
                put(&s, B, &key, &deleted(&o, 1, 2));
            } else {
                put(&s, B, &key, &o);
                live.insert(key);
            }
        }
        let expected = in_token_order(&live);
        let cuts: Vec<u64> = (1..9u64).map(|i| i * (u64::MAX / 9)).collect();
        for limit in 1..=62 {
            for cuts in [&[][..], &cuts[..]] {
                let (keys, pages) = walk(&[&s], limit, cuts);
                assert_eq!(keys, expected, "limit {limit}, cuts {cuts:?}");
                if cuts.is_empty() {
                    // Pages of `limit` entries (tombstones count) and one
                    // more at most.
                    assert!(pages <= 60 / limit as usize + 1, "limit {limit}: {pages}");
                }
            }
        }
    }

    /// Keys sharing a token: a page may end between them (its cursor then
    /// names the last key), and none is skipped or listed twice.
    #[test]
    fn keys_with_equal_tokens_are_neither_skipped_nor_repeated() {
        let s = store(1);
        let mut expected = Vec::new();
        for (t, n) in [(5u64, 4u32), (6, 1), (u64::MAX, 3), (0, 2)] {
            for i in 0..n {
                let key = format!("t{t}-{i}").into_bytes();
                put_at(&s, t, B, &key, &written(1, Some(b"v"), 1));
                expected.push((t, key));
            }
            // A deleted key in the same token.
            let o = written(1, Some(b"v"), 1);
            put_at(&s, t, B, b"t-deleted", &deleted(&o, 1, 2));
            // Another bucket at the same token.
            put_at(&s, t, b"b", b"zz", &o);
        }
        expected.sort();
        let expected: Vec<Vec<u8>> = expected.into_iter().map(|(_, k)| k).collect();
        for limit in 1..=12 {
            let (keys, _) = walk(&[&s], limit, &[5, 6]);
            assert_eq!(keys, expected, "limit {limit}");
        }
        // A page of 3 from the start of token 5 (the deleted key, which
        // sorts first, and two live ones) ends within it, at its second
        // live key.
        let part = ScanPart {
            bucket: B.to_vec(),
            from: ScanCursor::at_token(1),
            end: u64::MAX,
            limit: 3,
        };
        let a = s.scan_keys(&part, MAX_SCAN_VISITED).unwrap();
        let (page, through) = merge_page(&ConflictPolicy::Siblings, &[a], 3);
        assert_eq!(page, vec![b"t5-0".to_vec(), b"t5-1".to_vec()]);
        assert_eq!(
            through.next(),
            Some(ScanCursor {
                token: 5,
                after_key: Some(b"t5-1".to_vec())
            })
        );
    }

    /// Three replicas that disagree: a key only one holds is listed; a
    /// key one replica deleted (with the context of what the others hold)
    /// is not, though the others still hold it live; a key deleted on one
    /// and written again, concurrently, on another is (a sibling lives).
    #[test]
    fn merging_replicas_keeps_what_a_get_would_find() {
        let (a, b, c) = (store(1), store(2), store(3));
        let mut live = BTreeSet::new();
        for i in 0..40u32 {
            let key = format!("k{i}").into_bytes();
            let o = written(1, Some(b"v"), 1);
            match i % 4 {
                0 => {
                    // Only on one replica.
                    put([&a, &b, &c][(i / 4) as usize % 3], B, &key, &o);
                    live.insert(key);
                }
                1 => {
                    // Deleted on one, stale elsewhere.
                    let d = deleted(&o, 2, 2);
                    put(&a, B, &key, &o);
                    put(&b, B, &key, &o);
                    put(&c, B, &key, &d);
                }
                2 => {
                    // A delete and a concurrent write: siblings.
                    put(&a, B, &key, &deleted(&o, 2, 2));
                    put(&b, B, &key, &written(3, Some(b"w"), 3));
                    live.insert(key);
                }
                _ => {
                    for s in [&a, &b, &c] {
                        put(s, B, &key, &o);
                    }
                    live.insert(key);
                }
            }
        }
        let expected = in_token_order(&live);
        for limit in [1, 2, 3, 5, 8, 13, 40, 1000] {
            let (keys, _) = walk(&[&a, &b, &c], limit, &[u64::MAX / 3]);
            assert_eq!(keys, expected, "limit {limit}");
        }
        // One replica alone does not see the delete it does not hold.
        let (keys, _) = walk(&[&a], 7, &[]);
        assert!(keys.len() > expected.len() - 10);
        assert!(keys.iter().any(|k| !live.contains(k)));
    }

    #[test]
    fn a_replica_stops_after_visiting_enough_other_keys() {
        let s = store(1);
        for i in 0..200u32 {
            put(&s, b"other", &i.to_be_bytes(), &written(1, Some(b"v"), 1));
        }
        put(&s, B, b"mine", &written(1, Some(b"v"), 1));
        let part = ScanPart {
            bucket: B.to_vec(),
            from: ScanCursor::start(),
            end: u64::MAX,
            limit: 10,
        };
        let a = s.scan_keys(&part, 50).unwrap();
        assert!(a.through.token < u64::MAX, "it stopped early");
        // Page by page with that bound, the one key is still found.
        let mut cursor = Some(ScanCursor::start());
        let mut found = Vec::new();
        let mut pages = 0;
        while let Some(from) = cursor {
            pages += 1;
            let part = ScanPart {
                from,
                ..part.clone()
            };
            let a = s.scan_keys(&part, 50).unwrap();
            let (keys, through) = merge_page(&ConflictPolicy::Siblings, &[a], 10);
            found.extend(keys);
            cursor = through.next();
        }
        assert_eq!(found, vec![b"mine".to_vec()]);
        assert!(pages >= 4, "{pages}");
    }

    #[test]
    fn stripped_objects_merge_like_the_full_ones() {
        let o = written(1, Some(b"value"), 1);
        let d = deleted(&o, 2, 2);
        let s = strip_values(&o).unwrap();
        assert_eq!(s.context(), o.context());
        assert_eq!(s.siblings()[0].payload, Payload::Value(Vec::new()));
        let mut m = s.clone();
        m.merge(&strip_values(&d).unwrap());
        assert!(m.is_deleted());
        assert_eq!(strip_values(&d).unwrap(), d);
    }

    #[test]
    fn the_request_needs_r_answers_and_fails_as_a_get_does() {
        let t = |n| Target {
            node: NodeId(n),
            hint_for: None,
        };
        let part = ScanPart {
            bucket: B.to_vec(),
            from: ScanCursor::start(),
            end: u64::MAX,
            limit: 5,
        };
        let now = Instant::now();
        let mut out = Outbox::new();
        let policy = ConflictPolicy::Siblings;
        let timeout = Duration::from_secs(1);
        let mut r = ScanRequest::new(
            now,
            9,
            part.clone(),
            policy.clone(),
            vec![t(1), t(2), t(3)],
            2,
            timeout,
            &mut out,
        );
        assert_eq!(out.len(), 3);
        let s1 = store(1);
        put(&s1, B, b"x", &written(1, Some(b"v"), 1));
        let answer = |s: &ReplicaStore| ReplicaReply::Scanned {
            req: 9,
            result: Ok(s.scan_keys(&part, MAX_SCAN_VISITED).unwrap()),
        };
        r.step(NodeId(1), answer(&s1));
        // The same node twice counts once; an unknown node not at all.
        r.step(NodeId(1), answer(&s1));
        r.step(NodeId(7), answer(&s1));
        assert!(!r.is_finished());
        r.step(NodeId(2), answer(&store(2)));
        assert!(r.is_finished());
        let page = r.take_reply().unwrap().unwrap();
        assert_eq!(page.keys, vec![b"x".to_vec()]);
        assert_eq!(page.next, None);
        assert_eq!(page.receipt.answered, vec![NodeId(1), NodeId(2)]);

        // Too few targets: unavailable at once.
        let mut out = Outbox::new();
        let mut r = ScanRequest::new(
            now,
            10,
            part.clone(),
            policy.clone(),
            vec![t(1)],
            2,
            timeout,
            &mut out,
        );
        assert!(out.is_empty());
        assert!(matches!(
            r.take_reply(),
            Some(Err(Error::Unavailable { needed: 2, .. }))
        ));

        // Failures that leave too few: unavailable; silence: a timeout.
        let mut out = Outbox::new();
        let mut r = ScanRequest::new(
            now,
            11,
            part.clone(),
            policy.clone(),
            vec![t(1), t(2)],
            2,
            timeout,
            &mut out,
        );
        r.step(
            NodeId(2),
            ReplicaReply::Scanned {
                req: 11,
                result: Err(ReplicaError::Failed("disk".into())),
            },
        );
        assert!(matches!(
            r.take_reply(),
            Some(Err(Error::Unavailable { .. }))
        ));
        let mut r = ScanRequest::new(now, 12, part, policy, vec![t(1)], 1, timeout, &mut out);
        r.tick(now + Duration::from_millis(10));
        assert!(!r.is_finished());
        r.tick(now + timeout);
        assert!(matches!(
            r.take_reply(),
            Some(Err(Error::QuorumTimeout { .. }))
        ));
    }
}
