//! Entities in a vector with a map from key to index.

use std::collections::HashMap;

/// The maps are keyed by the engine's own ids (from a trusted log), so a
/// fast non-cryptographic hash is safe; iteration order never leaks out
/// (everything that leaves the state is sorted by key).
pub(super) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Entities in a vector with a map from key to index. Entities are large
/// (an order entry is about 300 bytes): growing a vector is a `realloc`
/// (often a remap, no copy), where growing a map of large entries rehashes
/// and moves each one. This halves the cost of receiving an order. Removal
/// swaps the last entry into the hole, so indexes are only stable until
/// the next removal.
#[derive(Debug, Clone)]
pub(super) struct Table<K, E> {
    pub(super) entries: Vec<E>,
    index: Map<K, usize>,
}

impl<K: std::hash::Hash + Eq, E> Default for Table<K, E> {
    fn default() -> Self {
        Table {
            entries: Vec::new(),
            index: Map::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, E> Table<K, E> {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
    pub(super) fn get(&self, k: &K) -> Option<&E> {
        self.index.get(k).map(|&i| &self.entries[i])
    }
    pub(super) fn get_mut(&mut self, k: &K) -> Option<&mut E> {
        self.index.get(k).map(|&i| &mut self.entries[i])
    }
    pub(super) fn contains_key(&self, k: &K) -> bool {
        self.index.contains_key(k)
    }
    /// Inserts or replaces; returns the replaced entry.
    pub(super) fn insert(&mut self, k: K, e: E) -> Option<E> {
        match self.index.get(&k) {
            Some(&i) => Some(std::mem::replace(&mut self.entries[i], e)),
            None => {
                self.index.insert(k, self.entries.len());
                self.entries.push(e);
                None
            }
        }
    }
    /// Removes the entry of `k`; `key` names an entry's key (to re-point
    /// the entry moved into the hole).
    pub(super) fn remove(&mut self, k: &K, key: impl Fn(&E) -> K) -> Option<E> {
        let i = self.index.remove(k)?;
        let gone = self.entries.swap_remove(i);
        if let Some(moved) = self.entries.get(i) {
            self.index.insert(key(moved), i);
        }
        Some(gone)
    }
    pub(super) fn values(&self) -> std::slice::Iter<'_, E> {
        self.entries.iter()
    }
    pub(super) fn index_of(&self, k: &K) -> Option<usize> {
        self.index.get(k).copied()
    }
    /// Removes the entries past the first `len` (an undo of their inserts,
    /// valid only while nothing was removed since).
    pub(super) fn truncate(&mut self, len: usize, key: impl Fn(&E) -> K) {
        while self.entries.len() > len {
            if let Some(e) = self.entries.pop() {
                self.index.remove(&key(&e));
            }
        }
    }
    pub(super) fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
        self.index.reserve(n);
    }
}
