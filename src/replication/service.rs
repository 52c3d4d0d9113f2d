//! The order and pace in which a replica serves its requests: a sans-I/O
//! queue that the Replica actor carries out.
//!
//! Requests start in arrival order, at most `max_concurrent` at once (each
//! runs on a blocking thread). Reads are also held to a byte budget, since
//! each read brings a value into memory: a read not yet run is counted as
//! the largest object ([`MAX_OBJECT_BYTES`]), because its size is unknown
//! until it has run; once it has run it counts for the bytes of its values
//! until its answer has been handed on. One read may always run, so a
//! budget below one object still makes progress. A read that does not fit
//! waits at the head of the queue, and the requests behind it wait too:
//! the order of arrival is kept.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::limits::MAX_OBJECT_BYTES;
use super::ReplicaRequest;

/// Which requests a replica may run on its own thread rather than on a
/// blocking thread, beside what the engine says ([`super::replica::ReplicaStore::serves_at_once`]):
/// only small ones, since copying a large value holds up every other
/// request on that thread. A write qualifies by the bytes of values it
/// carries; a read's size is known only once it has run, so reads
/// qualify while no read answered more than [`InPlace::MAX_BYTES`] in the
/// last [`InPlace::LARGE_READ_HOLD`]. Scans never do.
#[derive(Debug, Default)]
pub struct InPlace {
    large_reads_until: Option<Instant>,
}

impl InPlace {
    /// Requests carrying (or reads answering) more bytes of values than
    /// this run on a blocking thread: copying a 15 MiB value takes
    /// milliseconds.
    pub const MAX_BYTES: usize = 64 * 1024;

    /// How long reads stay off the replica's thread after one answered
    /// more than [`Self::MAX_BYTES`].
    pub const LARGE_READ_HOLD: Duration = Duration::from_secs(1);

    /// Whether `request` is small enough to run in place at `now`.
    pub fn allows(&self, request: &ReplicaRequest, now: Instant) -> bool {
        match request {
            ReplicaRequest::Read { .. } => self.large_reads_until.is_none_or(|until| now >= until),
            ReplicaRequest::Coordinate { write, .. } => {
                write.payload.value().map_or(0, <[u8]>::len) <= Self::MAX_BYTES
            }
            ReplicaRequest::Merge { object, .. } => object.value_bytes() <= Self::MAX_BYTES,
            ReplicaRequest::Scan { .. } => false,
        }
    }

    /// Notes a read that answered `bytes` of values at `now`.
    pub fn read_answered(&mut self, bytes: usize, now: Instant) {
        if bytes > Self::MAX_BYTES {
            self.large_reads_until = Some(now + Self::LARGE_READ_HOLD);
        }
    }
}

/// The queue of one replica's requests (see the module docs).
#[derive(Debug)]
pub struct ServiceQueue<T> {
    waiting: VecDeque<(T, bool)>,
    max_concurrent: usize,
    serving: usize,
    read_budget: usize,
    read_held: usize,
}

/// A request taken from the queue to run, with the bytes counted for it.
#[derive(Debug, PartialEq, Eq)]
pub struct Started<T> {
    /// The request.
    pub item: T,
    /// Bytes of the read budget counted for it while it runs (0 for a
    /// request that is not a read); hand it to [`ServiceQueue::finished`].
    pub reserved: usize,
}

impl<T> ServiceQueue<T> {
    /// An empty queue: at most `max_concurrent` requests in service (at
    /// least 1), reads within `read_budget` bytes.
    pub fn new(max_concurrent: usize, read_budget: usize) -> Self {
        ServiceQueue {
            waiting: VecDeque::new(),
            max_concurrent: max_concurrent.max(1),
            serving: 0,
            read_budget,
            read_held: 0,
        }
    }

    /// Queues a request; `is_read` says whether it brings values into
    /// memory.
    pub fn push(&mut self, item: T, is_read: bool) {
        self.waiting.push_back((item, is_read));
    }

