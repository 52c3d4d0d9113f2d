//! The in-process network: many nodes in one process, with injected faults.
//!
//! The shell's `cluster(n)`, the integration tests and the deterministic
//! simulator run many nodes in one process. They reach each other through
//! this network instead of TCP, but the bytes are the same: `send` encodes
//! the envelope with [`codec::encode_frame`], the network carries that frame,
//! and delivery decodes it with [`codec::decode`], so the codec and the frame
//! limit are always in the path.
//!
//! # Two layers
//!
//! Following "state machines inside, actors outside":
//!
//! - [`Fabric`] is the network itself as a plain state machine: no tokio, no
//!   clock, no locks. Callers pass the current [`Instant`] in; every random
//!   choice comes from one ChaCha8 generator seeded from
//!   [`MemoryNetConfig::seed`]; every decision iterates ordered maps and
//!   breaks ties on a send sequence number. The same seed and the same calls
//!   give the same deliveries, so the simulator can drive it with virtual
//!   time and replay a history byte for byte.
//! - [`MemoryNetwork`] wraps a `Fabric` in a mutex for real tokio nodes. Each
//!   [`MemoryEndpoint`] implements [`Transport`], and one delivery task per
//!   endpoint sleeps until that node's next frame is due, takes it out of the
//!   fabric, decodes it and pushes it into the node's [`Inbox`].
//!
//! # What a frame goes through
//!
//! For each directed link (sender, recipient), at `send`:
//!
//! 1. **Bound.** At most `net.send_queue_frames` undelivered frames per link.
//!    One more is refused ([`Fate::Dropped`] with [`DropCause::LinkFull`],
//!    which an endpoint reports as [`Error::QueueFull`]): the newest frame is
//!    the one refused, as on TCP.
//! 2. **Partition.** A frame across a cut is lost.
//! 3. **Drop.** With probability `drop_rate` the frame is lost.
//! 4. **Delay.** A delay is drawn uniformly from the `delay` range. The
//!    frame is due at `max(now + delay, due time of the previous frame on
//!    the link)`: a link is FIFO even when delays vary, like a TCP stream
//!    whose segments are late but never out of order.
//! 5. **Reorder.** With probability `reorder_rate` the frame is exempt from
//!    that FIFO rule and gets an extra random delay of up to the largest
//!    delay (or up to [`REORDER_WINDOW`] when the delay range is zero), so
//!    later frames can pass it. This is the only fault that breaks order.
//! 6. **Duplicate.** With probability `duplicate_rate` a second copy is
//!    scheduled too, going through steps 4 and 5 on its own, if the link
//!    bound leaves room for it.
//!
//! Partitions are enforced over the whole flight of a frame, not only at
//! `send`: starting a partition loses every frame already in flight across
//! it, as a cut cable loses what is on the wire. Healing does not bring
//! those frames back.
//!
//! A paused node models a process stopped with SIGSTOP whose sockets keep
//! buffering: frames to it and frames it sends are held, not dropped, and
//! are delivered in order once it resumes. Held frames still count against
//! the link bound, so a sender to a paused node eventually sees `QueueFull`.
//!
//! [`FaultCounters`] count what each fault did, for tests and experiments.
//!
//! # Delivery and back-pressure
//!
//! A delivery task first waits for room in its node's bounded inbox and only
//! then takes a frame out of the fabric. So a slow consumer delays only its
//! own deliveries; its backlog stays in the fabric, bounded per link, and
//! its senders feel that as `QueueFull`, which is what TCP flow control
//! gives on the real network. The fabric lock is never held while handing an
//! envelope to a node. A frame that does not decode, or whose envelope names
//! another sender or recipient than the link it came over, is counted in
//! [`NetStats::bad_frames`] and dropped.
//!
//! # What it does not do
//!
//! - No bandwidth model: a frame's size does not affect its delay.
//! - No crash model: a paused node keeps its state, and a shut-down
//!   endpoint is simply gone (frames in flight to it are lost). Restarting a
//!   node is the caller's job: shut the endpoint down, make a new one.
//! - Losses inside the network are not visible in an endpoint's
//!   [`NetStats`] (a real endpoint cannot see them either); they are in the
//!   network-wide [`FaultCounters`].
//! - Deliveries of a tokio [`MemoryNetwork`] depend on real task scheduling,
//!   so only the [`Fabric`] is deterministic; the simulator drives that
//!   directly.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::codec;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::message::Envelope;
use crate::net::MemoryNetConfig;
use crate::net::{Inbox, NetStats, StatCounters, Transport};

/// The extra delay range of a reordered frame when the delay range is zero:
/// up to 5 ms. Long enough that frames sent in a burst overtake each other,
/// short enough not to look like a partition to a failure detector.
pub const REORDER_WINDOW: Duration = Duration::from_millis(5);

/// The largest delay [`Faults`] accept: one hour. Far longer than any test
/// or experiment, and it keeps `Instant` arithmetic far from overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// The faults a network injects into every frame it carries.
///
/// The default is a perfect network: nothing lost, duplicated, reordered or
/// delayed.
///
/// ```
/// use std::time::Duration;
/// use ringkv::Faults;
/// let lossy = Faults {
///     drop_rate: 0.1,
///     delay: (Duration::from_millis(1), Duration::from_millis(20)),
///     ..Faults::default()
/// };
/// assert!(lossy.validate().is_ok());
/// assert!(Faults { drop_rate: 1.5, ..Faults::default() }.validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability, in `[0, 1]`, that a frame is lost.
    pub drop_rate: f64,
    /// Probability, in `[0, 1]`, that a frame is delivered twice.
    pub duplicate_rate: f64,
    /// Probability, in `[0, 1]`, that a frame may be overtaken by frames
    /// sent after it on the same link.
    pub reorder_rate: f64,
    /// Each frame's delay is drawn uniformly from `min..=max`, both at most
    /// [`MAX_DELAY`].
    pub delay: (Duration, Duration),
}

