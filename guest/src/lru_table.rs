//! `LruTable`: a compact map from string key to value in least-recently-used order.
//!
//! It serves both LRU structures of the index: key → [`Slot`](crate::index::Slot) for every
//! live entry, and key → value bytes for the hot value cache. Built for a million entries:
//! entries live in a slab of fixed-size chunks (with a free list) and link to each other by
//! `u32` index, keys live back to back in fixed-size arena chunks, and the hash table holds
//! only `u32` entry numbers. Chunks matter in wasm, whose memory never shrinks: a doubling
//! `Vec` would leave every outgrown copy of itself behind. With `Slot` values that is about 40
//! bytes per entry plus the key and the table's ~5 bytes per bucket, where a linked hash map
//! of boxed keys spends two more heap allocations and about twice the bytes.

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

const NIL: u32 = u32::MAX;
/// Entries per slab chunk.
const ENTRY_CHUNK: usize = 4096;
/// Bytes per key arena chunk; keys (at most 4096 bytes) never straddle two chunks.
const KEY_CHUNK: usize = 64 * 1024;

struct Entry<V> {
    value: V,
    key_start: u32,
    key_len: u16,
    prev: u32,
    /// The next entry in LRU order, or the next free entry for a free one.
    next: u32,
}

impl<V: Default> Default for Entry<V> {
    fn default() -> Self {
        Self {
            value: V::default(),
            key_start: 0,
            key_len: 0,
            prev: NIL,
            next: NIL,
        }
    }
}

/// Keys mapped to values, in least-recently-used order (front = least recently used).
///
/// A removed entry's value is dropped at once (`V::default()` takes its place until the entry
/// is reused), so values that own memory, like the hot cache's bytes, free it on removal.
pub struct LruTable<V> {
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    entries: Slab<V>,
    keys: KeyArena,
    /// Arena bytes of removed keys, reclaimed when they outweigh the live ones.
    dead_key_bytes: usize,
    free: u32,
    head: u32,
    tail: u32,
    len: usize,
}

impl<V> Default for LruTable<V> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            entries: Slab::default(),
            keys: KeyArena::default(),
            dead_key_bytes: 0,
            free: NIL,
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

/// Entries in chunks of `ENTRY_CHUNK`, addressed by a `u32` number. A chunk is a fixed-size
/// array, so indexing into it needs no bounds check (lookups index the slab several times).
struct Slab<V> {
    chunks: Vec<Box<[Entry<V>; ENTRY_CHUNK]>>,
    len: usize,
}

impl<V> Default for Slab<V> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<V: Default> Slab<V> {
    fn push(&mut self, entry: Entry<V>) -> u32 {
        if self.len.is_multiple_of(ENTRY_CHUNK) {
            let chunk: Box<[Entry<V>]> = (0..ENTRY_CHUNK).map(|_| Entry::default()).collect();
            match chunk.try_into() {
                Ok(chunk) => self.chunks.push(chunk),
                Err(_) => unreachable!("the chunk holds ENTRY_CHUNK entries"),
            }
        }
        let i = self.len;
        self[i] = entry;
        self.len += 1;
        i as u32
    }
}

impl<V> std::ops::Index<usize> for Slab<V> {
    type Output = Entry<V>;
    fn index(&self, i: usize) -> &Entry<V> {
        &self.chunks[i / ENTRY_CHUNK][i % ENTRY_CHUNK]
    }
}

impl<V> std::ops::IndexMut<usize> for Slab<V> {
    fn index_mut(&mut self, i: usize) -> &mut Entry<V> {
        &mut self.chunks[i / ENTRY_CHUNK][i % ENTRY_CHUNK]
    }
}

/// Key bytes in chunks of `KEY_CHUNK`; a key's position is chunk * KEY_CHUNK + offset.
#[derive(Default)]
struct KeyArena {
    chunks: Vec<Vec<u8>>,
    /// Bytes stored, live or dead.
    len: usize,
}

impl KeyArena {
    fn push(&mut self, key: &[u8]) -> u32 {
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.len() + key.len() <= KEY_CHUNK);
        if !fits {
            self.chunks.push(Vec::with_capacity(KEY_CHUNK));
        }
        let chunk_no = self.chunks.len() - 1;
        let chunk = &mut self.chunks[chunk_no];
        let at = chunk_no * KEY_CHUNK + chunk.len();
        chunk.extend_from_slice(key);
        self.len += key.len();
        at as u32
    }

    fn get(&self, start: u32, len: u16) -> &[u8] {
        let (chunk, offset) = (start as usize / KEY_CHUNK, start as usize % KEY_CHUNK);
        &self.chunks[chunk][offset..offset + len as usize]
    }
}

