//! The bucket table: every bucket's properties, agreed on by the cluster.
//!
//! Any node may set a bucket's properties; the change is stamped with the
//! setting node's hybrid-logical-clock time and spreads by gossip (each
//! node sends its whole table to a random peer every gossip round; tables
//! are small). Merging keeps, per bucket, the entry with the highest
//! `(stamp, node)`: last writer wins, which is what an operator changing a
//! setting expects, and every node ends with the same table whatever order
//! the gossip arrives in. Buckets never set use the node's defaults.
//!
//! The table is a plain value; the node persists it in its data directory
//! and restores it on restart.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::replication::limits::{MAX_BUCKETS, MAX_BUCKETS_MERGED, MAX_POLICY_NAME_BYTES};
use crate::version::Timestamp;

/// One bucket's properties and who set them when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketEntry {
    /// The bucket's name.
    #[serde(with = "serde_bytes")]
    pub bucket: Vec<u8>,
    /// Its properties.
    pub props: BucketProps,
    /// When they were set, by the setting node's clock.
    pub stamp: Timestamp,
    /// The node that set them (breaks ties between equal stamps).
    pub node: NodeId,
}

impl BucketEntry {
    fn order(&self) -> (Timestamp, NodeId) {
        (self.stamp, self.node)
    }
}

/// Every bucket set explicitly. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketTable {
    entries: BTreeMap<Vec<u8>, BucketEntry>,
}

impl BucketTable {
    /// An empty table.
    pub fn new() -> Self {
        BucketTable::default()
    }

    /// The properties of `bucket`, if set.
    pub fn get(&self, bucket: &[u8]) -> Option<&BucketProps> {
        self.entries.get(bucket).map(|e| &e.props)
    }

    /// Every entry, in bucket order.
    pub fn entries(&self) -> Vec<BucketEntry> {
        self.entries.values().cloned().collect()
    }

    /// Number of buckets set.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no bucket is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets a bucket's properties locally (validated first). The stamp must
    /// come from the node's clock, so it is above every stamp the node has
    /// seen.
    pub fn set(
        &mut self,
        bucket: Vec<u8>,
        props: BucketProps,
        stamp: Timestamp,
        node: NodeId,
    ) -> Result<BucketEntry> {
        props.validate()?;
        crate::replication::limits::check_bucket(&bucket)?;
        if !self.entries.contains_key(&bucket) && self.entries.len() >= MAX_BUCKETS {
            return Err(Error::InvalidInput(format!(
                "the properties of {MAX_BUCKETS} buckets are set, the most there may be; \
                 change one of those instead"
            )));
        }
        let entry = BucketEntry {
            bucket: bucket.clone(),
            props,
            stamp,
            node,
        };
        self.merge_one(entry.clone());
        Ok(entry)
    }

    /// Merges entries from a peer. Entries whose properties do not
    /// validate are skipped. Returns the entries that changed this table.
    pub fn merge(&mut self, incoming: Vec<BucketEntry>) -> Vec<BucketEntry> {
        let mut changed = Vec::new();
        for e in incoming {
            if e.props.validate().is_err()
                || crate::replication::limits::check_bucket(&e.bucket).is_err()
            {
                continue;
            }
            // Buckets set at once through several nodes may take the
            // cluster past MAX_BUCKETS; they are kept, so that every node
            // ends with the same table, up to a hard cap that bounds the
            // table whatever arrives.
            if !self.entries.contains_key(&e.bucket) && self.entries.len() >= MAX_BUCKETS_MERGED {
                continue;
            }
            if self.merge_one(e.clone()) {
                changed.push(e);
            }
        }
        changed
    }

    fn merge_one(&mut self, entry: BucketEntry) -> bool {
        match self.entries.get(&entry.bucket) {
            Some(mine) if mine.order() >= entry.order() => false,
            _ => {
                self.entries.insert(entry.bucket.clone(), entry);
                true
            }
        }
    }
}

/// A bucket's properties: how many copies, the default quorums, how
/// conflicts are resolved.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketProps {
    /// Replicas per key. Default 3, Dynamo's and Riak's: survives one node
    /// down with quorum reads and writes still succeeding, two with ONE.
    pub n: usize,
    /// Default read quorum. Default `Quorum` (2 of 3): with `w` also a
    /// quorum, every read overlaps every acknowledged write on one replica.
    pub r: crate::replication::Consistency,
    /// Default write quorum. Default `Quorum`.
    pub w: crate::replication::Consistency,
    /// How concurrent writes are resolved. Default `Siblings`: loses no write
    /// and assumes nothing about values.
    pub policy: crate::version::ConflictPolicy,
    /// Whether fallbacks count towards a write's quorum when primaries are
    /// down (a *sloppy* quorum, as in Dynamo). Default false: a quorum is
    /// a quorum of primaries, so `r + w > n` makes every read see every
    /// acknowledged write (reads ask primaries only). Fallbacks still get
    /// the write as a hint either way, and hand it to the primary when it
    /// is back. With `true`, writes stay available while fewer than `w`
    /// primaries are up, at a price the client must accept: a write
    /// acknowledged by fallbacks is not seen by reads until its hints are
    /// delivered (`docs/protocol.md`).
    pub sloppy_quorum: bool,
    /// Request timeout. Default 5 s: far above a healthy round trip
    /// (sub-millisecond on a LAN, an fsync of a few ms), short enough that a
    /// client learns of trouble while it can still act.
    pub timeout: Duration,
}