impl Faults {
    /// Checks that the rates are probabilities and the delay range is
    /// ordered and at most [`MAX_DELAY`].
    pub fn validate(&self) -> Result<()> {
        for (name, rate) in [
            ("drop_rate", self.drop_rate),
            ("duplicate_rate", self.duplicate_rate),
            ("reorder_rate", self.reorder_rate),
        ] {
            // `contains` is false for NaN, so NaN is refused too.
            if !(0.0..=1.0).contains(&rate) {
                return Err(Error::InvalidInput(format!(
                    "{name} must be within [0, 1], got {rate}"
                )));
            }
        }
        let (min, max) = self.delay;
        if min > max {
            return Err(Error::InvalidInput(format!(
                "delay range is reversed: {min:?} > {max:?}"
            )));
        }
        if max > MAX_DELAY {
            return Err(Error::InvalidInput(format!(
                "delay of {max:?} exceeds the maximum of {MAX_DELAY:?}"
            )));
        }
        Ok(())
    }
}

/// Why a frame given to [`Fabric::send`] will not be delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropCause {
    /// The link from sender to recipient is cut by a partition.
    Partition,
    /// The drop-rate fault chose this frame.
    DropRate,
    /// The link already holds its bound of undelivered frames; the frame
    /// was refused (an endpoint reports [`Error::QueueFull`]).
    LinkFull,
    /// The named node (sender or recipient) is not on the network.
    UnknownNode(NodeId),
}

/// What [`Fabric::send`] did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// The frame is in flight: `copies` is 1, or 2 when it was duplicated.
    Scheduled {
        /// How many copies will be delivered (barring a later partition or
        /// the recipient's removal).
        copies: u8,
    },
    /// The frame will never be delivered.
    Dropped(DropCause),
}

/// What the faults of a [`Fabric`] have done since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    /// Frames accepted by `send` (not refused), whether later delivered or
    /// lost.
    pub sent: u64,
    /// Copies handed out by `pop_due`.
    pub delivered: u64,
    /// Frames lost to partitions: sent across a cut, or in flight when the
    /// cut was made.
    pub dropped_by_partition: u64,
    /// Frames lost to the drop-rate fault.
    pub dropped_by_drop_rate: u64,
    /// Copies lost because their recipient was removed from the network.
    pub dropped_by_removal: u64,
    /// Frames refused because their link was full.
    pub refused_link_full: u64,
    /// Frames refused because the sender or recipient was not on the
    /// network.
    pub refused_unknown_node: u64,
    /// Frames that got a second copy.
    pub duplicated: u64,
    /// Copies exempted from per-link FIFO order.
    pub reordered: u64,
    /// Copies scheduled for later than the instant they were sent.
    pub delayed: u64,
}

/// One copy of a frame on its way, ordered by due time, then by send order.
#[derive(Debug)]
struct InFlight {
    due: Instant,
    seq: u64,
    frame: Bytes,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// The frames in flight on one directed link.
#[derive(Debug, Default)]
struct Link {
    /// Min-heap by (due, seq).
    in_flight: BinaryHeap<Reverse<InFlight>>,
    /// Due time of the last copy scheduled under the FIFO rule; the next
    /// one may not be due earlier.
    last_fifo_due: Option<Instant>,
}

impl Link {
    fn head_due(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(f)| f.due)
    }
}

/// Key of a directed link: recipient first, so that every link into one
/// node is a contiguous range of the map.
type LinkKey = (NodeId, NodeId);

fn link_key(from: NodeId, to: NodeId) -> LinkKey {
    (to, from)
}

fn links_into(node: NodeId) -> std::ops::RangeInclusive<LinkKey> {
    (node, NodeId(0))..=(node, NodeId(u64::MAX))
}

/// The in-process network as a deterministic state machine.
///
/// It holds every frame in flight between the nodes added to it, decides
/// each frame's fate from the current [`Faults`], partitions and pauses,
/// and hands frames out when they are due. Time is whatever `Instant` the
/// caller passes; callers must pass non-decreasing instants.
///
/// ```
/// use std::time::{Duration, Instant};
/// use bytes::Bytes;
/// use ringkv::NodeId;
/// use ringkv::net::memory::{Fabric, Fate};
///
/// let (a, b) = (NodeId(1), NodeId(2));
/// let mut fabric = Fabric::new(7, 16);
/// fabric.add_node(a).unwrap();
/// fabric.add_node(b).unwrap();
/// let t0 = Instant::now();
/// assert_eq!(fabric.send(t0, a, b, Bytes::from_static(b"hi")), Fate::Scheduled { copies: 1 });
/// assert_eq!(fabric.pop_due(b, t0), Some((a, Bytes::from_static(b"hi"))));
///
/// fabric.partition(&[a], &[b]);
/// assert!(!matches!(fabric.send(t0, b, a, Bytes::new()), Fate::Scheduled { .. }));
/// ```
pub struct Fabric {
    rng: ChaCha8Rng,
    link_capacity: usize,
    faults: Faults,
    nodes: BTreeSet<NodeId>,
    paused: BTreeSet<NodeId>,
    /// Cut directed links, as (from, to).
    cuts: BTreeSet<(NodeId, NodeId)>,
    links: BTreeMap<LinkKey, Link>,
    next_seq: u64,
    counters: FaultCounters,
}

