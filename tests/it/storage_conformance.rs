//! The storage conformance suite: one set of cases, run against every
//! [`Engine`], so that every engine keeps the contract of `storage/mod.rs`.
//!
//! Each engine is named once, in a `conformance!` line at the bottom, with
//! a function that makes an [`Opener`]: "open the engine in this directory".
//! A case opens the engine, may drop it and open it again on the same
//! directory ("close and reopen"), and checks what it sees. The memory
//! engine's opener hands out clones of one handle, which is its documented
//! way of being reopened within a process.
//!
//! The model test drives random operations (puts, deletes, batches, gets,
//! scans of random ranges with random bounds, flushes, reopens) from fixed
//! seeds and checks the engine against a `BTreeMap` after every step. A
//! failure names the seed and the step, so it replays exactly.
//!
//! Every case runs under a time limit, in a temporary directory that is
//! removed afterwards.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv::storage::{
    BTreeEngine, Engine, KeyRange, LsmEngine, MemoryEngine, WriteBatch, MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
};
use ringkv::{BTreeConfig, Error, LsmConfig, SyncPolicy};

/// Opens an engine in a directory. Called once per open: at the start of a
/// case and at every reopen, always after the previous handle was dropped.
type Opener = Box<dyn Fn(&Path) -> ringkv::Result<Box<dyn Engine>> + Send>;

/// The engine under test, in its own temporary directory.
struct Subject {
    dir: tempfile::TempDir,
    opener: Opener,
    engine: Option<Box<dyn Engine>>,
}

impl Subject {
    fn new(make: fn() -> Opener) -> Subject {
        let dir = tempfile::tempdir().expect("temp dir");
        let opener = make();
        let engine = Some(opener(dir.path()).expect("open"));
        Subject {
            dir,
            opener,
            engine,
        }
    }

    fn engine(&self) -> &dyn Engine {
        self.engine.as_deref().expect("engine is open")
    }

    /// Closes the engine (drops it, waiting for its threads) and opens it
    /// again on the same directory.
    fn reopen(&mut self) {
        self.engine = None;
        self.engine = Some((self.opener)(self.dir.path()).expect("reopen"));
    }
}

/// Runs `case` on another thread and fails the test if it takes longer than
/// `limit` (a hung engine must fail the suite, not stall it).
fn bounded(limit: Duration, case: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        case();
        let _ = done.send(());
    });
    match finished.recv_timeout(limit) {
        Ok(()) => thread.join().expect("case thread"),
        Err(RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("case ended without reporting"),
        },
        Err(RecvTimeoutError::Timeout) => panic!("case did not finish within {limit:?}"),
    }
}

fn collect(engine: &dyn Engine, range: KeyRange) -> Vec<(Vec<u8>, Vec<u8>)> {
    engine
        .scan(range)
        .expect("scan")
        .collect::<ringkv::Result<Vec<_>>>()
        .expect("scan item")
}

fn keys(engine: &dyn Engine, range: KeyRange) -> Vec<Vec<u8>> {
    collect(engine, range).into_iter().map(|(k, _)| k).collect()
}

