//! A node's configuration, composed from the subsystems' parts.
//!
//! This module is in layer 5 (see "Layers" in `docs/architecture.md`).
//! Each subsystem owns its own configuration types, with their defaults,
//! the reason for each default and their validation, beside the code that
//! reads them: frame limits in [`crate::codec`], [`RingConfig`] in
//! [`crate::ring`], [`VersionConfig`] in [`crate::version`], the storage
//! engines' settings in [`crate::storage`], [`MembershipConfig`] in
//! [`crate::membership`], [`BucketProps`], the client input limits and the
//! replica, transfer and anti-entropy settings in [`crate::replication`],
//! and the transports' settings in [`crate::net`]. This module composes
//! them into [`NodeConfig`] and re-exports every one of them, so that
//! `ringkv::config::X` names each. No module below layer 5 imports this
//! one. Other modules never hard-code a tunable: they read it from these
//! structs.

use crate::id::NodeId;
use crate::version::Resolvers;

pub use crate::codec::{DEFAULT_MAX_FRAME_BYTES, HANDSHAKE_MAX_FRAME_BYTES};
pub use crate::membership::config::MembershipConfig;
pub use crate::net::config::{ClusterSecret, MemoryNetConfig, NetConfig, TcpConfig};
pub use crate::replication::buckets::BucketProps;
pub use crate::replication::config::{AntiEntropyConfig, ReplicaConfig, TransferConfig};
pub use crate::replication::limits::{
    check_bucket, check_bucket_key, check_members, check_value, MAX_BUCKETS, MAX_BUCKETS_MERGED,
    MAX_BUCKET_BYTES, MAX_KEY_BYTES, MAX_OBJECT_BYTES, MAX_POLICY_NAME_BYTES, MAX_VALUE_BYTES,
    MESSAGE_OVERHEAD_BYTES,
};
pub use crate::ring::config::{RingConfig, DEFAULT_CLAIM_REPLICAS, DEFAULT_VNODES_PER_NODE};
pub use crate::storage::config::{BTreeConfig, LsmConfig, StorageConfig, SyncPolicy};
pub use crate::version::config::VersionConfig;

/// What a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// The address peers reach it at (gossiped to them).
    pub addr: String,
    /// Nodes to join through, with their addresses. Empty: this node
    /// founds a new cluster and claims the first tokens.
    pub seeds: Vec<(NodeId, String)>,
    /// Found a new cluster even with seeds (`ringkv-node --bootstrap`):
    /// claim the first tokens on the empty ring instead of waiting for a
    /// seed's ring. For the first node of a cluster whose nodes all list
    /// each other as seeds. Matters only to a node with no stored ring.
    pub bootstrap: bool,
    /// Gossip and failure detection.
    pub membership: MembershipConfig,
    /// Token claim.
    pub ring: RingConfig,
    /// Seeds the node's random choices (gossip targets). Any value works;
    /// distinct nodes should use distinct seeds.
    pub rng_seed: u64,
    /// The cluster's name, reported to clients.
    pub cluster: String,
    /// Where the node keeps its data.
    pub storage: StorageConfig,
    /// Properties of buckets never set explicitly.
    pub bucket_defaults: BucketProps,
    /// Clocks and siblings.
    pub version: VersionConfig,
    /// Replica, coordinator and hinted handoff.
    pub replica: ReplicaConfig,
    /// Resolvers for buckets whose policy is `Script(name)`.
    pub resolvers: Resolvers,
    /// Range transfers: concurrency, batch size, throttle, retries.
    pub transfer: TransferConfig,
    /// Merkle-tree anti-entropy and tombstone garbage collection.
    pub anti_entropy: AntiEntropyConfig,
    /// Whether clients may inject faults into this node's transport
    /// ([`crate::protocol::Op::BlockOutbound`]). Default false: a production node refuses;
    /// test clusters of real processes turn it on to make partitions.
    pub allow_fault_injection: bool,
}

impl NodeConfig {
    /// A node with default membership and ring settings.
    pub fn new(id: NodeId, addr: impl Into<String>, seeds: Vec<(NodeId, String)>) -> Self {
        NodeConfig {
            id,
            addr: addr.into(),
            seeds,
            bootstrap: false,
            membership: MembershipConfig::default(),
            ring: RingConfig::default(),
            rng_seed: id.0,
            cluster: "ringkv".into(),
            storage: StorageConfig::Memory,
            bucket_defaults: BucketProps::default(),
            version: VersionConfig::default(),
            replica: ReplicaConfig::default(),
            resolvers: Resolvers::new(),
            transfer: TransferConfig::default(),
            anti_entropy: AntiEntropyConfig::default(),
            allow_fault_injection: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::net::tls::PeerSecurity;

    #[test]
    fn secret_is_redacted() {
        let s = ClusterSecret::new(b"0123456789abcdef-secret".to_vec()).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("secret\""), "{shown}");
        assert!(!shown.contains("0123"), "{shown}");
    }

    #[test]
    fn defaults_validate() {
        NetConfig::default().validate().unwrap();
        let secret = ClusterSecret::new(vec![7; 32]).unwrap();
        TcpConfig::new(
            NodeId(1),
            "c",
            secret,
            PeerSecurity::InsecurePlaintext,
            "127.0.0.1:0",
        )
        .validate()
        .unwrap();
        LsmConfig::default().validate().unwrap();
        MembershipConfig::default().validate().unwrap();
        MembershipConfig::scaled(Duration::from_millis(50))
            .validate()
            .unwrap();
        BucketProps::default().validate().unwrap();
        let one_copy_all_quorum = BucketProps {
            n: 1,
            w: crate::replication::Consistency::Two,
            ..BucketProps::default()
        };
        assert!(one_copy_all_quorum.validate().is_err());
        BTreeConfig::default().validate().unwrap();
        let btree = BTreeConfig {
            checkpoint_interval: Duration::ZERO,
            ..BTreeConfig::default()
        };
        assert!(btree.validate().is_err());
        let lsm = LsmConfig {
            l0_stop_tables: 2,
            ..LsmConfig::default()
        };
        assert!(lsm.validate().is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        let net = NetConfig {
            max_frame_bytes: 10,
            ..NetConfig::default()
        };
        assert!(net.validate().is_err());
        let net = NetConfig {
            send_queue_frames: 0,
            ..NetConfig::default()
        };
        assert!(net.validate().is_err());
        let secret = ClusterSecret::new(vec![7; 32]).unwrap();
        let mut tcp = TcpConfig::new(
            NodeId(1),
            "",
            secret,
            PeerSecurity::InsecurePlaintext,
            "127.0.0.1:0",
        );
        assert!(tcp.validate().is_err());
        tcp.cluster = "c".into();
        tcp.backoff_min = Duration::from_secs(10);
        assert!(tcp.validate().is_err());
    }
}
