//! The in-memory index: where each live key's record is, in least-recently-used order.
//!
//! Opened from a layout 1 snapshot, the index starts as that snapshot's table, used in place
//! (the *base*: no per-entry work at open); an entry leaves the base for the in-memory table
//! when it is used, written or removed, so every base entry is older than every in-memory one
//! and the LRU order is the base's order followed by the table's.
//!
//! It also keeps the live bytes of every segment, so eviction and compaction know what a
//! segment still holds without reading it, and a bounded cache of hot values, so most hits
//! are answered without reading the disk. Every removal from the index drops the hot value
//! too, so the hot cache can never hold a value the index no longer has.

use crate::format::SnapshotTable;
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

/// The entries of a snapshot table still used in place: those not yet moved to the
/// in-memory table or removed.
struct Base {
    table: SnapshotTable,
    /// One bit per entry: set once it left the base (moved, removed, or unreadable).
    gone: Vec<u64>,
    /// Entries still in the base.
    live: usize,
    /// No entry before this one is still in the base (where the LRU end is).
    front: usize,
}

impl Base {
    fn is_gone(&self, i: usize) -> bool {
        self.gone[i / 64] & (1 << (i % 64)) != 0
    }

    fn mark_gone(&mut self, i: usize) {
        self.gone[i / 64] |= 1 << (i % 64);
        self.live -= 1;
    }

    /// The entry holding `key`, if it is still in the base.
    fn find(&self, key: &str) -> Option<usize> {
        self.table.find(key).filter(|&i| !self.is_gone(i))
    }

    /// The entries still in the base with readable keys, least recently used first.
    fn iter(&self) -> impl Iterator<Item = (usize, &str, Slot)> + '_ {
        (self.front..self.table.len())
            .filter(|&i| !self.is_gone(i))
            .filter_map(|i| Some((i, self.table.key(i)?, self.table.slot(i))))
    }
}

/// Live keys in LRU order (front = least recently used) with per-segment live byte counts.
#[derive(Default)]
pub struct LruIndex {
    /// Entries older than every entry of `map`, used in place from the snapshot.
    base: Option<Base>,
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

    /// Starts the index from a snapshot table, used in place, with the live bytes its segment
    /// summaries give. Returns false (and changes nothing) unless the index is empty.
    pub fn start_from(&mut self, table: SnapshotTable) -> bool {
        if !self.is_empty() || self.base.is_some() {
            return false;
        }
        // Saturating: a crafted file's summaries may add up past u64.
        for summary in table.segments() {
            let live = self.live_by_segment.entry(summary.id).or_insert(0);
            *live = live.saturating_add(summary.live_bytes);
            self.live_bytes = self.live_bytes.saturating_add(summary.live_bytes);
        }
        let count = table.len();
        self.base = Some(Base {
            gone: vec![0; count.div_ceil(64)],
            live: count,
            front: 0,
            table,
        });
        true
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.map.len() + self.base.as_ref().map_or(0, |b| b.live)
    }

    /// True when no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes `key` from the base if it is there, returning its slot (accounting unchanged).
    fn take_from_base(&mut self, key: &str) -> Option<Slot> {
        let base = self.base.as_mut()?;
        let i = base.find(key)?;
        base.mark_gone(i);
        let slot = base.table.slot(i);
        self.drop_base_if_empty();
        Some(slot)
    }

    /// Frees the table once nothing is used from it.
    fn drop_base_if_empty(&mut self) {
        if self.base.as_ref().is_some_and(|b| b.live == 0) {
            self.base = None;
        }
    }

    /// Moves `key` from the base to the back of the in-memory table (it was used).
    fn promote(&mut self, key: &str) -> bool {
        match self.take_from_base(key) {
            Some(slot) => {
                self.map.insert(key, slot);
                true
            }
            None => false,
        }
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
        if let Some(slot) = self.map.get(key) {
            return Some(*slot);
        }
        let base = self.base.as_ref()?;
        base.find(key).map(|i| base.table.slot(i))
    }

    /// Marks `key` as the most recently used; no-op on a miss.
    pub fn touch(&mut self, key: &str) {
        if self.map.to_back(key).is_none() {
            self.promote(key);
        }
    }

    /// The slot of `key`, marking it the most recently used (one lookup for both in the
    /// in-memory table).
    pub fn get_and_touch(&mut self, key: &str) -> Option<Slot> {
        if let Some(slot) = self.map.to_back(key) {
            return Some(*slot);
        }
        let slot = self.take_from_base(key)?;
        self.map.insert(key, slot);
        Some(slot)
    }

    /// Makes room for `additional` more entries (see `LruTable::reserve`).
    pub fn reserve(&mut self, additional: usize) {
        self.map.reserve(additional);
    }

    /// Stores `key` as the most recently used entry, returning the slot it replaced.
    pub fn insert(&mut self, key: &str, slot: Slot) -> Option<Slot> {
        self.drop_hot(key);
        self.account_add(slot);
        let old = self
            .map
            .insert(key, slot)
            .or_else(|| self.take_from_base(key));
        if let Some(old) = old {
            self.account_remove(old);
        }
        old
    }

    /// Removes `key`, returning its slot; `None` on a miss.
    pub fn remove(&mut self, key: &str) -> Option<Slot> {
        self.drop_hot(key);
        let old = self.map.remove(key).or_else(|| self.take_from_base(key))?;
        self.account_remove(old);
        Some(old)
    }

