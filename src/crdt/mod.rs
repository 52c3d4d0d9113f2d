//! Conflict-free replicated data types: values whose replicas merge without
//! losing an update.
//!
//! # What it owns
//!
//! Six state-based CRDTs: [`GCounter`], [`PnCounter`], [`GSet`],
//! [`TwoPSet`], [`OrSet`] (add wins) and [`LwwRegister`]. Each is a plain
//! value with update methods that take the acting node (and, where time
//! matters, an HLC timestamp) as arguments, and a [`Crdt::merge`] that is a
//! join: commutative, associative and idempotent. So two replicas that have
//! received the same updates, in any order and any number of times, hold
//! equal values; property tests check those laws for every type.
//!
//! Every type encodes as CBOR through [`crate::codec`], which is how a
//! bucket with a [`CrdtKind`] policy stores them: [`CrdtKind::join`] decodes
//! the siblings of an object, joins them and encodes the result.
//!
//! # What it does not do
//!
//! No delta-state or operation-based replication (whole states are merged),
//! no garbage collection of removed elements' metadata beyond what each type
//! needs (a 2P-Set keeps removed elements forever), no maps or nested types.
//! Updates are applied by the node named as actor; two nodes must never act
//! under the same id.

mod counter;
mod register;
mod set;

pub use counter::{GCounter, PnCounter};
pub use register::LwwRegister;
pub use set::{GSet, OrSet, TwoPSet};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::codec;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::version::Timestamp;

/// A state-based CRDT.
pub trait Crdt: Clone + PartialEq + Serialize + DeserializeOwned {
    /// Joins `other` into `self`. Commutative, associative and idempotent.
    fn merge(&mut self, other: &Self);
}

/// Which CRDT a bucket stores, for values whose elements are bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CrdtKind {
    /// [`GCounter`].
    GCounter,
    /// [`PnCounter`].
    PnCounter,
    /// [`GSet`] of byte strings.
    GSet,
    /// [`TwoPSet`] of byte strings.
    TwoPSet,
    /// [`OrSet`] of byte strings.
    OrSet,
    /// [`LwwRegister`] of a byte string.
    LwwRegister,
}

impl CrdtKind {
    /// Decodes each encoded state as this kind, joins them, and encodes the
    /// join. Fails with [`crate::Error::Decode`] when a state is not of this
    /// kind; `max` bounds each state's encoded size. An empty input yields
    /// the kind's empty state.
    ///
    /// ```
    /// use ringkv::crdt::{Crdt, CrdtKind, GCounter};
    /// use ringkv::{codec, NodeId};
    /// let mut a = GCounter::new();
    /// a.increment(NodeId(1), 2);
    /// let mut b = GCounter::new();
    /// b.increment(NodeId(2), 3);
    /// let states = [codec::encode(&a).unwrap(), codec::encode(&b).unwrap()];
    /// let joined = CrdtKind::GCounter
    ///     .join(states.iter().map(|s| s.as_slice()), 1 << 20)
    ///     .unwrap();
    /// let joined: GCounter = codec::decode(&joined, 1 << 20).unwrap();
    /// assert_eq!(joined.value(), 5);
    /// ```
    pub fn join<'a>(
        self,
        states: impl IntoIterator<Item = &'a [u8]>,
        max: usize,
    ) -> Result<Vec<u8>> {
        match self {
            CrdtKind::GCounter => join_as::<GCounter>(states, max),
            CrdtKind::PnCounter => join_as::<PnCounter>(states, max),
            CrdtKind::GSet => join_as::<GSet<ByteBuf>>(states, max),
            CrdtKind::TwoPSet => join_as::<TwoPSet<ByteBuf>>(states, max),
            CrdtKind::OrSet => join_as::<OrSet<ByteBuf>>(states, max),
            CrdtKind::LwwRegister => join_as::<LwwRegister<ByteBuf>>(states, max),
        }
    }
}

