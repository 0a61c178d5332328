//! Paging through keys (`Engine::keys`): the first page by a scan of the index, later pages
//! from a sorted list kept between calls.

use super::Engine;
use crate::storage::Storage;
use crate::time::TimeSource;
use std::collections::BinaryHeap;

/// The sorted keys of a `keys` listing past its first page, so that each later page is a
/// binary search instead of a scan of the whole index.
pub(super) struct KeyListing {
    prefix: String,
    /// The listing holds every key greater than this that matched when it was built.
    built_after: String,
    /// Matching keys greater than `built_after`, sorted; entries removed since are skipped.
    keys: Vec<Box<str>>,
}

impl<S: Storage, T: TimeSource> Engine<S, T> {
    /// The page of `keys` after the cursor `after`, from the kept listing (built now if it
    /// cannot serve this cursor).
    pub(super) fn next_page(&mut self, prefix: &str, after: &str, limit: usize) -> Vec<String> {
        let now = self.time.now_ms();
        let reusable = self
            .listing
            .as_ref()
            .is_some_and(|l| l.prefix == prefix && l.built_after.as_str() <= after);
        if !reusable {
            let mut keys: Vec<Box<str>> = self
                .index
                .iter()
                .filter(|(key, slot)| {
                    key.starts_with(prefix) && *key > after && !slot.is_expired(now)
                })
                .map(|(key, _)| key.into())
                .collect();
            keys.sort_unstable();
            self.listing = Some(KeyListing {
                prefix: prefix.to_owned(),
                built_after: after.to_owned(),
                keys,
            });
        }
        let Some(listing) = &self.listing else {
            return Vec::new();
        };
        let start = listing.keys.partition_point(|k| &**k <= after);
        let mut page = Vec::with_capacity(limit.min(listing.keys.len() - start));
        let mut end = start;
        for key in &listing.keys[start..] {
            if page.len() == limit {
                break;
            }
            end += 1;
            let live = self
                .index
                .get(key)
                .is_some_and(|slot| !slot.is_expired(now));
            if live {
                page.push(key.to_string());
            }
        }
        if end == listing.keys.len() {
            self.listing = None;
        }
        page
    }

    /// The first page of `keys` (the `limit` smallest live keys with `prefix`), by scanning the
    /// whole index.
    pub(super) fn scan_keys(&self, prefix: &str, limit: usize) -> Vec<String> {
        let now = self.time.now_ms();
        // The `limit` smallest matching keys, kept in a max-heap.
        let mut page: BinaryHeap<&str> = BinaryHeap::with_capacity(limit.min(1 << 16) + 1);
        for (key, slot) in self.index.iter() {
            if limit == 0
                || !key.starts_with(prefix)
                || (slot.expires_at != 0 && slot.is_expired(now))
            {
                continue;
            }
            if page.len() < limit {
                page.push(key);
            } else if page.peek().is_some_and(|largest| key < *largest) {
                page.pop();
                page.push(key);
            }
        }
        page.into_sorted_vec()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }
}
