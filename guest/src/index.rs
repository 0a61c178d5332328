//! The in-memory index: where each live key's record is, in least-recently-used order.
//!
//! It also keeps the live bytes of every segment, so eviction and compaction know what a
//! segment still holds without reading it, and a bounded cache of hot values, so most hits
//! are answered without reading the disk. Every removal from the index drops the hot value
//! too, so the hot cache can never hold a value the index no longer has.

use crate::lru_table::LruTable;
use hashbrown::HashMap;

/// Where a live record is and when it expires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    pub segment: u32,
    pub offset: u32,
    /// Bytes of the whole record.
    pub len: u32,
    /// Milliseconds since the UNIX epoch; 0 = never.
    pub expires_at: u64,
}

impl Slot {
    /// True when the entry must no longer be returned at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at != 0 && now_ms >= self.expires_at
    }
}

/// Live keys in LRU order (front = least recently used) with per-segment live byte counts.
#[derive(Default)]
pub struct LruIndex {
    map: LruTable<Slot>,
    live_by_segment: HashMap<u32, u64>,
    live_bytes: u64,
    /// Values of recently used entries, least recently used first: the same table type as
    /// `map`, kept apart because membership differs (only small values, dropped to fit the
    /// hot budget while their entries stay live).
    hot: LruTable<Box<[u8]>>,
    hot_bytes: usize,
    hot_budget: usize,
}

impl LruIndex {
    /// Caps the hot value cache at `bytes` (values and keys).
    pub fn set_hot_budget(&mut self, bytes: usize) {
        self.hot_budget = bytes;
        self.shrink_hot();
    }

    /// The cached value of `key`, marking it recently used there; `None` if not cached.
    pub fn hot_value(&mut self, key: &str) -> Option<&[u8]> {
        self.hot.to_back(key).map(|v| &**v)
    }

    /// Whether `key`'s value is in the hot value cache (recency unchanged).
    pub fn is_hot(&self, key: &str) -> bool {
        self.hot.contains_key(key)
    }

    /// Caches `value` as the value of live `key`; values over a 32nd of the budget are not
    /// cached: one big value would push out many small ones, and copying it costs about
    /// what reading it from the page cache does.
    pub fn cache_value(&mut self, key: &str, value: &[u8]) {
        let cost = key.len() + value.len();
        if cost > self.hot_budget / 32 || !self.map.contains_key(key) {
            return;
        }
        if let Some(old) = self.hot.insert(key, value.into()) {
            self.hot_bytes -= key.len() + old.len();
        }
        self.hot_bytes += cost;
        self.shrink_hot();
    }

    fn drop_hot(&mut self, key: &str) {
        // Loading a snapshot inserts every entry while nothing is hot: skip the lookup.
        if self.hot.is_empty() {
            return;
        }
        if let Some(old) = self.hot.remove(key) {
            self.hot_bytes -= key.len() + old.len();
        }
    }

    fn shrink_hot(&mut self) {
        while self.hot_bytes > self.hot_budget {
            match self.hot.pop_front() {
                Some((k, v)) => self.hot_bytes -= k.len() + v.len(),
                None => break,
            }
        }
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no entry is live.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of all live records.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Bytes of live records in `segment`.
    pub fn live_in(&self, segment: u32) -> u64 {
        self.live_by_segment.get(&segment).copied().unwrap_or(0)
    }

    /// The slot of `key` without changing its recency; `None` on a miss.
    pub fn get(&self, key: &str) -> Option<Slot> {
        self.map.get(key).copied()
    }

    /// Marks `key` as the most recently used; no-op on a miss.
    pub fn touch(&mut self, key: &str) {
        self.map.to_back(key);
    }

    /// The slot of `key`, marking it the most recently used (one lookup for both).
    pub fn get_and_touch(&mut self, key: &str) -> Option<Slot> {
        self.map.to_back(key).copied()
    }

    /// Makes room for `additional` more entries (see `LruTable::reserve`).
    pub fn reserve(&mut self, additional: usize) {
        self.map.reserve(additional);
    }

    /// Stores `key` as the most recently used entry, returning the slot it replaced.
    pub fn insert(&mut self, key: &str, slot: Slot) -> Option<Slot> {
        self.drop_hot(key);
        self.account_add(slot);
        let old = self.map.insert(key, slot);
        if let Some(old) = old {
            self.account_remove(old);
        }
        old
    }

    /// Removes `key`, returning its slot; `None` on a miss.
    pub fn remove(&mut self, key: &str) -> Option<Slot> {
        self.drop_hot(key);
        let old = self.map.remove(key)?;
        self.account_remove(old);
        Some(old)
    }

    /// Removes and returns the least recently used entry; `None` when empty.
    pub fn pop_lru(&mut self) -> Option<(Box<str>, Slot)> {
        let (key, slot) = self.map.pop_front()?;
        self.drop_hot(&key);
        self.account_remove(slot);
        Some((key, slot))
    }

    /// The least recently used key, if any.
    pub fn lru_key(&self) -> Option<&str> {
        self.map.front().map(|(k, _)| k)
    }

    /// Changes the expiry of `key` (0 = never); false on a miss.
    pub fn set_expires_at(&mut self, key: &str, expires_at: u64) -> bool {
        match self.map.get_mut(key) {
            Some(slot) => {
                slot.expires_at = expires_at;
                true
            }
            None => false,
        }
    }

    /// Points `key` at a new location (after compaction) without changing its recency.
    pub fn relocate(&mut self, key: &str, segment: u32, offset: u32) {
        if let Some(slot) = self.map.get_mut(key) {
            let old = *slot;
            slot.segment = segment;
            slot.offset = offset;
            let new = *slot;
            self.account_remove(old);
            self.account_add(new);
        }
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Slot) -> bool) {
        self.map.retain(|k, slot| keep(k, slot));
        let map = &self.map;
        self.hot.retain(|k, _| map.contains_key(k));
        self.hot_bytes = self.hot.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.recount();
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.map.clear();
        self.hot.clear();
        self.hot_bytes = 0;
        self.live_by_segment.clear();
        self.live_bytes = 0;
    }