/// An update a client asks of a CRDT bucket's value. The coordinating
/// replica applies it to the join of what it stores, as its own node, and
/// stores the result with the context it read, so the update replaces every
/// sibling it saw (see `replication::replica`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CrdtOp {
    /// Adds `by` to a counter. A [`GCounter`] refuses a negative `by`.
    Add(i64),
    /// Adds elements to a set.
    SetAdd(Vec<ByteBuf>),
    /// Removes elements from a set ([`TwoPSet`]: for good; [`OrSet`]: those
    /// observed here; a [`GSet`] refuses).
    SetRemove(Vec<ByteBuf>),
    /// Sets a register's value.
    Assign(ByteBuf),
}

/// The value a client sees of a CRDT state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrdtValue {
    /// A counter's total.
    Counter(i128),
    /// A set's live elements, in order.
    Set(Vec<Vec<u8>>),
    /// A register's value (`None`: never assigned).
    Register(Option<Vec<u8>>),
}

/// Why [`CrdtKind::update`] refused an update.
#[derive(Debug)]
pub enum UpdateError {
    /// A stored state does not decode as the bucket's kind (it was
    /// written under another policy, or is damaged).
    State(Error),
    /// The op does not fit the kind, or its result is one a client could
    /// not be answered with (a counter leaving the signed 64-bit range).
    Op(Error),
}

impl UpdateError {
    /// The error, whichever refusal it was.
    pub fn into_error(self) -> Error {
        match self {
            UpdateError::State(e) | UpdateError::Op(e) => e,
        }
    }
}

/// What [`CrdtKind::update`] made of an update.
#[derive(Debug)]
pub struct Updated {
    /// The encoded state to store.
    pub state: Vec<u8>,
    /// For a set operation, how many distinct elements it changed the
    /// membership of: elements an add made members of, or a remove made
    /// no longer members, judged against the join the op was applied to
    /// (what Redis's `SADD` and `SREM` answer). `None` for other ops.
    pub changed: Option<u64>,
}