// Written out so that logging a network shows its shape, not every frame
// in flight and the generator's state.
impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let in_flight: usize = self.links.values().map(|l| l.in_flight.len()).sum();
        f.debug_struct("Fabric")
            .field("nodes", &self.nodes)
            .field("paused", &self.paused)
            .field("cuts", &self.cuts)
            .field("faults", &self.faults)
            .field("link_capacity", &self.link_capacity)
            .field("in_flight", &in_flight)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Fabric {
    /// A perfect network with no nodes, whose random choices all come from
    /// `seed`, and which holds at most `link_capacity` undelivered frames
    /// per directed link (with 0, every send is refused).
    pub fn new(seed: u64, link_capacity: usize) -> Self {
        Fabric {
            rng: ChaCha8Rng::seed_from_u64(seed),
            link_capacity,
            faults: Faults::default(),
            nodes: BTreeSet::new(),
            paused: BTreeSet::new(),
            cuts: BTreeSet::new(),
            links: BTreeMap::new(),
            next_seq: 0,
            counters: FaultCounters::default(),
        }
    }

    /// The most undelivered frames one directed link holds.
    pub fn link_capacity(&self) -> usize {
        self.link_capacity
    }

    /// Puts `node` on the network. Fails with `InvalidInput` if it is
    /// already there.
    pub fn add_node(&mut self, node: NodeId) -> Result<()> {
        if !self.nodes.insert(node) {
            return Err(Error::InvalidInput(format!(
                "node {node} is already on the network"
            )));
        }
        Ok(())
    }

    /// Takes `node` off the network. Frames in flight to it are lost (and
    /// returned as a count); frames it sent stay in flight. Partitions and
    /// pauses naming it are kept, so a node that comes back under the same
    /// id is still cut off or paused.
    pub fn remove_node(&mut self, node: NodeId) -> usize {
        if !self.nodes.remove(&node) {
            return 0;
        }
        let keys: Vec<LinkKey> = self
            .links
            .range(links_into(node))
            .map(|(k, _)| *k)
            .collect();
        let mut lost = 0;
        for key in keys {
            if let Some(link) = self.links.remove(&key) {
                lost += link.in_flight.len();
            }
        }
        self.counters.dropped_by_removal += lost as u64;
        lost
    }

    /// Whether `node` is on the network.
    pub fn contains_node(&self, node: NodeId) -> bool {
        self.nodes.contains(&node)
    }

    /// Offers `frame` from `from` to `to` at time `now` and says what the
    /// network does with it. See the module documentation for the order in
    /// which the bound and the faults apply.
    pub fn send(&mut self, now: Instant, from: NodeId, to: NodeId, frame: Bytes) -> Fate {
        for node in [from, to] {
            if !self.nodes.contains(&node) {
                self.counters.refused_unknown_node += 1;
                return Fate::Dropped(DropCause::UnknownNode(node));
            }
        }
        let queued = self.in_flight(from, to);
        if queued >= self.link_capacity {
            self.counters.refused_link_full += 1;
            return Fate::Dropped(DropCause::LinkFull);
        }
        self.counters.sent += 1;
        if self.cuts.contains(&(from, to)) {
            self.counters.dropped_by_partition += 1;
            return Fate::Dropped(DropCause::Partition);
        }
        if self.roll(self.faults.drop_rate) {
            self.counters.dropped_by_drop_rate += 1;
            return Fate::Dropped(DropCause::DropRate);
        }
        self.schedule(now, from, to, frame.clone());
        let duplicate = self.roll(self.faults.duplicate_rate);
        if duplicate && queued + 1 < self.link_capacity {
            self.counters.duplicated += 1;
            self.schedule(now, from, to, frame);
            return Fate::Scheduled { copies: 2 };
        }
        Fate::Scheduled { copies: 1 }
    }

    /// Undelivered frames on the link from `from` to `to`, including frames
    /// held by a pause.
    pub fn in_flight(&self, from: NodeId, to: NodeId) -> usize {
        self.links
            .get(&link_key(from, to))
            .map_or(0, |link| link.in_flight.len())
    }

    /// When the next frame for `node` is due, ignoring frames held by a
    /// pause. `None` if nothing can be delivered to it until the network
    /// changes (a send, a resume).
    pub fn next_due(&self, node: NodeId) -> Option<Instant> {
        if self.paused.contains(&node) {
            return None;
        }
        self.links
            .range(links_into(node))
            .filter(|((_, from), _)| !self.paused.contains(from))
            .filter_map(|(_, link)| link.head_due())
            .min()
    }

    /// When the next frame for any node is due, ignoring held frames. A
    /// simulator advances its clock to this instant, then pops every node.
    pub fn next_due_any(&self) -> Option<Instant> {
        self.links
            .iter()
            .filter(|((to, from), _)| !self.paused.contains(to) && !self.paused.contains(from))
            .filter_map(|(_, link)| link.head_due())
            .min()
    }

    /// Takes the next frame for `node` that is due at `now`, with its
    /// sender. Across links, frames come out by due time, then send order;
    /// call repeatedly until `None` to drain everything due.
    pub fn pop_due(&mut self, node: NodeId, now: Instant) -> Option<(NodeId, Bytes)> {
        if self.paused.contains(&node) {
            return None;
        }
        let (key, _) = self
            .links
            .range(links_into(node))
            .filter(|((_, from), _)| !self.paused.contains(from))
            .filter_map(|(key, link)| link.in_flight.peek().map(|Reverse(f)| (*key, f)))
            .filter(|(_, f)| f.due <= now)
            .min_by(|(_, a), (_, b)| a.cmp(b))?;
        let link = self.links.get_mut(&key)?;
        let Reverse(copy) = link.in_flight.pop()?;
        if link.in_flight.is_empty() {
            // Everything scheduled on it is now in the past, so its FIFO
            // floor no longer constrains anything.
            self.links.remove(&key);
        }
        self.counters.delivered += 1;
        let (_, from) = key;
        Some((from, copy.frame))
    }

    /// Cuts every link between a node of `side_a` and a node of `side_b`,
    /// in both directions. Frames in flight on those links are lost.
    pub fn partition(&mut self, side_a: &[NodeId], side_b: &[NodeId]) {
        self.partition_one_way(side_a, side_b);
        self.partition_one_way(side_b, side_a);
    }

    /// Cuts every link from a node of `from_side` to a node of `to_side`;
    /// the reverse direction keeps working. Frames in flight on the cut
    /// links are lost. A node is never cut from itself.
    pub fn partition_one_way(&mut self, from_side: &[NodeId], to_side: &[NodeId]) {
        for &from in from_side {
            for &to in to_side {
                if from == to {
                    continue;
                }
                self.cuts.insert((from, to));
                if let Some(link) = self.links.remove(&link_key(from, to)) {
                    self.counters.dropped_by_partition += link.in_flight.len() as u64;
                }
            }
        }
    }

    /// Whether the link from `from` to `to` is cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cuts.contains(&(from, to))
    }

    /// Removes every partition. Frames lost to them stay lost.
    pub fn heal(&mut self) {
        self.cuts.clear();
    }

    /// Pauses `node`: frames to it and from it are held until it resumes.
    pub fn pause(&mut self, node: NodeId) {
        self.paused.insert(node);
    }

    /// Resumes `node`: its held frames become deliverable, in order.
    pub fn resume(&mut self, node: NodeId) {
        self.paused.remove(&node);
    }

    /// Whether `node` is paused.
    pub fn is_paused(&self, node: NodeId) -> bool {
        self.paused.contains(&node)
    }

    /// Replaces the faults applied to frames sent from now on. Frames
    /// already in flight keep their fate. Fails with `InvalidInput` (and
    /// changes nothing) if `faults` does not validate.
    pub fn set_faults(&mut self, faults: Faults) -> Result<()> {
        faults.validate()?;
        self.faults = faults;
        Ok(())
    }

    /// The faults currently applied.
    pub fn faults(&self) -> Faults {
        self.faults
    }

    /// Makes the network perfect again: no faults, no partitions, no paused
    /// node. Frames in flight are kept, and held frames are released.
    pub fn clear_faults(&mut self) {
        self.faults = Faults::default();
        self.heal();
        self.paused.clear();
    }

    /// What the faults have done so far.
    pub fn counters(&self) -> FaultCounters {
        self.counters
    }

    /// Schedules one copy of a frame that has survived the loss faults.
    fn schedule(&mut self, now: Instant, from: NodeId, to: NodeId, frame: Bytes) {
        let delay = self.sample_delay();
        let reorder = self.roll(self.faults.reorder_rate);
        let extra = if reorder {
            let window = match self.faults.delay.1 {
                max if max.is_zero() => REORDER_WINDOW,
                max => max,
            };
            self.sample_between(Duration::ZERO, window)
        } else {
            Duration::ZERO
        };
        let link = self.links.entry(link_key(from, to)).or_default();
        let due = if reorder {
            self.counters.reordered += 1;
            later(now, delay.saturating_add(extra))
        } else {
            let earliest = later(now, delay);
            let due = link
                .last_fifo_due
                .map_or(earliest, |floor| floor.max(earliest));
            link.last_fifo_due = Some(due);
            due
        };
        if due > now {
            self.counters.delayed += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        link.in_flight.push(Reverse(InFlight { due, seq, frame }));
    }

    /// True with probability `p`. Draws from the generator only when the
    /// outcome is uncertain, so a perfect network consumes no randomness.
    fn roll(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            false
        } else if p >= 1.0 {
            true
        } else {
            self.rng.random_bool(p)
        }
    }

    fn sample_delay(&mut self) -> Duration {
        let (min, max) = self.faults.delay;
        self.sample_between(min, max)
    }

    /// Uniform in `min..=max` at nanosecond resolution; `min` when the range
    /// is empty or a single point.
    fn sample_between(&mut self, min: Duration, max: Duration) -> Duration {
        if max <= min {
            return min;
        }
        let span = u64::try_from((max - min).as_nanos()).unwrap_or(u64::MAX);
        min + Duration::from_nanos(self.rng.random_range(0..=span))
    }
}

