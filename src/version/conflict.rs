//! Conflict policies: what a bucket does with concurrent writes.
//!
//! # What it owns
//!
//! [`ConflictPolicy`], a bucket property, decides three things about an
//! [`Object`]: how a replica applies a write ([`ConflictPolicy::put`]), how
//! it merges another replica's copy ([`ConflictPolicy::merge`]), and what a
//! read returns ([`ConflictPolicy::resolve`]).
//!
//! | policy | put and merge | a read returns |
//! |---|---|---|
//! | `Lww` | keep the highest (timestamp, dot) | that one value |
//! | `Siblings` | causal: concurrent writes are kept | every sibling, with the context |
//! | `Crdt(kind)` | causal | the join of the siblings as CRDT states |
//! | `Script(name)` | causal | what the named [`Resolver`] makes of the siblings |
//!
//! Under `Crdt` and `Script` the siblings are still stored: resolution
//! happens on read, and a coordinator that writes the resolved value back
//! with the context it read collapses them. Resolving on every replica's
//! merge instead would need a new dot per resolution, and two replicas
//! resolving at once would make two new siblings; resolving on read avoids
//! that and keeps merge a plain join.
//!
//! # Resolvers
//!
//! A [`Resolver`] turns two or more concurrent siblings into one payload.
//! The shell registers rhai functions as resolvers by name in a
//! [`Resolvers`] table; a bucket with `Script(name)` uses the one with that
//! name. A resolver must be deterministic (the same siblings, in the same
//! order, give the same result), so that replicas resolving independently
//! agree.
//!
//! # What it does not do
//!
//! No scripting engine (the shell provides one), no write-back of resolved
//! values (the coordinator decides), no per-request policy override.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::dvv::Dot;
use super::hlc::Timestamp;
use super::object::{CausalContext, Object, Payload, Sibling};
use crate::crdt::CrdtKind;
use crate::error::{Error, Result};
use crate::id::NodeId;

/// What a bucket does with concurrent writes. The default is `Siblings`:
/// the one policy that neither loses a write nor assumes a value type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum ConflictPolicy {
    /// Last writer wins: the write with the highest HLC timestamp (the dot
    /// breaks ties) is kept, every other one is dropped.
    Lww,
    /// Concurrent writes are kept as siblings and returned to the client,
    /// which resolves them and writes back with the context.
    #[default]
    Siblings,
    /// Values are states of this CRDT; concurrent ones are joined on read.
    Crdt(CrdtKind),
    /// Concurrent values are resolved on read by the [`Resolver`] of this
    /// name.
    Script(String),
}

/// What a read of an object returns under a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// No value: never written, or deleted.
    Absent,
    /// One value.
    Value(Vec<u8>),
    /// Concurrent values for the client to resolve (`Siblings` policy):
    /// the values and tombstones, ordered by dot.
    Siblings(Vec<Sibling>),
}

/// Turns two or more concurrent siblings into one payload.
///
/// Implementations must be deterministic and must not panic; errors are
/// returned to the reader.
pub trait Resolver: Send + Sync {
    /// Resolves `siblings` (at least two, ordered by dot) into one value or
    /// a tombstone.
    fn resolve(&self, siblings: &[Sibling]) -> Result<Payload>;
}

/// Where resolvers not registered by name are looked up, at every read:
/// the shell's table of rhai policies, which grows while its nodes run.
pub trait ResolverSource: Send + Sync {
    /// The resolver called `name`, if the source has one now.
    fn resolver(&self, name: &str) -> Option<Arc<dyn Resolver>>;
}

/// The resolvers a node knows, by name, and optionally a
/// [`ResolverSource`] asked for names not registered.
#[derive(Clone, Default)]
pub struct Resolvers {
    named: HashMap<String, Arc<dyn Resolver>>,
    source: Option<Arc<dyn ResolverSource>>,
}

impl fmt::Debug for Resolvers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.named.keys().collect();
        names.sort();
        f.debug_struct("Resolvers")
            .field("named", &names)
            .field("source", &self.source.is_some())
            .finish()
    }
}

impl Resolvers {
    /// An empty table.
    pub fn new() -> Self {
        Resolvers::default()
    }

    /// Registers `resolver` under `name`, replacing any resolver of that
    /// name.
    pub fn register(&mut self, name: impl Into<String>, resolver: Arc<dyn Resolver>) {
        self.named.insert(name.into(), resolver);
    }

    /// A table that asks `source` for every name (after the registered
    /// ones), so that resolvers added after a node started are found.
    pub fn with_source(source: Arc<dyn ResolverSource>) -> Self {
        Resolvers {
            named: HashMap::new(),
            source: Some(source),
        }
    }

    /// The resolver called `name`: a registered one, else the source's.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Resolver>> {
        if let Some(r) = self.named.get(name) {
            return Ok(Arc::clone(r));
        }
        self.source
            .as_ref()
            .and_then(|s| s.resolver(name))
            .ok_or_else(|| Error::UnknownResolver(name.to_string()))
    }
}