    /// The next request to start, if there is room for it now.
    pub fn start(&mut self) -> Option<Started<T>> {
        if self.serving >= self.max_concurrent {
            return None;
        }
        let &(_, is_read) = self.waiting.front()?;
        let reserved = if is_read { MAX_OBJECT_BYTES } else { 0 };
        if reserved > 0 && self.read_held > 0 && self.read_held + reserved > self.read_budget {
            return None;
        }
        let (item, _) = self.waiting.pop_front()?;
        self.serving += 1;
        self.read_held += reserved;
        Some(Started { item, reserved })
    }

    /// A started request has run: it leaves service, and its reservation
    /// becomes `holds`, the bytes of the values its answer carries, until
    /// [`ServiceQueue::handed_on`] is called with them.
    pub fn finished(&mut self, reserved: usize, holds: usize) {
        self.serving = self.serving.saturating_sub(1);
        self.read_held = (self.read_held + holds).saturating_sub(reserved);
    }

    /// An answer holding `bytes` (as given to `finished`) has been handed
    /// on: the bytes leave the budget.
    pub fn handed_on(&mut self, bytes: usize) {
        self.read_held = self.read_held.saturating_sub(bytes);
    }

    /// Requests waiting to start.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Requests in service.
    pub fn serving(&self) -> usize {
        self.serving
    }

