//! Shares of a port's resources that its connections take and give back
//! on drop, used by the client port and the RESP port alike: slots counted
//! per key (connections per source address, per user), and a budget of
//! bytes (large requests being received or run).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// At most `limit` slots for each key.
#[derive(Debug)]
pub struct Slots<K: Eq + Hash + Clone> {
    taken: Mutex<HashMap<K, usize>>,
    limit: usize,
}

/// One slot of a [`Slots`], given back on drop.
#[derive(Debug)]
pub struct Slot<K: Eq + Hash + Clone> {
    slots: Arc<Slots<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Slots<K> {
    /// At most `limit` slots per key.
    pub fn new(limit: usize) -> Arc<Slots<K>> {
        Arc::new(Slots {
            taken: Mutex::new(HashMap::new()),
            limit,
        })
    }

    /// Takes a slot for `key`, unless it has `limit` already.
    pub fn take(self: &Arc<Self>, key: &K) -> Option<Slot<K>> {
        self.take_within(key, self.limit)
    }

    /// Takes a slot for `key`, unless it has `limit` (the caller's, not
    /// the one these slots were made with) already.
    pub fn take_within(self: &Arc<Self>, key: &K, limit: usize) -> Option<Slot<K>> {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let n = taken.entry(key.clone()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            key: key.clone(),
        })
    }

    /// The most slots one key may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl<K: Eq + Hash + Clone> Slot<K> {
    /// The key this slot counts for.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut taken = self.slots.taken.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = taken.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                taken.remove(&self.key);
            }
        }
    }
}

/// Authenticated connections per user, counted together by every port
/// that holds a clone: `ringkv-node` starts its client port and its RESP
/// port from clones of one [`crate::node::client_port::ClientPortConfig`],
/// so one user's connections on both ports count against one
/// `max_connections_per_user`. A fresh value ([`Default`]) counts alone.
/// It is state, not a setting: any two compare equal, so configurations
/// compare by their settings.
#[derive(Clone, Debug)]
pub struct UserConnections(Arc<Slots<String>>);

impl Default for UserConnections {
    fn default() -> Self {
        // Each port gives its own limit when it takes a slot.
        UserConnections(Slots::new(usize::MAX))
    }
}

impl PartialEq for UserConnections {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for UserConnections {}

impl UserConnections {
    /// A place for one more connection of `user`, unless it has `limit`
    /// open already (on every port sharing this count).
    pub fn take(&self, user: &str, limit: usize) -> Option<Slot<String>> {
        self.0.take_within(&user.to_string(), limit)
    }
}

/// A budget of bytes shared by a port's connections.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    limit: usize,
}

/// A share of a [`ByteBudget`], given back on drop.
#[derive(Debug)]
pub struct Held {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Charges `bytes`, or `None` when that would go past the limit.
    pub fn take(self: &Arc<Self>, bytes: usize) -> Option<Held> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .ok()?;
        Some(Held {
            budget: self.clone(),
            bytes,
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The budget's size.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_key_and_given_back_on_drop() {
        let slots = Slots::new(2);
        let a1 = slots.take(&"a").unwrap();
        let _a2 = slots.take(&"a").unwrap();
        assert!(slots.take(&"a").is_none(), "a third slot for one key");
        let _b = slots.take(&"b").expect("another key has its own share");
        assert_eq!(a1.key(), &"a");
        drop(a1);
        assert!(
            slots.take(&"a").is_some(),
            "a slot given back is taken again"
        );
    }

    #[test]
    fn clones_of_user_connections_count_together_and_a_fresh_one_alone() {
        let one = UserConnections::default();
        let other_port = one.clone();
        let a1 = one.take("a", 2).unwrap();
        let _a2 = other_port.take("a", 2).unwrap();
        assert!(one.take("a", 2).is_none(), "a third place across two ports");
        assert!(other_port.take("a", 2).is_none());
        assert!(one.take("b", 2).is_some(), "another user has its own count");
        assert!(
            UserConnections::default().take("a", 2).is_some(),
            "a fresh count is not shared"
        );
        drop(a1);
        assert!(other_port.take("a", 2).is_some(), "a place given back");
    }

    #[test]
    fn a_budget_refuses_past_its_limit_and_takes_back_on_drop() {
        let budget = ByteBudget::new(100);
        let a = budget.take(60).unwrap();
        assert!(budget.take(41).is_none());
        let b = budget.take(40).unwrap();
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
