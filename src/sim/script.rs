//! Scenario scripts: a [`ClusterSim`] driven by a plain-text script whose
//! file also holds the output every command is expected to print.
//!
//! Each file under `src/sim/testscripts/` is one scenario. The test
//! `scripts` (in `cargo test -p ringkv --lib sim::script`) runs
//! every file and fails with a diff when a command prints anything other
//! than what the file says; run it with `UPDATE_GOLDENFILES=1` to rewrite
//! the files with what the commands print now, then read the diff before
//! committing it. The simulator is deterministic, so the output of a
//! script changes only when the code does.
//!
//! # Format
//!
//! ```text
//! # A comment: what the scenario shows.
//!
//! cluster nodes=5 seed=1
//! crash 3
//! ---
//! 5 nodes, seed 1
//! ...
//! n3 crashed
//!
//! # Another block.
//! put 1 sloppy k v1
//! ---
//! written (answered n1 n2 n4, fallback n4 for n3)
//! ```
//!
//! Outside a block, a line starting with `#` is a comment and a blank line
//! is a separator; both are kept as they are. A block is one or more
//! command lines (a `#` line among them is a comment), a `---` line, and
//! the lines the commands printed, in order, up to the next blank line or
//! the end of the file. A command prints at least one line and never a
//! blank one; a block whose commands printed nothing shows `ok`. A block
//! without `---` has no expected output yet: it fails, or gets its output
//! under `UPDATE_GOLDENFILES=1`.
//!
//! A command is a name, then positional arguments and `key=value`
//! arguments, separated by spaces (no quoting: values are single words).
//! Results of the store, failures included (`failed: ...`), are output. A
//! line the runner cannot carry out (an unknown command or argument, a
//! missing one, a node that does not exist, a command before `cluster`) is
//! a mistake in the script: the test fails naming its line.
//!
//! # Commands
//!
//! `NODE` is a node id (`3` or `n3`), `NODES` a comma-separated list
//! (`1,2`). Durations: `500ms`, `5s`, `1.5s`, `2m`, `1h`. Each command is
//! one call of the [`ClusterSim`] API.
//!
//! | command | does | prints |
//! | --- | --- | --- |
//! | `cluster [nodes=]5 [seed=]1` | [`ClusterSim::quiet`] (defaults 5 and 1) | the buckets |
//! | `run 20s` | [`ClusterSim::run_for`] | the virtual time, `t=25.000s` |
//! | `put [node=]N BUCKET KEY VALUE [ctx] [w= sloppy= timeout=]` | a write through node N | `written (receipt)` |
//! | `get N BUCKET KEY [r= sloppy= repair=async\|before\|off timeout=]` | a read | the value, `not found` or `siblings a b`, and the receipt |
//! | `delete N BUCKET KEY [ctx] [w= sloppy= timeout=]` | a delete | as `put` |
//! | `counter_add N BUCKET KEY BY [w=...]`, `counter_get N BUCKET KEY [r=...]` | counter ops | `counter 5 (receipt)` (a recorded add: `written (receipt)`, as the simulator's clients record it) |
//! | `set_add N BUCKET KEY MEMBER`, `set_remove ...`, `set_members N BUCKET KEY` | OR-Set ops | `members a b (receipt)` (a recorded add: `written (receipt)`) |
//! | `crash NODES`, `restart NODES`, `pause NODES`, `resume NODES` | node faults | each node's state after |
//! | `partition NODES [NODES]` | [`ClusterSim::partition`] (one side: against every other node) | the sides |
//! | `oneway NODES NODES` | [`ClusterSim::partition_one_way`] | the cut |
//! | `heal` | [`ClusterSim::heal`] | |
//! | `network calm` or `network drop= dup= reorder= delay=1ms..50ms` | [`ClusterSim::set_network`] | the faults |
//! | `skew NODE +300ms` | [`ClusterSim::skew`] | the node's clock offset |
//! | `powerloss NODES` | [`ClusterSim::power_loss`]: a crash that also loses unsynced writes | each node's state after |
//! | `sync` | [`ClusterSim::sync_storage`] | |
//! | `disk NODE [latency=50ms] [write_fail=0.1] [read_fail=0.1]` or `disk NODE healthy` | [`ClusterSim::disk`] | the disk's faults |
//! | `join` | [`ClusterSim::join`]: a new node joins | its id |
//! | `leave NODE` | [`ClusterSim::leave`] | |
//! | `ring [NODE]` | [`ClusterSim::ring_state`] (or the node's) | the ring in force and the change in progress |
//! | `primaries BUCKET KEY` | [`ClusterSim::primaries`] | the nodes |
//! | `preflist N BUCKET KEY` | `PreferenceList` through node N | targets, fallbacks with the primary they stand in for |
//! | `local [NODES] BUCKET KEY` | [`ClusterSim::local_object`] on each node (default: the primaries) | one line per node |
//! | `hints` | [`ClusterSim::hints`] on every node | nodes holding hints, crashed nodes |
//! | `status AT [OF]` | [`ClusterSim::status`] | what AT believes of OF (default: of every other node) |
//! | `check [settle=10s]` | [`ClusterSim::finish_run`] then [`check::check_all`] | `ok (...)` or one line per violation |
//!
//! A receipt shows the nodes the request was sent to, those that answered
//! before the reply (a write's later acknowledgements are not waited for),
//! the fallbacks among them with the primary each holds a hint for, and
//! the nodes read repair was sent to. `local` shows a replica's stored object unresolved: each
//! sibling's value (`tombstone` for a delete), `nothing` when the store
//! holds nothing for the key (never written, or purged), `crashed` when it
//! cannot be read; in a last-writer-wins bucket each value's timestamp
//! follows, as virtual time since the start of the run (`@10.300s`: the
//! node's skew included). Counters and sets show the value a read
//! resolves.
//!
//! # What the checkers see
//!
//! Blind writes and plain reads (`put`, `get`, `counter_*`, `set_add`,
//! `set_members` with no option and no `ctx`) go through
//! [`ClusterSim::request_reply`] and are recorded in the history that
//! `check` judges. Everything else (a write with the context of a read,
//! `delete`, `set_remove`, any op with an option) goes through
//! [`ClusterSim::execute`] and is not: it need not fit the checkers' model
//! (a write with a context replaces acknowledged values, which the sibling
//! checker would call lost), so a script that makes such writes on a key
//! should not end with `check` on it. `ctx` sends the context of the last
//! `get` of the same bucket and key (any node; an error before one).
//! `check` ends the cluster: a later command needs a new `cluster`.
//! The checkers order two operations only when one completed strictly
//! before the other was invoked, and commands run back to back share a
//! virtual instant: a script that wants two writes judged as sequential
//! puts a `run 10ms` between them.
//!
//! The file `every_command` is not a scenario: it uses every command once,
//! so that each output shape is pinned.
//!
//! # Why not the `goldenscript` crate
//!
//! The `goldenscript` crate (0.7.0, last released in July 2024) does this
//! job well, but it brings about a dozen crates into the test build (an
//! old `nom`, `nom_locate`, `goldenfile`, `similar`, `console`, ...) for
//! a format that takes a hundred lines to read and write, on a machine
//! whose two cores build everything. Its extra syntax (quoting, tags,
//! prefixes, expected failures, silenced commands) is not needed here:
//! commands take single words, and a failure of the store is an output
//! like any other. The runner below reads the same kind of file (commands,
//! `---`, output, blank line), so moving to the crate later means
//! implementing its `Runner` trait with [`Runner::command`].

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde_bytes::ByteBuf;