impl CrdtKind {
    /// Joins `states` (encoded states of this kind, each as [`join`] takes
    /// them; an empty one is the empty state), applies `op` to the join as
    /// `actor` at `timestamp`, and encodes the result: what a coordinating
    /// replica stores for an update.
    ///
    /// Each state is decoded once and the result encoded once, however
    /// large the state: a set of thousands of elements costs one pass each
    /// way. The result is checked before it is returned: a counter's value
    /// must fit in the signed 64 bits the protocol carries and must have
    /// moved by exactly the amount added (a per-node count saturates at
    /// `u64::MAX` rather than wrap, which would otherwise apply less than
    /// asked, silently), so an add that overflows is refused and stored
    /// nowhere. A set op also counts the elements whose membership it
    /// changed ([`Updated::changed`]).
    ///
    /// [`join`]: CrdtKind::join
    ///
    /// ```
    /// use ringkv::crdt::{CrdtKind, CrdtOp, UpdateError};
    /// use ringkv::{NodeId, Timestamp};
    /// let (k, max, t) = (CrdtKind::PnCounter, 1 << 20, Timestamp::from_ms(1));
    /// let top = k.update([], &CrdtOp::Add(i64::MAX), NodeId(1), t, max).unwrap().state;
    /// let over = k.update([top.as_slice()], &CrdtOp::Add(1), NodeId(1), t, max);
    /// assert!(matches!(over, Err(UpdateError::Op(_))));
    /// let misfit = CrdtKind::OrSet.update([top.as_slice()], &CrdtOp::Add(1), NodeId(1), t, max);
    /// assert!(matches!(misfit, Err(UpdateError::Op(_))));
    /// ```
    pub fn update<'a>(
        self,
        states: impl IntoIterator<Item = &'a [u8]>,
        op: &CrdtOp,
        actor: NodeId,
        timestamp: Timestamp,
        max: usize,
    ) -> std::result::Result<Updated, UpdateError> {
        fn load<'a, T: Crdt + Default>(
            states: impl IntoIterator<Item = &'a [u8]>,
            max: usize,
        ) -> std::result::Result<T, UpdateError> {
            joined(states, max).map_err(UpdateError::State)
        }
        fn store<T: Crdt>(state: &T) -> std::result::Result<Updated, UpdateError> {
            let state = codec::encode(state).map_err(UpdateError::Op)?;
            Ok(Updated {
                state,
                changed: None,
            })
        }
        // Applies `one` to each element in turn, counting those whose
        // membership it changed (a repeated element counts once: its
        // second turn changes nothing).
        fn each<S: Crdt>(
            s: &mut S,
            elems: &[ByteBuf],
            contains: impl Fn(&S, &ByteBuf) -> bool,
            mut one: impl FnMut(&mut S, &ByteBuf),
        ) -> std::result::Result<Updated, UpdateError> {
            let mut changed = 0u64;
            for e in elems {
                let was = contains(s, e);
                one(s, e);
                changed += u64::from(contains(s, e) != was);
            }
            let mut updated = store(s)?;
            updated.changed = Some(changed);
            Ok(updated)
        }
        fn counted(by: i64, was: i128, now: i128) -> std::result::Result<(), UpdateError> {
            match was.checked_add(i128::from(by)) {
                Some(expected) if now == expected && i64::try_from(now).is_ok() => Ok(()),
                _ => Err(UpdateError::Op(Error::InvalidInput(format!(
                    "adding {by} to {was} would leave the signed 64-bit range a counter holds"
                )))),
            }
        }
        let wide = |v: u128| i128::try_from(v).unwrap_or(i128::MAX);
        match (self, op) {
            (CrdtKind::GCounter, CrdtOp::Add(by)) => {
                let step = u64::try_from(*by).map_err(|_| {
                    UpdateError::Op(Error::InvalidInput(format!(
                        "a GCounter only grows; cannot add {by}"
                    )))
                })?;
                let mut c: GCounter = load(states, max)?;
                let was = wide(c.value());
                c.increment(actor, step);
                counted(*by, was, wide(c.value()))?;
                store(&c)
            }
            (CrdtKind::PnCounter, CrdtOp::Add(by)) => {
                let mut c: PnCounter = load(states, max)?;
                let was = c.value();
                c.add(actor, *by);
                counted(*by, was, c.value())?;
                store(&c)
            }
            (CrdtKind::GSet, CrdtOp::SetAdd(elems)) => {
                let mut s: GSet<ByteBuf> = load(states, max)?;
                each(&mut s, elems, GSet::contains, |s, e| s.add(e.clone()))
            }
            (CrdtKind::TwoPSet, CrdtOp::SetAdd(elems)) => {
                let mut s: TwoPSet<ByteBuf> = load(states, max)?;
                each(&mut s, elems, TwoPSet::contains, |s, e| {
                    s.add(e.clone());
                })
            }
            (CrdtKind::TwoPSet, CrdtOp::SetRemove(elems)) => {
                let mut s: TwoPSet<ByteBuf> = load(states, max)?;
                each(&mut s, elems, TwoPSet::contains, |s, e| s.remove(e.clone()))
            }
            (CrdtKind::OrSet, CrdtOp::SetAdd(elems)) => {
                let mut s: OrSet<ByteBuf> = load(states, max)?;
                each(&mut s, elems, OrSet::contains, |s, e| {
                    s.add(actor, e.clone())
                })
            }
            (CrdtKind::OrSet, CrdtOp::SetRemove(elems)) => {
                let mut s: OrSet<ByteBuf> = load(states, max)?;
                each(&mut s, elems, OrSet::contains, |s, e| {
                    s.remove(e);
                })
            }
            (CrdtKind::LwwRegister, CrdtOp::Assign(v)) => {
                let mut r: LwwRegister<ByteBuf> = load(states, max)?;
                r.set(actor, timestamp, v.clone());
                store(&r)
            }
            _ => Err(UpdateError::Op(Error::InvalidInput(format!(
                "operation {} does not apply to a {self:?} bucket",
                op.name()
            )))),
        }
    }

    /// [`CrdtKind::update`] of one state (empty: the empty state), with
    /// either refusal as its error.
    pub fn apply(
        self,
        state: &[u8],
        op: &CrdtOp,
        actor: NodeId,
        timestamp: Timestamp,
        max: usize,
    ) -> Result<Vec<u8>> {
        self.update([state], op, actor, timestamp, max)
            .map(|u| u.state)
            .map_err(UpdateError::into_error)
    }
}

