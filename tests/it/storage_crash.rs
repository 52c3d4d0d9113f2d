//! Crash test of the LSM engine with real processes and SIGKILL.
//!
//! The parent test re-executes this test binary as a child (the ignored
//! test `crash_child`, selected with `--ignored --exact`, told what to do
//! through environment variables). The child opens the engine with
//! `SyncPolicy::Always` and tiny memtables and tables, so that flushes and
//! compactions run all the time, and several threads write batches with
//! deterministic values, printing each batch on stdout only after `write`
//! returned. The parent kills the child at a random moment, reopens the
//! engine itself and checks that every acknowledged put has its exact value
//! (both keys of the batch: atomicity), every acknowledged delete is still
//! deleted, and no unacknowledged key holds a wrong value. It loops, reusing
//! the directory, so recovery after recovery is tested.
//!
//! The same runs with `SyncPolicy::None` (a third as many kills) check
//! that policy's promise: a process crash loses no acknowledged write.
//!
//! `RINGKV_CRASH_ITERATIONS` sets the number of kills (default 30); each
//! loop also stops after two minutes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use ringkv::storage::{Engine, KeyRange, LsmEngine, WriteBatch};
use ringkv::{LsmConfig, SyncPolicy};

const DIR_VAR: &str = "RINGKV_CRASH_CHILD_DIR";
const RUN_VAR: &str = "RINGKV_CRASH_CHILD_RUN";
const SYNC_VAR: &str = "RINGKV_CRASH_CHILD_SYNC";
const WRITERS: u32 = 4;
/// Every this many batches, a writer deletes a key it wrote earlier.
const DELETE_EVERY: u64 = 5;
/// How far back that key is.
const DELETE_BACK: u64 = 3;

fn config(sync: SyncPolicy) -> LsmConfig {
    LsmConfig {
        sync,
        memtable_bytes: 4 * 1024,
        target_table_bytes: 4 * 1024,
        l1_target_bytes: 16 * 1024,
        l0_compaction_trigger: 2,
        l0_slowdown_tables: 4,
        l0_stop_tables: 6,
        max_levels: 4,
        block_cache_bytes: 256 * 1024,
        ..LsmConfig::default()
    }
}

fn key(run: u64, writer: u32, n: u64) -> String {
    format!("r{run:03}-w{writer}-{n:06}")
}

fn twin(key: &str) -> String {
    format!("{key}/twin")
}

/// The value of `key`: derived from it, 60-odd bytes.
fn value(key: &str) -> Vec<u8> {
    let h = xxh(key.as_bytes());
    format!("{key}={h:016x}{h:016x}").into_bytes()
}

fn xxh(bytes: &[u8]) -> u64 {
    // FNV-1a: enough to make values differ per key.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The child: writes until killed. Ignored so that a normal test run skips
/// it; it does nothing unless the parent set the environment.
#[test]
#[ignore = "run by the lsm_acknowledged_writes_survive_sigkill tests as a child process"]
fn crash_child() {
    let (Ok(dir), Ok(run)) = (std::env::var(DIR_VAR), std::env::var(RUN_VAR)) else {
        return;
    };
    let run: u64 = run.parse().expect("run number from the parent");
    let sync = match std::env::var(SYNC_VAR).as_deref() {
        Ok("none") => SyncPolicy::None,
        _ => SyncPolicy::Always,
    };
    let engine = match LsmEngine::open(Path::new(&dir), config(sync)) {
        Ok(e) => Arc::new(e),
        Err(e) => {
            println!("ERR open: {e}");
            return;
        }
    };
    {
        // Progress of the background work, so the parent can tell that
        // kills land while flushes and compactions run.
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || loop {
            let s = engine.stats();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "STAT {} {}", s.flushes, s.compactions);
            let _ = out.flush();
            drop(out);
            std::thread::sleep(Duration::from_millis(10));
        });
    }
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                for n in 0.. {
                    let k = key(run, w, n);
                    let mut batch = WriteBatch::new();
                    batch.put(k.clone(), value(&k));
                    batch.put(twin(&k), value(&twin(&k)));
                    if let Err(e) = engine.write(batch) {
                        println!("ERR write {k}: {e}");
                        return;
                    }
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ACK P {k}");
                    let _ = out.flush();
                    drop(out);
                    if n % DELETE_EVERY == 0 && n >= DELETE_BACK {
                        let gone = key(run, w, n - DELETE_BACK);
                        if let Err(e) = engine.delete(gone.as_bytes()) {
                            println!("ERR delete {gone}: {e}");
                            return;
                        }
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "ACK D {gone}");
                        let _ = out.flush();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Present,
    Deleted,
}