/// `now + delay`. Delays are at most [`MAX_DELAY`], so the sum cannot
/// overflow for any `Instant` a running process sees; should it anyway, the
/// frame is due at once rather than the network panicking.
fn later(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay).unwrap_or(now)
}

/// The clock of the tokio-facing network. Tokio's clock is the real clock,
/// except under `tokio::time::pause`, where following it keeps delays in
/// step with the test's virtual time.
fn clock_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// An in-process network of tokio nodes, with fault injection.
///
/// A cheap handle: clones share one network. Create one endpoint per node
/// with [`MemoryNetwork::endpoint`]; control faults through the other
/// methods, which take effect at once for every endpoint.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> ringkv::Result<()> {
/// use ringkv::{Envelope, MemoryNetConfig, MemoryNetwork, Message, NodeId, Transport};
///
/// let network = MemoryNetwork::new(MemoryNetConfig::default())?;
/// let (a, _a_inbox) = network.endpoint(NodeId(1))?;
/// let (_b, mut b_inbox) = network.endpoint(NodeId(2))?;
/// let ping = Envelope::new(NodeId(1), NodeId(2), Message::Ping { seq: 1, payload: vec![] });
/// a.send(ping.clone())?;
/// assert_eq!(b_inbox.recv().await, Some(ping));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct MemoryNetwork {
    shared: Arc<NetworkShared>,
}

#[derive(Debug)]
struct NetworkShared {
    config: MemoryNetConfig,
    state: Mutex<NetworkState>,
}

#[derive(Debug)]
struct NetworkState {
    fabric: Fabric,
    /// Wakes the delivery task of each live endpoint.
    wakers: BTreeMap<NodeId, Arc<Notify>>,
}

impl NetworkShared {
    /// The network state. No code of a node ever runs under this lock and
    /// the fabric does not panic on any input, so a poisoned lock can only
    /// come from a panic between two consistent states; the state is used
    /// as it is.
    fn lock(&self) -> MutexGuard<'_, NetworkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MemoryNetwork {
    /// A perfect network with no endpoints. Fails with `InvalidInput` if
    /// `config.net` does not validate.
    pub fn new(config: MemoryNetConfig) -> Result<Self> {
        config.net.validate()?;
        let fabric = Fabric::new(config.seed, config.net.send_queue_frames);
        Ok(MemoryNetwork {
            shared: Arc::new(NetworkShared {
                config,
                state: Mutex::new(NetworkState {
                    fabric,
                    wakers: BTreeMap::new(),
                }),
            }),
        })
    }