use super::check;
use super::cluster::{ClusterSim, DiskFaults, START_WALL_MS};
use super::history::{BucketKind, Observed, Outcome, SimOp};
use crate::message::NodeId;
use crate::net::memory::Faults;
use crate::protocol::{Op, ReadOptions, Reply, WriteOptions};
use crate::replication::get::Repair;
use crate::replication::{Consistency, Receipt};
use crate::version::Payload;

/// Runs script commands against one simulated cluster at a time.
#[derive(Default)]
pub struct Runner {
    sim: Option<ClusterSim>,
    /// The context of the last read of each (bucket, key), for `ctx`.
    contexts: BTreeMap<(String, String), ByteBuf>,
}

/// A command's arguments: positional ones in order, and `key=value` ones.
struct Args {
    positional: VecDeque<String>,
    named: BTreeMap<String, String>,
}

impl Args {
    fn parse(words: &[&str]) -> Result<Args, String> {
        let mut args = Args {
            positional: VecDeque::new(),
            named: BTreeMap::new(),
        };
        for word in words {
            match word.split_once('=') {
                Some((k, v)) => {
                    if args.named.insert(k.to_string(), v.to_string()).is_some() {
                        return Err(format!("{k}= given twice"));
                    }
                }
                None => args.positional.push_back(word.to_string()),
            }
        }
        Ok(args)
    }

    /// The argument `name`: given as `name=value`, or the next positional.
    fn take(&mut self, name: &str) -> Result<String, String> {
        self.named
            .remove(name)
            .or_else(|| self.positional.pop_front())
            .ok_or_else(|| format!("missing {name}"))
    }

    /// As [`Args::take`], or `None` when there is none.
    fn take_opt(&mut self, name: &str) -> Option<String> {
        self.named
            .remove(name)
            .or_else(|| self.positional.pop_front())
    }

    /// The `name=value` argument, if given.
    fn named(&mut self, name: &str) -> Option<String> {
        self.named.remove(name)
    }

    /// Whether the bare word `flag` is among the remaining positionals
    /// (removed if so).
    fn flag(&mut self, flag: &str) -> bool {
        match self.positional.iter().position(|p| p == flag) {
            Some(i) => {
                self.positional.remove(i);
                true
            }
            None => false,
        }
    }

    /// Fails on arguments no one took.
    fn done(self) -> Result<(), String> {
        let mut left: Vec<String> = self.positional.into_iter().collect();
        left.extend(self.named.into_iter().map(|(k, v)| format!("{k}={v}")));
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected argument(s): {}", left.join(" ")))
        }
    }
}

impl Runner {
    /// A runner with no cluster yet (the first command is `cluster`).
    pub fn new() -> Self {
        Runner::default()
    }

