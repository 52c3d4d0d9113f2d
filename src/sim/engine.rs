//! The simulator's storage engine: a memory engine that can lose the
//! writes it was never asked to make durable, and fail on purpose.
//!
//! A [`SimEngine`] holds its data in memory like
//! [`MemoryEngine`](crate::storage::MemoryEngine), and adds the two things
//! a real disk does to a node that the memory engine cannot:
//!
//! - **Unsynced writes are lost in a machine crash.** Under
//!   [`Durability::Synced`] (an LSM with `sync = always`) every batch is
//!   durable when [`Engine::write`] returns. Under [`Durability::Unsynced`]
//!   (`sync = none` or `interval`, seen from a machine crash) a batch is
//!   durable only once [`SimEngine::sync`] (or [`Engine::flush`]) has been
//!   called after it; the simulator calls `sync` on its own interval, as
//!   the LSM's sync thread does. [`SimEngine::crash`] throws away every
//!   batch that is not durable yet: afterwards reads, scans and stats see
//!   exactly the durable state.
//! - **Injected failures.** With [`StorageFaults`] set, each write fails
//!   with one probability and each get or scan with another, with the
//!   error the LSM gives for a failed disk operation ([`Error::Io`], which
//!   the replica layer reports as its own trouble). A failed write applies
//!   nothing, as when the LSM's log append fails before the memtable is
//!   touched.
//!
//! Every draw comes from one generator seeded at [`SimEngine::new`], so
//! the same calls in the same order fail the same way on every run.
//!
//! # How the loss is kept exact
//!
//! The engine keeps the live map (what reads see) and, under `Unsynced`,
//! an undo log: for each batch since the last sync, the value every key it
//! touched had just before it (or "absent"). A crash replays the log
//! backwards, batch by batch and operation by operation, restoring each
//! key to the value it had; so overwrites, deletes of durable keys and
//! keys written several times inside the unsynced window all come back to
//! exactly their durable values. A sync simply forgets the log.
//!
//! Clones of one `SimEngine` share everything (data, log, faults,
//! generator, counters), so a node "restarted" on a clone sees what the
//! crash left.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::storage::{BatchOp, Engine, EngineStats, KeyRange, ScanIter, WriteBatch};

/// What an acknowledged write of a [`SimEngine`] survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every batch is durable when `write` returns, as under
    /// [`SyncPolicy::Always`](crate::storage::SyncPolicy::Always): a crash
    /// loses nothing that was acknowledged.
    Synced,
    /// A batch is durable only once [`SimEngine::sync`] or
    /// [`Engine::flush`] is called after it, as under
    /// [`SyncPolicy::None`](crate::storage::SyncPolicy::None) or
    /// [`SyncPolicy::Interval`](crate::storage::SyncPolicy::Interval) when
    /// the whole machine crashes: a crash loses every batch since the last
    /// sync.
    Unsynced,
}

/// The failures a [`SimEngine`] injects. The default injects none.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StorageFaults {
    /// Probability, in `[0, 1]`, that a `write` (of a non-empty batch)
    /// fails. A failed write applies nothing of its batch.
    pub write_fail_rate: f64,
    /// Probability, in `[0, 1]`, that a `get` or a `scan` fails.
    pub read_fail_rate: f64,
}

impl StorageFaults {
    /// Checks that both rates are probabilities: within `[0, 1]` and not
    /// NaN. Anything else is [`Error::InvalidInput`].
    pub fn validate(&self) -> Result<()> {
        for (name, rate) in [
            ("write_fail_rate", self.write_fail_rate),
            ("read_fail_rate", self.read_fail_rate),
        ] {
            // `contains` is false for NaN, so NaN is refused too.
            if !(0.0..=1.0).contains(&rate) {
                return Err(Error::InvalidInput(format!(
                    "{name} must be within [0, 1], got {rate}"
                )));
            }
        }
        Ok(())
    }
}

/// What the durability model and the injected faults of a [`SimEngine`]
/// have done since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineFaultCounters {
    /// Writes failed by [`StorageFaults::write_fail_rate`] (nothing of
    /// their batches was applied).
    pub writes_failed: u64,
    /// Gets and scans failed by [`StorageFaults::read_fail_rate`].
    pub reads_failed: u64,
    /// Acknowledged batches thrown away by [`SimEngine::crash`] because
    /// they were not durable yet.
    pub batches_lost: u64,
    /// Calls of [`SimEngine::sync`] and [`Engine::flush`].
    pub syncs: u64,
}