fn key_of<'a, V>(keys: &'a KeyArena, e: &Entry<V>) -> &'a str {
    // Only `&str` keys are ever copied in, so the bytes are UTF-8.
    std::str::from_utf8(keys.get(e.key_start, e.key_len)).unwrap_or_default()
}

/// True if entry `e` holds `key`: compares bytes, without `key_of`'s UTF-8 check (lookups
/// compare on every probe, and this is their hot path).
fn holds<V>(keys: &KeyArena, e: &Entry<V>, key: &str) -> bool {
    keys.get(e.key_start, e.key_len) == key.as_bytes()
}

impl<V: Default> LruTable<V> {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn find(&self, key: &str) -> Option<u32> {
        self.find_hashed(self.hasher.hash_one(key), key)
    }

    /// `find` with the key's hash already computed.
    fn find_hashed(&self, hash: u64, key: &str) -> Option<u32> {
        let (entries, keys) = (&self.entries, &self.keys);
        self.table
            .find(hash, |&i| holds(keys, &entries[i as usize], key))
            .copied()
    }

    /// The value of `key`, without changing the order; `None` on a miss.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.find(key).map(|i| &self.entries[i as usize].value)
    }

    /// The value of `key` for changing in place, without changing the order.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let i = self.find(key)?;
        Some(&mut self.entries[i as usize].value)
    }

    /// True when `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_some()
    }

    /// Moves `key` to the most recently used end and returns its value; `None` on a miss.
    pub fn to_back(&mut self, key: &str) -> Option<&V> {
        let i = self.find(key)?;
        if i != self.tail {
            self.unlink(i);
            self.push_back(i);
        }
        Some(&self.entries[i as usize].value)
    }

    /// Makes room for `additional` more entries in the hash table at once (loading a snapshot
    /// of known size), so inserting them never rehashes. The entries' chunks grow as before.
    pub fn reserve(&mut self, additional: usize) {
        let (entries, keys, hasher) = (&self.entries, &self.keys, &self.hasher);
        self.table.reserve(additional, |&j| {
            hasher.hash_one(key_of(keys, &entries[j as usize]))
        });
    }

    /// Stores `value` under `key` as the most recently used entry; returns the replaced value.
    pub fn insert(&mut self, key: &str, value: V) -> Option<V> {
        let hash = self.hasher.hash_one(key);
        if let Some(i) = self.find_hashed(hash, key) {
            let old = std::mem::replace(&mut self.entries[i as usize].value, value);
            self.unlink(i);
            self.push_back(i);
            return Some(old);
        }
        let key_start = self.keys.push(key.as_bytes());
        let entry = Entry {
            value,
            key_start,
            key_len: key.len() as u16,
            prev: NIL,
            next: NIL,
        };
        let i = if self.free != NIL {
            let i = self.free;
            self.free = self.entries[i as usize].next;
            self.entries[i as usize] = entry;
            i
        } else {
            self.entries.push(entry)
        };
        let (entries, keys, hasher) = (&self.entries, &self.keys, &self.hasher);
        self.table.insert_unique(hash, i, |&j| {
            hasher.hash_one(key_of(keys, &entries[j as usize]))
        });
        self.push_back(i);
        self.len += 1;
        None
    }

    /// Removes `key` and returns its value; `None` on a miss.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let hash = self.hasher.hash_one(key);
        let (entries, keys) = (&self.entries, &self.keys);
        let found = self
            .table
            .find_entry(hash, |&i| holds(keys, &entries[i as usize], key))
            .ok()?;
        let (i, _) = found.remove();
        Some(self.release(i))
    }

    /// Removes and returns the least recently used entry.
    pub fn pop_front(&mut self) -> Option<(Box<str>, V)> {
        if self.head == NIL {
            return None;
        }
        let key: Box<str> = key_of(&self.keys, &self.entries[self.head as usize]).into();
        let value = self.remove(&key)?;
        Some((key, value))
    }

    /// The least recently used entry.
    pub fn front(&self) -> Option<(&str, &V)> {
        (self.head != NIL).then(|| {
            let e = &self.entries[self.head as usize];
            (key_of(&self.keys, e), &e.value)
        })
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &V) -> bool) {
        let doomed: Vec<Box<str>> = self
            .iter()
            .filter(|(k, s)| !keep(k, s))
            .map(|(k, _)| k.into())
            .collect();
        for key in doomed {
            self.remove(&key);
        }
    }

    /// Removes every entry and frees the memory.
    pub fn clear(&mut self) {
        *self = LruTable {
            hasher: self.hasher.clone(),
            ..LruTable::default()
        };
    }

    /// Entries from least to most recently used.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        let mut at = self.head;
        std::iter::from_fn(move || {
            if at == NIL {
                return None;
            }
            let e = &self.entries[at as usize];
            at = e.next;
            Some((key_of(&self.keys, e), &e.value))
        })
    }

    /// The values, least recently used first.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, s)| s)
    }

    fn push_back(&mut self, i: u32) {
        let e = &mut self.entries[i as usize];
        e.prev = self.tail;
        e.next = NIL;
        if self.tail != NIL {
            self.entries[self.tail as usize].next = i;
        } else {
            self.head = i;
        }
        self.tail = i;
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let e = &self.entries[i as usize];
            (e.prev, e.next)
        };
        if prev != NIL {
            self.entries[prev as usize].next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        } else {
            self.tail = prev;
        }
    }

    /// Unlinks entry `i` (already out of the hash table), puts it on the free list and returns
    /// its value.
    fn release(&mut self, i: u32) -> V {
        self.unlink(i);
        let e = &mut self.entries[i as usize];
        let value = std::mem::take(&mut e.value);
        self.dead_key_bytes += e.key_len as usize;
        e.key_len = 0;
        e.next = self.free;
        self.free = i;
        self.len -= 1;
        if self.dead_key_bytes > KEY_CHUNK && self.dead_key_bytes > self.keys.len / 2 {
            self.compact_keys();
        }
        value
    }

    /// Rewrites the key arena without the keys of removed entries.
    fn compact_keys(&mut self) {
        let mut keys = KeyArena::default();
        let mut at = self.head;
        while at != NIL {
            let e = &self.entries[at as usize];
            let (start, len, next) = (e.key_start, e.key_len, e.next);
            let new_start = keys.push(self.keys.get(start, len));
            self.entries[at as usize].key_start = new_start;
            at = next;
        }
        self.keys = keys;
        self.dead_key_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Slot;
    use std::collections::VecDeque;

    fn slot(n: u32) -> Slot {
        Slot {
            segment: n,
            offset: n,
            len: n,
            expires_at: u64::from(n),
        }
    }

    /// The table against a simple model (a VecDeque in LRU order), through many operations
    /// that force free-list reuse and key arena compaction.
    #[test]
    fn matches_a_model_through_inserts_removals_and_reorders() {
        let mut table = LruTable::default();
        let mut model: VecDeque<(String, Slot)> = VecDeque::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for step in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("key-{}-{}", x % 500, "p".repeat((x % 7) as usize));
            match x % 6 {
                0 | 1 => {
                    let old = model
                        .iter()
                        .position(|(k, _)| *k == key)
                        .map(|p| model.remove(p).unwrap().1);
                    model.push_back((key.clone(), slot(step)));
                    assert_eq!(table.insert(&key, slot(step)), old);
                }
                2 => {
                    let old = model
                        .iter()
                        .position(|(k, _)| *k == key)
                        .map(|p| model.remove(p).unwrap().1);
                    assert_eq!(table.remove(&key), old);
                }
                3 => {
                    if let Some(p) = model.iter().position(|(k, _)| *k == key) {
                        let e = model.remove(p).unwrap();
                        model.push_back(e);
                    }
                    table.to_back(&key);
                }
                4 => {
                    let want = model.pop_front();
                    let got = table.pop_front().map(|(k, s)| (k.into_string(), s));
                    assert_eq!(got, want);
                }
                _ => assert_eq!(
                    table.get(&key).copied(),
                    model.iter().find(|(k, _)| *k == key).map(|(_, s)| *s)
                ),
            }
            assert_eq!(table.len(), model.len());
        }
        let order: Vec<(String, Slot)> = table.iter().map(|(k, s)| (k.to_owned(), *s)).collect();
        assert_eq!(order, Vec::from(model));
        table.retain(|k, _| k.ends_with('p'));
        assert!(table.iter().all(|(k, _)| k.ends_with('p')));
        table.clear();
        assert!(table.is_empty() && table.front().is_none());
    }

    #[test]
    fn removed_values_are_dropped_at_once() {
        let value = std::rc::Rc::new(7u8);
        let mut table: LruTable<std::rc::Rc<u8>> = LruTable::default();
        for k in ["a", "b", "c", "d"] {
            table.insert(k, value.clone());
        }
        table.remove("a");
        table.pop_front();
        table.insert("c", std::rc::Rc::new(0));
        table.retain(|k, _| k != "d");
        assert_eq!(std::rc::Rc::strong_count(&value), 1, "every copy dropped");
        assert_eq!(table.to_back("c").map(|v| **v), Some(0));
        assert_eq!(table.to_back("missing"), None);
    }
}
