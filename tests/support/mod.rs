//! Helpers shared by the integration tests, compiled into each test binary
//! (`tests/it`, in-process; `tests/processes`, clusters of `ringkv-node`
//! processes). This file: the in-process membership tests' scaled-down
//! configuration, bounded waits, and event collection. The submodules:
//! [`cluster`] and [`partitions`], `ringkv-node` processes; [`embedded`],
//! in-process clusters; [`seeds`] and [`stale_reads`], seeded histories
//! and their checks.

#![allow(dead_code)]

pub mod cluster;
pub mod embedded;
pub mod partitions;
pub mod seeds;
pub mod stale_reads;

use std::future::Future;
use std::time::{Duration, Instant};

use ringkv::config::MembershipConfig;
use ringkv::node::{Node, NodeEvent};
use ringkv::{MemberEvent, MemberStatus, NodeId, RingConfig};
use tokio::sync::mpsc::UnboundedReceiver;

/// 50 ms heartbeats. The pause and deviation are scaled less than 20x so
/// that a test machine busy with other builds (tens of ms of scheduling
/// jitter) does not make the detector fire: 300 ms acceptable pause, 20 ms
/// minimum deviation, three log2 N intervals of suspicion.
pub fn fast() -> MembershipConfig {
    MembershipConfig {
        gossip_interval: Duration::from_millis(50),
        acceptable_heartbeat_pause: Duration::from_millis(300),
        min_std_deviation: Duration::from_millis(20),
        suspicion_multiplier: 3.0,
        local_pause_guard: Duration::from_millis(200),
        leave_linger: Duration::from_millis(300),
        ..MembershipConfig::default()
    }
}

/// Few tokens: the ring is not what these tests measure.
pub fn small_ring() -> RingConfig {
    RingConfig {
        vnodes_per_node: 16,
        ..RingConfig::default()
    }
}

/// How long a crash should take to be DOWN everywhere under [`fast`], for
/// `n` nodes: a heartbeat interval plus the acceptable pause plus six
/// deviations of silence, a few rounds of relay, and the suspicion timeout.
pub fn expected_detection(n: usize) -> Duration {
    let cfg = fast();
    let rounds = cfg.suspicion_multiplier * (n as f64).log2().max(1.0) + 4.0;
    cfg.gossip_interval.mul_f64(rounds + 1.0)
        + cfg.acceptable_heartbeat_pause
        + cfg.min_std_deviation * 6
}

/// Polls `check` every 20 ms until it returns true or `limit` passes;
/// returns the time it took, or `None`.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// What `at` believes about `of`.
pub async fn status(at: &Node, of: NodeId) -> Option<MemberStatus> {
    at.members()
        .await
        .ok()?
        .into_iter()
        .find(|e| e.node == of)
        .map(|e| e.status)
}

/// Whether every node in `at` holds every node in `of` in `want`.
pub async fn all_see(at: &[Node], of: &[NodeId], want: MemberStatus) -> bool {
    for a in at {
        for &o in of {
            if a.id() != o && status(a, o).await != Some(want) {
                return false;
            }
        }
    }
    true
}

/// Whether every node holds the same ring, with exactly `members`.
pub async fn same_ring(nodes: &[Node], members: &[NodeId]) -> bool {
    let mut first = None;
    for n in nodes {
        let Ok(ring) = n.ring().await else {
            return false;
        };
        let got: Vec<NodeId> = ring.members().into_iter().collect();
        if got != members {
            return false;
        }
        match &first {
            None => first = Some(ring),
            Some(r) if **r != *ring => return false,
            Some(_) => {}
        }
    }
    true
}

/// Whether `nodes` form one cluster of `ids` that serves: every node sees
/// every other ALIVE, all share one ring, and every node routes by it.
pub async fn formed(nodes: &[Node], ids: &[NodeId]) -> bool {
    all_see(nodes, ids, MemberStatus::Alive).await
        && same_ring(nodes, ids).await
        && routed(nodes).await
}

/// Whether every node's coordinators route by its ring manager's ring: a
/// cluster whose rings agree may still have a coordinator a ring behind
/// for a moment, whose writes a replica fenced by the newer ring refuses
/// (seen once in five runs under load: a first write at W=1 answered
/// `Unavailable { got: 0 }`).
pub async fn routed(nodes: &[Node]) -> bool {
    for n in nodes {
        if n.routes_by_current_ring().await != Some(true) {
            return false;
        }
    }
    true
}

/// Drains the membership events received so far.
pub fn drain(rx: &mut UnboundedReceiver<NodeEvent>) -> Vec<MemberEvent> {
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        if let NodeEvent::Member(e) = event {
            events.push(e);
        }
    }
    events
}

/// Node `id` of an in-process cluster under [`fast`] and [`small_ring`]:
/// node 1 founds it, the others join through it.
pub fn memory_config(id: u64) -> ringkv::node::NodeConfig {
    let seeds = if id == 1 {
        vec![]
    } else {
        vec![(NodeId(1), "n1".to_string())]
    };
    let mut config = ringkv::node::NodeConfig::new(NodeId(id), format!("n{id}"), seeds);
    config.membership = fast();
    config.ring = small_ring();
    config
}