impl CrdtKind {
    /// What a client sees of `state` (empty: the empty state).
    pub fn value(self, state: &[u8], max: usize) -> Result<CrdtValue> {
        fn load<T: Crdt + Default>(state: &[u8], max: usize) -> Result<T> {
            if state.is_empty() {
                Ok(T::default())
            } else {
                codec::decode(state, max)
            }
        }
        let elems = |it: &mut dyn Iterator<Item = &ByteBuf>| -> Vec<Vec<u8>> {
            it.map(|e| e.to_vec()).collect()
        };
        Ok(match self {
            CrdtKind::GCounter => {
                let c: GCounter = load(state, max)?;
                CrdtValue::Counter(i128::try_from(c.value()).unwrap_or(i128::MAX))
            }
            CrdtKind::PnCounter => CrdtValue::Counter(load::<PnCounter>(state, max)?.value()),
            CrdtKind::GSet => CrdtValue::Set(elems(&mut load::<GSet<ByteBuf>>(state, max)?.iter())),
            CrdtKind::TwoPSet => {
                CrdtValue::Set(elems(&mut load::<TwoPSet<ByteBuf>>(state, max)?.iter()))
            }
            CrdtKind::OrSet => {
                CrdtValue::Set(elems(&mut load::<OrSet<ByteBuf>>(state, max)?.iter()))
            }
            CrdtKind::LwwRegister => {
                let r: LwwRegister<ByteBuf> = load(state, max)?;
                CrdtValue::Register(r.value.map(|v| v.into_vec()))
            }
        })
    }
}

impl CrdtOp {
    /// Checks, without any state, that `self` applies to a `kind` bucket:
    /// what a coordinator checks before sending it anywhere.
    pub fn check(&self, kind: CrdtKind) -> Result<()> {
        let fits = matches!(
            (kind, self),
            (CrdtKind::GCounter, CrdtOp::Add(0..))
                | (CrdtKind::PnCounter, CrdtOp::Add(_))
                | (CrdtKind::GSet, CrdtOp::SetAdd(_))
                | (
                    CrdtKind::TwoPSet | CrdtKind::OrSet,
                    CrdtOp::SetAdd(_) | CrdtOp::SetRemove(_)
                )
                | (CrdtKind::LwwRegister, CrdtOp::Assign(_))
        );
        if fits {
            Ok(())
        } else if let (CrdtKind::GCounter, CrdtOp::Add(by)) = (kind, self) {
            Err(Error::InvalidInput(format!(
                "a GCounter only grows; cannot add {by}"
            )))
        } else {
            Err(Error::InvalidInput(format!(
                "operation {} does not apply to a {kind:?} bucket",
                self.name()
            )))
        }
    }

    /// The op's name, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            CrdtOp::Add(_) => "add",
            CrdtOp::SetAdd(_) => "set_add",
            CrdtOp::SetRemove(_) => "set_remove",
            CrdtOp::Assign(_) => "assign",
        }
    }
}

fn join_as<'a, T: Crdt + Default>(
    states: impl IntoIterator<Item = &'a [u8]>,
    max: usize,
) -> Result<Vec<u8>> {
    codec::encode(&joined::<T>(states, max)?)
}

/// Decodes each state (empty: the empty state) and joins them, starting
/// from the first rather than merging it into an empty state: one state
/// is decoded and nothing more.
fn joined<'a, T: Crdt + Default>(
    states: impl IntoIterator<Item = &'a [u8]>,
    max: usize,
) -> Result<T> {
    let mut acc: Option<T> = None;
    for bytes in states {
        let state: T = if bytes.is_empty() {
            T::default()
        } else {
            codec::decode(bytes, max)?
        };
        match &mut acc {
            None => acc = Some(state),
            Some(acc) => acc.merge(&state),
        }
    }
    Ok(acc.unwrap_or_default())
}