/// A storage engine for the simulator: in memory, losing unsynced writes
/// in a [`crash`](SimEngine::crash), and failing reads and writes with
/// seeded probabilities. Cloning gives another handle on the same engine.
///
/// ```
/// use ringkv::sim::engine::{Durability, SimEngine};
/// use ringkv::storage::Engine;
///
/// let engine = SimEngine::new(7, Durability::Unsynced);
/// engine.put(b"a", b"1").unwrap();
/// engine.sync();
/// engine.put(b"a", b"2").unwrap();
/// assert_eq!(engine.crash(), 1);
/// assert_eq!(engine.get(b"a").unwrap(), Some(b"1".to_vec()));
/// ```
#[derive(Clone)]
pub struct SimEngine {
    inner: Arc<Mutex<State>>,
}

/// A key and the value it had before an operation changed it (`None`:
/// absent), for [`SimEngine::crash`] to put back.
type Undo = (Vec<u8>, Option<Vec<u8>>);

/// Everything behind the one lock: one lock keeps every draw of the
/// generator in the order the calls were made.
struct State {
    durability: Durability,
    /// What reads see now: the durable state plus every unsynced batch.
    live: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Sum of the lengths of the keys and values in `live`.
    live_bytes: u64,
    /// Sum of the lengths of the keys and values a crash now would keep.
    durable_bytes: u64,
    /// One entry per unsynced batch, oldest first, holding one [`Undo`]
    /// per operation in the batch's order. Always empty under
    /// [`Durability::Synced`].
    undo: Vec<Vec<Undo>>,
    faults: StorageFaults,
    rng: ChaCha8Rng,
    counters: EngineFaultCounters,
    logical_bytes_written: u64,
    flushes: u64,
}

impl State {
    /// Sets `key` to `value` (`None` removes it) in the live map, keeps
    /// `live_bytes` right, and returns the value it had.
    fn set(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> Option<Vec<u8>> {
        let klen = key.len() as u64;
        let old = match value {
            Some(v) => {
                self.live_bytes += klen + v.len() as u64;
                self.live.insert(key, v)
            }
            None => self.live.remove(&key),
        };
        if let Some(old) = &old {
            self.live_bytes -= klen + old.len() as u64;
        }
        old
    }

    /// Whether the next operation fails, with probability `rate`. Draws
    /// nothing when the rate is zero, so a run without faults consumes no
    /// randomness.
    fn fails(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.random_bool(rate)
    }

    /// Makes everything written so far durable.
    fn sync(&mut self) {
        self.undo.clear();
        self.durable_bytes = self.live_bytes;
        self.counters.syncs += 1;
    }
}

/// The error an injected failure gives: the LSM's error for a failed disk
/// operation.
fn injected(what: &str) -> Error {
    Error::io(
        format!("{what} (simulated storage)"),
        std::io::Error::other("injected storage failure"),
    )
}

impl SimEngine {
    /// An empty engine whose acknowledged writes survive a crash as
    /// `durability` says, with no faults, drawing its failures (once
    /// [`set_faults`](SimEngine::set_faults) asks for some) from a
    /// generator seeded with `seed`.
    pub fn new(seed: u64, durability: Durability) -> Self {
        SimEngine {
            inner: Arc::new(Mutex::new(State {
                durability,
                live: BTreeMap::new(),
                live_bytes: 0,
                durable_bytes: 0,
                undo: Vec::new(),
                faults: StorageFaults::default(),
                rng: ChaCha8Rng::seed_from_u64(seed),
                counters: EngineFaultCounters::default(),
                logical_bytes_written: 0,
                flushes: 0,
            })),
        }
    }

    // A panic while holding the lock cannot leave half a batch behind
    // (the fault is drawn before anything is applied, and BTreeMap
    // operations do not panic), so a poisoned lock still guards a
    // consistent state: recover it rather than propagate.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The durability this engine was created with.
    pub fn durability(&self) -> Durability {
        self.lock().durability
    }