impl ConflictPolicy {
    /// Checks that a bucket set to `self` may be set to `next`: that what
    /// is stored under `self` still means something under `next`. Plain
    /// values (`Lww`, `Siblings`, `Script`) may move between those
    /// policies, which differ only in how they resolve concurrent values;
    /// a CRDT bucket keeps its kind. Any other change (a plain bucket to a
    /// CRDT, one CRDT kind to another, a CRDT to plain values) would leave
    /// stored values that the new policy cannot read, so it is refused
    /// with [`Error::InvalidInput`]: use a new bucket.
    ///
    /// ```
    /// use ringkv::crdt::CrdtKind;
    /// use ringkv::ConflictPolicy;
    /// assert!(ConflictPolicy::Siblings.check_change(&ConflictPolicy::Lww).is_ok());
    /// assert!(ConflictPolicy::Siblings.check_change(&ConflictPolicy::Crdt(CrdtKind::OrSet)).is_err());
    /// ```
    pub fn check_change(&self, next: &ConflictPolicy) -> Result<()> {
        let compatible = match (self, next) {
            (ConflictPolicy::Crdt(a), ConflictPolicy::Crdt(b)) => a == b,
            (ConflictPolicy::Crdt(_), _) | (_, ConflictPolicy::Crdt(_)) => false,
            _ => true,
        };
        if compatible {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "a bucket with policy {self:?} cannot change to {next:?}: its stored \
                 values would not be readable under it; use a new bucket"
            )))
        }
    }

    /// Applies a write coordinated by `actor` with the client's `context`.
    /// Returns the write's dot. Under `Lww` the write may lose at once to a
    /// later one already stored; it is still acknowledged, as LWW promises
    /// nothing more. Under the causal policies it can be refused with
    /// [`Error::TooManySiblings`].
    pub fn put(
        &self,
        object: &mut Object,
        actor: NodeId,
        context: &CausalContext,
        payload: Payload,
        timestamp: Timestamp,
        max_siblings: usize,
    ) -> Result<Dot> {
        match self {
            ConflictPolicy::Lww => Ok(object.put_lww(actor, context, payload, timestamp).0),
            _ => object.put(actor, context, payload, timestamp, max_siblings),
        }
    }

    /// Merges another replica's copy of the object into `object`. Returns
    /// whether `object` changed.
    pub fn merge(&self, object: &mut Object, other: &Object) -> bool {
        match self {
            ConflictPolicy::Lww => object.merge_lww(other),
            _ => object.merge(other),
        }
    }

    /// What a read of `object` returns. `max_value_bytes` bounds each CRDT
    /// state decoded under `Crdt`.
    ///
    /// ```
    /// use ringkv::crdt::{CrdtKind, GSet};
    /// use ringkv::version::{CausalContext, ConflictPolicy, Object, Payload, Resolved, Resolvers, Timestamp};
    /// use ringkv::{codec, NodeId};
    /// let policy = ConflictPolicy::Crdt(CrdtKind::GSet);
    /// let mut obj = Object::new();
    /// for (node, elem) in [(1, b"x"), (2, b"y")] {
    ///     let mut set = GSet::new();
    ///     set.add(serde_bytes::ByteBuf::from(elem.to_vec()));
    ///     let state = Payload::Value(codec::encode(&set).unwrap());
    ///     // Two blind writes: siblings.
    ///     policy.put(&mut obj, NodeId(node), &CausalContext::empty(), state, Timestamp::from_ms(1), 10).unwrap();
    /// }
    /// let Resolved::Value(bytes) = policy.resolve(&obj, &Resolvers::new(), 1 << 20).unwrap() else { panic!() };
    /// let joined: GSet<serde_bytes::ByteBuf> = codec::decode(&bytes, 1 << 20).unwrap();
    /// assert_eq!(joined.len(), 2);
    /// ```
    pub fn resolve(
        &self,
        object: &Object,
        resolvers: &Resolvers,
        max_value_bytes: usize,
    ) -> Result<Resolved> {
        let siblings = object.siblings();
        if object.is_deleted() || siblings.is_empty() {
            return Ok(Resolved::Absent);
        }
        if let [only] = siblings {
            return Ok(from_payload(&only.payload));
        }
        match self {
            // Merges keep one sibling; more can only come from an object
            // stored under another policy before the bucket changed.
            ConflictPolicy::Lww => {
                let latest = siblings
                    .iter()
                    .max_by(|a, b| (a.timestamp, a.dot).cmp(&(b.timestamp, b.dot)));
                Ok(latest.map_or(Resolved::Absent, |s| from_payload(&s.payload)))
            }
            ConflictPolicy::Siblings => Ok(Resolved::Siblings(siblings.to_vec())),
            ConflictPolicy::Crdt(kind) => {
                // A delete concurrent with an update is overridden by the
                // update: the tombstone joins as the empty state.
                let values = siblings.iter().filter_map(|s| s.payload.value());
                Ok(Resolved::Value(kind.join(values, max_value_bytes)?))
            }
            ConflictPolicy::Script(name) => {
                let resolver = resolvers.get(name)?;
                Ok(from_payload(&resolver.resolve(siblings)?))
            }
        }
    }
}

