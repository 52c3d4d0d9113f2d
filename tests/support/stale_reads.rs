//! A tally of stale reads for the sequential-overwrite checkers: each
//! write (a put or a delete) is acknowledged before the next begins, and
//! the read after it must return exactly what it wrote (its value, or
//! not-found after a delete). The tally counts what was checked, what was
//! stale, and keeps the first stale reads in full for the failure message.

#![allow(dead_code)]

/// How many stale reads a tally keeps in full.
pub const SAMPLES: usize = 20;

/// What a run of sequential overwrites saw.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Reads checked after an acknowledged put.
    pub after_put: u64,
    /// Of those, stale.
    pub stale_after_put: u64,
    /// Reads checked after an acknowledged delete.
    pub after_delete: u64,
    /// Of those, stale (the key was still found).
    pub stale_after_delete: u64,
    /// Stale reads that returned the write just before the one checked.
    pub previous_write: u64,
    /// Writes that failed (not checked: their outcome is unknown).
    pub failed_writes: u64,
    /// Reads that failed (not checked).
    pub failed_reads: u64,
    /// The first stale reads, described.
    pub samples: Vec<String>,
}

impl Tally {
    /// Reads checked.
    pub fn checked(&self) -> u64 {
        self.after_put + self.after_delete
    }

    /// Stale reads.
    pub fn stale(&self) -> u64 {
        self.stale_after_put + self.stale_after_delete
    }

    /// Records one checked read: `deleted` if the write checked was a
    /// delete; `stale` with its description if the read was stale;
    /// `previous` if it returned the write before.
    pub fn record(&mut self, deleted: bool, stale: Option<String>, previous: bool) {
        if deleted {
            self.after_delete += 1;
        } else {
            self.after_put += 1;
        }
        if let Some(what) = stale {
            if deleted {
                self.stale_after_delete += 1;
            } else {
                self.stale_after_put += 1;
            }
            if previous {
                self.previous_write += 1;
            }
            if self.samples.len() < SAMPLES {
                self.samples.push(what);
            }
        }
    }

    /// Adds another tally's counts (and samples, up to [`SAMPLES`]).
    pub fn absorb(&mut self, other: Tally) {
        self.after_put += other.after_put;
        self.stale_after_put += other.stale_after_put;
        self.after_delete += other.after_delete;
        self.stale_after_delete += other.stale_after_delete;
        self.previous_write += other.previous_write;
        self.failed_writes += other.failed_writes;
        self.failed_reads += other.failed_reads;
        for s in other.samples {
            if self.samples.len() < SAMPLES {
                self.samples.push(s);
            }
        }
    }

    /// One line of counts.
    pub fn summary(&self) -> String {
        let pct = |a: u64, b: u64| {
            if b == 0 {
                0.0
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        format!(
            "{} of {} reads stale ({:.1}%): {} of {} after a put, {} of {} after a delete; \
             {} of the stale reads returned the write before; {} writes and {} reads failed (not checked)",
            self.stale(),
            self.checked(),
            pct(self.stale(), self.checked()),
            self.stale_after_put,
            self.after_put,
            self.stale_after_delete,
            self.after_delete,
            self.previous_write,
            self.failed_writes,
            self.failed_reads
        )
    }

    /// The summary and the samples, for a failure message.
    pub fn report(&self) -> String {
        let mut out = self.summary();
        if !self.samples.is_empty() {
            out.push_str(&format!("\nfirst {} stale reads:\n", self.samples.len()));
            for s in &self.samples {
                out.push_str("  ");
                out.push_str(s);
                out.push('\n');
            }
        }
        out
    }
}