    /// Makes every write so far durable: a later [`crash`](Self::crash)
    /// keeps it. Under [`Durability::Synced`] everything already is, and
    /// this only counts the call.
    pub fn sync(&self) {
        self.lock().sync();
    }

    /// Crashes the machine under the engine: throws away every batch not
    /// yet durable, so that reads, scans and stats see exactly the durable
    /// state, and returns how many batches were lost (always 0 under
    /// [`Durability::Synced`]). Faults, counters and the generator carry on.
    pub fn crash(&self) -> u64 {
        let mut st = self.lock();
        let undo = std::mem::take(&mut st.undo);
        let lost = undo.len() as u64;
        for batch in undo.into_iter().rev() {
            for (key, before) in batch.into_iter().rev() {
                st.set(key, before);
            }
        }
        debug_assert_eq!(st.live_bytes, st.durable_bytes);
        st.counters.batches_lost += lost;
        lost
    }

    /// Batches acknowledged since the last sync: what a crash now would
    /// lose.
    pub fn unsynced_batches(&self) -> u64 {
        self.lock().undo.len() as u64
    }

    /// Sets the failures injected from now on. Refuses, with
    /// [`Error::InvalidInput`] and the faults unchanged, a rate outside
    /// `[0, 1]` or NaN.
    pub fn set_faults(&self, faults: StorageFaults) -> Result<()> {
        faults.validate()?;
        self.lock().faults = faults;
        Ok(())
    }

    /// The failures injected now.
    pub fn faults(&self) -> StorageFaults {
        self.lock().faults
    }

    /// What the durability model and the faults have done so far.
    pub fn counters(&self) -> EngineFaultCounters {
        self.lock().counters
    }
}

impl fmt::Debug for SimEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("SimEngine")
            .field("durability", &st.durability)
            .field("keys", &st.live.len())
            .field("unsynced_batches", &st.undo.len())
            .field("faults", &st.faults)
            .field("counters", &st.counters)
            .finish()
    }
}