/// What the model says a scan of `range` yields.
fn model_scan(model: &BTreeMap<Vec<u8>, Vec<u8>>, range: &KeyRange) -> Vec<(Vec<u8>, Vec<u8>)> {
    model
        .iter()
        .filter(|(k, _)| range.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

mod cases {
    use super::*;

    pub fn get_put_overwrite_delete(make: fn() -> Opener) {
        let mut s = Subject::new(make);
        let e = s.engine();
        assert_eq!(e.get(b"k").unwrap(), None);
        e.put(b"k", b"one").unwrap();
        assert_eq!(e.get(b"k").unwrap(), Some(b"one".to_vec()));
        e.put(b"k", b"two, longer").unwrap();
        assert_eq!(e.get(b"k").unwrap(), Some(b"two, longer".to_vec()));
        e.put(b"other", b"x").unwrap();
        e.delete(b"k").unwrap();
        assert_eq!(e.get(b"k").unwrap(), None);
        // Deleting what is absent is not an error.
        e.delete(b"never-written").unwrap();
        assert_eq!(e.get(b"never-written").unwrap(), None);
        s.reopen();
        let e = s.engine();
        assert_eq!(e.get(b"k").unwrap(), None);
        assert_eq!(e.get(b"other").unwrap(), Some(b"x".to_vec()));
        // A key deleted and written again comes back.
        e.put(b"k", b"three").unwrap();
        assert_eq!(e.get(b"k").unwrap(), Some(b"three".to_vec()));
    }

    pub fn empty_key_and_empty_value(make: fn() -> Opener) {
        let mut s = Subject::new(make);
        let e = s.engine();
        e.put(b"", b"value of the empty key").unwrap();
        e.put(b"k", b"").unwrap();
        assert_eq!(
            e.get(b"").unwrap(),
            Some(b"value of the empty key".to_vec())
        );
        // An empty value is present, not absent.
        assert_eq!(e.get(b"k").unwrap(), Some(Vec::new()));
        assert_eq!(keys(e, KeyRange::all()), vec![b"".to_vec(), b"k".to_vec()]);
        s.reopen();
        let e = s.engine();
        assert_eq!(
            e.get(b"").unwrap(),
            Some(b"value of the empty key".to_vec())
        );
        assert_eq!(e.get(b"k").unwrap(), Some(Vec::new()));
        e.delete(b"").unwrap();
        assert_eq!(e.get(b"").unwrap(), None);
        assert_eq!(keys(e, KeyRange::all()), vec![b"k".to_vec()]);
    }

    pub fn size_limits(make: fn() -> Opener) {
        let mut s = Subject::new(make);
        let e = s.engine();
        let max_key = vec![0x4b; MAX_KEY_BYTES];
        e.put(&max_key, b"v").unwrap();
        assert_eq!(e.get(&max_key).unwrap(), Some(b"v".to_vec()));

        // One oversized key refuses the whole batch, ops before it included.
        let mut batch = WriteBatch::new();
        batch.put(b"before".to_vec(), b"1".to_vec());
        batch.delete(max_key.clone());
        batch.put(vec![0x4b; MAX_KEY_BYTES + 1], b"v".to_vec());
        batch.put(b"after".to_vec(), b"2".to_vec());
        assert!(matches!(e.write(batch), Err(Error::InvalidInput(_))));
        assert_eq!(e.get(b"before").unwrap(), None);
        assert_eq!(e.get(b"after").unwrap(), None);
        assert_eq!(e.get(&max_key).unwrap(), Some(b"v".to_vec()));

        // Also for a delete of an oversized key, and an oversized value.
        let mut batch = WriteBatch::new();
        batch.put(b"before".to_vec(), b"1".to_vec());
        batch.delete(vec![0; MAX_KEY_BYTES + 1]);
        assert!(matches!(e.write(batch), Err(Error::InvalidInput(_))));
        let mut batch = WriteBatch::new();
        batch.put(b"before".to_vec(), b"1".to_vec());
        batch.put(b"big".to_vec(), vec![0; MAX_VALUE_BYTES + 1]);
        assert!(matches!(e.write(batch), Err(Error::InvalidInput(_))));
        assert_eq!(e.get(b"before").unwrap(), None);
        assert_eq!(e.get(b"big").unwrap(), None);

        // The largest value is accepted and read back whole.
        let big: Vec<u8> = (0..MAX_VALUE_BYTES).map(|i| (i % 251) as u8).collect();
        e.put(b"big", &big).unwrap();
        assert!(e.get(b"big").unwrap() == Some(big.clone()));
        s.reopen();
        let e = s.engine();
        assert!(e.get(b"big").unwrap() == Some(big));
        assert_eq!(e.get(&max_key).unwrap(), Some(b"v".to_vec()));
        assert_eq!(keys(e, KeyRange::all()), vec![max_key, b"big".to_vec()]);
    }

    pub fn batch_is_atomic_and_later_ops_win(make: fn() -> Opener) {
        let mut s = Subject::new(make);
        let e = s.engine();
        e.put(b"b", b"old").unwrap();
        e.put(b"d", b"old").unwrap();
        let mut batch = WriteBatch::new();
        batch
            .put(b"a".to_vec(), b"1".to_vec())
            .put(b"a".to_vec(), b"2".to_vec())
            .delete(b"b".to_vec())
            .put(b"b".to_vec(), b"3".to_vec())
            .put(b"c".to_vec(), b"1".to_vec())
            .delete(b"c".to_vec())
            .delete(b"d".to_vec());
        e.write(batch).unwrap();
        let expect = vec![
            (b"a".to_vec(), b"2".to_vec()),
            (b"b".to_vec(), b"3".to_vec()),
        ];
        assert_eq!(collect(e, KeyRange::all()), expect);
        assert_eq!(e.get(b"c").unwrap(), None);
        assert_eq!(e.get(b"d").unwrap(), None);
        // An empty batch is accepted and changes nothing.
        e.write(WriteBatch::new()).unwrap();
        s.reopen();
        assert_eq!(collect(s.engine(), KeyRange::all()), expect);
    }

    /// Keys at the edges of the byte order.
    fn edge_keys() -> Vec<Vec<u8>> {
        vec![
            vec![],
            vec![0x00],
            vec![0x00, 0x00],
            vec![0x00, 0xff],
            vec![0x01],
            b"a".to_vec(),
            b"ab".to_vec(),
            b"abc".to_vec(),
            b"abd".to_vec(),
            b"b".to_vec(),
            vec![0xfe, 0xff],
            vec![0xff],
            vec![0xff, 0x00],
            vec![0xff, 0xff],
            vec![0xff, 0xff, 0xff],
        ]
    }

    pub fn scans_respect_every_kind_of_bound(make: fn() -> Opener) {
        let mut s = Subject::new(make);
        let mut model = BTreeMap::new();
        for (i, k) in edge_keys().into_iter().enumerate() {
            let v = format!("v{i}").into_bytes();
            s.engine().put(&k, &v).unwrap();
            model.insert(k, v);
        }
        // A deleted key is hidden from every scan.
        s.engine().delete(b"abc").unwrap();
        model.remove(b"abc".as_slice());
        // Every bound from the edge keys and a few absent ones, in every
        // combination of included, excluded and unbounded.
        let mut points = edge_keys();
        points.extend([b"aa".to_vec(), b"c".to_vec(), vec![0xff, 0xfe]]);
        let mut bounds = vec![Bound::Unbounded];
        for p in &points {
            bounds.push(Bound::Included(p.clone()));
            bounds.push(Bound::Excluded(p.clone()));
        }
        let mut ranges = Vec::new();
        for start in &bounds {
            for end in &bounds {
                ranges.push(KeyRange {
                    start: start.clone(),
                    end: end.clone(),
                });
            }
        }
        for p in &points {
            ranges.push(KeyRange::prefix(p.clone()));
            ranges.push(KeyRange::from(p.clone()));
        }
        ranges.push(KeyRange::all());
        ranges.push(KeyRange::between(b"b".to_vec(), b"a".to_vec()));
        ranges.push(KeyRange::between(b"a".to_vec(), b"a".to_vec()));
        for round in 0..2 {
            for r in &ranges {
                assert_eq!(
                    collect(s.engine(), r.clone()),
                    model_scan(&model, r),
                    "round {round}, range {r:?}"
                );
            }
            s.reopen();
        }
        // Spot checks that do not trust `KeyRange::contains`.
        let e = s.engine();
        assert_eq!(
            keys(e, KeyRange::prefix(b"ab".to_vec())),
            vec![b"ab".to_vec(), b"abd".to_vec()]
        );
        assert_eq!(
            keys(e, KeyRange::prefix(vec![0xff, 0xff])),
            vec![vec![0xff, 0xff], vec![0xff, 0xff, 0xff]]
        );
        assert_eq!(
            keys(e, KeyRange::between(vec![0x00], vec![0x01])),
            vec![vec![0x00], vec![0x00, 0x00], vec![0x00, 0xff]]
        );
        assert_eq!(keys(e, KeyRange::all()).len(), edge_keys().len() - 1);
        assert_eq!(keys(e, KeyRange::all())[0], Vec::<u8>::new());
        let excluded_both = KeyRange {
            start: Bound::Excluded(b"a".to_vec()),
            end: Bound::Excluded(b"b".to_vec()),
        };
        assert_eq!(
            keys(e, excluded_both),
            vec![b"ab".to_vec(), b"abd".to_vec()]
        );
        assert!(keys(e, KeyRange::between(b"b".to_vec(), b"a".to_vec())).is_empty());
    }

    pub fn scan_is_a_snapshot(make: fn() -> Opener) {
        let s = Subject::new(make);
        let e = s.engine();
        for i in 0..200u32 {
            e.put(format!("k{i:04}").as_bytes(), b"old").unwrap();
        }
        let expected: Vec<_> = (0..200u32)
            .map(|i| (format!("k{i:04}").into_bytes(), b"old".to_vec()))
            .collect();
        let mut it = e.scan(KeyRange::all()).unwrap();
        let first = it.next().unwrap().unwrap();
        // While the iterator is alive: overwrite keys ahead of it, delete
        // some, add new ones in between and at the end, and flush.
        for i in 0..200u32 {
            match i % 3 {
                0 => e.put(format!("k{i:04}").as_bytes(), b"new").unwrap(),
                1 => e.delete(format!("k{i:04}").as_bytes()).unwrap(),
                _ => e.put(format!("k{i:04}x").as_bytes(), b"new").unwrap(),
            }
        }
        e.flush().unwrap();
        e.put(b"zzz", b"new").unwrap();
        let mut seen = vec![first];
        for item in it {
            seen.push(item.unwrap());
        }
        assert_eq!(seen, expected);
        // A new scan sees the new state.
        let now = collect(e, KeyRange::all());
        assert_eq!(now.len(), 67 + 66 + 66 + 1);
        assert!(now.iter().all(|(_, v)| v == b"new" || v == b"old"));
    }

    pub fn dropping_a_partial_scan_is_harmless(make: fn() -> Opener) {
        let mut s = Subject::new(make);
        for i in 0..100u32 {
            s.engine().put(&i.to_be_bytes(), b"v").unwrap();
        }
        // A seek and ten nexts, many times, with writes in between.
        for start in (0..100u32).step_by(7) {
            let got: Vec<_> = s
                .engine()
                .scan(KeyRange::between(
                    start.to_be_bytes().to_vec(),
                    100u32.to_be_bytes().to_vec(),
                ))
                .unwrap()
                .take(10)
                .map(|r| r.unwrap().0)
                .collect();
            let want: Vec<_> = (start..100u32.min(start + 10))
                .map(|i| i.to_be_bytes().to_vec())
                .collect();
            assert_eq!(got, want);
            s.engine().put(b"between", b"v").unwrap();
        }
        s.reopen();
        assert_eq!(keys(s.engine(), KeyRange::all()).len(), 101);
    }

    pub fn concurrent_writers_and_readers(make: fn() -> Opener) {
        const THREADS: u32 = 4;
        const BATCHES: u32 = 150;
        const PER_BATCH: u32 = 4;
        let mut s = Subject::new(make);
        let e = s.engine();
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                scope.spawn(move || {
                    for i in 0..BATCHES {
                        let mut batch = WriteBatch::new();
                        for j in 0..PER_BATCH {
                            batch.put(
                                format!("t{t}/{i:04}/{j}").into_bytes(),
                                format!("{t}-{i}").into_bytes(),
                            );
                        }
                        e.write(batch).unwrap();
                        if i % 2 == 1 {
                            // Delete the previous batch's keys in one batch.
                            let mut batch = WriteBatch::new();
                            for j in 0..PER_BATCH {
                                batch.delete(format!("t{t}/{:04}/{j}", i - 1).into_bytes());
                            }
                            e.write(batch).unwrap();
                        }
                    }
                });
            }
            // A reader checks that every batch is seen whole or not at all.
            scope.spawn(move || {
                for _ in 0..30 {
                    let mut per_batch: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
                    for (k, _) in collect(e, KeyRange::all()) {
                        *per_batch.entry(k[..k.len() - 1].to_vec()).or_default() += 1;
                    }
                    for (batch, n) in per_batch {
                        assert_eq!(
                            n,
                            PER_BATCH,
                            "batch {} seen in part",
                            String::from_utf8_lossy(&batch)
                        );
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
        });
        let check = |e: &dyn Engine| {
            let all = collect(e, KeyRange::all());
            // Odd batches survive, even ones were deleted.
            assert_eq!(all.len() as u32, THREADS * BATCHES / 2 * PER_BATCH);
            for t in 0..THREADS {
                for i in (1..BATCHES).step_by(2) {
                    let k = format!("t{t}/{i:04}/0");
                    assert_eq!(
                        e.get(k.as_bytes()).unwrap(),
                        Some(format!("{t}-{i}").into_bytes())
                    );
                }
            }
        };
        check(s.engine());
        s.reopen();
        check(s.engine());
    }

    pub fn data_survives_close_with_and_without_flush(make: fn() -> Opener) {
        let mut s = Subject::new(make);
        for i in 0..500u32 {
            s.engine().put(&i.to_be_bytes(), &[i as u8; 50]).unwrap();
        }
        s.engine().flush().unwrap();
        for i in 500..1000u32 {
            s.engine().put(&i.to_be_bytes(), &[i as u8; 50]).unwrap();
        }
        for i in (0..1000u32).step_by(3) {
            s.engine().delete(&i.to_be_bytes()).unwrap();
        }
        s.reopen();
        s.reopen();
        let e = s.engine();
        for i in 0..1000u32 {
            let want = (i % 3 != 0).then(|| vec![i as u8; 50]);
            assert_eq!(e.get(&i.to_be_bytes()).unwrap(), want, "key {i}");
        }
        assert_eq!(keys(e, KeyRange::all()).len(), 666);
        let stats = e.stats();
        assert!(!stats.engine.is_empty());
    }

    /// Random operations against a `BTreeMap`, checked after every step.
    /// Returns the flushes and compactions the engine reported, summed over
    /// every open (so that a caller can check the test exercised them).
    pub fn model(make: fn() -> Opener, seeds: std::ops::Range<u64>, steps: usize) -> (u64, u64) {
        let mut totals = (0, 0);
        for seed in seeds {
            let (f, c) = model_one(make, seed, steps);
            totals = (totals.0 + f, totals.1 + c);
        }
        totals
    }

    fn random_key(rng: &mut ChaCha8Rng) -> Vec<u8> {
        // Mostly short keys over an alphabet with both byte extremes, so
        // keys collide, prefix each other and sit at the order's edges;
        // sometimes a longer random key.
        const ALPHABET: [u8; 5] = [0x00, 0x01, b'a', 0xfe, 0xff];
        if rng.random_range(0..10) == 0 {
            let len = rng.random_range(4..24);
            (0..len).map(|_| rng.random()).collect()
        } else {
            let len = rng.random_range(0..=3);
            (0..len)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
                .collect()
        }
    }

    fn random_value(rng: &mut ChaCha8Rng) -> Vec<u8> {
        // Now and then a large value, so that engines with small buffers
        // flush and compact during the test.
        let len = match rng.random_range(0..10) {
            0 => rng.random_range(1000..6000),
            1 => 0,
            _ => rng.random_range(1..120),
        };
        let fill: u8 = rng.random();
        (0..len).map(|i| fill.wrapping_add(i as u8)).collect()
    }

    fn random_bound(rng: &mut ChaCha8Rng) -> Bound<Vec<u8>> {
        match rng.random_range(0..3) {
            0 => Bound::Unbounded,
            1 => Bound::Included(random_key(rng)),
            _ => Bound::Excluded(random_key(rng)),
        }
    }

    fn model_one(make: fn() -> Opener, seed: u64, steps: usize) -> (u64, u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut s = Subject::new(make);
        let mut totals = (0, 0);
        let mut count = |e: &dyn Engine| {
            let stats = e.stats();
            totals = (totals.0 + stats.flushes, totals.1 + stats.compactions);
        };
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for step in 0..steps {
            let at = format!("seed {seed}, step {step}");
            match rng.random_range(0..100) {
                0..30 => {
                    let (k, v) = (random_key(&mut rng), random_value(&mut rng));
                    s.engine().put(&k, &v).unwrap();
                    model.insert(k, v);
                }
                30..45 => {
                    let k = if rng.random_bool(0.7) && !model.is_empty() {
                        let i = rng.random_range(0..model.len());
                        model.keys().nth(i).cloned().unwrap_or_default()
                    } else {
                        random_key(&mut rng)
                    };
                    s.engine().delete(&k).unwrap();
                    model.remove(&k);
                }
                45..60 => {
                    let mut batch = WriteBatch::new();
                    let mut after = model.clone();
                    for _ in 0..rng.random_range(0..10) {
                        let k = random_key(&mut rng);
                        if rng.random_bool(0.7) {
                            let v = random_value(&mut rng);
                            batch.put(k.clone(), v.clone());
                            after.insert(k, v);
                        } else {
                            batch.delete(k.clone());
                            after.remove(&k);
                        }
                    }
                    s.engine().write(batch).unwrap();
                    model = after;
                }
                60..75 => {
                    let k = random_key(&mut rng);
                    assert_eq!(s.engine().get(&k).unwrap(), model.get(&k).cloned(), "{at}");
                }
                75..95 => {
                    let range = KeyRange {
                        start: random_bound(&mut rng),
                        end: random_bound(&mut rng),
                    };
                    let limit = rng.random_range(0..50);
                    let got: Vec<_> = s
                        .engine()
                        .scan(range.clone())
                        .unwrap()
                        .take(limit)
                        .collect::<ringkv::Result<_>>()
                        .unwrap();
                    let mut want = model_scan(&model, &range);
                    want.truncate(limit);
                    assert_eq!(got, want, "{at}: scan {range:?} limit {limit}");
                }
                95..98 => s.engine().flush().unwrap(),
                _ => {
                    count(s.engine());
                    s.reopen();
                }
            }
            // After every step the whole store equals the model.
            assert_eq!(
                collect(s.engine(), KeyRange::all()),
                model_scan(&model, &KeyRange::all()),
                "{at}: full scan"
            );
        }
        // Finally every key of the model reads back by point lookup, after a
        // reopen too.
        for round in 0..2 {
            for (k, v) in &model {
                assert_eq!(
                    s.engine().get(k).unwrap().as_ref(),
                    Some(v),
                    "seed {seed}, final round {round}, key {k:?}"
                );
            }
            count(s.engine());
            s.reopen();
        }
        totals
    }
}

/// Declares the conformance cases for one engine: a module named `$name`
/// with one test per case, each opening engines with `$make`.
macro_rules! conformance {
    // Engines without an fsync per write: the full model test.
    ($name:ident, $make:expr) => {
        conformance!($name, $make, 0..4, 1500);
    };
    // `$seeds` and `$steps` size the model test (smaller for engines that
    // fsync every write, where each step costs a disk flush).
    ($name:ident, $make:expr, $seeds:expr, $steps:expr) => {
        mod $name {
            use super::*;

            fn make() -> Opener {
                $make
            }

            const LIMIT: Duration = Duration::from_secs(120);

            #[test]
            fn get_put_overwrite_delete() {
                bounded(LIMIT, || cases::get_put_overwrite_delete(make));
            }

            #[test]
            fn empty_key_and_empty_value() {
                bounded(LIMIT, || cases::empty_key_and_empty_value(make));
            }

            #[test]
            fn size_limits() {
                bounded(LIMIT, || cases::size_limits(make));
            }

            #[test]
            fn batch_is_atomic_and_later_ops_win() {
                bounded(LIMIT, || cases::batch_is_atomic_and_later_ops_win(make));
            }

            #[test]
            fn scans_respect_every_kind_of_bound() {
                bounded(LIMIT, || cases::scans_respect_every_kind_of_bound(make));
            }

            #[test]
            fn scan_is_a_snapshot() {
                bounded(LIMIT, || cases::scan_is_a_snapshot(make));
            }

            #[test]
            fn dropping_a_partial_scan_is_harmless() {
                bounded(LIMIT, || cases::dropping_a_partial_scan_is_harmless(make));
            }

            #[test]
            fn concurrent_writers_and_readers() {
                bounded(LIMIT, || cases::concurrent_writers_and_readers(make));
            }

            #[test]
            fn data_survives_close_with_and_without_flush() {
                bounded(LIMIT, || {
                    cases::data_survives_close_with_and_without_flush(make)
                });
            }

            #[test]
            fn model() {
                bounded(Duration::from_secs(300), || {
                    cases::model(make, $seeds, $steps);
                });
            }
        }
    };
}

fn memory() -> Opener {
    // Reopening the memory engine is taking another clone of one handle.
    let shared = MemoryEngine::new();
    Box::new(move |_dir: &Path| Ok(Box::new(shared.clone()) as Box<dyn Engine>))
}

fn btree(sync: SyncPolicy) -> Opener {
    Box::new(move |dir: &Path| {
        let config = BTreeConfig {
            sync,
            ..BTreeConfig::default()
        };
        Ok(Box::new(BTreeEngine::open(dir, config)?) as Box<dyn Engine>)
    })
}

fn lsm(config: LsmConfig) -> Opener {
    Box::new(move |dir: &Path| {
        Ok(Box::new(LsmEngine::open(dir, config.clone())?) as Box<dyn Engine>)
    })
}

/// An LSM with tiny buffers, so that the cases (the model test above all)
/// flush memtables and compact tables many times.
fn tiny_lsm_config() -> LsmConfig {
    LsmConfig {
        memtable_bytes: 64 * 1024,
        target_table_bytes: 64 * 1024,
        l1_target_bytes: 256 * 1024,
        ..LsmConfig::default()
    }
}

conformance!(memory_engine, memory());
conformance!(lsm_engine, lsm(LsmConfig::default()));
conformance!(lsm_engine_tiny, lsm(tiny_lsm_config()));
conformance!(
    lsm_engine_sync_always,
    lsm(LsmConfig {
        sync: SyncPolicy::Always,
        ..tiny_lsm_config()
    }),
    0..1,
    600
);
conformance!(btree_engine, btree(BTreeConfig::default().sync));
conformance!(
    btree_engine_sync_always,
    btree(SyncPolicy::Always),
    0..1,
    600
);

/// The tiny LSM's model test is only worth having if memtables were flushed
/// and tables compacted while it ran.
#[test]
fn tiny_lsm_model_flushes_and_compacts() {
    bounded(Duration::from_secs(300), || {
        let (flushes, compactions) = cases::model(|| lsm(tiny_lsm_config()), 100..102, 1500);
        assert!(flushes >= 10, "only {flushes} flushes");
        assert!(compactions >= 2, "only {compactions} compactions");
    });
}

/// A longer model run of the tiny LSM, for hunting bugs by hand:
/// `cargo test --release -p ringkv-tests --test it storage_conformance:: -- --ignored`.
#[test]
#[ignore = "minutes long; run by hand"]
fn tiny_lsm_model_long() {
    bounded(Duration::from_secs(3600), || {
        cases::model(|| lsm(tiny_lsm_config()), 1000..1040, 4000);
    });
}

/// The same for the B-tree.
#[test]
#[ignore = "minutes long; run by hand"]
fn btree_model_long() {
    bounded(Duration::from_secs(3600), || {
        cases::model(|| btree(BTreeConfig::default().sync), 1000..1040, 4000);
    });
}