    /// Puts `node` on the network and returns its endpoint and inbox. Starts
    /// the node's delivery task, so it must be called inside a tokio
    /// runtime. Fails with `InvalidInput` if `node` already has a live
    /// endpoint (after [`Transport::shutdown`] the id may be reused) or
    /// outside a runtime.
    pub fn endpoint(&self, node: NodeId) -> Result<(MemoryEndpoint, Inbox)> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidInput(
                "MemoryNetwork::endpoint must be called inside a tokio runtime".into(),
            )
        })?;
        let waker = Arc::new(Notify::new());
        {
            let mut state = self.shared.lock();
            state.fabric.add_node(node)?;
            state.wakers.insert(node, Arc::clone(&waker));
        }
        let (inbox_tx, inbox_rx) = mpsc::channel(self.shared.config.net.inbox_frames);
        let (done_tx, done_rx) = watch::channel(());
        let endpoint = Arc::new(EndpointShared {
            stats: StatCounters::default(),
            cancel: CancellationToken::new(),
            done: done_rx,
        });
        let delivery = Delivery {
            node,
            network: Arc::clone(&self.shared),
            endpoint: Arc::clone(&endpoint),
            waker,
            inbox: inbox_tx,
            _done: done_tx,
        };
        runtime.spawn(delivery.run());
        Ok((
            MemoryEndpoint {
                node,
                network: self.clone(),
                endpoint,
            },
            inbox_rx,
        ))
    }

    /// Cuts every link between `side_a` and `side_b`, both ways; frames in
    /// flight on them are lost. See [`Fabric::partition`].
    pub fn partition(&self, side_a: &[NodeId], side_b: &[NodeId]) {
        self.control(|fabric| fabric.partition(side_a, side_b));
    }

    /// Cuts every link from `from_side` to `to_side` only. See
    /// [`Fabric::partition_one_way`].
    pub fn partition_one_way(&self, from_side: &[NodeId], to_side: &[NodeId]) {
        self.control(|fabric| fabric.partition_one_way(from_side, to_side));
    }

    /// Removes every partition.
    pub fn heal(&self) {
        self.control(Fabric::heal);
    }

    /// Holds every frame to and from `node` until [`Self::resume`].
    pub fn pause(&self, node: NodeId) {
        self.control(|fabric| fabric.pause(node));
    }

    /// Releases the frames held for and from `node`, in order.
    pub fn resume(&self, node: NodeId) {
        self.control(|fabric| fabric.resume(node));
    }

    /// Sets the faults for frames sent from now on. Fails with
    /// `InvalidInput` if they do not validate.
    pub fn set_faults(&self, faults: Faults) -> Result<()> {
        self.control(|fabric| fabric.set_faults(faults))
    }

    /// Makes the network perfect again: no faults, no partitions, no
    /// pauses.
    pub fn clear_faults(&self) {
        self.control(Fabric::clear_faults);
    }

    /// The faults currently applied.
    pub fn faults(&self) -> Faults {
        self.shared.lock().fabric.faults()
    }

    /// What the faults have done so far, network-wide.
    pub fn fault_counters(&self) -> FaultCounters {
        self.shared.lock().fabric.counters()
    }

    /// Undelivered frames from `from` to `to`, including held ones.
    pub fn in_flight(&self, from: NodeId, to: NodeId) -> usize {
        self.shared.lock().fabric.in_flight(from, to)
    }

    /// Applies a change to the fabric, then wakes every delivery task, since
    /// a resume or a heal may have made frames deliverable and a partition
    /// may have removed the frame a task was waiting for.
    fn control<T>(&self, change: impl FnOnce(&mut Fabric) -> T) -> T {
        let (result, wakers) = {
            let mut state = self.shared.lock();
            let result = change(&mut state.fabric);
            let wakers: Vec<Arc<Notify>> = state.wakers.values().cloned().collect();
            (result, wakers)
        };
        for waker in wakers {
            waker.notify_one();
        }
        result
    }
}

/// One node's endpoint on a [`MemoryNetwork`].
///
/// Cloning gives another handle to the same endpoint.
#[derive(Clone, Debug)]
pub struct MemoryEndpoint {
    node: NodeId,
    network: MemoryNetwork,
    endpoint: Arc<EndpointShared>,
}

/// State shared by an endpoint's handles and its delivery task.
#[derive(Debug)]
struct EndpointShared {
    stats: StatCounters,
    /// Cancelled (under the network lock) when the endpoint shuts down.
    cancel: CancellationToken,
    /// Closes when the delivery task has ended.
    done: watch::Receiver<()>,
}

impl MemoryEndpoint {
    /// The network this endpoint belongs to.
    pub fn network(&self) -> &MemoryNetwork {
        &self.network
    }
}

impl Transport for MemoryEndpoint {
    fn local_id(&self) -> NodeId {
        self.node
    }

    fn send(&self, envelope: Envelope) -> Result<()> {
        if self.endpoint.cancel.is_cancelled() {
            return Err(Error::Shutdown);
        }
        let shared = &self.network.shared;
        let frame = codec::encode_frame(&envelope, shared.config.net.max_frame_bytes)?;
        let size = frame.len() as u64;
        let to = envelope.to;
        let (fate, waker, capacity) = {
            let mut state = shared.lock();
            // Shutdown cancels under this lock, so after this check the
            // endpoint is still on the network for the whole send.
            if self.endpoint.cancel.is_cancelled() {
                return Err(Error::Shutdown);
            }
            let fate = state.fabric.send(clock_now(), self.node, to, frame);
            (
                fate,
                state.wakers.get(&to).cloned(),
                state.fabric.link_capacity(),
            )
        };
        let stats = &self.endpoint.stats;
        match fate {
            Fate::Scheduled { .. } => {
                if let Some(waker) = waker {
                    waker.notify_one();
                }
            }
            // Lost inside the network: the send itself succeeded, as a
            // write to a socket whose cable is cut does.
            Fate::Dropped(DropCause::Partition | DropCause::DropRate) => {}
            Fate::Dropped(DropCause::LinkFull) => {
                StatCounters::add(&stats.refused_queue_full, 1);
                return Err(Error::QueueFull { peer: to, capacity });
            }
            Fate::Dropped(DropCause::UnknownNode(node)) if node == self.node => {
                return Err(Error::Shutdown);
            }
            Fate::Dropped(DropCause::UnknownNode(_)) => return Err(Error::UnknownPeer(to)),
        }
        StatCounters::add(&stats.frames_sent, 1);
        StatCounters::add(&stats.bytes_sent, size);
        Ok(())
    }

    fn learn_peer(&self, _node: NodeId, _addr: &str) -> Result<()> {
        // Every endpoint of the network is reachable by id alone.
        Ok(())
    }

    fn stats(&self) -> NetStats {
        self.endpoint.stats.snapshot()
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        {
            let mut state = self.network.shared.lock();
            if !self.endpoint.cancel.is_cancelled() {
                self.endpoint.cancel.cancel();
                state.fabric.remove_node(self.node);
                state.wakers.remove(&self.node);
            }
        }
        let mut done = self.endpoint.done.clone();
        Box::pin(async move {
            // `changed` fails once the delivery task has dropped the sender.
            while done.changed().await.is_ok() {}
        })
    }
}

/// The task that moves one node's due frames from the fabric to its inbox.
struct Delivery {
    node: NodeId,
    network: Arc<NetworkShared>,
    endpoint: Arc<EndpointShared>,
    waker: Arc<Notify>,
    inbox: mpsc::Sender<Envelope>,
    /// Dropped when the task ends, which is what shutdown waits for.
    _done: watch::Sender<()>,
}

/// What the delivery task found in the fabric.
enum Found {
    Frame(NodeId, Bytes),
    NextDue(Option<Instant>),
    Stopped,
}