impl Engine for SimEngine {
    /// The live value of `key`; fails with [`Error::Io`] with probability
    /// [`StorageFaults::read_fail_rate`].
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut st = self.lock();
        let rate = st.faults.read_fail_rate;
        if st.fails(rate) {
            st.counters.reads_failed += 1;
            return Err(injected("reading a key"));
        }
        Ok(st.live.get(key).cloned())
    }

    /// Applies `batch` atomically, or fails with [`Error::Io`] with
    /// probability [`StorageFaults::write_fail_rate`] and applies nothing.
    /// Under [`Durability::Unsynced`] the batch is remembered for
    /// [`SimEngine::crash`] until the next sync.
    fn write(&self, batch: WriteBatch) -> Result<()> {
        batch.validate()?;
        if batch.is_empty() {
            return Ok(());
        }
        let mut st = self.lock();
        let rate = st.faults.write_fail_rate;
        if st.fails(rate) {
            st.counters.writes_failed += 1;
            return Err(injected("appending a batch to the write-ahead log"));
        }
        st.logical_bytes_written += batch.logical_bytes() as u64;
        let keep_undo = st.durability == Durability::Unsynced;
        let mut undo = Vec::with_capacity(if keep_undo { batch.len() } else { 0 });
        for op in batch.into_ops() {
            let (key, value) = match op {
                BatchOp::Put { key, value } => (key, Some(value)),
                BatchOp::Delete { key } => (key, None),
            };
            let before = st.set(key.clone(), value);
            if keep_undo {
                undo.push((key, before));
            }
        }
        if keep_undo {
            st.undo.push(undo);
        } else {
            st.durable_bytes = st.live_bytes;
        }
        Ok(())
    }

    /// A copy of the live keys and values in `range`, taken now; fails with
    /// [`Error::Io`] with probability [`StorageFaults::read_fail_rate`].
    fn scan(&self, range: KeyRange) -> Result<ScanIter<'_>> {
        let mut st = self.lock();
        let rate = st.faults.read_fail_rate;
        if st.fails(rate) {
            st.counters.reads_failed += 1;
            return Err(injected("scanning a range"));
        }
        // `BTreeMap::range` panics on a start above the end.
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let snapshot: Vec<(Vec<u8>, Vec<u8>)> = st
            .live
            .range::<Vec<u8>, _>((range.start, range.end))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Box::new(snapshot.into_iter().map(Ok)))
    }

    /// A sync (the LSM flushes its memtables to synced tables), counted
    /// also in [`EngineStats::flushes`].
    fn flush(&self) -> Result<()> {
        let mut st = self.lock();
        st.flushes += 1;
        st.sync();
        Ok(())
    }

    /// `engine` is `"sim"`; `memtable_bytes` is the key and value bytes
    /// reads see now, `disk_bytes` those a crash now would keep (equal
    /// under [`Durability::Synced`] and right after a sync or a crash);
    /// `logical_bytes_written` counts every accepted batch, lost or not;
    /// `flushes` counts calls of `flush`.
    fn stats(&self) -> EngineStats {
        let st = self.lock();
        EngineStats {
            engine: "sim",
            logical_bytes_written: st.logical_bytes_written,
            disk_bytes: st.durable_bytes,
            memtable_bytes: st.live_bytes,
            flushes: st.flushes,
            ..EngineStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::id::NodeId;
    use crate::replication::replica::ReplicaStore;
    use crate::replication::{ReplicaReply, ReplicaRequest, Write};
    use crate::version::{CausalContext, ConflictPolicy, Payload, Timestamp};

    fn all(e: &SimEngine) -> Vec<(Vec<u8>, Vec<u8>)> {
        e.scan(KeyRange::all())
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    /// The key and value bytes of what a full scan yields.
    fn scanned_bytes(e: &SimEngine) -> u64 {
        all(e).iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
    }

    #[test]
    fn synced_writes_survive_a_crash() {
        let e = SimEngine::new(1, Durability::Synced);
        e.put(b"a", b"1").unwrap();
        e.put(b"a", b"2").unwrap();
        e.put(b"b", b"3").unwrap();
        e.delete(b"b").unwrap();
        assert_eq!(e.unsynced_batches(), 0);
        assert_eq!(e.crash(), 0);
        assert_eq!(e.get(b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(e.get(b"b").unwrap(), None);
        assert_eq!(e.counters().batches_lost, 0);
    }

    #[test]
    fn unsynced_writes_are_lost_by_a_crash_and_kept_after_a_sync() {
        let e = SimEngine::new(1, Durability::Unsynced);
        let clone = e.clone();
        e.put(b"a", b"1").unwrap();
        e.put(b"b", b"2").unwrap();
        assert_eq!(clone.unsynced_batches(), 2);
        assert_eq!(clone.crash(), 2);
        assert_eq!(e.get(b"a").unwrap(), None);
        assert_eq!(e.get(b"b").unwrap(), None);

        e.put(b"a", b"1").unwrap();
        e.sync();
        e.put(b"b", b"2").unwrap();
        e.flush().unwrap();
        e.put(b"c", b"3").unwrap();
        assert_eq!(e.crash(), 1);
        assert_eq!(all(&e), vec![kv("a", "1"), kv("b", "2")]);
        // A crash right after another loses nothing more.
        assert_eq!(e.crash(), 0);
        let c = e.counters();
        assert_eq!((c.batches_lost, c.syncs), (3, 2));
        assert_eq!(e.stats().flushes, 1);
    }

    #[test]
    fn overwrites_and_deletes_in_the_unsynced_window_roll_back_exactly() {
        let e = SimEngine::new(1, Durability::Unsynced);
        let mut durable = WriteBatch::new();
        durable
            .put(b"keep", b"k0")
            .put(b"over", b"o0")
            .put(b"gone", b"g0")
            .put(b"twice", b"t0");
        e.write(durable).unwrap();
        e.sync();

        // Overwrite twice, delete a durable key, create then delete a new
        // key, recreate the deleted one, all within batches and across them.
        let mut b = WriteBatch::new();
        b.put(b"over", b"o1").delete(b"gone").put(b"new", b"n1");
        e.write(b).unwrap();
        let mut b = WriteBatch::new();
        b.put(b"over", b"o2").put(b"over", b"o3").delete(b"new");
        e.write(b).unwrap();
        e.delete(b"keep").unwrap();
        e.put(b"gone", b"g1").unwrap();
        e.delete(b"gone").unwrap();
        e.put(b"new", b"n2").unwrap();
        // Within one batch, undone last op first: "twice" must come back
        // to t0, not to t1.
        let mut b = WriteBatch::new();
        b.put(b"twice", b"t1").delete(b"twice").put(b"twice", b"t2");
        e.write(b).unwrap();
        assert_eq!(e.get(b"over").unwrap(), Some(b"o3".to_vec()));
        assert_eq!(e.get(b"keep").unwrap(), None);

        assert_eq!(e.crash(), 7);
        assert_eq!(
            all(&e),
            vec![
                kv("gone", "g0"),
                kv("keep", "k0"),
                kv("over", "o0"),
                kv("twice", "t0")
            ]
        );
        assert_eq!(e.get(b"new").unwrap(), None);
        // A key deleted in the unsynced window is back.
        assert_eq!(e.get(b"keep").unwrap(), Some(b"k0".to_vec()));
    }

    #[test]
    fn a_failed_write_applies_nothing() {
        for durability in [Durability::Synced, Durability::Unsynced] {
            let e = SimEngine::new(3, durability);
            e.put(b"a", b"1").unwrap();
            let before = e.stats();
            e.set_faults(StorageFaults {
                write_fail_rate: 1.0,
                read_fail_rate: 0.0,
            })
            .unwrap();
            let mut b = WriteBatch::new();
            b.put(b"a", b"2").put(b"b", b"3").delete(b"a");
            let err = e.write(b).unwrap_err();
            assert!(matches!(err, Error::Io { .. }), "{err:?}");
            assert!(err.is_retryable());
            assert_eq!(all(&e), vec![kv("a", "1")]);
            assert_eq!(e.stats(), before);
            assert_eq!(e.counters().writes_failed, 1);
            let unsynced = u64::from(durability == Durability::Unsynced);
            assert_eq!(e.unsynced_batches(), unsynced);
            // Reads still work, and writes again once the fault is gone.
            e.set_faults(StorageFaults::default()).unwrap();
            e.put(b"b", b"3").unwrap();
            assert_eq!(all(&e), vec![kv("a", "1"), kv("b", "3")]);
        }
    }

    /// Which of 200 alternating writes and reads fail, with both rates
    /// at one half.
    fn failure_pattern(seed: u64) -> Vec<bool> {
        let e = SimEngine::new(seed, Durability::Unsynced);
        e.set_faults(StorageFaults {
            write_fail_rate: 0.5,
            read_fail_rate: 0.5,
        })
        .unwrap();
        (0..200u32)
            .map(|i| match i % 3 {
                0 => e.put(&i.to_be_bytes(), b"v").is_err(),
                1 => e.get(&i.to_be_bytes()).is_err(),
                _ => e.scan(KeyRange::all()).is_err(),
            })
            .collect()
    }

    #[test]
    fn fault_draws_replay_from_the_seed_and_differ_across_seeds() {
        let a = failure_pattern(11);
        assert_eq!(a, failure_pattern(11));
        assert_ne!(a, failure_pattern(12));
        let failed = a.iter().filter(|&&f| f).count();
        assert!((50..150).contains(&failed), "{failed} of 200 failed");

        // The counters add up to the failures seen.
        let e = SimEngine::new(5, Durability::Synced);
        e.set_faults(StorageFaults {
            write_fail_rate: 0.3,
            read_fail_rate: 0.6,
        })
        .unwrap();
        let (mut wf, mut rf) = (0, 0);
        for i in 0..100u32 {
            wf += u64::from(e.put(&i.to_be_bytes(), b"v").is_err());
            rf += u64::from(e.get(&i.to_be_bytes()).is_err());
        }
        let c = e.counters();
        assert_eq!((c.writes_failed, c.reads_failed), (wf, rf));
        assert!(wf > 0 && rf > wf, "{wf} {rf}");
        assert_eq!(all_retrying(&e).len() as u64, 100 - wf);
    }

    /// The whole content, scanning again while the read faults fail it.
    fn all_retrying(e: &SimEngine) -> Vec<(Vec<u8>, Vec<u8>)> {
        loop {
            if let Ok(it) = e.scan(KeyRange::all()) {
                return it.map(|r| r.unwrap()).collect();
            }
        }
    }

    #[test]
    fn invalid_rates_are_refused() {
        let e = SimEngine::new(1, Durability::Synced);
        let good = StorageFaults {
            write_fail_rate: 0.25,
            read_fail_rate: 1.0,
        };
        e.set_faults(good).unwrap();
        for (w, r) in [
            (-0.1, 0.0),
            (1.5, 0.0),
            (0.0, f64::NAN),
            (f64::NAN, 0.0),
            (0.0, f64::INFINITY),
        ] {
            let bad = StorageFaults {
                write_fail_rate: w,
                read_fail_rate: r,
            };
            assert!(
                matches!(e.set_faults(bad), Err(Error::InvalidInput(_))),
                "{w} {r}"
            );
        }
        assert_eq!(e.faults(), good);
    }

    #[test]
    fn a_scan_after_a_crash_sees_only_durable_data() {
        let e = SimEngine::new(1, Durability::Unsynced);
        for k in ["a", "c", "e"] {
            e.put(k.as_bytes(), b"durable").unwrap();
        }
        e.sync();
        e.put(b"b", b"lost").unwrap();
        e.put(b"c", b"lost").unwrap();
        e.delete(b"e").unwrap();
        // A scan taken before the crash is a snapshot and keeps what it saw.
        let before = e
            .scan(KeyRange::between(b"b".to_vec(), b"z".to_vec()))
            .unwrap();
        e.crash();
        let after: Vec<_> = e
            .scan(KeyRange::between(b"b".to_vec(), b"z".to_vec()))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(after, vec![kv("c", "durable"), kv("e", "durable")]);
        let before: Vec<_> = before.map(|r| r.unwrap()).collect();
        assert_eq!(before, vec![kv("b", "lost"), kv("c", "lost")]);
    }

    #[test]
    fn stats_bytes_are_consistent_after_a_crash() {
        let e = SimEngine::new(1, Durability::Unsynced);
        e.put(b"a", b"12345").unwrap();
        e.put(b"b", b"1").unwrap();
        e.sync();
        let durable = e.stats();
        assert_eq!(durable.memtable_bytes, 8);
        assert_eq!(durable.disk_bytes, 8);
        assert_eq!(durable.engine, "sim");

        e.put(b"a", b"1234567890").unwrap();
        e.delete(b"b").unwrap();
        e.put(b"cc", b"xyz").unwrap();
        let live = e.stats();
        assert_eq!(live.memtable_bytes, scanned_bytes(&e));
        assert_eq!(live.memtable_bytes, 11 + 5);
        assert_eq!(live.disk_bytes, 8, "the durable bytes do not move");

        e.crash();
        let after = e.stats();
        assert_eq!(after.memtable_bytes, scanned_bytes(&e));
        assert_eq!(after.memtable_bytes, 8);
        assert_eq!(after.disk_bytes, 8);
        // Lost batches were still accepted: the logical bytes keep them.
        assert_eq!(
            after.logical_bytes_written,
            durable.logical_bytes_written + 11 + 1 + 5
        );
    }

    #[test]
    fn a_replica_store_on_a_failing_engine_answers_an_error() {
        let engine = SimEngine::new(9, Durability::Unsynced);
        engine
            .set_faults(StorageFaults {
                write_fail_rate: 1.0,
                read_fail_rate: 0.0,
            })
            .unwrap();
        let store = ReplicaStore::open(NodeId(1), Arc::new(engine.clone()), 10, 10).unwrap();
        let reply = store.handle(ReplicaRequest::Coordinate {
            req: 1,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            write: Write {
                context: CausalContext::empty(),
                payload: Payload::Value(b"v".to_vec()),
                timestamp: Timestamp::from_ms(1),
                op: None,
                base: None,
            },
            policy: ConflictPolicy::Siblings,
            hint_for: None,
        });
        match reply {
            ReplicaReply::Coordinated { result: Err(e), .. } => {
                assert!(e.refusal().is_none(), "a replica's own trouble: {e:?}");
                assert!(matches!(e.clone().into_error(), Error::Replica(_)), "{e:?}");
            }
            other => panic!("expected a failed coordination, got {other:?}"),
        }
        assert!(engine.counters().writes_failed >= 1);
        assert_eq!(store.read(b"b", b"k").unwrap(), None);
        assert_eq!(all(&engine), vec![]);
    }
}