/// Starts a node with `config` on `network`.
pub async fn spawn_memory(
    network: &ringkv::MemoryNetwork,
    config: ringkv::node::NodeConfig,
) -> ringkv::Result<Node> {
    let net = network.clone();
    let id = config.id;
    Node::spawn(config, move || async move {
        let (endpoint, inbox) = net.endpoint(id)?;
        Ok(ringkv::node::TransportParts::new(
            std::sync::Arc::new(endpoint),
            inbox,
        ))
    })
    .await
}

/// Starts a node with `config` on `network`, as [`spawn_memory`] does, but
/// on a data directory a stopped node may still hold: it retries (for up
/// to 20 s) while the engine reports the directory in use, as the stopped
/// node's actors, dropped as its arbiter winds down, release it.
pub async fn spawn_memory_retrying(
    network: &ringkv::MemoryNetwork,
    config: ringkv::node::NodeConfig,
) -> Node {
    let id = config.id;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match spawn_memory(network, config.clone()).await {
            Ok(node) => return node,
            Err(e) if std::time::Instant::now() < deadline && e.to_string().contains("in use") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("node {id} did not start: {e}"),
        }
    }
}

/// Starts nodes 1 to `n` on a new in-process network, each with
/// [`memory_config`] as `configure` changes it, and waits (bounded) until
/// every node sees every other ALIVE and all hold the same ring.
pub async fn memory_cluster(
    n: u64,
    configure: impl Fn(&mut ringkv::node::NodeConfig),
) -> (ringkv::MemoryNetwork, Vec<Node>) {
    let network =
        ringkv::MemoryNetwork::new(ringkv::MemoryNetConfig::default()).expect("network config");
    let mut nodes = Vec::new();
    for id in 1..=n {
        let mut config = memory_config(id);
        configure(&mut config);
        nodes.push(spawn_memory(&network, config).await.expect("node starts"));
    }
    let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
    let formed = wait_until(Duration::from_secs(30), || formed(&nodes, &ids)).await;
    if formed.is_none() {
        panic!(
            "the cluster did not form within 30 s:{}",
            describe(&nodes).await
        );
    }
    (network, nodes)
}

/// What each node knows of the cluster: members, ring (fence, members,
/// the change pending and how many of its moves are done) and its
/// transfers that are not done, for a failure message.
pub async fn describe(nodes: &[Node]) -> String {
    let mut why = String::new();
    for n in nodes {
        let ring = n.ring_state().await.map(|r| {
            let pending = r
                .pending
                .as_ref()
                .map(|p| (p.change, p.target.epoch(), p.done.len()));
            (r.fence(), r.ring.members(), pending)
        });
        let members: Vec<(NodeId, MemberStatus)> = n
            .members()
            .await
            .map(|m| m.iter().map(|e| (e.node, e.status)).collect())
            .unwrap_or_default();
        let open: Vec<String> = n
            .transfers()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|t| !matches!(t.state, ringkv::replication::transfer::TransferState::Done))
            .map(|t| format!("{}: {:?} from {:?}", t.id, t.state, t.sources))
            .collect();
        why.push_str(&format!(
            "\nnode {}: members {members:?}\n  ring {ring:?}\n  {} transfers not done, first {:?}",
            n.id(),
            open.len(),
            &open[..open.len().min(4)],
        ));
    }
    why
}

/// The name libtest gives the test function `function` of the module
/// `module` (its `module_path!()`): the path without the crate's name, so
/// that a test can run one of its binary's tests as a child process with
/// `--exact`.
pub fn test_name(module: &str, function: &str) -> String {
    match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{function}"),
        None => function.to_string(),
    }
}

/// Drops the pages of every table file under `dir` from the OS's page
/// cache (they are clean: tables are fsync'd), and says whether it worked
/// (a file system such as tmpfs keeps them). Residency is asked of
/// `mincore`, which reads nothing (a read, even one that must not wait,
/// would start the kernel's readahead and bring the pages back).
pub fn drop_cached_table_pages(dir: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    let mut tables = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "sst") {
                tables.push(path);
            }
        }
    }
    assert!(!tables.is_empty(), "no table under {}", dir.display());
    tables.iter().all(|path| {
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        // SAFETY: plain system calls on a descriptor `file` keeps open; the
        // mapping is read only, unmapped before return, and `resident` has
        // a byte for each of its pages.
        unsafe {
            let advised = libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            assert_eq!(advised, 0, "posix_fadvise on {}", path.display());
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED, "mmap of {}", path.display());
            let mut resident = vec![0u8; len.div_ceil(page)];
            let asked = libc::mincore(map, len, resident.as_mut_ptr());
            libc::munmap(map, len);
            assert_eq!(asked, 0, "mincore on {}", path.display());
            resident.iter().all(|r| r & 1 == 0)
        }
    })
}