    /// Runs one command line (see the module documentation) and returns
    /// what it prints: one or more lines, none blank, without a final
    /// newline. `Err` is a mistake in the script (an unknown command or
    /// argument, a node that does not exist, no cluster yet), not a
    /// result of the store.
    pub fn command(&mut self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&name, rest)) = words.split_first() else {
            return Err("empty command".into());
        };
        let mut args = Args::parse(rest)?;
        let out = match name {
            "cluster" => self.cluster(&mut args)?,
            "run" => {
                let d = duration(&args.take("duration")?)?;
                let sim = self.sim()?;
                sim.run_for(d);
                format!("t={}", seconds(sim.elapsed()))
            }
            "put" | "delete" | "counter_add" | "set_add" | "set_remove" => {
                self.write(name, &mut args)?
            }
            "get" | "counter_get" | "set_members" => self.read(name, &mut args)?,
            "crash" | "restart" | "pause" | "resume" => {
                let nodes = self.nodes(&args.take("nodes")?)?;
                let sim = self.sim()?;
                let mut lines = Vec::new();
                for n in nodes {
                    match name {
                        "crash" => sim.crash(n),
                        "restart" => sim.restart(n),
                        "pause" => sim.pause(n),
                        _ => sim.resume(n),
                    }
                    lines.push(format!("{n} {}", state(sim, n)));
                }
                lines.join("\n")
            }
            "powerloss" => {
                let nodes = self.nodes(&args.take("nodes")?)?;
                let sim = self.sim()?;
                let mut lines = Vec::new();
                for n in nodes {
                    sim.power_loss(n);
                    lines.push(format!("{n} {} (power lost)", state(sim, n)));
                }
                lines.join("\n")
            }
            "sync" => {
                self.sim()?.sync_storage();
                "every node's storage synced".into()
            }
            "disk" => {
                let node = self.node(&args.take("node")?)?;
                let mut faults = DiskFaults::default();
                if !args.flag("healthy") {
                    if let Some(l) = args.named("latency") {
                        faults.latency = duration(&l)?;
                    }
                    let rate = |v: Option<String>| -> Result<f64, String> {
                        v.map_or(Ok(0.0), |v| {
                            v.parse().map_err(|_| format!("{v:?} is not a number"))
                        })
                    };
                    faults.write_fail_rate = rate(args.named("write_fail"))?;
                    faults.read_fail_rate = rate(args.named("read_fail"))?;
                }
                self.sim()?.disk(node, faults);
                if faults == DiskFaults::default() {
                    format!("{node} disk healthy")
                } else {
                    format!(
                        "{node} disk latency up to {}, write failures {}, read failures {}",
                        seconds(faults.latency),
                        faults.write_fail_rate,
                        faults.read_fail_rate
                    )
                }
            }
            "join" => {
                let sim = self.sim()?;
                let node = sim.join();
                format!("{node} {}, joining", state(sim, node))
            }
            "leave" => {
                let node = self.node(&args.take("node")?)?;
                let sim = self.sim()?;
                sim.leave(node);
                format!("{node} leaving")
            }
            "ring" => {
                let at = match args.take_opt("node") {
                    Some(n) => Some(self.node(&n)?),
                    None => None,
                };
                let sim = self.sim()?;
                let state = match at {
                    Some(n) => sim.ring_state_at(n),
                    None => Some(sim.ring_state()),
                };
                match state {
                    None => format!(
                        "{} not running",
                        at.map_or(String::new(), |n| n.to_string())
                    ),
                    Some(state) => ring_lines(&state),
                }
            }
            "partition" => {
                let a = self.nodes(&args.take("side")?)?;
                let b = match args.take_opt("other side") {
                    Some(b) => self.nodes(&b)?,
                    None => self
                        .sim()?
                        .node_ids()
                        .into_iter()
                        .filter(|n| !a.contains(n))
                        .collect(),
                };
                self.sim()?.partition(&a, &b);
                format!("{} | {}", list(&a), list(&b))
            }
            "oneway" => {
                let from = self.nodes(&args.take("from")?)?;
                let to = self.nodes(&args.take("to")?)?;
                self.sim()?.partition_one_way(&from, &to);
                format!("{} -> {} cut", list(&from), list(&to))
            }
            "heal" => {
                self.sim()?.heal();
                "every link restored".into()
            }
            "network" => self.network(&mut args)?,
            "skew" => {
                let node = self.node(&args.take("node")?)?;
                let ms = skew_ms(&args.take("skew")?)?;
                self.sim()?.skew(node, ms);
                format!("{node} clock {}", signed_ms(ms))
            }
            "primaries" => {
                let bucket = args.take("bucket")?;
                let key = args.take("key")?;
                let sim = self.sim()?;
                known_bucket(sim, &bucket)?;
                list(&sim.primaries(&bucket, &key))
            }
            "preflist" => {
                let node = self.node(&args.take("node")?)?;
                let bucket = ByteBuf::from(args.take("bucket")?.into_bytes());
                let key = ByteBuf::from(args.take("key")?.into_bytes());
                match self
                    .sim()?
                    .execute(Some(node), Op::PreferenceList { bucket, key })
                {
                    Ok(Reply::Preference { targets }) => targets
                        .iter()
                        .map(|t| match t.fallback_for {
                            Some(owner) => format!("{} (for {owner})", t.node),
                            None => t.node.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(" "),
                    Ok(other) => format!("unexpected reply {other:?}"),
                    Err(e) => format!("failed: {e}"),
                }
            }
            "local" => self.local(&mut args)?,
            "hints" => {
                let sim = self.sim()?;
                let mut held = Vec::new();
                let mut crashed = Vec::new();
                for n in sim.node_ids() {
                    let count = sim.hints(n);
                    if sim.is_crashed(n) {
                        crashed.push(format!("{n} crashed (its hints unknown)"));
                    } else if count > 0 {
                        let s = if count == 1 { "" } else { "s" };
                        held.push(format!("{n} {count} hint{s}"));
                    }
                }
                if held.is_empty() {
                    held.push("no hints".into());
                }
                held.extend(crashed);
                held.join("\n")
            }
            "status" => {
                let at = self.node(&args.take("at")?)?;
                let of = match args.take_opt("of") {
                    Some(of) => vec![self.node(&of)?],
                    None => self
                        .sim()?
                        .node_ids()
                        .into_iter()
                        .filter(|&n| n != at)
                        .collect(),
                };
                let sim = self.sim()?;
                if sim.is_crashed(at) {
                    format!("{at} crashed")
                } else {
                    of.iter()
                        .map(|&o| match sim.status(at, o) {
                            Some(s) => format!("{at} sees {o} {s:?}"),
                            None => format!("{at} knows nothing of {o}"),
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            }
            "check" => {
                let settle = match args.named("settle") {
                    Some(s) => duration(&s)?,
                    None => Duration::from_secs(10),
                };
                let sim = self.sim.take().ok_or("no cluster: start with `cluster`")?;
                self.contexts.clear();
                match sim.finish_run(settle) {
                    Ok(h) => {
                        let violations = check::check_all(&h);
                        if violations.is_empty() {
                            let plural = |n: usize, what: &str| match n {
                                1 => format!("1 {what}"),
                                n => format!("{n} {what}s"),
                            };
                            format!(
                                "ok ({} recorded, on {})",
                                plural(h.ops.len(), "op"),
                                plural(h.final_state.len(), "key")
                            )
                        } else {
                            violations
                                .iter()
                                .map(|v| format!("violation: {v}"))
                                .collect::<Vec<_>>()
                                .join("\n")
                        }
                    }
                    Err(e) => format!("failed: {e}"),
                }
            }
            other => return Err(format!("unknown command {other:?}")),
        };
        args.done()?;
        // Output lines are never blank: a blank line ends a block.
        let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
        Ok(if lines.is_empty() {
            "ok".into()
        } else {
            lines.join("\n")
        })
    }

    fn sim(&mut self) -> Result<&mut ClusterSim, String> {
        self.sim
            .as_mut()
            .ok_or_else(|| "no cluster: start with `cluster`".into())
    }

    fn node(&mut self, word: &str) -> Result<NodeId, String> {
        let id: u64 = word
            .trim_start_matches('n')
            .parse()
            .map_err(|_| format!("{word:?} is not a node id"))?;
        let node = NodeId(id);
        if !self.sim()?.node_ids().contains(&node) {
            return Err(format!("no node {node} in this cluster"));
        }
        Ok(node)
    }

    fn nodes(&mut self, word: &str) -> Result<Vec<NodeId>, String> {
        word.split(',').map(|w| self.node(w)).collect()
    }

    fn cluster(&mut self, args: &mut Args) -> Result<String, String> {
        let number = |v: Option<String>, default: u64| -> Result<u64, String> {
            v.map_or(Ok(default), |v| {
                v.parse().map_err(|_| format!("{v:?} is not a number"))
            })
        };
        let nodes = number(args.take_opt("nodes"), 5)?;
        let seed = number(args.take_opt("seed"), 1)?;
        let sim = ClusterSim::quiet(nodes as usize, seed).map_err(|e| e.to_string())?;
        let mut lines = vec![format!("{nodes} nodes, seed {seed}")];
        for (name, b) in &sim.history().buckets {
            let kind = match b.kind {
                BucketKind::Siblings => "siblings",
                BucketKind::Lww => "lww",
                BucketKind::Counter => "counter",
                BucketKind::Set => "or-set",
            };
            let quorum = if b.sloppy { "sloppy" } else { "strict" };
            lines.push(format!(
                "bucket {name}: {kind} n={} r={} w={} {quorum}",
                b.n, b.r, b.w
            ));
        }
        self.sim = Some(sim);
        self.contexts.clear();
        Ok(lines.join("\n"))
    }

    /// `put`, `delete`, `counter_add`, `set_add`, `set_remove`.
    fn write(&mut self, name: &str, args: &mut Args) -> Result<String, String> {
        let node = self.node(&args.take("node")?)?;
        let bucket = args.take("bucket")?;
        let key = args.take("key")?;
        let operand = match name {
            "put" => Some(args.take("value")?),
            "counter_add" => Some(args.take("by")?),
            "set_add" | "set_remove" => Some(args.take("member")?),
            _ => None,
        };
        let with_context = matches!(name, "put" | "delete") && args.flag("ctx");
        let options = write_options(args)?;
        known_bucket(self.sim()?, &bucket)?;
        let plain = options == WriteOptions::default() && !with_context;
        let b = |s: &str| ByteBuf::from(s.as_bytes().to_vec());
        let by = |v: &str| -> Result<i64, String> {
            v.parse().map_err(|_| format!("{v:?} is not a number"))
        };
        let recorded = match (name, plain) {
            ("put", true) => Some(SimOp::Put {
                bucket: bucket.clone(),
                key: key.clone(),
                value: operand.clone().unwrap_or_default(),
            }),
            ("counter_add", true) => Some(SimOp::CounterAdd {
                bucket: bucket.clone(),
                key: key.clone(),
                by: by(operand.as_deref().unwrap_or_default())?,
            }),
            ("set_add", true) => Some(SimOp::SetAdd {
                bucket: bucket.clone(),
                key: key.clone(),
                member: operand.clone().unwrap_or_default(),
            }),
            _ => None,
        };
        if let Some(op) = recorded {
            let (outcome, reply) = self.sim()?.request_reply(node, op);
            return Ok(show_outcome(&outcome, reply.as_ref()));
        }
        let context = if with_context {
            let context = self
                .contexts
                .get(&(bucket.clone(), key.clone()))
                .ok_or_else(|| format!("ctx: no get of {bucket}/{key} yet"))?;
            Some(context.clone())
        } else {
            None
        };
        let operand = operand.unwrap_or_default();
        let op = match name {
            "put" => Op::Put {
                bucket: b(&bucket),
                key: b(&key),
                value: b(&operand),
                context,
                options,
            },
            "delete" => Op::Delete {
                bucket: b(&bucket),
                key: b(&key),
                context,
                options,
            },
            "counter_add" => Op::CounterAdd {
                bucket: b(&bucket),
                key: b(&key),
                by: by(&operand)?,
                options,
            },
            "set_add" => Op::SetAdd {
                bucket: b(&bucket),
                key: b(&key),
                members: vec![b(&operand)],
                options,
                count_only: false,
            },
            _ => Op::SetRemove {
                bucket: b(&bucket),
                key: b(&key),
                members: vec![b(&operand)],
                options,
                count_only: false,
            },
        };
        Ok(match self.sim()?.execute(Some(node), op) {
            Ok(reply) => show_reply(&reply),
            Err(e) => format!("failed: {e}"),
        })
    }

    /// `get`, `counter_get`, `set_members`.
    fn read(&mut self, name: &str, args: &mut Args) -> Result<String, String> {
        let node = self.node(&args.take("node")?)?;
        let bucket = args.take("bucket")?;
        let key = args.take("key")?;
        let options = read_options(args)?;
        known_bucket(self.sim()?, &bucket)?;
        let reply = if options == ReadOptions::default() {
            let op = match name {
                "get" => SimOp::Get {
                    bucket: bucket.clone(),
                    key: key.clone(),
                },
                "counter_get" => SimOp::CounterGet {
                    bucket: bucket.clone(),
                    key: key.clone(),
                },
                _ => SimOp::SetMembers {
                    bucket: bucket.clone(),
                    key: key.clone(),
                },
            };
            match self.sim()?.request_reply(node, op) {
                (_, Some(reply)) => reply,
                (outcome, None) => return Ok(show_outcome(&outcome, None)),
            }
        } else {
            let (b, k) = (
                ByteBuf::from(bucket.clone().into_bytes()),
                ByteBuf::from(key.clone().into_bytes()),
            );
            let op = match name {
                "get" => Op::Get {
                    bucket: b,
                    key: k,
                    options,
                },
                "counter_get" => Op::CounterGet {
                    bucket: b,
                    key: k,
                    options,
                },
                _ => Op::SetMembers {
                    bucket: b,
                    key: k,
                    options,
                },
            };
            match self.sim()?.execute(Some(node), op) {
                Ok(reply) => reply,
                Err(e) => return Ok(format!("failed: {e}")),
            }
        };
        if let Reply::Object { context, .. } = &reply {
            self.contexts.insert((bucket, key), context.clone());
        }
        Ok(show_reply(&reply))
    }

    fn network(&mut self, args: &mut Args) -> Result<String, String> {
        if args.flag("calm") {
            self.sim()?.set_network(None).map_err(|e| e.to_string())?;
            return Ok("network calm".into());
        }
        let rate = |v: Option<String>| -> Result<f64, String> {
            v.map_or(Ok(0.0), |v| {
                v.parse().map_err(|_| format!("{v:?} is not a rate"))
            })
        };
        let drop_rate = rate(args.named("drop"))?;
        let duplicate_rate = rate(args.named("dup"))?;
        let reorder_rate = rate(args.named("reorder"))?;
        let delay = match args.named("delay") {
            Some(d) => {
                let (lo, hi) = d
                    .split_once("..")
                    .ok_or_else(|| format!("delay {d:?} is not MIN..MAX"))?;
                (duration(lo)?, duration(hi)?)
            }
            None => (Duration::from_micros(100), Duration::from_millis(1)),
        };
        let faults = Faults {
            drop_rate,
            duplicate_rate,
            reorder_rate,
            delay,
        };
        match self.sim()?.set_network(Some(faults)) {
            Ok(()) => Ok(format!(
                "network drop={drop_rate} dup={duplicate_rate} reorder={reorder_rate} delay={:?}..{:?}",
                delay.0, delay.1
            )),
            Err(e) => Ok(format!("failed: {e}")),
        }
    }

    fn local(&mut self, args: &mut Args) -> Result<String, String> {
        let first = args.take("bucket")?;
        let second = args.take("key")?;
        let (nodes, bucket, key) = match args.take_opt("key") {
            Some(key) => (Some(self.nodes(&first)?), second, key),
            None => (None, first, second),
        };
        let sim = self.sim()?;
        let kind = known_bucket(sim, &bucket)?;
        let nodes = nodes.unwrap_or_else(|| sim.primaries(&bucket, &key));
        let mut lines = Vec::new();
        for n in nodes {
            if sim.is_crashed(n) {
                lines.push(format!("{n} crashed"));
                continue;
            }
            let paused = if sim.is_running(n) { "" } else { " (paused)" };
            let held = match kind {
                BucketKind::Counter | BucketKind::Set => {
                    match sim.local(n, &bucket, &key).map_err(|e| e.to_string())? {
                        None => "nothing".into(),
                        Some(Observed::Counter(c)) => format!("counter {c}"),
                        Some(Observed::Members(m)) => members(m.iter().map(String::as_str)),
                        Some(other) => format!("{other:?}"),
                    }
                }
                BucketKind::Siblings | BucketKind::Lww => {
                    match sim
                        .local_object(n, &bucket, &key)
                        .map_err(|e| e.to_string())?
                    {
                        None => "nothing".into(),
                        Some(o) if o.siblings().is_empty() => "empty".into(),
                        Some(o) => o
                            .siblings()
                            .iter()
                            .map(|s| {
                                let value = match &s.payload {
                                    Payload::Value(v) => String::from_utf8_lossy(v).into_owned(),
                                    Payload::Tombstone => "tombstone".into(),
                                };
                                if kind == BucketKind::Lww {
                                    let ms = s.timestamp.physical_ms as i64 - START_WALL_MS as i64;
                                    let logical = match s.timestamp.logical {
                                        0 => String::new(),
                                        l => format!("+{l}"),
                                    };
                                    format!("{value} @{}{logical}", signed_seconds(ms))
                                } else {
                                    value
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(" | "),
                    }
                }
            };
            lines.push(format!("{n}{paused} {held}"));
        }
        Ok(lines.join("\n"))
    }
}

/// The bucket's kind; a script error for a bucket the cluster lacks.
fn known_bucket(sim: &ClusterSim, bucket: &str) -> Result<BucketKind, String> {
    sim.history()
        .buckets
        .get(bucket)
        .map(|b| b.kind)
        .ok_or_else(|| format!("no bucket {bucket:?} in this cluster"))
}

fn write_options(args: &mut Args) -> Result<WriteOptions, String> {
    Ok(WriteOptions {
        w: args.named("w").map(|w| consistency(&w)).transpose()?,
        sloppy_quorum: args.named("sloppy").map(|s| boolean(&s)).transpose()?,
        timeout_ms: args
            .named("timeout")
            .map(|t| duration(&t).map(|d| d.as_millis() as u64))
            .transpose()?,
    })
}

fn read_options(args: &mut Args) -> Result<ReadOptions, String> {
    Ok(ReadOptions {
        r: args.named("r").map(|r| consistency(&r)).transpose()?,
        repair: args
            .named("repair")
            .map(|r| match r.as_str() {
                "async" => Ok(Repair::Async),
                "before" => Ok(Repair::BeforeAnswer),
                "off" => Ok(Repair::Off),
                _ => Err(format!("repair={r}: async, before or off")),
            })
            .transpose()?,
        sloppy_quorum: args.named("sloppy").map(|s| boolean(&s)).transpose()?,
        timeout_ms: args
            .named("timeout")
            .map(|t| duration(&t).map(|d| d.as_millis() as u64))
            .transpose()?,
    })
}

fn consistency(word: &str) -> Result<Consistency, String> {
    Ok(match word {
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        n => Consistency::Count(
            n.parse()
                .map_err(|_| format!("{n:?}: a number, one, two, quorum or all"))?,
        ),
    })
}

fn boolean(word: &str) -> Result<bool, String> {
    match word {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{word:?} is not true or false")),
    }
}

/// `500ms`, `5s`, `1.5s`, `2m`, `1h`.
fn duration(word: &str) -> Result<Duration, String> {
    let split = word
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{word:?}: a duration needs a unit (ms, s, m, h)"))?;
    let (number, unit) = word.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{word:?} is not a duration"))?;
    let ms_per = match unit {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(format!("{word:?}: the unit is ms, s, m or h")),
    };
    Ok(Duration::from_millis((number * ms_per).round() as u64))
}

/// `+300ms`, `-300ms`, `0ms`, `-1s`: a signed offset in milliseconds.
fn skew_ms(word: &str) -> Result<i64, String> {
    let (sign, rest) = match word.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, word.strip_prefix('+').unwrap_or(word)),
    };
    Ok(sign * duration(rest)?.as_millis() as i64)
}

fn seconds(d: Duration) -> String {
    format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
}

fn signed_seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    format!("{sign}{}.{:03}s", ms / 1000, ms % 1000)
}

fn signed_ms(ms: i64) -> String {
    if ms < 0 {
        format!("{ms}ms")
    } else {
        format!("+{ms}ms")
    }
}

fn list(nodes: &[NodeId]) -> String {
    nodes
        .iter()
        .map(NodeId::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A ring state in a few lines: the ring in force, then the change in
/// progress with its moves done.
fn ring_lines(state: &crate::ring::RingState) -> String {
    let members: Vec<NodeId> = state.ring.members().into_iter().collect();
    let mut lines = vec![format!(
        "epoch {}: {} ({} tokens)",
        state.ring.epoch(),
        list(&members),
        state.ring.len()
    )];
    match &state.pending {
        None => lines.push("no change in progress".into()),
        Some(p) => {
            let moves = p.moves(&state.ring).len();
            lines.push(format!(
                "change in progress: {:?}, {} of {moves} moves done",
                p.change,
                p.done.len()
            ));
        }
    }
    lines.join("\n")
}

fn state(sim: &ClusterSim, node: NodeId) -> &'static str {
    if sim.is_gone(node) {
        "gone"
    } else if sim.is_crashed(node) {
        "crashed"
    } else if sim.is_running(node) {
        "running"
    } else {
        "paused"
    }
}

fn members<'a>(m: impl Iterator<Item = &'a str>) -> String {
    let m: Vec<&str> = m.collect();
    if m.is_empty() {
        "members none".into()
    } else {
        format!("members {}", m.join(" "))
    }
}

fn show_receipt(r: &Receipt) -> String {
    let sorted = |nodes: &[NodeId]| {
        let mut nodes = nodes.to_vec();
        nodes.sort();
        if nodes.is_empty() {
            "none".to_string()
        } else {
            list(&nodes)
        }
    };
    let mut parts = vec![
        format!("asked {}", sorted(&r.asked)),
        format!("answered {}", sorted(&r.answered)),
    ];
    let mut fallbacks = r.fallbacks.clone();
    fallbacks.sort();
    for (fallback, owner) in fallbacks {
        parts.push(format!("fallback {fallback} for {owner}"));
    }
    if !r.repaired.is_empty() {
        parts.push(format!("repaired {}", sorted(&r.repaired)));
    }
    parts.join(", ")
}

fn show_reply(reply: &Reply) -> String {
    let text = |b: &ByteBuf| String::from_utf8_lossy(b).into_owned();
    match reply {
        Reply::Written { receipt, .. } => format!("written ({})", show_receipt(receipt)),
        Reply::Object {
            value,
            siblings,
            receipt,
            ..
        } => {
            let what = match value {
                Some(v) => text(v),
                None if siblings.is_empty() => "not found".into(),
                None => {
                    let values: Vec<String> = siblings
                        .iter()
                        .map(|s| s.value.as_ref().map_or_else(|| "tombstone".into(), text))
                        .collect();
                    format!("siblings {}", values.join(" "))
                }
            };
            format!("{what} ({})", show_receipt(receipt))
        }
        Reply::Counter { value, receipt } => {
            format!("counter {value} ({})", show_receipt(receipt))
        }
        Reply::Set {
            members: m,
            receipt,
            changed,
        } => {
            let m: Vec<String> = m.iter().map(text).collect();
            let changed = changed
                .map(|n| format!(", changed {n}"))
                .unwrap_or_default();
            format!(
                "{}{changed} ({})",
                members(m.iter().map(String::as_str)),
                show_receipt(receipt)
            )
        }
        other => format!("unexpected reply {other:?}"),
    }
}

/// A recorded operation's outcome, with its whole reply when it succeeded.
fn show_outcome(outcome: &Outcome, reply: Option<&Reply>) -> String {
    match (outcome, reply) {
        (Outcome::Ok(_), Some(reply)) => show_reply(reply),
        (Outcome::Ok(observed), None) => format!("{observed:?}"),
        (Outcome::Failed { error, .. }, _) => format!("failed: {error}"),
        (Outcome::Unknown, _) => "no answer".into(),
    }
}

/// One piece of a script file.
enum Piece {
    /// A comment or a blank line between blocks, kept as it is.
    Text(String),
    /// Command lines and the output the file expects of them.
    Block {
        /// The first command's line number (from 1).
        line: usize,
        /// The command lines (comments among them included).
        commands: Vec<String>,
        /// The expected output; `None` when the block has no `---` yet.
        expected: Option<Vec<String>>,
    },
}

fn parse(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut lines = text.lines().map(str::trim_end).enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        if line.is_empty() || line.starts_with('#') {
            pieces.push(Piece::Text(line.to_string()));
            continue;
        }
        let mut commands = vec![line.to_string()];
        let mut expected = None;
        while let Some((_, l)) = lines.next_if(|(_, l)| !l.is_empty()) {
            if l == "---" {
                let mut out = Vec::new();
                while let Some((_, o)) = lines.next_if(|(_, o)| !o.is_empty()) {
                    out.push(o.to_string());
                }
                expected = Some(out);
                break;
            }
            commands.push(l.to_string());
        }
        // The blank line that ends a block belongs to it.
        lines.next_if(|(_, l)| l.is_empty());
        pieces.push(Piece::Block {
            line: i + 1,
            commands,
            expected,
        });
    }
    pieces
}

/// What running a script found.
#[derive(Debug)]
pub struct ScriptRun {
    /// The script with every block's output as this run printed it: what
    /// the file becomes under `UPDATE_GOLDENFILES=1`.
    pub actual: String,
    /// One readable diff per block whose output is not the file's.
    pub mismatches: Vec<String>,
}

/// Runs a script's text with a new [`Runner`]. `Err` names the line of
/// a command the runner could not carry out (a mistake in the script).
pub fn run_script(text: &str) -> Result<ScriptRun, String> {
    let mut runner = Runner::new();
    let mut actual = String::new();
    let mut mismatches = Vec::new();
    for piece in parse(text) {
        match piece {
            Piece::Text(t) => {
                actual.push_str(&t);
                actual.push('\n');
            }
            Piece::Block {
                line,
                commands,
                expected,
            } => {
                let mut output = Vec::new();
                for (i, command) in commands.iter().enumerate() {
                    actual.push_str(command);
                    actual.push('\n');
                    if command.starts_with('#') {
                        continue;
                    }
                    let printed = runner
                        .command(command)
                        .map_err(|e| format!("line {}: {command}: {e}", line + i))?;
                    output.extend(printed.lines().map(str::to_string));
                }
                actual.push_str("---\n");
                for l in &output {
                    actual.push_str(l);
                    actual.push('\n');
                }
                actual.push('\n');
                if expected.as_ref() != Some(&output) {
                    let mut report = format!("line {line}: {}\n", commands.join(" / "));
                    match &expected {
                        Some(expected) => report.push_str(&diff(expected, &output)),
                        None => {
                            report.push_str("  (no expected output yet; it printed)\n");
                            report.push_str(&diff(&[], &output));
                        }
                    }
                    mismatches.push(report);
                }
            }
        }
    }
    let actual = format!("{}\n", actual.trim_end());
    Ok(ScriptRun { actual, mismatches })
}

/// A line diff of `expected` against `actual`: `-` lines only expected,
/// `+` lines only printed, others indented.
fn diff(expected: &[String], actual: &[String]) -> String {
    let (n, m) = (expected.len(), actual.len());
    // lcs[i][j]: the longest common subsequence of expected[i..], actual[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            out.push_str(&format!("    {}\n", expected[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("  - {}\n", expected[i]));
            i += 1;
        } else {
            out.push_str(&format!("  + {}\n", actual[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every script under `src/sim/testscripts/` prints what its file
    /// says; with `UPDATE_GOLDENFILES=1`, the files are rewritten with
    /// what they print now.
    #[test]
    fn scripts() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sim/testscripts");
        let update = std::env::var("UPDATE_GOLDENFILES").is_ok_and(|v| v == "1");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no scripts in {}", dir.display());
        let mut failures = String::new();
        for path in &files {
            let name = path.file_name().unwrap().to_string_lossy();
            let text = std::fs::read_to_string(path).unwrap();
            match run_script(&text) {
                Err(e) => failures.push_str(&format!("{name}: {e}\n")),
                Ok(run) if update => {
                    if run.actual != text {
                        std::fs::write(path, &run.actual).unwrap();
                        eprintln!("rewrote {name}");
                    }
                }
                Ok(run) => {
                    for m in &run.mismatches {
                        failures.push_str(&format!("{name}, {m}"));
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "scripts printed other output than their files hold \
             (- expected, + printed; UPDATE_GOLDENFILES=1 rewrites the files):\n{failures}"
        );
    }

    #[test]
    fn a_script_runs_back_to_itself_and_a_changed_line_is_a_mismatch() {
        let script = "# header\n\ncluster nodes=3 seed=2\n---\n";
        let first = run_script(script).unwrap();
        assert_eq!(first.mismatches.len(), 1, "no output yet");
        assert!(first
            .actual
            .starts_with("# header\n\ncluster nodes=3 seed=2\n---\n3 nodes, seed 2\n"));
        let again = run_script(&first.actual).unwrap();
        assert!(again.mismatches.is_empty(), "{:?}", again.mismatches);
        assert_eq!(again.actual, first.actual);
        let changed = first.actual.replace("3 nodes, seed 2", "3 nodes, seed 9");
        let run = run_script(&changed).unwrap();
        assert_eq!(run.mismatches.len(), 1);
        assert!(run.mismatches[0].contains("  - 3 nodes, seed 9\n  + 3 nodes, seed 2\n"));
        assert!(run_script("frobnicate\n---\nok\n")
            .unwrap_err()
            .contains("line 1"));
        assert!(run_script("run 1s\n---\nok\n")
            .unwrap_err()
            .contains("no cluster"));
    }

    #[test]
    fn durations_and_skews_read_as_written() {
        assert_eq!(duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(duration("5").is_err());
        assert_eq!(skew_ms("-300ms").unwrap(), -300);
        assert_eq!(skew_ms("+1s").unwrap(), 1000);
        assert_eq!(signed_seconds(-300), "-0.300s");
    }
}