fn from_payload(payload: &Payload) -> Resolved {
    match payload {
        Payload::Value(v) => Resolved::Value(v.clone()),
        Payload::Tombstone => Resolved::Absent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Longest;

    impl Resolver for Longest {
        fn resolve(&self, siblings: &[Sibling]) -> Result<Payload> {
            Ok(siblings
                .iter()
                .filter_map(|s| s.payload.value())
                .max_by_key(|v| (v.len(), v.to_vec()))
                .map_or(Payload::Tombstone, |v| Payload::Value(v.to_vec())))
        }
    }

    fn two_blind(policy: &ConflictPolicy, a: &[u8], b: &[u8]) -> Object {
        let mut obj = Object::new();
        for (node, v, ms) in [(1, a, 5), (2, b, 3)] {
            policy
                .put(
                    &mut obj,
                    NodeId(node),
                    &CausalContext::empty(),
                    Payload::Value(v.to_vec()),
                    Timestamp::from_ms(ms),
                    10,
                )
                .unwrap();
        }
        obj
    }

    #[test]
    fn each_policy_reads_two_concurrent_writes_its_own_way() {
        let resolvers = {
            let mut r = Resolvers::new();
            r.register("longest", Arc::new(Longest));
            r
        };
        let lww = ConflictPolicy::Lww;
        assert_eq!(
            lww.resolve(&two_blind(&lww, b"first", b"second"), &resolvers, 1024)
                .unwrap(),
            Resolved::Value(b"first".to_vec()),
            "the higher timestamp wins, the other write is gone"
        );
        let sib = ConflictPolicy::Siblings;
        let Resolved::Siblings(s) = sib
            .resolve(&two_blind(&sib, b"first", b"second"), &resolvers, 1024)
            .unwrap()
        else {
            panic!("expected siblings");
        };
        assert_eq!(s.len(), 2);
        let script = ConflictPolicy::Script("longest".into());
        assert_eq!(
            script
                .resolve(&two_blind(&script, b"first", b"second"), &resolvers, 1024)
                .unwrap(),
            Resolved::Value(b"second".to_vec())
        );
        let missing = ConflictPolicy::Script("nope".into());
        assert!(matches!(
            missing.resolve(&two_blind(&missing, b"a", b"b"), &resolvers, 1024),
            Err(Error::UnknownResolver(name)) if name == "nope"
        ));
    }

    #[test]
    fn a_source_supplies_resolvers_added_after_the_table_was_cloned() {
        use std::sync::Mutex;
        struct Late(Mutex<Option<Arc<dyn Resolver>>>);
        impl ResolverSource for Late {
            fn resolver(&self, name: &str) -> Option<Arc<dyn Resolver>> {
                let slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
                slot.clone().filter(|_| name == "late")
            }
        }
        let source = Arc::new(Late(Mutex::new(None)));
        let table = Resolvers::with_source(source.clone()).clone();
        let policy = ConflictPolicy::Script("late".into());
        let obj = two_blind(&policy, b"first", b"second");
        assert!(matches!(
            policy.resolve(&obj, &table, 1024),
            Err(Error::UnknownResolver(_))
        ));
        *source.0.lock().unwrap() = Some(Arc::new(Longest));
        assert_eq!(
            policy.resolve(&obj, &table, 1024).unwrap(),
            Resolved::Value(b"second".to_vec())
        );
    }

    #[test]
    fn crdt_resolution_rejects_foreign_bytes() {
        let policy = ConflictPolicy::Crdt(CrdtKind::PnCounter);
        let obj = two_blind(&policy, b"not cbor", b"\xff");
        assert!(matches!(
            policy.resolve(&obj, &Resolvers::new(), 1024),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn deleted_and_empty_objects_read_as_absent() {
        let policy = ConflictPolicy::Siblings;
        assert_eq!(
            policy
                .resolve(&Object::new(), &Resolvers::new(), 1)
                .unwrap(),
            Resolved::Absent
        );
        let mut obj = Object::new();
        policy
            .put(
                &mut obj,
                NodeId(1),
                &CausalContext::empty(),
                Payload::Tombstone,
                Timestamp::from_ms(1),
                10,
            )
            .unwrap();
        assert_eq!(
            policy.resolve(&obj, &Resolvers::new(), 1).unwrap(),
            Resolved::Absent
        );
    }

    #[test]
    fn policies_encode() {
        for p in [
            ConflictPolicy::Lww,
            ConflictPolicy::Siblings,
            ConflictPolicy::Crdt(CrdtKind::OrSet),
            ConflictPolicy::Script("merge_carts".into()),
        ] {
            let bytes = crate::codec::encode(&p).unwrap();
            assert_eq!(
                crate::codec::decode::<ConflictPolicy>(&bytes, 1024).unwrap(),
                p
            );
        }
    }
}
