//! Leveled compaction: the policy that chooses what to merge, and the
//! executor that merges it.
//!
//! The policy, [`pick`], is a pure function from a [`LevelsSnapshot`] (the
//! table set's shape: ids, sizes, key ranges) and the [`LsmConfig`] to an
//! optional [`CompactionTask`]. It touches no disk, so it is unit-tested on
//! hand-built snapshots, and it is what the Compactor actor will call.
//!
//! The rules:
//! - Level 0 holds whole flushed memtables, whose key ranges overlap. Its
//!   score is its table count over `l0_compaction_trigger`; when chosen, all
//!   of its tables merge with the level-1 tables they overlap into level 1.
//! - Level `n >= 1` holds tables with disjoint key ranges. Its target size is
//!   `l1_target_bytes * level_size_ratio^(n-1)`, and its score is its bytes
//!   over that target. When chosen, one of its tables merges with the
//!   overlapping tables of level `n+1`: the one whose overlap is smallest
//!   relative to its own size, which writes the fewest bytes per byte moved
//!   down. A table that overlaps nothing below is moved by a manifest edit
//!   alone (a trivial move).
//! - The level with the highest score at least 1 is compacted; level 0 wins
//!   ties. The last level has no score: nothing is below it.
//!
//! The merge keeps only the newest version of each key. A tombstone is kept
//! unless no table in any level below the output level overlaps the task's
//! key range: only then can no older version of the key be left for the
//! tombstone to hide.
//!
//! What this module does not do: run two compactions at once (the engine
//! runs one at a time, so a task's inputs cannot vanish under it), or
//! split a task that is too large.

use std::path::Path;

use super::iterators::StorageIterator;
use crate::error::Result;
use crate::storage::LsmConfig;

/// What the policy needs to know about one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableMeta {
    /// The table's file id.
    pub id: u64,
    /// Size of its file in bytes.
    pub file_bytes: u64,
    /// Smallest key in the table.
    pub smallest: Vec<u8>,
    /// Largest key in the table.
    pub largest: Vec<u8>,
}

impl TableMeta {
    fn overlaps(&self, smallest: &[u8], largest: &[u8]) -> bool {
        self.smallest.as_slice() <= largest && smallest <= self.largest.as_slice()
    }
}

/// The shape of the table set at one moment: for each level, its tables.
/// Level 0 is listed newest first; deeper levels are sorted by key and do
/// not overlap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LevelsSnapshot {
    /// Tables per level, level 0 first.
    pub levels: Vec<Vec<TableMeta>>,
}

/// One merge the policy asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionTask {
    /// The level whose tables are pushed down.
    pub input_level: usize,
    /// Ids of the tables taken from `input_level` (for level 0, newest first).
    pub inputs: Vec<u64>,
    /// The level the output goes to (`input_level + 1`).
    pub output_level: usize,
    /// Ids of the `output_level` tables that overlap the inputs, in key order.
    pub overlapping: Vec<u64>,
    /// Whether tombstones may be dropped: no deeper level overlaps the
    /// task's key range.
    pub drop_tombstones: bool,
    /// Whether the inputs move to `output_level` unchanged (a manifest edit,
    /// no merge): set when nothing in the output level overlaps them and they
    /// do not overlap each other.
    pub trivial_move: bool,
}

/// Target size in bytes of `level` (level 1 and deeper).
pub fn level_target_bytes(level: usize, config: &LsmConfig) -> u64 {
    let mut target = config.l1_target_bytes;
    for _ in 1..level {
        target = target.saturating_mul(config.level_size_ratio);
    }
    target
}

