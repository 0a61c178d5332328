//! The cache operations, written once for both handles ([`PersistentCache`] and
//! [`BlockingCache`]): typed values through CBOR, expiry, paging, stats, clear.
//!
//! [`PersistentCache`]: crate::PersistentCache
//! [`BlockingCache`]: crate::BlockingCache

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{decode, encode};
use crate::error::{Error, Result};
use crate::expiry::Expiry;
use crate::layout;
use crate::shared::SharedCache;

/// Keys fetched from the guest per call by `keys`.
pub(crate) const KEYS_PAGE: u32 = 1000;

/// A snapshot of a cache's counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Live entries (expired entries not yet swept may be included).
    pub entries: u64,
    /// Bytes the cache occupies on disk.
    pub volume: u64,
    /// The cache directory (canonical path).
    pub directory: PathBuf,
    /// The size limit in bytes.
    pub size_limit: u64,
    /// `get` calls that found a value since the cache was opened in this process.
    pub hits: u64,
    /// `get` calls that found nothing (missing or expired) since the cache was opened in this process.
    pub misses: u64,
    /// Entries removed because their TTL had passed (found by a read, by `expire`, or swept
    /// to make room) since the cache was opened in this process.
    pub expired: u64,
    /// Live entries removed by LRU eviction to stay under the size limit since the cache was
    /// opened in this process.
    pub evicted: u64,
    /// Damage recovery found when the cache was opened: files moved into `<dir>/data/damaged/`
    /// and damaged stretches of the log skipped (each costs only the entries in it).
    pub damaged: u64,
    /// Bytes the stores of the plugins run on this cache (`<dir>/plugins/*`) occupy on disk,
    /// all together; not part of `volume`.
    pub plugin_volume: u64,
    /// The most bytes those plugin stores may hold together
    /// ([`CacheOptions::plugin_budget`](crate::CacheOptions::plugin_budget)).
    pub plugin_budget: u64,
}

/// About how many bytes writing `key` with a `value_len`-byte value appends to the log (for
/// the maintenance thread's wake-ups).
pub(crate) fn written(key: &str, value_len: usize) -> u64 {
    (persistent_cache_guest::format::RECORD_HEADER_LEN + key.len() + value_len) as u64
}

/// The `T` that found bytes encode; `None` stays `None` (a miss).
fn decode_found<T: DeserializeOwned>(found: Option<Vec<u8>>) -> Result<Option<T>> {
    found.map(|bytes| decode(&bytes)).transpose()
}

impl SharedCache {
    pub(crate) fn set_value<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expiry: Expiry,
    ) -> Result<()> {
        let bytes = encode(value)?;
        self.call(written(key, bytes.len()), |guest| {
            guest.set(key, &bytes, expiry)
        })
    }

    pub(crate) fn get_value<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        decode_found(self.call(0, |guest| guest.get(key))?)
    }

    pub(crate) fn add_value<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        expiry: Expiry,
    ) -> Result<bool> {
        let bytes = encode(value)?;
        self.call(written(key, bytes.len()), |guest| {
            guest.add(key, &bytes, expiry)
        })
    }

    pub(crate) fn pop_value<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        decode_found(self.call(written(key, 0), |guest| guest.pop(key))?)
    }

    /// Appends to `keys` the next page (of [`KEYS_PAGE`]) of live keys starting with `prefix`,
    /// after the last key in `keys`; true once the listing is complete. One guest call.
    pub(crate) fn next_keys_page(&self, prefix: &str, keys: &mut Vec<String>) -> Result<bool> {
        let after = keys.last().map(String::as_str);
        let page = self.call(0, |guest| guest.keys(prefix, after, KEYS_PAGE))?;
        let done = page.len() < KEYS_PAGE as usize;
        keys.extend(page);
        Ok(done)
    }

    /// The counters, with the plugin stores' bytes (read from disk: blocking).
    pub(crate) fn stats(&self) -> Result<Stats> {
        let counters = self.call(0, |guest| guest.stats())?;
        let plugin_volume = layout::plugin_stores(&self.directory)
            .map_err(Error::Io)?
            .iter()
            .map(|(_, path)| layout::engine_bytes(path))
            .sum();
        Ok(Stats {
            entries: counters.entries,
            volume: counters.volume,
            directory: self.directory.clone(),
            size_limit: counters.size_limit,
            hits: counters.hits,
            misses: counters.misses,
            expired: counters.expired,
            evicted: counters.evicted,
            damaged: counters.damaged,
            plugin_volume,
            plugin_budget: self.options.plugin_budget_value(),
        })
    }

    /// Removes every entry, then every entry of the plugin stores (blocking).
    pub(crate) fn clear_all(&self) -> Result<()> {
        self.call(crate::shared::WRITES, |guest| guest.clear())?;
        self.clear_plugin_stores()
    }
}
