//! The deterministic driver of [`Membership`] machines.
//!
//! [`MembershipSim`] runs N machines on one virtual clock over a
//! [`Fabric`]. Nodes can be crashed (removed from the network, never run
//! again), paused (neither run nor receive, their frames held, as under
//! SIGSTOP) and partitioned; the fabric's faults (loss, delay, duplication,
//! reordering) apply to every frame. Every [`MemberEvent`] any node emits is
//! appended to one log with its virtual time and node, and the same options
//! give the same log: the determinism test below
//! compares logs of whole runs.
//!
//! What it does not do: it does not drive the ring keeper or any storage;
//! it has no notion of CPU time (a machine's step takes no virtual time).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::codec;
use crate::codec::DEFAULT_MAX_FRAME_BYTES;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::membership::MembershipConfig;
use crate::membership::{Addressed, MemberEvent, MemberStatus, Membership, MembershipMsg, Outbox};
use crate::message::{Envelope, Message};
use crate::net::memory::{Fabric, Faults};

/// How a simulation is set up.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Nodes at the start, ids 1 to `nodes`, each knowing all the others.
    pub nodes: usize,
    /// Seeds every random choice: the network's and each machine's.
    pub seed: u64,
    /// The membership configuration of every node.
    pub membership: MembershipConfig,
    /// Whether each node's ticks are offset by a random phase within the
    /// interval (as real nodes started at different moments are), instead
    /// of all nodes ticking at the same instants (synchronous rounds, the
    /// model of the spread theory).
    pub phases: bool,
    /// Faults applied from the start.
    pub faults: Faults,
}

impl SimOptions {
    /// `nodes` nodes with the default configuration, synchronous rounds and
    /// a perfect network.
    pub fn new(nodes: usize, seed: u64) -> Self {
        SimOptions {
            nodes,
            seed,
            membership: MembershipConfig::default(),
            phases: false,
            faults: Faults::default(),
        }
    }
}

/// One event of the log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    /// Virtual time since the start of the simulation.
    pub at: Duration,
    /// The node that emitted it.
    pub node: NodeId,
    /// What happened.
    pub event: MemberEvent,
}

#[derive(Debug)]
enum Life {
    Running,
    Paused { until: Instant },
    Crashed,
}

#[derive(Debug)]
struct SimNode {
    machine: Membership,
    life: Life,
    next_tick: Instant,
}

/// N membership machines on a virtual clock and a faulty network.
///
/// ```
/// use std::time::Duration;
/// use ringkv::sim::{MembershipSim, SimOptions};
/// use ringkv::{MemberStatus, NodeId};
///
/// let mut sim = MembershipSim::new(SimOptions::new(5, 42)).unwrap();
/// sim.run_for(Duration::from_secs(10));
/// sim.crash(NodeId(3));
/// sim.run_for(Duration::from_secs(60));
/// assert!(sim.live_nodes().iter().all(|&n| sim.status(n, NodeId(3)) == Some(MemberStatus::Down)));
/// ```
#[derive(Debug)]
pub struct MembershipSim {
    start: Instant,
    now: Instant,
    interval: Duration,
    /// How often each machine ticks: a quarter of the interval, as the
    /// FailureDetector actor does, so that phi is checked well within an
    /// interval of crossing the threshold.
    tick_every: Duration,
    fabric: Fabric,
    nodes: BTreeMap<NodeId, SimNode>,
    log: Vec<LogEntry>,
    /// Frames that did not decode (never expected: a bug if not zero).
    undecodable: u64,
    /// Frames sent, their bytes, and the largest, by message kind.
    traffic: BTreeMap<&'static str, Traffic>,
    /// Every node's membership configuration.
    config: MembershipConfig,
    /// The simulation's seed.
    seed: u64,
}

/// What the machines sent of one kind of message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Frames sent.
    pub frames: u64,
    /// Their bytes, as encoded for the wire.
    pub bytes: u64,
    /// The largest frame.
    pub max_bytes: usize,
}