    /// Bytes counted against the read budget now.
    pub fn read_held(&self) -> usize {
        self.read_held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJ: usize = MAX_OBJECT_BYTES;

    fn drain<T>(q: &mut ServiceQueue<T>) -> Vec<Started<T>> {
        std::iter::from_fn(|| q.start()).collect()
    }

    #[test]
    fn requests_start_in_order_and_at_most_max_concurrent_at_once() {
        let mut q = ServiceQueue::new(2, usize::MAX);
        for i in 0..5 {
            q.push(i, false);
        }
        let started: Vec<_> = drain(&mut q).into_iter().map(|s| s.item).collect();
        assert_eq!(started, [0, 1]);
        assert_eq!((q.serving(), q.waiting()), (2, 3));
        q.finished(0, 0);
        assert_eq!(q.start().map(|s| s.item), Some(2));
        assert!(q.start().is_none());
    }

    #[test]
    fn reads_are_held_to_the_budget_counting_a_read_not_yet_run_as_the_largest_object() {
        let mut q = ServiceQueue::new(64, 2 * OBJ);
        for i in 0..4 {
            q.push(i, true);
        }
        // Two reads of unknown size fill the budget; the third waits.
        let started = drain(&mut q);
        assert_eq!(started.len(), 2);
        assert!(started.iter().all(|s| s.reserved == OBJ));
        assert_eq!(q.read_held(), 2 * OBJ);
        // The first turns out small: its room is given back at once.
        q.finished(OBJ, 100);
        assert_eq!(q.read_held(), OBJ + 100);
        // Room for one more of unknown size? Not quite: OBJ + 100 + OBJ.
        assert!(q.start().is_none());
        q.handed_on(100);
        assert_eq!(q.start().map(|s| s.item), Some(2));
        // The second turns out large: it counts until handed on.
        q.finished(OBJ, OBJ - 5);
        assert_eq!(q.read_held(), 2 * OBJ - 5);
        assert!(
            q.start().is_none(),
            "a large answer not yet handed on holds its bytes"
        );
        q.handed_on(OBJ - 5);
        assert_eq!(q.start().map(|s| s.item), Some(3));
    }

    #[test]
    fn one_read_always_runs_even_under_a_budget_smaller_than_an_object() {
        let mut q = ServiceQueue::new(64, 1024);
        q.push('a', true);
        q.push('b', true);
        assert_eq!(q.start().map(|s| s.item), Some('a'));
        assert!(q.start().is_none());
        q.finished(OBJ, 10);
        assert!(q.start().is_none(), "the first answer still holds 10 bytes");
        q.handed_on(10);
        assert_eq!(q.read_held(), 0);
        assert_eq!(q.start().map(|s| s.item), Some('b'));
    }

    #[test]
    fn writes_are_not_charged_but_keep_their_place_behind_a_waiting_read() {
        let mut q = ServiceQueue::new(64, OBJ);
        q.push("read 1", true);
        q.push("write 1", false);
        q.push("read 2", true);
        q.push("write 2", false);
        let started = drain(&mut q);
        let items: Vec<_> = started.iter().map(|s| s.item).collect();
        assert_eq!(items, ["read 1", "write 1"]);
        assert_eq!(started[1].reserved, 0);
        // "write 2" waits behind "read 2", which waits for the budget.
        assert_eq!(q.waiting(), 2);
        q.finished(OBJ, 0);
        let items: Vec<_> = drain(&mut q).into_iter().map(|s| s.item).collect();
        assert_eq!(items, ["read 2", "write 2"]);
    }

    mod in_place {
        use std::time::{Duration, Instant};

        use crate::id::NodeId;
        use crate::replication::service::InPlace;
        use crate::replication::{scan, ReplicaRequest, Write};
        use crate::version::{CausalContext, ConflictPolicy, Object, Payload, Timestamp};

        const MAX: usize = InPlace::MAX_BYTES;

        fn coordinate(bytes: usize) -> ReplicaRequest {
            ReplicaRequest::Coordinate {
                req: 1,
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
                write: Write {
                    context: CausalContext::empty(),
                    payload: Payload::Value(vec![7; bytes]),
                    timestamp: Timestamp::from_ms(1),
                    op: None,
                    base: None,
                },
                policy: ConflictPolicy::Siblings,
                hint_for: None,
            }
        }

        /// A merge of an object whose two siblings hold `each` bytes.
        fn merge(each: usize) -> ReplicaRequest {
            let mut object = Object::new();
            for actor in [1, 2] {
                let value = Payload::Value(vec![7; each]);
                let ts = Timestamp::from_ms(actor);
                object
                    .put(NodeId(actor), &CausalContext::empty(), value, ts, 10)
                    .unwrap();
            }
            ReplicaRequest::Merge {
                req: 2,
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
                object,
                policy: ConflictPolicy::Siblings,
                hint_for: None,
            }
        }

        fn read() -> ReplicaRequest {
            ReplicaRequest::Read {
                req: 3,
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
            }
        }

        #[test]
        fn writes_qualify_by_the_bytes_they_carry() {
            let (policy, now) = (InPlace::default(), Instant::now());
            assert!(policy.allows(&coordinate(0), now));
            assert!(policy.allows(&coordinate(MAX), now));
            assert!(!policy.allows(&coordinate(MAX + 1), now));
            // A merge counts every sibling: two halves fit, two that are
            // each under the limit but together over it do not.
            assert!(policy.allows(&merge(MAX / 2), now));
            assert!(!policy.allows(&merge(MAX / 2 + 1), now));
        }

        #[test]
        fn reads_stay_off_the_thread_for_a_while_after_a_large_answer() {
            let mut policy = InPlace::default();
            let t0 = Instant::now();
            assert!(policy.allows(&read(), t0));
            // An answer at the limit changes nothing.
            policy.read_answered(MAX, t0);
            assert!(policy.allows(&read(), t0));
            policy.read_answered(MAX + 1, t0);
            assert!(!policy.allows(&read(), t0));
            let hold = InPlace::LARGE_READ_HOLD;
            assert!(!policy.allows(&read(), t0 + hold - Duration::from_millis(1)));
            assert!(policy.allows(&read(), t0 + hold));
            // Writes are judged by their own size meanwhile.
            policy.read_answered(MAX + 1, t0 + hold);
            assert!(policy.allows(&coordinate(10), t0 + hold));
            // A later large answer extends the hold from its own time.
            policy.read_answered(MAX + 1, t0 + hold * 2);
            assert!(!policy.allows(&read(), t0 + hold * 2 + hold / 2));
        }

        #[test]
        fn scans_never_run_in_place() {
            let scan = ReplicaRequest::Scan {
                req: 4,
                part: scan::ScanPart {
                    bucket: b"b".to_vec(),
                    from: scan::ScanCursor::default(),
                    end: u64::MAX,
                    limit: 10,
                },
            };
            assert!(!InPlace::default().allows(&scan, Instant::now()));
        }
    }
}
