//! Seeds and sizes for the randomized checkers, read from the environment,
//! and the bounded history a checker prints when it fails.
//!
//! CI runs each checker on a short fixed list of seeds. To run more:
//!
//! - `RINGKV_SEEDS=100`: seeds 1 to 100 (after the fixed ones);
//! - `RINGKV_SEED=42`: seed 42 alone, to replay a failure (every failure
//!   message names its seed).
//!
//! A seed fixes every choice a checker makes (faults, which node each
//! request goes through, values, timings it sleeps for); it cannot fix the
//! machine's scheduling, so a replay takes the same path through the
//! scenario but not necessarily the same interleaving of messages.
//!
//! Sizes (operation counts) come from variables each test names, with a
//! default that keeps it within its time budget.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::fmt::Display;

/// The seeds to run: `RINGKV_SEED` alone if set, else `ci` followed by
/// `1..=RINGKV_SEEDS` (when set), without repeats.
pub fn seeds(ci: &[u64]) -> Vec<u64> {
    if let Some(one) = env_u64("RINGKV_SEED") {
        return vec![one];
    }
    let mut all: Vec<u64> = ci.to_vec();
    if let Some(n) = env_u64("RINGKV_SEEDS") {
        for s in 1..=n {
            if !all.contains(&s) {
                all.push(s);
            }
        }
    }
    all
}

/// The value of the environment variable `name` as a count, or `default`.
pub fn count(name: &str, default: usize) -> usize {
    env_u64(name).map_or(default, |v| v as usize)
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(v) => Some(v),
        Err(_) => panic!("{name}={text:?} is not a number"),
    }
}

/// The last `capacity` lines of what a checker did, numbered from the
/// first line ever recorded, for a failure message.
#[derive(Clone, Debug)]
pub struct History {
    lines: VecDeque<(u64, String)>,
    capacity: usize,
    recorded: u64,
}

impl History {
    /// An empty history keeping the last `capacity` lines.
    pub fn new(capacity: usize) -> History {
        History {
            lines: VecDeque::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
            recorded: 0,
        }
    }

    /// Records one line.
    pub fn record(&mut self, line: impl Display) {
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back((self.recorded, line.to_string()));
        self.recorded += 1;
    }

    /// The lines kept, one per line, each with its number.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        if self.recorded > self.lines.len() as u64 {
            out.push_str(&format!(
                "  ... {} earlier lines not kept\n",
                self.recorded - self.lines.len() as u64
            ));
        }
        for (i, line) in &self.lines {
            out.push_str(&format!("  #{i}: {line}\n"));
        }
        out
    }
}