#[cfg(test)]
mod op_tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn apply(kind: CrdtKind, state: &[u8], op: CrdtOp, node: u64) -> Vec<u8> {
        op.check(kind).unwrap();
        kind.apply(state, &op, NodeId(node), Timestamp::from_ms(node), MAX)
            .unwrap()
    }

    fn bytes(items: &[&str]) -> Vec<ByteBuf> {
        items
            .iter()
            .map(|s| ByteBuf::from(s.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn ops_apply_to_their_kinds() {
        let s = apply(CrdtKind::PnCounter, &[], CrdtOp::Add(5), 1);
        let s = apply(CrdtKind::PnCounter, &s, CrdtOp::Add(-7), 2);
        assert_eq!(
            CrdtKind::PnCounter.value(&s, MAX).unwrap(),
            CrdtValue::Counter(-2)
        );
        let g = apply(CrdtKind::GCounter, &[], CrdtOp::Add(3), 1);
        assert_eq!(
            CrdtKind::GCounter.value(&g, MAX).unwrap(),
            CrdtValue::Counter(3)
        );
        let set = apply(CrdtKind::OrSet, &[], CrdtOp::SetAdd(bytes(&["b", "a"])), 1);
        let set = apply(CrdtKind::OrSet, &set, CrdtOp::SetRemove(bytes(&["b"])), 1);
        assert_eq!(
            CrdtKind::OrSet.value(&set, MAX).unwrap(),
            CrdtValue::Set(vec![b"a".to_vec()])
        );
        let two = apply(CrdtKind::TwoPSet, &[], CrdtOp::SetRemove(bytes(&["x"])), 1);
        let two = apply(
            CrdtKind::TwoPSet,
            &two,
            CrdtOp::SetAdd(bytes(&["x", "y"])),
            1,
        );
        assert_eq!(
            CrdtKind::TwoPSet.value(&two, MAX).unwrap(),
            CrdtValue::Set(vec![b"y".to_vec()]),
            "a removed element stays out of a 2P-set"
        );
        let r = apply(
            CrdtKind::LwwRegister,
            &[],
            CrdtOp::Assign(ByteBuf::from(b"v".to_vec())),
            2,
        );
        assert_eq!(
            CrdtKind::LwwRegister.value(&r, MAX).unwrap(),
            CrdtValue::Register(Some(b"v".to_vec()))
        );
        assert_eq!(
            CrdtKind::GSet.value(&[], MAX).unwrap(),
            CrdtValue::Set(Vec::new())
        );
    }

    #[test]
    fn an_update_joins_its_states_then_applies_and_refuses_what_it_should() {
        let t = Timestamp::from_ms(9);
        let a = apply(CrdtKind::OrSet, &[], CrdtOp::SetAdd(bytes(&["a", "b"])), 1);
        let b = apply(CrdtKind::OrSet, &[], CrdtOp::SetAdd(bytes(&["c"])), 2);
        let b = apply(CrdtKind::OrSet, &b, CrdtOp::SetRemove(bytes(&["c"])), 2);
        let b = apply(CrdtKind::OrSet, &b, CrdtOp::SetAdd(bytes(&["d"])), 2);
        let op = CrdtOp::SetAdd(bytes(&["e"]));
        let updated = CrdtKind::OrSet
            .update([a.as_slice(), b.as_slice()], &op, NodeId(3), t, MAX)
            .unwrap();
        assert_eq!(updated.changed, Some(1));
        let updated = updated.state;
        let joined = CrdtKind::OrSet
            .join([a.as_slice(), b.as_slice()], MAX)
            .unwrap();
        let expected = CrdtKind::OrSet
            .apply(&joined, &op, NodeId(3), t, MAX)
            .unwrap();
        assert_eq!(updated, expected);
        assert_eq!(
            CrdtKind::OrSet.value(&updated, MAX).unwrap(),
            CrdtValue::Set(vec![
                b"a".to_vec(),
                b"b".to_vec(),
                b"d".to_vec(),
                b"e".to_vec()
            ])
        );
        // Counters: siblings join before the add, and the add is checked.
        let x = apply(CrdtKind::PnCounter, &[], CrdtOp::Add(5), 1);
        let y = apply(CrdtKind::PnCounter, &[], CrdtOp::Add(-2), 2);
        let z = CrdtKind::PnCounter
            .update(
                [x.as_slice(), y.as_slice(), &[]],
                &CrdtOp::Add(10),
                NodeId(1),
                t,
                MAX,
            )
            .unwrap();
        assert_eq!(z.changed, None, "a counter op counts no members");
        let z = z.state;
        assert_eq!(
            CrdtKind::PnCounter.value(&z, MAX).unwrap(),
            CrdtValue::Counter(13)
        );
        let over =
            CrdtKind::PnCounter.update([z.as_slice()], &CrdtOp::Add(i64::MAX), NodeId(1), t, MAX);
        assert!(
            matches!(over, Err(UpdateError::Op(Error::InvalidInput(_)))),
            "{over:?}"
        );
        let top = apply(CrdtKind::GCounter, &[], CrdtOp::Add(i64::MAX), 1);
        let past = CrdtKind::GCounter.update([top.as_slice()], &CrdtOp::Add(1), NodeId(2), t, MAX);
        assert!(matches!(past, Err(UpdateError::Op(_))), "{past:?}");
        // A state of another kind among the siblings: the state is at fault.
        let wrong = CrdtKind::PnCounter.update(
            [x.as_slice(), a.as_slice()],
            &CrdtOp::Add(1),
            NodeId(1),
            t,
            MAX,
        );
        assert!(matches!(wrong, Err(UpdateError::State(_))), "{wrong:?}");
        // No state at all: the empty state.
        let fresh = CrdtKind::GSet
            .update([], &CrdtOp::SetAdd(bytes(&["x"])), NodeId(1), t, MAX)
            .unwrap()
            .state;
        assert_eq!(
            CrdtKind::GSet.value(&fresh, MAX).unwrap(),
            CrdtValue::Set(vec![b"x".to_vec()])
        );
    }

    /// What `SADD` and `SREM` answer: the elements whose membership the op
    /// changed, each once, judged against the join of every state.
    #[test]
    fn a_set_op_counts_the_members_it_changed_once_each() {
        let t = Timestamp::from_ms(3);
        let count = |kind: CrdtKind, states: &[&[u8]], op: CrdtOp| {
            kind.update(states.iter().copied(), &op, NodeId(7), t, MAX)
                .unwrap()
                .changed
        };
        for kind in [CrdtKind::GSet, CrdtKind::TwoPSet, CrdtKind::OrSet] {
            let a = apply(kind, &[], CrdtOp::SetAdd(bytes(&["a", "b"])), 1);
            let c = apply(kind, &[], CrdtOp::SetAdd(bytes(&["c"])), 2);
            // "a" and "c" are members (one in each sibling); "d" twice,
            // "e" once are new.
            let add = CrdtOp::SetAdd(bytes(&["a", "d", "c", "d", "e"]));
            assert_eq!(count(kind, &[&a, &c], add.clone()), Some(2), "{kind:?}");
            assert_eq!(count(kind, &[], add), Some(4), "{kind:?}");
            assert_eq!(
                count(kind, &[&a], CrdtOp::SetAdd(Vec::new())),
                Some(0),
                "{kind:?}"
            );
        }
        for kind in [CrdtKind::TwoPSet, CrdtKind::OrSet] {
            let a = apply(kind, &[], CrdtOp::SetAdd(bytes(&["a", "b"])), 1);
            let c = apply(kind, &[], CrdtOp::SetAdd(bytes(&["c"])), 2);
            let rem = CrdtOp::SetRemove(bytes(&["a", "x", "c", "a"]));
            assert_eq!(count(kind, &[&a, &c], rem), Some(2), "{kind:?}");
        }
        // A 2P-set's removed element stays removed: adding it back changes
        // nothing, and removing it again neither.
        let gone = apply(CrdtKind::TwoPSet, &[], CrdtOp::SetAdd(bytes(&["a"])), 1);
        let gone = apply(
            CrdtKind::TwoPSet,
            &gone,
            CrdtOp::SetRemove(bytes(&["a"])),
            1,
        );
        let again = CrdtOp::SetAdd(bytes(&["a"]));
        assert_eq!(count(CrdtKind::TwoPSet, &[&gone], again), Some(0));
        let twice = CrdtOp::SetRemove(bytes(&["a"]));
        assert_eq!(count(CrdtKind::TwoPSet, &[&gone], twice), Some(0));
        // An OR-Set's removed element comes back with a new add.
        let gone = apply(CrdtKind::OrSet, &[], CrdtOp::SetAdd(bytes(&["a"])), 1);
        let gone = apply(CrdtKind::OrSet, &gone, CrdtOp::SetRemove(bytes(&["a"])), 1);
        assert_eq!(
            count(CrdtKind::OrSet, &[&gone], CrdtOp::SetAdd(bytes(&["a"]))),
            Some(1)
        );
    }

    #[test]
    fn misfits_are_refused_before_and_at_apply() {
        let cases = [
            (CrdtKind::GCounter, CrdtOp::Add(-1)),
            (CrdtKind::GSet, CrdtOp::SetRemove(bytes(&["x"]))),
            (CrdtKind::PnCounter, CrdtOp::SetAdd(bytes(&["x"]))),
            (CrdtKind::OrSet, CrdtOp::Add(1)),
            (CrdtKind::LwwRegister, CrdtOp::Add(1)),
        ];
        for (kind, op) in cases {
            assert!(
                matches!(op.check(kind), Err(Error::InvalidInput(_))),
                "{kind:?} {op:?}"
            );
            let applied = kind.apply(&[], &op, NodeId(1), Timestamp::from_ms(1), MAX);
            assert!(
                matches!(applied, Err(Error::InvalidInput(_))),
                "{kind:?} {op:?}"
            );
        }
        // A state of another kind is a decode error, not a panic.
        let set = apply(CrdtKind::OrSet, &[], CrdtOp::SetAdd(bytes(&["x"])), 1);
        assert!(CrdtKind::PnCounter.value(&set, MAX).is_err());
        assert!(CrdtKind::PnCounter
            .apply(&set, &CrdtOp::Add(1), NodeId(1), Timestamp::from_ms(1), MAX)
            .is_err());
    }
}

/// Laws every CRDT must obey, for the property tests of each type.
#[cfg(test)]
pub(crate) mod laws {
    use super::Crdt;
    use proptest::prelude::*;

    /// Merge is commutative, associative and idempotent on these states,
    /// and round-trips through the codec.
    pub fn check_join<T: Crdt + std::fmt::Debug>(a: &T, b: &T, c: &T) -> Result<(), TestCaseError> {
        let mut ab = a.clone();
        ab.merge(b);
        let mut ba = b.clone();
        ba.merge(a);
        prop_assert_eq!(&ab, &ba, "commutative");
        let mut ab_c = ab.clone();
        ab_c.merge(c);
        let mut bc = b.clone();
        bc.merge(c);
        let mut a_bc = a.clone();
        a_bc.merge(&bc);
        prop_assert_eq!(&ab_c, &a_bc, "associative");
        let mut aa = a.clone();
        aa.merge(a);
        prop_assert_eq!(&aa, a, "idempotent");
        let bytes = crate::codec::encode(a).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: T = crate::codec::decode(&bytes, 1 << 20)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, a, "codec round trip");
        Ok(())
    }

    /// Replicas that apply their own updates and then receive each other's
    /// states in the given order (with repeats) all end equal.
    pub fn check_convergence<T: Crdt + std::fmt::Debug>(
        replicas: Vec<T>,
        order: &[usize],
    ) -> Result<(), TestCaseError> {
        let n = replicas.len();
        let mut views: Vec<T> = replicas.clone();
        // Each view receives every replica's state in a different order.
        for (i, view) in views.iter_mut().enumerate() {
            for k in order.iter().copied().chain(0..n) {
                let src = (k + i) % n;
                view.merge(&replicas[src]);
            }
        }
        for view in &views[1..] {
            prop_assert_eq!(view, &views[0]);
        }
        Ok(())
    }
}