impl MembershipSim {
    /// Builds the cluster of `options`. Fails with `InvalidInput` if the
    /// configuration or the faults do not validate, or if `nodes` is 0.
    pub fn new(options: SimOptions) -> Result<Self> {
        if options.nodes == 0 {
            return Err(Error::InvalidInput("a simulation needs a node".into()));
        }
        let start = Instant::now();
        let interval = options.membership.gossip_interval;
        // A link never holds more than a few frames here; the bound is
        // what the real network would have.
        let mut fabric = Fabric::new(options.seed, 4096);
        fabric.set_faults(options.faults)?;
        let mut phase_rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x5048_4153_4553);
        let ids: Vec<NodeId> = (1..=options.nodes as u64).map(NodeId).collect();
        let mut nodes = BTreeMap::new();
        let mut sink = Outbox::new();
        for &id in &ids {
            fabric.add_node(id)?;
            let machine_seed = options.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ id.0;
            let mut machine = Membership::new(
                options.membership.clone(),
                id,
                id.to_string(),
                &[],
                machine_seed,
            )?;
            for &peer in &ids {
                machine.add_peer(start, peer, peer.to_string(), &mut sink);
            }
            let phase = if options.phases {
                let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(phase_rng.random_range(0..nanos.max(1)))
            } else {
                Duration::ZERO
            };
            nodes.insert(
                id,
                SimNode {
                    machine,
                    life: Life::Running,
                    next_tick: start + phase,
                },
            );
        }
        Ok(MembershipSim {
            start,
            now: start,
            interval,
            tick_every: (interval / 4).max(Duration::from_nanos(1)),
            fabric,
            nodes,
            log: Vec::new(),
            undecodable: 0,
            traffic: BTreeMap::new(),
            config: options.membership,
            seed: options.seed,
        })
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The event log so far.
    pub fn log(&self) -> &[LogEntry] {
        &self.log
    }

