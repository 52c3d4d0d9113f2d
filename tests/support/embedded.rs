//! Helpers for checkers that run an embedded cluster
//! ([`ringkv::embedded::Cluster`]: real nodes in this process, on the
//! in-process network): starting one, sending client ops through a chosen
//! node, finding keys by their preference lists, and bounded waits for
//! the cluster to settle (every node ALIVE to every other, no hints left).
//!
//! Everything here is synchronous, as the embedded cluster is: the nodes
//! run on their own threads, and a call blocks until its reply comes
//! back, so checkers may drive a cluster from several threads at once.
//!
//! Not here: any fault schedule or check; each test owns its own.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use ringkv::embedded::{Cluster, ClusterOptions, EngineKind, Runtime, TransportKind};
use ringkv::protocol::{BucketInfo, Op, Reply};
use ringkv::version::Resolvers;
use ringkv::{key_token, ConflictPolicy, MemberStatus, NodeId};
use serde_bytes::ByteBuf;

/// How long a settling step may take: generous, for a loaded machine.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Starts `nodes` nodes (ids 1 to `nodes`) on the in-process network with
/// `engine`, 16 virtual nodes each, everything seeded by `seed`; returns
/// once they formed a cluster.
pub fn start(nodes: u64, engine: EngineKind, seed: u64) -> Cluster {
    start_sharded(nodes, engine, seed, 0)
}

/// [`start`], each node running `data_shards` data shards (0: as a node
/// chooses).
pub fn start_sharded(nodes: u64, engine: EngineKind, seed: u64, data_shards: usize) -> Cluster {
    let rt = Arc::new(Runtime::new().unwrap_or_else(|e| panic!("seed {seed}: runtime: {e}")));
    let options = ClusterOptions {
        nodes,
        engine,
        vnodes: 16,
        transport: TransportKind::Memory,
        seed,
        data_shards,
        ..ClusterOptions::default()
    };
    Cluster::start(rt, options, Resolvers::new())
        .unwrap_or_else(|e| panic!("seed {seed}: the cluster did not start: {e}"))
}

/// Bytes for an op field.
pub fn buf(bytes: &[u8]) -> ByteBuf {
    ByteBuf::from(bytes.to_vec())
}

/// Executes `op` through node `via`; an error (the node's, or that `via`
/// is not running) as text.
pub fn exec(c: &Cluster, via: u64, op: Op) -> Result<Reply, String> {
    let node = c.node(via)?;
    match c.execute_on(node, op) {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e),
    }
}

/// The first `len` distinct nodes of `bucket`/`key`'s preference list on
/// node `at`'s ring: the primaries, then the fallbacks in order.
pub fn preference(c: &Cluster, at: u64, bucket: &[u8], key: &[u8], len: usize) -> Vec<u64> {
    let node = c.node(at).unwrap_or_else(|e| panic!("{e}"));
    let ring = c
        .runtime()
        .run(move || async move { node.ring().await })
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("ring of node {at}: {e}"));
    ring.preference_list(key_token(bucket, key), len)
        .into_iter()
        .map(|n| n.0)
        .collect()
}

/// A key of `bucket` named `<prefix><i>` for the smallest `i` whose first
/// `n` preference-list nodes, as a set, are `primaries` (on node `at`'s
/// ring).
pub fn key_with_primaries(
    c: &Cluster,
    at: u64,
    bucket: &[u8],
    prefix: &str,
    n: usize,
    primaries: &[u64],
) -> Vec<u8> {
    let mut want = primaries.to_vec();
    want.sort_unstable();
    let node = c.node(at).unwrap_or_else(|e| panic!("{e}"));
    let ring = c
        .runtime()
        .run(move || async move { node.ring().await })
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("ring of node {at}: {e}"));
    for i in 0..1_000_000u64 {
        let key = format!("{prefix}{i}").into_bytes();
        let mut got: Vec<u64> = ring
            .preference_list(key_token(bucket, &key), n)
            .into_iter()
            .map(|n| n.0)
            .collect();
        got.sort_unstable();
        if got == want {
            return key;
        }
    }
    panic!("no key of {prefix:?} has the primaries {primaries:?}")
}

/// Sets `bucket`'s conflict policy to `policy`, leaving every other
/// property as the nodes' defaults have it (notably `sloppy_quorum`), and
/// waits until every running node has the change.
pub fn set_policy(c: &Cluster, bucket: &[u8], policy: ConflictPolicy) -> BucketInfo {
    let via = c.live()[0];
    let props = match exec(
        c,
        via,
        Op::GetBucket {
            bucket: buf(bucket),
        },
    ) {
        Ok(Reply::Bucket { props }) => props,
        other => panic!("get bucket {bucket:?}: {other:?}"),
    };
    let want = BucketInfo { policy, ..props };
    let set = Op::SetBucket {
        bucket: buf(bucket),
        props: want.clone(),
    };
    match exec(c, via, set) {
        Ok(Reply::Bucket { props }) if props == want => {}
        other => panic!("set bucket {bucket:?}: {other:?}"),
    }
    let spread = c
        .wait(SETTLE, || {
            for id in c.live() {
                let got = exec(
                    c,
                    id,
                    Op::GetBucket {
                        bucket: buf(bucket),
                    },
                );
                if !matches!(got, Ok(Reply::Bucket { ref props }) if *props == want) {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        spread,
        "bucket {bucket:?}'s properties did not reach every node"
    );
    want
}

/// Whether every running node in `of_a` is seen `want` by every running
/// node in `at_b`.
pub fn seen_as(c: &Cluster, of_a: &[u64], at_b: &[u64], want: MemberStatus) -> bool {
    for &of in of_a {
        let Ok(views) = c.views_of(of) else {
            return false;
        };
        for (at, status) in views {
            if at_b.contains(&at) && status != Some(want) {
                return false;
            }
        }
    }
    true
}

/// Waits until the two sides of a two-way partition see each other DOWN.
pub fn wait_split(c: &Cluster, a: &[u64], b: &[u64]) -> bool {
    c.wait(SETTLE, || {
        Ok(seen_as(c, a, b, MemberStatus::Down) && seen_as(c, b, a, MemberStatus::Down))
    })
    .unwrap_or(false)
}

/// Waits until every node is running and sees every other ALIVE, with
/// one ring.
pub fn wait_whole(c: &Cluster) -> bool {
    let ids = c.ids();
    c.wait(SETTLE, || c.formed(&ids)).unwrap_or(false)
}

/// Waits until no running node holds a hint.
pub fn wait_no_hints(c: &Cluster) -> bool {
    c.wait(SETTLE, || Ok(c.total_hints()? == 0))
        .unwrap_or(false)
}

/// Node ids as `NodeId`s.
pub fn node_ids(ids: &[u64]) -> Vec<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}
