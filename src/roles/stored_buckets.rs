//! Bucket properties as this node stored them: what the actors that work
//! on stored objects (anti-entropy, dropping ranges given away) need to
//! know of each object's bucket, without asking the coordinator.

use std::collections::HashMap;

use crate::codec::DEFAULT_MAX_FRAME_BYTES;
use crate::error::Result;
use crate::replication::buckets::BucketEntry;
use crate::replication::replica::ReplicaStore;
use crate::replication::BucketProps;

/// Bucket properties as the store's bucket table and the defaults give
/// them.
/// The metadata record holding the bucket table.
pub const BUCKETS_META: &str = "buckets";

/// Bucket properties as stored, over the node's defaults.
pub(crate) struct BucketView {
    defaults: crate::replication::buckets::BucketDefaults,
    table: HashMap<Vec<u8>, BucketProps>,
}

impl BucketView {
    pub(crate) fn load(store: &ReplicaStore, defaults: &BucketProps) -> Result<BucketView> {
        let mut table = HashMap::new();
        if let Some(bytes) = store.load_meta(BUCKETS_META)? {
            let entries: Vec<BucketEntry> = crate::codec::decode(&bytes, DEFAULT_MAX_FRAME_BYTES)?;
            for e in entries {
                table.insert(e.bucket, e.props);
            }
        }
        Ok(BucketView {
            defaults: crate::replication::buckets::BucketDefaults::new(defaults.clone()),
            table,
        })
    }

    pub(crate) fn props(&self, bucket: &[u8]) -> &BucketProps {
        self.table
            .get(bucket)
            .unwrap_or_else(|| self.defaults.get(bucket))
    }

    pub(crate) fn n_max(&self) -> usize {
        self.table
            .values()
            .map(|p| p.n)
            .chain([self.defaults.base().n])
            .max()
            .unwrap_or(1)
    }
}