    /// The log as text, one event per line (`<ms> <node> <event>`), for
    /// comparing whole histories.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        for e in &self.log {
            let _ = writeln!(text, "{} {} {:?}", e.at.as_millis(), e.node, e.event);
        }
        text
    }

    /// Nodes neither crashed nor paused.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n.life, Life::Running))
            .map(|(&id, _)| id)
            .collect()
    }

    /// What `at` believes about `of`.
    pub fn status(&self, at: NodeId, of: NodeId) -> Option<MemberStatus> {
        self.nodes.get(&at)?.machine.status(of)
    }

    /// The machine of `node`, to read its table or phi.
    pub fn machine(&self, node: NodeId) -> Option<&Membership> {
        self.nodes.get(&node).map(|n| &n.machine)
    }

    /// What the machines sent so far, by message kind (`MembershipMsg::kind`).
    pub fn traffic(&self) -> &BTreeMap<&'static str, Traffic> {
        &self.traffic
    }

    /// Forgets the traffic counted so far (to measure a steady state).
    pub fn reset_traffic(&mut self) {
        self.traffic.clear();
    }

    /// Frames that failed to decode; always 0 unless the codec is broken.
    pub fn undecodable_frames(&self) -> u64 {
        self.undecodable
    }

    /// Starts a new node `node` that knows only itself and `seed`, and
    /// joins through it as a new process does. Fails with `InvalidInput` if
    /// `node` is already in the simulation.
    pub fn add_joiner(&mut self, node: NodeId, seed: NodeId) -> Result<()> {
        if self.nodes.contains_key(&node) {
            return Err(Error::InvalidInput(format!(
                "{node} is already in the simulation"
            )));
        }
        self.fabric.add_node(node)?;
        let machine_seed = self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ node.0;
        let machine = Membership::new(
            self.config.clone(),
            node,
            node.to_string(),
            &[seed],
            machine_seed,
        )?;
        self.nodes.insert(
            node,
            SimNode {
                machine,
                life: Life::Running,
                next_tick: self.now,
            },
        );
        Ok(())
    }

    /// Crashes `node`: it leaves the network (frames to it are lost) and
    /// never runs again.
    pub fn crash(&mut self, node: NodeId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.life = Life::Crashed;
            self.fabric.remove_node(node);
        }
    }

    /// Pauses `node` for `duration`: it does not run, and frames to and
    /// from it are held until it resumes.
    pub fn pause(&mut self, node: NodeId, duration: Duration) {
        if let Some(n) = self.nodes.get_mut(&node) {
            if matches!(n.life, Life::Running) {
                n.life = Life::Paused {
                    until: self.now + duration,
                };
                self.fabric.pause(node);
            }
        }
    }

    /// Cuts every link between the two sides, both ways.
    pub fn partition(&mut self, side_a: &[NodeId], side_b: &[NodeId]) {
        self.fabric.partition(side_a, side_b);
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.fabric.heal();
    }

    /// Replaces the network's faults. Fails with `InvalidInput` if they do
    /// not validate.
    pub fn set_faults(&mut self, faults: Faults) -> Result<()> {
        self.fabric.set_faults(faults)
    }

    /// Makes `node` leave gracefully now (it keeps running and gossiping).
    pub fn leave(&mut self, node: NodeId) {
        let now = self.now;
        if let Some(n) = self.nodes.get_mut(&node) {
            let mut out = Outbox::new();
            n.machine.leave(now, &mut out);
            self.carry_out(node, out);
        }
    }

    /// Runs until `duration` of virtual time has passed.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        self.run_until(until);
    }

    /// Runs every tick, delivery and resume due at or before `until`, then
    /// sets the clock to `until`.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(at) = self.next_instant().filter(|&at| at <= until) {
            self.now = self.now.max(at);
            self.resume_due();
            self.deliver_due();
            self.tick_due();
        }
        self.now = self.now.max(until);
    }

    /// The gossip interval: one round.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn next_instant(&self) -> Option<Instant> {
        let mut next = self.fabric.next_due_any();
        for n in self.nodes.values() {
            let due = match n.life {
                Life::Running => n.next_tick,
                Life::Paused { until } => until,
                Life::Crashed => continue,
            };
            next = Some(next.map_or(due, |t| t.min(due)));
        }
        next
    }

    fn resume_due(&mut self) {
        let now = self.now;
        for (&id, n) in self.nodes.iter_mut() {
            if let Life::Paused { until } = n.life {
                if until <= now {
                    n.life = Life::Running;
                    // Its timer fires as soon as it runs again.
                    n.next_tick = now;
                    self.fabric.resume(id);
                }
            }
        }
    }

    fn deliver_due(&mut self) {
        let ids: Vec<NodeId> = self.live_nodes();
        for id in ids {
            while let Some((from, frame)) = self.fabric.pop_due(id, self.now) {
                let envelope: Envelope = match codec::decode(&frame, DEFAULT_MAX_FRAME_BYTES) {
                    Ok(envelope) => envelope,
                    Err(_) => {
                        self.undecodable += 1;
                        continue;
                    }
                };
                debug_assert_eq!(envelope.from, from);
                // Only membership machines run here, so only their gossip
                // is ever sent.
                let Message::Membership(msg) = envelope.msg else {
                    continue;
                };
                let mut out = Outbox::new();
                if let Some(n) = self.nodes.get_mut(&id) {
                    let addressed = Addressed::new(envelope.from, envelope.to, msg);
                    n.machine.step(self.now, addressed, &mut out);
                }
                self.carry_out(id, out);
            }
        }
    }

    fn tick_due(&mut self) {
        let now = self.now;
        let due: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| matches!(n.life, Life::Running) && n.next_tick <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let mut out = Outbox::new();
            if let Some(n) = self.nodes.get_mut(&id) {
                n.machine.tick(now, &mut out);
                n.next_tick += self.tick_every;
                if n.next_tick <= now {
                    n.next_tick = now + self.tick_every;
                }
            }
            self.carry_out(id, out);
        }
    }

    fn carry_out(&mut self, node: NodeId, out: Outbox<MembershipMsg, MemberEvent>) {
        let at = self.now - self.start;
        for event in out.events {
            self.log.push(LogEntry { at, node, event });
        }
        for addressed in out.messages {
            let kind = addressed.msg.kind();
            let envelope = Envelope::from(addressed);
            // A frame too large to send would be refused by a real
            // transport too; the machine treats it as lost.
            if let Ok(frame) = codec::encode_frame(&envelope, DEFAULT_MAX_FRAME_BYTES) {
                let t = self.traffic.entry(kind).or_default();
                t.frames += 1;
                t.bytes += frame.len() as u64;
                t.max_bytes = t.max_bytes.max(frame.len());
                self.fabric
                    .send(self.now, envelope.from, envelope.to, frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eventful_run(seed: u64) -> String {
        let mut options = SimOptions::new(8, seed);
        options.phases = true;
        options.faults = Faults {
            drop_rate: 0.05,
            delay: (Duration::from_millis(1), Duration::from_millis(80)),
            ..Faults::default()
        };
        let mut sim = MembershipSim::new(options).unwrap();
        sim.run_for(Duration::from_secs(20));
        sim.crash(NodeId(2));
        sim.pause(NodeId(5), Duration::from_secs(8));
        sim.run_for(Duration::from_secs(40));
        sim.partition(
            &[NodeId(1), NodeId(3)],
            &[NodeId(4), NodeId(6), NodeId(7), NodeId(8)],
        );
        sim.run_for(Duration::from_secs(60));
        sim.heal();
        sim.run_for(Duration::from_secs(60));
        assert_eq!(sim.undecodable_frames(), 0);
        sim.log_text()
    }

    #[test]
    fn same_seed_same_log_other_seed_other_log() {
        let a = eventful_run(7);
        let b = eventful_run(7);
        let c = eventful_run(8);
        assert!(a.lines().count() > 20, "too few events to compare:\n{a}");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn crash_partition_and_heal() {
        let mut options = SimOptions::new(6, 3);
        options.phases = true;
        let mut sim = MembershipSim::new(options).unwrap();
        sim.run_for(Duration::from_secs(10));
        sim.crash(NodeId(6));
        sim.run_for(Duration::from_secs(30));
        for n in sim.live_nodes() {
            assert_eq!(sim.status(n, NodeId(6)), Some(MemberStatus::Down));
        }
        let (a, b) = ([NodeId(1), NodeId(2)], [NodeId(3), NodeId(4), NodeId(5)]);
        sim.partition(&a, &b);
        sim.run_for(Duration::from_secs(60));
        for x in a {
            for y in b {
                assert_eq!(sim.status(x, y), Some(MemberStatus::Down), "{x} sees {y}");
                assert_eq!(sim.status(y, x), Some(MemberStatus::Down), "{y} sees {x}");
            }
        }
        sim.heal();
        sim.run_for(Duration::from_secs(60));
        for x in sim.live_nodes() {
            for y in sim.live_nodes() {
                assert_eq!(sim.status(x, y), Some(MemberStatus::Alive), "{x} sees {y}");
            }
            assert_eq!(sim.status(x, NodeId(6)), Some(MemberStatus::Down));
        }
    }

    #[test]
    fn a_pause_shorter_than_the_acceptable_pause_convicts_no_one() {
        let mut options = SimOptions::new(5, 9);
        options.phases = true;
        let mut sim = MembershipSim::new(options).unwrap();
        sim.run_for(Duration::from_secs(30));
        sim.pause(NodeId(2), Duration::from_millis(2500));
        sim.run_for(Duration::from_secs(30));
        let convictions: Vec<&LogEntry> = sim
            .log()
            .iter()
            .filter(|e| matches!(e.event, MemberEvent::Down { .. }))
            .collect();
        assert!(convictions.is_empty(), "{convictions:?}");
        // The paused node itself noticed its own pause.
        assert!(sim
            .log()
            .iter()
            .any(|e| e.node == NodeId(2) && matches!(e.event, MemberEvent::LocalPause { .. })));
    }

    /// The gossip bench's network for detection: 1 to 50 ms, 1% lost.
    fn bench_network() -> Faults {
        Faults {
            drop_rate: 0.01,
            delay: (Duration::from_millis(1), Duration::from_millis(50)),
            ..Faults::default()
        }
    }

    /// Verdicts (SUSPECT or DOWN) that a node gave, after `since`, about a
    /// node on its own side of a partition: one it could hear all along.
    fn same_side_verdicts(
        sim: &MembershipSim,
        since: Duration,
        sides: &[&[NodeId]],
    ) -> Vec<String> {
        let side = |n: NodeId| sides.iter().position(|s| s.contains(&n));
        sim.log()
            .iter()
            .filter(|e| e.at >= since)
            .filter_map(|e| match e.event {
                MemberEvent::Suspect { node, .. } | MemberEvent::Down { node, .. }
                    if side(node) == side(e.node) =>
                {
                    Some(format!("{} {} {:?}", e.at.as_millis(), e.node, e.event))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn healed_partitions_mark_no_node_down_from_its_own_side() {
        // Each side convicts the other while cut off; when the cut heals,
        // those verdicts reach nodes that hear the accused directly, which
        // hold them back and make the accused refute. Seeds and schedules
        // vary; the count must be zero for every one.
        for seed in 0..6u64 {
            let mut options = SimOptions::new(10, seed);
            options.phases = true;
            options.faults = bench_network();
            let mut sim = MembershipSim::new(options).unwrap();
            sim.run_for(Duration::from_secs(30));
            let cut = 1 + (seed % 4) as usize;
            let ids: Vec<NodeId> = (1..=10).map(NodeId).collect();
            let (a, b) = ids.split_at(2 + cut);
            for round in 0..3 {
                sim.partition(a, b);
                sim.run_for(Duration::from_secs(20));
                for &x in a {
                    for &y in b {
                        assert_eq!(
                            sim.status(x, y),
                            Some(MemberStatus::Down),
                            "seed {seed}: {x} sees {y}"
                        );
                    }
                }
                let healed = sim.elapsed();
                sim.heal();
                sim.run_for(Duration::from_secs(15));
                let bad = same_side_verdicts(&sim, healed, &[a, b]);
                assert!(bad.is_empty(), "seed {seed}, heal {round}: {bad:#?}");
                for x in sim.live_nodes() {
                    for y in sim.live_nodes() {
                        assert_eq!(
                            sim.status(x, y),
                            Some(MemberStatus::Alive),
                            "seed {seed}: {x} sees {y}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_crash_is_down_everywhere_within_five_seconds_and_messages_stay_small() {
        // The defaults, the bench's network (1 to 50 ms, 1% loss), 20 nodes.
        for seed in 0..5u64 {
            let mut options = SimOptions::new(20, seed);
            options.phases = true;
            options.faults = bench_network();
            let mut sim = MembershipSim::new(options).unwrap();
            sim.run_for(Duration::from_millis(30_000 + seed * 137));
            let victim = NodeId(1 + seed * 3);
            sim.crash(victim);
            let crashed = sim.elapsed();
            sim.run_for(Duration::from_secs(10));
            let mut last = Duration::ZERO;
            for n in sim.live_nodes() {
                let at = sim
                    .log()
                    .iter()
                    .find(|e| {
                        e.node == n
                            && e.at >= crashed
                            && matches!(e.event, MemberEvent::Down { node, .. } if node == victim)
                    })
                    .map(|e| e.at - crashed);
                let at = at.unwrap_or_else(|| panic!("seed {seed}: {n} never saw {victim} down"));
                last = last.max(at);
            }
            assert!(
                last <= Duration::from_secs(5),
                "seed {seed}: DOWN everywhere after {last:?}"
            );
            assert!(
                last >= Duration::from_millis(1500),
                "seed {seed}: too fast to be phi: {last:?}"
            );
        }
        // A thousand nodes: no message is larger than 4 KB, and the
        // steady state's gossip carries no table.
        let mut sim = MembershipSim::new(SimOptions::new(1000, 1)).unwrap();
        sim.run_for(Duration::from_secs(5));
        let largest = sim.traffic().values().map(|t| t.max_bytes).max().unwrap();
        assert!(largest <= 4096, "{:?}", sim.traffic());
        assert!(sim.traffic().contains_key("ping") && sim.traffic().contains_key("ack"));
    }
}