/// Runs one child, kills it after `delay`, returns its complete stdout lines.
fn run_child(dir: &Path, run: u64, sync: &str, delay: Duration) -> Vec<String> {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["--ignored", "--exact", "--nocapture", "--test-threads=1"])
        .arg(crate::support::test_name(module_path!(), "crash_child"))
        .env(DIR_VAR, dir)
        .env(RUN_VAR, run.to_string())
        .env(SYNC_VAR, sync)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut r = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line cut by the kill has no newline: it was never
                // completely printed, so it does not count.
                Ok(_) if line.ends_with('\n') => lines.push(line.trim_end().to_string()),
                Ok(_) => break,
            }
        }
        lines
    });
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reaping the child");
    reader.join().expect("stdout reader")
}

fn iterations() -> u64 {
    std::env::var("RINGKV_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

#[test]
fn lsm_acknowledged_writes_survive_sigkill() {
    kill_and_check(SyncPolicy::Always, "always", iterations());
}

/// `SyncPolicy::None` promises survival of a process crash too (the record
/// is in the OS before `write` returns); only a machine crash may lose it.
#[test]
fn lsm_acknowledged_writes_survive_sigkill_without_fsync() {
    kill_and_check(SyncPolicy::None, "none", iterations().div_ceil(3));
}

fn kill_and_check(sync: SyncPolicy, sync_name: &str, iterations: u64) {
    let budget = Duration::from_secs(120);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut expected: HashMap<String, Expect> = HashMap::new();
    let mut acked_total = 0usize;
    let mut runs = 0u64;
    let mut flushes_seen = 0u64;
    let mut compactions_seen = 0u64;
    for run in 0..iterations {
        if started.elapsed() > budget {
            break;
        }
        let delay = Duration::from_millis(rng.random_range(20..=300));
        let lines = run_child(dir.path(), run, sync_name, delay);
        runs += 1;
        for line in &lines {
            assert!(!line.starts_with("ERR"), "child {run} failed: {line}");
            if let Some(k) = line.strip_prefix("ACK P ") {
                expected.insert(k.to_string(), Expect::Present);
                acked_total += 1;
            } else if let Some(k) = line.strip_prefix("ACK D ") {
                expected.insert(k.to_string(), Expect::Deleted);
                acked_total += 1;
            }
        }
        if let Some(stat) = lines.iter().rev().find_map(|l| l.strip_prefix("STAT ")) {
            let mut parts = stat.split(' ').map(|p| p.parse::<u64>().unwrap_or(0));
            flushes_seen += parts.next().unwrap_or(0);
            compactions_seen += parts.next().unwrap_or(0);
        }

        let engine = LsmEngine::open(dir.path(), config(sync))
            .unwrap_or_else(|e| panic!("recovery after kill {run} failed: {e}"));
        for (k, want) in &expected {
            let got = engine.get(k.as_bytes()).unwrap();
            let got_twin = engine.get(twin(k).as_bytes()).unwrap();
            assert_eq!(
                got_twin.as_deref(),
                Some(&value(&twin(k))[..]),
                "twin of {k} after kill {run}"
            );
            match want {
                Expect::Present => {
                    // A delete of it may have been in flight when killed.
                    let n: u64 = k.rsplit('-').next().unwrap().parse().unwrap();
                    let may_be_deleted = (n + DELETE_BACK) % DELETE_EVERY == 0;
                    match got {
                        Some(v) => assert_eq!(v, value(k), "{k} after kill {run}"),
                        None => assert!(may_be_deleted, "acknowledged {k} lost after kill {run}"),
                    }
                }
                Expect::Deleted => assert_eq!(got, None, "deleted {k} came back after kill {run}"),
            }
        }
        // Every value present, acknowledged or not, is the right one, and a
        // batch is all or nothing.
        let all: HashMap<Vec<u8>, Vec<u8>> = engine
            .scan(KeyRange::all())
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        for (k, v) in &all {
            let k = String::from_utf8(k.clone()).unwrap();
            assert_eq!(*v, value(&k), "wrong value under {k}");
            if let Some(base) = k.strip_suffix("/twin") {
                let n: u64 = base.rsplit('-').next().unwrap().parse().unwrap();
                let may_be_deleted = (n + DELETE_BACK) % DELETE_EVERY == 0;
                assert!(
                    all.contains_key(base.as_bytes()) || may_be_deleted,
                    "half a batch: {k} without {base}"
                );
            }
        }
        engine.close().unwrap();
    }
    assert!(runs >= 3, "only {runs} runs in the time budget");
    assert!(acked_total > 0, "no child acknowledged a write");
    assert!(flushes_seen > 0, "no child flushed before its kill");
    eprintln!(
        "crash test ({sync_name}): {runs} kills, {acked_total} acknowledged operations checked, {} keys tracked; children ran {flushes_seen} flushes and {compactions_seen} compactions",
        expected.len()
    );
}