impl Delivery {
    async fn run(self) {
        let cancel = &self.endpoint.cancel;
        loop {
            // Room in the inbox first, so that a slow consumer's backlog
            // stays in the fabric, where it is bounded per link.
            let permit = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                permit = self.inbox.reserve() => match permit {
                    Ok(permit) => permit,
                    // The node dropped its inbox: nobody will read again.
                    Err(_) => return,
                },
            };
            let envelope = loop {
                match self.take_due() {
                    Found::Stopped => return,
                    Found::Frame(from, frame) => {
                        if let Some(envelope) = self.decode(from, &frame) {
                            break envelope;
                        }
                    }
                    Found::NextDue(due) => {
                        let sleep = async {
                            match due {
                                Some(due) => {
                                    tokio::time::sleep_until(tokio::time::Instant::from_std(due))
                                        .await
                                }
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            biased;
                            () = cancel.cancelled() => return,
                            () = self.waker.notified() => {}
                            () = sleep => {}
                        }
                    }
                }
            };
            permit.send(envelope);
        }
    }

    fn take_due(&self) -> Found {
        let mut state = self.network.lock();
        // Checked under the lock: once shutdown has cancelled, this task
        // never takes another frame, even if the id is reused at once.
        if self.endpoint.cancel.is_cancelled() {
            return Found::Stopped;
        }
        match state.fabric.pop_due(self.node, clock_now()) {
            Some((from, frame)) => Found::Frame(from, frame),
            None => Found::NextDue(state.fabric.next_due(self.node)),
        }
    }

    /// Decodes a delivered frame, counting it; `None` for a bad frame.
    fn decode(&self, from: NodeId, frame: &Bytes) -> Option<Envelope> {
        let stats = &self.endpoint.stats;
        let max = self.network.config.net.max_frame_bytes;
        match codec::decode::<Envelope>(frame, max) {
            Ok(envelope) if envelope.from == from && envelope.to == self.node => {
                StatCounters::add(&stats.frames_received, 1);
                StatCounters::add(&stats.bytes_received, frame.len() as u64);
                Some(envelope)
            }
            Ok(envelope) => {
                tracing::warn!(
                    node = %self.node,
                    link_from = %from,
                    claimed_from = %envelope.from,
                    claimed_to = %envelope.to,
                    "dropping an envelope whose addresses do not match its link"
                );
                StatCounters::add(&stats.bad_frames, 1);
                None
            }
            Err(error) => {
                tracing::warn!(node = %self.node, %from, %error, "dropping an undecodable frame");
                StatCounters::add(&stats.bad_frames, 1);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fabric(seed: u64, capacity: usize) -> Fabric {
        let mut fabric = Fabric::new(seed, capacity);
        for node in [A, B, C] {
            fabric.add_node(node).unwrap();
        }
        fabric
    }

    fn frame(n: u32) -> Bytes {
        Bytes::copy_from_slice(&n.to_be_bytes())
    }

    fn number(frame: &Bytes) -> u32 {
        u32::from_be_bytes(frame[..].try_into().unwrap())
    }

    /// Pops everything due for `node` at `now`, as (sender, frame number).
    fn drain(fabric: &mut Fabric, node: NodeId, now: Instant) -> Vec<(NodeId, u32)> {
        std::iter::from_fn(|| fabric.pop_due(node, now))
            .map(|(from, f)| (from, number(&f)))
            .collect()
    }

    /// Delivers everything in flight to `node` by stepping through due
    /// times, as a simulator would.
    fn deliver_all(fabric: &mut Fabric, node: NodeId) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(due) = fabric.next_due(node) {
            out.extend(drain(fabric, node, due).into_iter().map(|(_, n)| n));
        }
        out
    }

    fn faults(drop: f64, duplicate: f64, reorder: f64, delay: (u64, u64)) -> Faults {
        Faults {
            drop_rate: drop,
            duplicate_rate: duplicate,
            reorder_rate: reorder,
            delay: (ms(delay.0), ms(delay.1)),
        }
    }

    fn inversions(order: &[u32]) -> usize {
        order.windows(2).filter(|w| w[0] > w[1]).count()
    }

    #[test]
    fn perfect_network_delivers_at_once_and_in_order() {
        let mut f = fabric(1, 100);
        let t0 = Instant::now();
        for n in 0..10 {
            assert_eq!(f.send(t0, A, B, frame(n)), Fate::Scheduled { copies: 1 });
        }
        assert_eq!(f.next_due(B), Some(t0));
        let got = drain(&mut f, B, t0);
        assert_eq!(got, (0..10).map(|n| (A, n)).collect::<Vec<_>>());
        assert_eq!(f.next_due(B), None);
        assert_eq!(f.counters().delivered, 10);
        assert_eq!(f.counters().delayed, 0);
    }

    #[test]
    fn delay_keeps_fifo_per_link() {
        let mut f = fabric(2, 10_000);
        f.set_faults(faults(0.0, 0.0, 0.0, (1, 50))).unwrap();
        let t0 = Instant::now();
        for n in 0..2000 {
            // Sends spread over time, so delays overlap heavily.
            f.send(
                t0 + Duration::from_micros(u64::from(n) * 10),
                A,
                B,
                frame(n),
            );
        }
        let order = deliver_all(&mut f, B);
        assert_eq!(order, (0..2000).collect::<Vec<_>>());
        assert!(f.counters().delayed > 0);
    }

    #[test]
    fn frames_are_not_delivered_before_their_delay() {
        let mut f = fabric(3, 100);
        f.set_faults(faults(0.0, 0.0, 0.0, (10, 20))).unwrap();
        let t0 = Instant::now();
        f.send(t0, A, B, frame(1));
        assert_eq!(f.pop_due(B, t0 + ms(9)), None);
        let due = f.next_due(B).unwrap();
        assert!(due >= t0 + ms(10) && due <= t0 + ms(20));
        assert_eq!(f.next_due_any(), Some(due));
        assert_eq!(drain(&mut f, B, due), vec![(A, 1)]);
    }

    #[test]
    fn reorder_breaks_order_and_nothing_else_does() {
        let t0 = Instant::now();
        let mut with = fabric(4, 10_000);
        with.set_faults(faults(0.0, 0.0, 1.0, (0, 0))).unwrap();
        for n in 0..500 {
            with.send(t0, A, B, frame(n));
        }
        let order = deliver_all(&mut with, B);
        assert!(inversions(&order) > 0, "reorder rate 1.0 kept order");
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..500).collect::<Vec<_>>(),
            "reorder lost or added frames"
        );
        assert_eq!(with.counters().reordered, 500);

        let mut without = fabric(4, 10_000);
        without.set_faults(faults(0.0, 0.0, 0.0, (0, 30))).unwrap();
        for n in 0..500 {
            without.send(t0, A, B, frame(n));
        }
        assert_eq!(deliver_all(&mut without, B), (0..500).collect::<Vec<_>>());
        assert_eq!(without.counters().reordered, 0);
    }