/// Chooses the next compaction, or `None` when every level is within its
/// target. Pure: the same snapshot and config give the same task.
pub fn pick(snapshot: &LevelsSnapshot, config: &LsmConfig) -> Option<CompactionTask> {
    let last = config.max_levels.saturating_sub(1);
    let level = |n: usize| snapshot.levels.get(n).map_or(&[][..], Vec::as_slice);

    // (score, level): scores compared as ratios scaled to avoid floats' ties.
    let mut best: Option<(f64, usize)> = None;
    let l0 = level(0).len();
    if l0 >= config.l0_compaction_trigger && l0 > 0 {
        best = Some((l0 as f64 / config.l0_compaction_trigger as f64, 0));
    }
    for n in 1..last {
        let bytes: u64 = level(n).iter().map(|t| t.file_bytes).sum();
        let score = bytes as f64 / level_target_bytes(n, config) as f64;
        if score >= 1.0 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, n));
        }
    }
    let (_, input_level) = best?;
    let output_level = input_level + 1;

    let inputs: Vec<&TableMeta> = if input_level == 0 {
        level(0).iter().collect()
    } else {
        let below = level(output_level);
        // Smallest overlap per byte moved; ties go to the smaller key so the
        // choice is deterministic.
        let chosen = level(input_level).iter().min_by(|a, b| {
            let ra = overlap_bytes(below, a) as f64 / a.file_bytes.max(1) as f64;
            let rb = overlap_bytes(below, b) as f64 / b.file_bytes.max(1) as f64;
            ra.total_cmp(&rb).then_with(|| a.smallest.cmp(&b.smallest))
        })?;
        vec![chosen]
    };
    let smallest = inputs.iter().map(|t| t.smallest.as_slice()).min()?;
    let largest = inputs.iter().map(|t| t.largest.as_slice()).max()?;
    let overlapping: Vec<&TableMeta> = level(output_level)
        .iter()
        .filter(|t| t.overlaps(smallest, largest))
        .collect();
    let task_smallest = overlapping
        .iter()
        .map(|t| t.smallest.as_slice())
        .chain(std::iter::once(smallest))
        .min()
        .unwrap_or(smallest);
    let task_largest = overlapping
        .iter()
        .map(|t| t.largest.as_slice())
        .chain(std::iter::once(largest))
        .max()
        .unwrap_or(largest);
    let deeper_overlap = (output_level + 1..snapshot.levels.len().max(output_level + 1)).any(|n| {
        level(n)
            .iter()
            .any(|t| t.overlaps(task_smallest, task_largest))
    });
    let trivial_move = overlapping.is_empty() && inputs.len() == 1;
    Some(CompactionTask {
        input_level,
        inputs: inputs.iter().map(|t| t.id).collect(),
        output_level,
        overlapping: overlapping.iter().map(|t| t.id).collect(),
        drop_tombstones: !deeper_overlap,
        trivial_move,
    })
}

fn overlap_bytes(level: &[TableMeta], table: &TableMeta) -> u64 {
    level
        .iter()
        .filter(|t| t.overlaps(&table.smallest, &table.largest))
        .map(|t| t.file_bytes)
        .sum()
}

/// Writes the merge of `input` into tables: only the newest version of each
/// key, tombstones dropped when `drop_tombstones`, a new table started when
/// the current one reaches `target_table_bytes`.
///
/// `new_table` is called for each output table with its index and must
/// return a builder for a fresh file; `finish` receives each finished
/// builder. Both come from the engine, which knows file names and ids.
pub fn merge_into_tables<B: OutputTable>(
    input: &mut dyn StorageIterator,
    drop_tombstones: bool,
    target_table_bytes: u64,
    mut new_table: impl FnMut() -> Result<B>,
    mut finish: impl FnMut(B) -> Result<()>,
) -> Result<()> {
    let mut current: Option<B> = None;
    let mut last_key: Option<Vec<u8>> = None;
    while input.is_valid() {
        let newest_version = last_key.as_deref() != Some(input.key());
        if newest_version {
            last_key = Some(input.key().to_vec());
            let keep = input.value().is_some() || !drop_tombstones;
            if keep {
                if current.is_none() {
                    current = Some(new_table()?);
                }
                if let Some(builder) = current.as_mut() {
                    builder.add(input.key(), input.seq(), input.value())?;
                    if builder.estimated_bytes() >= target_table_bytes {
                        if let Some(full) = current.take() {
                            finish(full)?;
                        }
                    }
                }
            }
        }
        input.next()?;
    }
    if let Some(b) = current.take() {
        if b.entries() > 0 {
            finish(b)?;
        }
    }
    Ok(())
}

/// The part of a table builder the merge needs (a trait so that the merge
/// is tested without files).
pub trait OutputTable {
    /// Adds an entry; keys strictly ascending.
    fn add(&mut self, key: &[u8], seq: u64, value: Option<&[u8]>) -> Result<()>;
    /// Bytes the table would take if finished now.
    fn estimated_bytes(&self) -> u64;
    /// Entries added so far.
    fn entries(&self) -> u64;
}