impl Default for BucketProps {
    fn default() -> Self {
        BucketProps {
            n: 3,
            r: crate::replication::Consistency::Quorum,
            w: crate::replication::Consistency::Quorum,
            policy: crate::version::ConflictPolicy::Siblings,
            sloppy_quorum: false,
            timeout: Duration::from_secs(5),
        }
    }
}

impl BucketProps {
    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<()> {
        if !(1..=16).contains(&self.n) {
            return Err(Error::InvalidInput(format!(
                "bucket n must be in 1..=16, got {}",
                self.n
            )));
        }
        self.r.required(self.n)?;
        self.w.required(self.n)?;
        if self.timeout.is_zero() {
            return Err(Error::InvalidInput(
                "bucket timeout must be positive".into(),
            ));
        }
        if let crate::version::ConflictPolicy::Script(name) = &self.policy {
            if name.len() > MAX_POLICY_NAME_BYTES {
                return Err(Error::InvalidInput(format!(
                    "policy name of {} bytes exceeds the maximum of {MAX_POLICY_NAME_BYTES}",
                    name.len()
                )));
            }
        }
        Ok(())
    }
}

/// The databases of the RESP port whose buckets (`db0` to `db15`) are
/// last-writer-wins unless set otherwise: redis's meaning of `SET`.
pub const NAMED_DATABASES: u32 = 16;

/// The policy a bucket never set takes from its name, if its name asks
/// for one:
///
/// - `db0` to `db15` (the RESP port's databases): `Lww`, what redis's
///   `SET` means;
/// - a name ending in `.counters`: a PN-counter (where the RESP port's
///   `INCR` goes);
/// - a name ending in `.sets`: an OR-set (where its `SADD` goes).
///
/// Every node applies the same rule, so such buckets need no `SetBucket`
/// before their first write, and a `SetBucket` may still change them
/// within what [`ConflictPolicy::check_change`] allows.
///
/// [`ConflictPolicy::check_change`]: crate::version::ConflictPolicy::check_change
pub fn named_policy(bucket: &[u8]) -> Option<crate::version::ConflictPolicy> {
    use crate::crdt::CrdtKind;
    use crate::version::ConflictPolicy;
    if bucket.len() > b".counters".len() && bucket.ends_with(b".counters") {
        return Some(ConflictPolicy::Crdt(CrdtKind::PnCounter));
    }
    if bucket.len() > b".sets".len() && bucket.ends_with(b".sets") {
        return Some(ConflictPolicy::Crdt(CrdtKind::OrSet));
    }
    let digits = bucket.strip_prefix(b"db")?;
    let canonical = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits.len() == 1 || digits[0] != b'0');
    let n: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (canonical && n < NAMED_DATABASES).then_some(ConflictPolicy::Lww)
}

/// The properties of buckets never set: the node's defaults, with the
/// policy [`named_policy`] gives some names.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketDefaults {
    plain: BucketProps,
    lww: BucketProps,
    counters: BucketProps,
    sets: BucketProps,
}

impl BucketDefaults {
    /// Defaults built on the node's `base` properties.
    pub fn new(base: BucketProps) -> Self {
        use crate::crdt::CrdtKind;
        use crate::version::ConflictPolicy;
        let with = |policy| BucketProps {
            policy,
            ..base.clone()
        };
        BucketDefaults {
            lww: with(ConflictPolicy::Lww),
            counters: with(ConflictPolicy::Crdt(CrdtKind::PnCounter)),
            sets: with(ConflictPolicy::Crdt(CrdtKind::OrSet)),
            plain: base,
        }
    }

    /// What `bucket` has while it is not set.
    pub fn get(&self, bucket: &[u8]) -> &BucketProps {
        use crate::crdt::CrdtKind;
        use crate::version::ConflictPolicy;
        match named_policy(bucket) {
            Some(ConflictPolicy::Lww) => &self.lww,
            Some(ConflictPolicy::Crdt(CrdtKind::PnCounter)) => &self.counters,
            Some(ConflictPolicy::Crdt(CrdtKind::OrSet)) => &self.sets,
            _ => &self.plain,
        }
    }