    #[test]
    fn partial_reorder_with_delay_still_delivers_everything() {
        let t0 = Instant::now();
        let mut f = fabric(5, 10_000);
        f.set_faults(faults(0.0, 0.0, 0.3, (1, 10))).unwrap();
        for n in 0..1000 {
            f.send(t0 + Duration::from_micros(u64::from(n)), A, B, frame(n));
        }
        let order = deliver_all(&mut f, B);
        assert_eq!(order.len(), 1000);
        assert!(inversions(&order) > 0);
    }

    #[test]
    fn drop_rate_zero_one_and_between() {
        let t0 = Instant::now();
        for (rate, low, high) in [(0.0, 10_000, 10_000), (1.0, 0, 0), (0.3, 6_300, 7_700)] {
            let mut f = fabric(6, 100_000);
            f.set_faults(faults(rate, 0.0, 0.0, (0, 0))).unwrap();
            let mut dropped = 0;
            for n in 0..10_000 {
                if f.send(t0, A, B, frame(n)) == Fate::Dropped(DropCause::DropRate) {
                    dropped += 1;
                }
            }
            let delivered = deliver_all(&mut f, B);
            assert!(
                (low..=high).contains(&delivered.len()),
                "rate {rate}: {} delivered",
                delivered.len()
            );
            assert_eq!(delivered.len() + dropped, 10_000);
            assert_eq!(f.counters().dropped_by_drop_rate, dropped as u64);
            // What survives keeps its order.
            assert_eq!(inversions(&delivered), 0);
        }
    }

    #[test]
    fn duplicate_rate_one_delivers_exactly_two_copies() {
        let t0 = Instant::now();
        let mut f = fabric(7, 10_000);
        f.set_faults(faults(0.0, 1.0, 0.0, (0, 5))).unwrap();
        for n in 0..100 {
            assert_eq!(f.send(t0, A, B, frame(n)), Fate::Scheduled { copies: 2 });
        }
        let order = deliver_all(&mut f, B);
        assert_eq!(order.len(), 200);
        for n in 0..100 {
            assert_eq!(order.iter().filter(|&&m| m == n).count(), 2, "frame {n}");
        }
        // Without reordering, the copies are in FIFO order too.
        assert_eq!(inversions(&order), 0);
        assert_eq!(f.counters().duplicated, 100);
    }

    #[test]
    fn duplicate_is_skipped_when_the_link_has_no_room_for_it() {
        let t0 = Instant::now();
        let mut f = fabric(8, 3);
        f.set_faults(faults(0.0, 1.0, 0.0, (0, 0))).unwrap();
        assert_eq!(f.send(t0, A, B, frame(0)), Fate::Scheduled { copies: 2 });
        assert_eq!(f.send(t0, A, B, frame(1)), Fate::Scheduled { copies: 1 });
        assert_eq!(
            f.send(t0, A, B, frame(2)),
            Fate::Dropped(DropCause::LinkFull)
        );
        assert_eq!(f.in_flight(A, B), 3);
    }

    #[test]
    fn two_way_partition_drops_both_ways_and_spares_other_links() {
        let t0 = Instant::now();
        let mut f = fabric(9, 100);
        f.partition(&[A], &[B, C]);
        assert_eq!(
            f.send(t0, A, B, frame(0)),
            Fate::Dropped(DropCause::Partition)
        );
        assert_eq!(
            f.send(t0, B, A, frame(1)),
            Fate::Dropped(DropCause::Partition)
        );
        assert_eq!(
            f.send(t0, C, A, frame(2)),
            Fate::Dropped(DropCause::Partition)
        );
        assert_eq!(f.send(t0, B, C, frame(3)), Fate::Scheduled { copies: 1 });
        assert_eq!(f.send(t0, A, A, frame(4)), Fate::Scheduled { copies: 1 });
        assert_eq!(drain(&mut f, C, t0), vec![(B, 3)]);
        assert_eq!(drain(&mut f, A, t0), vec![(A, 4)]);
        assert!(drain(&mut f, B, t0).is_empty());
        assert_eq!(f.counters().dropped_by_partition, 3);
    }

    #[test]
    fn one_way_partition_drops_one_way_only() {
        let t0 = Instant::now();
        let mut f = fabric(10, 100);
        f.partition_one_way(&[A], &[B]);
        assert!(f.is_cut(A, B) && !f.is_cut(B, A));
        assert_eq!(
            f.send(t0, A, B, frame(0)),
            Fate::Dropped(DropCause::Partition)
        );
        assert_eq!(f.send(t0, B, A, frame(1)), Fate::Scheduled { copies: 1 });
        assert_eq!(drain(&mut f, A, t0), vec![(B, 1)]);
        assert!(drain(&mut f, B, t0).is_empty());
    }

    #[test]
    fn partition_loses_frames_in_flight_and_heal_restores_delivery() {
        let t0 = Instant::now();
        let mut f = fabric(11, 100);
        f.set_faults(faults(0.0, 0.0, 0.0, (10, 10))).unwrap();
        for n in 0..5 {
            f.send(t0, A, B, frame(n));
        }
        f.send(t0, A, C, frame(100));
        f.partition(&[A], &[B]);
        assert_eq!(f.in_flight(A, B), 0);
        assert_eq!(f.counters().dropped_by_partition, 5);
        f.heal();
        // Healing does not bring the lost frames back, but new ones go.
        assert_eq!(
            f.send(t0 + ms(1), A, B, frame(5)),
            Fate::Scheduled { copies: 1 }
        );
        assert_eq!(deliver_all(&mut f, B), vec![5]);
        assert_eq!(deliver_all(&mut f, C), vec![100]);
    }