    /// Entries from least to most recently used.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Slot)> {
        self.map.iter()
    }

    fn recount(&mut self) {
        self.live_by_segment.clear();
        self.live_bytes = 0;
        let slots: Vec<Slot> = self.map.values().copied().collect();
        for slot in slots {
            self.account_add(slot);
        }
    }

    fn account_add(&mut self, slot: Slot) {
        *self.live_by_segment.entry(slot.segment).or_insert(0) += u64::from(slot.len);
        self.live_bytes += u64::from(slot.len);
    }

    fn account_remove(&mut self, slot: Slot) {
        if let Some(live) = self.live_by_segment.get_mut(&slot.segment) {
            *live -= u64::from(slot.len);
            if *live == 0 {
                self.live_by_segment.remove(&slot.segment);
            }
        }
        self.live_bytes -= u64::from(slot.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(segment: u32, len: u32) -> Slot {
        Slot {
            segment,
            offset: 0,
            len,
            expires_at: 0,
        }
    }

    #[test]
    fn touch_moves_to_most_recent_and_pop_takes_least_recent() {
        let mut index = LruIndex::default();
        index.insert("a", slot(1, 10));
        index.insert("b", slot(1, 10));
        index.insert("c", slot(1, 10));
        index.touch("a");
        assert_eq!(index.pop_lru().unwrap().0.as_ref(), "b");
        assert_eq!(index.lru_key(), Some("c"));
    }

    #[test]
    fn live_bytes_follow_inserts_replacements_relocations_and_removals() {
        let mut index = LruIndex::default();
        index.insert("a", slot(1, 10));
        index.insert("b", slot(1, 20));
        assert_eq!(index.insert("a", slot(2, 5)), Some(slot(1, 10)));
        assert_eq!(
            (index.live_in(1), index.live_in(2), index.live_bytes()),
            (20, 5, 25)
        );
        index.relocate("b", 3, 64);
        assert_eq!((index.live_in(1), index.live_in(3)), (0, 20));
        index.remove("a");
        index.retain(|k, _| k != "b");
        assert_eq!(index.live_bytes(), 0);
        assert!(index.is_empty());
    }

    #[test]
    fn hot_values_follow_the_index_and_stay_in_budget() {
        let mut index = LruIndex::default();
        index.set_hot_budget(3200);
        for k in ["a", "b", "c"] {
            index.insert(k, slot(1, 10));
            index.cache_value(k, &[1u8; 99]);
        }
        assert_eq!(index.hot_value("a"), Some(&[1u8; 99][..]));
        index.cache_value("d", &[0u8; 99]); // not live: never cached
        assert_eq!(index.hot_value("d"), None);
        index.cache_value("big", &[0u8; 200]);
        assert_eq!(index.hot_value("big"), None);
        index.insert("a", slot(2, 10)); // overwritten: the old value is gone
        assert_eq!(index.hot_value("a"), None);
        index.remove("b");
        assert_eq!(index.hot_value("b"), None);
        index.pop_lru(); // "c" (a moved to the back on insert)
        assert_eq!(index.hot_value("c"), None);
        for i in 0..40 {
            let k = format!("k{i}");
            index.insert(&k, slot(1, 10));
            index.cache_value(&k, &[2u8; 97]);
        }
        assert!(index.hot_bytes <= 3200);
        assert!(index.hot_value("k39").is_some() && index.hot_value("k0").is_none());
        index.clear();
        assert_eq!(index.hot_bytes, 0);
    }

    #[test]
    fn expiry_is_inclusive_and_zero_means_never() {
        let mut s = slot(1, 1);
        assert!(!s.is_expired(u64::MAX));
        s.expires_at = 100;
        assert!(!s.is_expired(99));
        assert!(s.is_expired(100));
    }
}