/// The file name of table `id` in `dir`.
pub fn table_path(dir: &Path, id: u64) -> std::path::PathBuf {
    dir.join(format!("{id:06}.sst"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::lsm::iterators::{OwnedEntry, VecIter};

    fn t(id: u64, mb: u64, smallest: &str, largest: &str) -> TableMeta {
        TableMeta {
            id,
            file_bytes: mb << 20,
            smallest: smallest.as_bytes().to_vec(),
            largest: largest.as_bytes().to_vec(),
        }
    }

    fn config() -> LsmConfig {
        LsmConfig {
            l0_compaction_trigger: 4,
            l1_target_bytes: 10 << 20,
            level_size_ratio: 10,
            max_levels: 4,
            ..LsmConfig::default()
        }
    }

    fn snap(levels: Vec<Vec<TableMeta>>) -> LevelsSnapshot {
        LevelsSnapshot { levels }
    }

    #[test]
    fn nothing_to_do_below_every_threshold() {
        assert_eq!(pick(&LevelsSnapshot::default(), &config()), None);
        let s = snap(vec![
            vec![t(9, 1, "a", "z"), t(8, 1, "a", "z"), t(7, 1, "a", "z")],
            vec![t(1, 9, "a", "m")],
            vec![t(2, 99, "a", "z")],
        ]);
        assert_eq!(pick(&s, &config()), None);
    }

    #[test]
    fn level0_at_trigger_merges_all_of_it_with_overlapping_level1() {
        let s = snap(vec![
            vec![
                t(9, 1, "c", "f"),
                t(8, 1, "d", "h"),
                t(7, 1, "b", "e"),
                t(6, 1, "e", "g"),
            ],
            vec![
                t(1, 1, "a", "a"),
                t(2, 1, "b", "c"),
                t(3, 1, "g", "k"),
                t(4, 1, "m", "p"),
            ],
        ]);
        let task = pick(&s, &config()).unwrap();
        assert_eq!(task.input_level, 0);
        assert_eq!(task.output_level, 1);
        assert_eq!(task.inputs, vec![9, 8, 7, 6]);
        assert_eq!(task.overlapping, vec![2, 3]);
        assert!(task.drop_tombstones, "nothing below level 1");
        assert!(!task.trivial_move);
    }

    #[test]
    fn tombstones_are_kept_when_a_deeper_level_overlaps() {
        let s = snap(vec![
            vec![t(9, 1, "c", "f"); 4],
            vec![t(2, 1, "b", "c")],
            vec![],
            vec![t(5, 1, "a", "b")],
        ]);
        let task = pick(&s, &config()).unwrap();
        // The task spans b..f (the overlapping level-1 table starts at b),
        // and level 3 holds b: a tombstone for b must survive.
        assert!(!task.drop_tombstones);
        let s = snap(vec![
            vec![t(9, 1, "c", "f"); 4],
            vec![t(2, 1, "d", "e")],
            vec![],
            vec![t(5, 1, "a", "b"), t(6, 1, "g", "h")],
        ]);
        assert!(pick(&s, &config()).unwrap().drop_tombstones);
    }

    #[test]
    fn oversized_level_pushes_down_its_cheapest_table() {
        let s = snap(vec![
            vec![],
            // 12 MiB against a 10 MiB target.
            vec![t(1, 4, "a", "c"), t(2, 4, "d", "f"), t(3, 4, "g", "i")],
            vec![t(10, 40, "a", "b"), t(11, 1, "d", "e"), t(12, 30, "h", "h")],
        ]);
        let task = pick(&s, &config()).unwrap();
        assert_eq!(task.input_level, 1);
        assert_eq!(task.inputs, vec![2], "table 2 overlaps only 1 MiB");
        assert_eq!(task.overlapping, vec![11]);
        assert_eq!(task.output_level, 2);
        assert!(task.drop_tombstones);
        assert!(!task.trivial_move);
    }

    #[test]
    fn a_table_with_nothing_below_moves_trivially() {
        let s = snap(vec![
            vec![],
            vec![t(1, 6, "a", "c"), t(2, 6, "x", "z")],
            vec![t(10, 40, "a", "b")],
        ]);
        let task = pick(&s, &config()).unwrap();
        assert_eq!(task.inputs, vec![2]);
        assert!(task.overlapping.is_empty());
        assert!(task.trivial_move);
    }

    #[test]
    fn the_highest_score_wins_and_level0_wins_ties() {
        // L0 score 5/4 = 1.25; L1 20/10 = 2; L2 150/100 = 1.5.
        let s = snap(vec![
            vec![t(30, 1, "a", "b"); 5],
            vec![t(1, 20, "a", "c")],
            vec![t(2, 150, "a", "z")],
        ]);
        assert_eq!(pick(&s, &config()).unwrap().input_level, 1);
        // L0 score 2, L1 score 2: L0 first.
        let s = snap(vec![vec![t(30, 1, "a", "b"); 8], vec![t(1, 20, "a", "c")]]);
        assert_eq!(pick(&s, &config()).unwrap().input_level, 0);
        // L2 alone over target.
        let s = snap(vec![
            vec![],
            vec![t(1, 1, "a", "c")],
            vec![t(2, 150, "a", "z")],
        ]);
        let task = pick(&s, &config()).unwrap();
        assert_eq!((task.input_level, task.output_level), (2, 3));
    }

    #[test]
    fn the_last_level_is_never_an_input() {
        let s = snap(vec![vec![], vec![], vec![], vec![t(1, 100_000, "a", "z")]]);
        assert_eq!(pick(&s, &config()), None);
        let two_levels = LsmConfig {
            max_levels: 2,
            ..config()
        };
        let s = snap(vec![vec![], vec![t(1, 100_000, "a", "z")]]);
        assert_eq!(pick(&s, &two_levels), None);
        let s = snap(vec![
            vec![t(5, 1, "a", "b"); 4],
            vec![t(1, 100_000, "a", "z")],
        ]);
        let task = pick(&s, &two_levels).unwrap();
        assert_eq!(task.output_level, 1);
        assert!(task.drop_tombstones);
    }

    #[test]
    fn level_targets_grow_by_the_ratio() {
        let c = config();
        assert_eq!(level_target_bytes(1, &c), 10 << 20);
        assert_eq!(level_target_bytes(2, &c), 100 << 20);
        assert_eq!(level_target_bytes(3, &c), 1000 << 20);
        let huge = LsmConfig {
            level_size_ratio: u64::MAX,
            ..c
        };
        assert_eq!(level_target_bytes(5, &huge), u64::MAX);
    }

    /// An output table in memory.
    #[derive(Default)]
    struct Out(Vec<OwnedEntry>);

    impl OutputTable for Out {
        fn add(&mut self, key: &[u8], seq: u64, value: Option<&[u8]>) -> Result<()> {
            if let Some(last) = self.0.last() {
                assert!(last.0.as_slice() < key, "keys must ascend strictly");
            }
            self.0.push((key.to_vec(), seq, value.map(<[u8]>::to_vec)));
            Ok(())
        }
        fn estimated_bytes(&self) -> u64 {
            self.0.len() as u64 * 10
        }
        fn entries(&self) -> u64 {
            self.0.len() as u64
        }
    }

    fn e(k: &str, seq: u64, v: Option<&str>) -> (Vec<u8>, u64, Option<Vec<u8>>) {
        (k.as_bytes().to_vec(), seq, v.map(|v| v.as_bytes().to_vec()))
    }

    fn run(drop: bool, target: u64) -> Vec<Vec<OwnedEntry>> {
        let mut input = VecIter::new(vec![
            e("a", 9, Some("a9")),
            e("a", 3, Some("a3")),
            e("b", 8, None),
            e("b", 2, Some("b2")),
            e("c", 1, Some("c1")),
            e("d", 7, None),
            e("e", 6, Some("e6")),
        ]);
        let mut out = Vec::new();
        merge_into_tables(
            &mut input,
            drop,
            target,
            || Ok(Out::default()),
            |b| {
                out.push(b.0);
                Ok(())
            },
        )
        .unwrap();
        out
    }

    #[test]
    fn merge_keeps_the_newest_version_and_cuts_tables() {
        let kept = run(false, 1000);
        assert_eq!(
            kept,
            vec![vec![
                e("a", 9, Some("a9")),
                e("b", 8, None),
                e("c", 1, Some("c1")),
                e("d", 7, None),
                e("e", 6, Some("e6"))
            ]]
        );
        let dropped = run(true, 1000);
        assert_eq!(
            dropped,
            vec![vec![
                e("a", 9, Some("a9")),
                e("c", 1, Some("c1")),
                e("e", 6, Some("e6"))
            ]]
        );
        // 10 bytes per entry, cut at 20: tables of two entries.
        let cut = run(false, 20);
        assert_eq!(cut.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1]);
        // All tombstones dropped: no empty table is written.
        let mut only = VecIter::new(vec![e("x", 5, None)]);
        let mut tables = 0;
        merge_into_tables(
            &mut only,
            true,
            100,
            || Ok(Out::default()),
            |_| {
                tables += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(tables, 0);
    }
}