    /// The node's defaults, as configured.
    pub fn base(&self) -> &BucketProps {
        &self.plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::Consistency;
    use crate::version::ConflictPolicy;

    fn props(n: usize) -> BucketProps {
        BucketProps {
            n,
            policy: ConflictPolicy::Lww,
            ..BucketProps::default()
        }
    }

    #[test]
    fn the_table_is_bounded_whether_set_here_or_merged_from_a_peer() {
        let mut t = BucketTable::new();
        let stamp = |i: usize| Timestamp::from_ms(100 + i as u64);
        for i in 0..MAX_BUCKETS {
            t.set(format!("b{i}").into_bytes(), props(3), stamp(i), NodeId(1))
                .unwrap();
        }
        let before = t.clone();
        let e = t
            .set(b"one-more".to_vec(), props(3), stamp(9_999), NodeId(1))
            .unwrap_err();
        assert!(e.to_string().contains("256 buckets"), "{e}");
        assert_eq!(t, before, "a refused set changed the table");
        // A bucket already set may still change.
        t.set(b"b7".to_vec(), props(5), stamp(10_000), NodeId(1))
            .unwrap();
        assert_eq!(t.get(b"b7").map(|p| p.n), Some(5));
        let entry = |bucket: Vec<u8>, n: usize| BucketEntry {
            bucket,
            props: props(n),
            stamp: stamp(20_000),
            node: NodeId(2),
        };
        // Set elsewhere at the same time: kept, up to the hard cap.
        let changed = t.merge(vec![
            entry(b"from-peer".to_vec(), 3),
            entry(b"b8".to_vec(), 4),
        ]);
        assert_eq!(changed.len(), 2);
        assert_eq!(t.len(), MAX_BUCKETS + 1);
        let flood: Vec<BucketEntry> = (0..MAX_BUCKETS_MERGED)
            .map(|i| entry(format!("peer-{i}").into_bytes(), 3))
            .collect();
        t.merge(flood);
        assert_eq!(t.len(), MAX_BUCKETS_MERGED);
        let mut small = BucketTable::new();
        let long = vec![b'x'; crate::replication::limits::MAX_BUCKET_BYTES + 1];
        assert!(small.merge(vec![entry(long.clone(), 3)]).is_empty());
        assert!(small.set(long, props(3), stamp(1), NodeId(1)).is_err());
        assert!(small.is_empty());
    }

    #[test]
    fn the_latest_setting_wins_in_any_order() {
        let a = BucketEntry {
            bucket: b"b".to_vec(),
            props: props(3),
            stamp: Timestamp::from_ms(10),
            node: NodeId(1),
        };
        let b = BucketEntry {
            stamp: Timestamp::from_ms(11),
            props: props(5),
            ..a.clone()
        };
        let c = BucketEntry {
            node: NodeId(2),
            props: props(1),
            ..b.clone()
        };
        let mut t1 = BucketTable::new();
        let mut t2 = BucketTable::new();
        assert_eq!(t1.merge(vec![a.clone(), b.clone(), c.clone()]).len(), 3);
        assert_eq!(t2.merge(vec![c.clone(), a, b]).len(), 1);
        assert_eq!(t1, t2);
        assert_eq!(t1.get(b"b").unwrap().n, 1, "equal stamps: higher node wins");
        assert!(
            t1.merge(vec![c]).is_empty(),
            "merging again changes nothing"
        );
    }

    #[test]
    fn invalid_properties_are_refused() {
        let mut t = BucketTable::new();
        let bad = BucketProps {
            n: 2,
            w: Consistency::Count(3),
            ..BucketProps::default()
        };
        assert!(t
            .set(b"b".to_vec(), bad.clone(), Timestamp::from_ms(1), NodeId(1))
            .is_err());
        let entry = BucketEntry {
            bucket: b"b".to_vec(),
            props: bad,
            stamp: Timestamp::from_ms(1),
            node: NodeId(1),
        };
        assert!(t.merge(vec![entry]).is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn names_choose_the_policy_of_buckets_never_set() {
        use crate::crdt::CrdtKind;
        let d = BucketDefaults::new(props(5));
        assert_eq!(d.get(b"db0").policy, ConflictPolicy::Lww);
        assert_eq!(d.get(b"db15").policy, ConflictPolicy::Lww);
        for plain in [
            &b"db16"[..],
            b"db01",
            b"db",
            b"dbx",
            b"db-1",
            b"users",
            b"db0x",
        ] {
            assert_eq!(
                d.get(plain),
                &props(5),
                "{:?}",
                String::from_utf8_lossy(plain)
            );
        }
        let counters = d.get(b"db0.counters");
        assert_eq!(counters.policy, ConflictPolicy::Crdt(CrdtKind::PnCounter));
        assert_eq!(counters.n, 5, "only the policy comes from the name");
        assert_eq!(
            d.get(b"likes.sets").policy,
            ConflictPolicy::Crdt(CrdtKind::OrSet)
        );
        assert_eq!(d.get(b".sets"), &props(5));
        assert_eq!(d.get(b".counters"), &props(5));
        assert_eq!(d.base(), &props(5));
    }
}