    #[test]
    fn pause_holds_both_directions_and_resume_releases_in_order() {
        let t0 = Instant::now();
        let mut f = fabric(12, 100);
        f.pause(B);
        for n in 0..5 {
            assert_eq!(f.send(t0, A, B, frame(n)), Fate::Scheduled { copies: 1 });
            assert_eq!(
                f.send(t0, B, C, frame(10 + n)),
                Fate::Scheduled { copies: 1 }
            );
        }
        f.send(t0, A, C, frame(99));
        let later = t0 + ms(1000);
        assert_eq!(f.next_due(B), None);
        assert!(f.pop_due(B, later).is_none());
        // C gets A's frame, not the ones held from B.
        assert_eq!(f.next_due(C), Some(t0));
        assert_eq!(drain(&mut f, C, later), vec![(A, 99)]);
        assert_eq!(f.next_due_any(), None);
        f.resume(B);
        assert_eq!(
            drain(&mut f, B, later),
            (0..5).map(|n| (A, n)).collect::<Vec<_>>()
        );
        assert_eq!(
            drain(&mut f, C, later),
            (10..15).map(|n| (B, n)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn clear_faults_heals_and_resumes() {
        let t0 = Instant::now();
        let mut f = fabric(13, 100);
        f.set_faults(faults(1.0, 0.0, 0.0, (0, 0))).unwrap();
        f.partition(&[A], &[C]);
        f.pause(B);
        f.clear_faults();
        assert_eq!(f.faults(), Faults::default());
        assert!(!f.is_cut(A, C) && !f.is_paused(B));
        f.send(t0, A, B, frame(1));
        f.send(t0, A, C, frame(2));
        assert_eq!(drain(&mut f, B, t0), vec![(A, 1)]);
        assert_eq!(drain(&mut f, C, t0), vec![(A, 2)]);
    }

    #[test]
    fn full_link_refuses_the_newest_frame() {
        let t0 = Instant::now();
        let mut f = fabric(14, 4);
        for n in 0..4 {
            assert_eq!(f.send(t0, A, B, frame(n)), Fate::Scheduled { copies: 1 });
        }
        assert_eq!(
            f.send(t0, A, B, frame(4)),
            Fate::Dropped(DropCause::LinkFull)
        );
        // Other links have their own bound.
        assert_eq!(f.send(t0, C, B, frame(50)), Fate::Scheduled { copies: 1 });
        assert_eq!(f.counters().refused_link_full, 1);
        let got: Vec<u32> = drain(&mut f, B, t0)
            .into_iter()
            .filter(|(from, _)| *from == A)
            .map(|(_, n)| n)
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3]);
        assert_eq!(f.send(t0, A, B, frame(5)), Fate::Scheduled { copies: 1 });
    }

    #[test]
    fn unknown_and_removed_nodes() {
        let t0 = Instant::now();
        let mut f = fabric(15, 10);
        let stranger = NodeId(42);
        assert_eq!(
            f.send(t0, A, stranger, frame(0)),
            Fate::Dropped(DropCause::UnknownNode(stranger))
        );
        assert_eq!(
            f.send(t0, stranger, A, frame(0)),
            Fate::Dropped(DropCause::UnknownNode(stranger))
        );
        assert!(f.add_node(A).is_err());
        f.send(t0, A, B, frame(1));
        f.send(t0, B, C, frame(2));
        assert_eq!(f.remove_node(B), 1);
        assert!(!f.contains_node(B));
        assert_eq!(f.counters().dropped_by_removal, 1);
        // What B sent before leaving is still on its way.
        assert_eq!(drain(&mut f, C, t0), vec![(B, 2)]);
        assert_eq!(f.counters().refused_unknown_node, 2);
    }

    #[test]
    fn invalid_faults_are_refused_and_change_nothing() {
        let mut f = fabric(16, 10);
        for bad in [
            faults(-0.1, 0.0, 0.0, (0, 0)),
            faults(0.0, 1.1, 0.0, (0, 0)),
            faults(0.0, 0.0, f64::NAN, (0, 0)),
            faults(0.0, 0.0, 0.0, (5, 1)),
            Faults {
                delay: (Duration::ZERO, MAX_DELAY + ms(1)),
                ..Faults::default()
            },
        ] {
            assert!(
                matches!(f.set_faults(bad), Err(Error::InvalidInput(_))),
                "{bad:?}"
            );
        }
        assert_eq!(f.faults(), Faults::default());
    }

    /// Runs a fixed script of sends and faults and records every delivery
    /// with its time.
    fn script(seed: u64, drop_rate: f64) -> Vec<(u128, NodeId, NodeId, u32)> {
        let t0 = Instant::now();
        let mut f = fabric(seed, 1000);
        f.set_faults(faults(drop_rate, 0.2, 0.2, (0, 20))).unwrap();
        let nodes = [A, B, C];
        let mut log = Vec::new();
        let mut now = t0;
        for n in 0..600u32 {
            now += Duration::from_micros(250);
            let from = nodes[n as usize % 3];
            let to = nodes[(n as usize / 3) % 3];
            f.send(now, from, to, frame(n));
            if n == 300 {
                f.partition(&[A], &[C]);
            }
            if n == 400 {
                f.heal();
            }
            for node in nodes {
                while let Some((sender, fr)) = f.pop_due(node, now) {
                    log.push(((now - t0).as_nanos(), sender, node, number(&fr)));
                }
            }
        }
        while let Some(due) = f.next_due_any() {
            for node in nodes {
                while let Some((sender, fr)) = f.pop_due(node, due) {
                    log.push(((due - t0).as_nanos(), sender, node, number(&fr)));
                }
            }
        }
        log
    }

    #[test]
    fn same_seed_same_history_different_seed_different_history() {
        let first = script(77, 0.5);
        assert!(!first.is_empty());
        assert_eq!(first, script(77, 0.5));
        assert_ne!(first, script(78, 0.5));
    }

    #[test]
    fn debug_shows_the_shape_not_the_frames() {
        let mut f = fabric(18, 10);
        f.send(Instant::now(), A, B, Bytes::from_static(b"secret payload"));
        let shown = format!("{f:?}");
        assert!(shown.contains("in_flight: 1"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn equal_due_times_across_links_come_out_in_send_order() {
        let t0 = Instant::now();
        let mut f = fabric(17, 100);
        f.send(t0, C, A, frame(0));
        f.send(t0, B, A, frame(1));
        f.send(t0, C, A, frame(2));
        assert_eq!(drain(&mut f, A, t0), vec![(C, 0), (B, 1), (C, 2)]);
    }
}