    /// The number of the least recently used entry still in the base, skipping (and
    /// dropping) entries whose key cannot be read; `None` when the base is empty.
    fn base_front(&mut self) -> Option<usize> {
        loop {
            let base = self.base.as_mut()?;
            while base.front < base.table.len() && base.is_gone(base.front) {
                base.front += 1;
            }
            if base.front == base.table.len() {
                self.base = None;
                return None;
            }
            let i = base.front;
            if base.table.key(i).is_some() {
                return Some(i);
            }
            // A key a crafted file made unreadable: the entry cannot be looked up either.
            let slot = base.table.slot(i);
            base.mark_gone(i);
            self.account_remove(slot);
            self.drop_base_if_empty();
        }
    }

    /// Removes and returns the least recently used entry; `None` when empty.
    pub fn pop_lru(&mut self) -> Option<(Box<str>, Slot)> {
        if let Some(i) = self.base_front() {
            let base = self.base.as_mut()?;
            let key: Box<str> = base.table.key(i)?.into();
            let slot = base.table.slot(i);
            base.mark_gone(i);
            self.drop_base_if_empty();
            self.account_remove(slot);
            return Some((key, slot));
        }
        let (key, slot) = self.map.pop_front()?;
        self.drop_hot(&key);
        self.account_remove(slot);
        Some((key, slot))
    }

    /// The least recently used key, if any.
    pub fn lru_key(&mut self) -> Option<&str> {
        match self.base_front() {
            Some(i) => self.base.as_ref()?.table.key(i),
            None => self.map.front().map(|(k, _)| k),
        }
    }

    /// Changes the expiry of `key` (0 = never) without changing its recency; false on a miss.
    pub fn set_expires_at(&mut self, key: &str, expires_at: u64) -> bool {
        if let Some(slot) = self.map.get_mut(key) {
            slot.expires_at = expires_at;
            return true;
        }
        match self.base.as_mut() {
            Some(base) => match base.find(key) {
                Some(i) => {
                    base.table.set_expires_at(i, expires_at);
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    /// Points `key` at a new location (after compaction) without changing its recency.
    pub fn relocate(&mut self, key: &str, segment: u32, offset: u32) {
        let old = if let Some(slot) = self.map.get_mut(key) {
            let old = *slot;
            slot.segment = segment;
            slot.offset = offset;
            old
        } else if let Some(base) = self.base.as_mut() {
            let Some(i) = base.find(key) else {
                return;
            };
            let old = base.table.slot(i);
            base.table.set_location(i, segment, offset);
            old
        } else {
            return;
        };
        self.account_remove(old);
        self.account_add(Slot {
            segment,
            offset,
            ..old
        });
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, keep: impl FnMut(&str, &Slot) -> bool) {
        self.retain_where(true, keep);
    }

    /// `retain` for the entries in memory only, leaving those used in place from a snapshot
    /// table unvisited (so it costs nothing per entry of the table).
    pub fn retain_in_memory(&mut self, keep: impl FnMut(&str, &Slot) -> bool) {
        self.retain_where(false, keep);
    }

    fn retain_where(&mut self, in_base: bool, mut keep: impl FnMut(&str, &Slot) -> bool) {
        let mut removed = Vec::new();
        if let Some(base) = self.base.as_mut().filter(|_| in_base) {
            let dropped: Vec<usize> = base
                .iter()
                .filter(|(_, key, slot)| !keep(key, slot))
                .map(|(i, _, _)| i)
                .collect();
            for i in dropped {
                removed.push(base.table.slot(i));
                base.mark_gone(i);
            }
            self.drop_base_if_empty();
        }
        self.map.retain(|k, slot| {
            let kept = keep(k, slot);
            if !kept {
                removed.push(*slot);
            }
            kept
        });
        for slot in removed {
            self.account_remove(slot);
        }
        let map = &self.map;
        self.hot.retain(|k, _| map.contains_key(k));
        self.hot_bytes = self.hot.iter().map(|(k, v)| k.len() + v.len()).sum();
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.base = None;
        self.map.clear();
        self.hot.clear();
        self.hot_bytes = 0;
        self.live_by_segment.clear();
        self.live_bytes = 0;
    }

    /// Entries from least to most recently used.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Slot)> {
        let base = self
            .base
            .iter()
            .flat_map(|b| b.iter().map(|(_, k, s)| (k, s)));
        base.chain(self.map.iter().map(|(k, s)| (k, *s)))
    }

    fn account_add(&mut self, slot: Slot) {
        let live = self.live_by_segment.entry(slot.segment).or_insert(0);
        *live = live.saturating_add(u64::from(slot.len));
        self.live_bytes = self.live_bytes.saturating_add(u64::from(slot.len));
    }

    fn account_remove(&mut self, slot: Slot) {
        // Saturating: a base's summaries come from a file, which a crafted one could make
        // disagree with its entries.
        if let Some(live) = self.live_by_segment.get_mut(&slot.segment) {
            *live = live.saturating_sub(u64::from(slot.len));
            if *live == 0 {
                self.live_by_segment.remove(&slot.segment);
            }
        }
        self.live_bytes = self.live_bytes.saturating_sub(u64::from(slot.len));
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
