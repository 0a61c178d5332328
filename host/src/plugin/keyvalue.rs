//! `wasi:keyvalue@0.2.0-draft2` store, atomics and batch, served from a plugin's own cache.
//!
//! Bucket `b` is the key prefix `b/` in the plugin's cache; bucket names cannot contain `/`, so
//! one bucket never reaches another's keys. Every operation is one call into the cache engine
//! (several engine calls under one lock for `increment`, `swap` and the batch calls), so no
//! other user of the same cache can come between its steps. Counters written by `increment`
//! are decimal ASCII text (`b"42"`), as Redis `INCRBY` and wasmtime's own keyvalue host keep
//! them, so plugins read them the same way on every backend. Every call counts against the
//! plugin's limits (`limits.rs`): the deadline is checked in every host loop, replies and CAS
//! handles are counted against the memory limit, and the cache engine's own limits stop the
//! plugin.

use wasmtime::component::Resource;

use super::bindings::wasi::keyvalue::{atomics, batch, store};
use super::limits::REPLY_ENTRY_BYTES;
use super::redis_store::{RedisBuckets, RedisFailed};
use super::{Backend, PluginState};
use crate::error::Error;
use crate::expiry::Expiry;
use crate::instance::GuestCache;
use crate::stop::HostLimitHit;

/// Keys returned per `list-keys` page.
const LIST_PAGE: u32 = 1000;

/// What a `bucket` handle refers to: the key prefix of the bucket in the plugin's cache.
pub struct BucketHandle {
    prefix: String,
}

/// A compare-and-swap handle: the full key and the value it held when the handle was made
/// (its bytes count against the plugin's memory limit while the handle lives).
pub struct CasHandle {
    key: String,
    seen: Option<Vec<u8>>,
}

impl CasHandle {
    fn held(&self) -> usize {
        self.seen.as_ref().map_or(0, Vec::len)
    }
}

/// True for 1–64 of `A-Z a-z 0-9 _ . -`, other than `.` and `..` (plugin and bucket names).
pub(crate) fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Why a keyvalue operation did not succeed: an error the plugin is given, or a reason to stop
/// the plugin (one of its limits, or a broken handle).
enum Failed {
    Store(store::Error),
    Stop(wasmtime::Error),
}

impl From<Error> for Failed {
    /// The plugin's cache ran out of the plugin's limits: stop the plugin; any other cache
    /// error is the plugin's to handle.
    fn from(err: Error) -> Failed {
        match err {
            Error::TimeLimit { .. } => Failed::Stop(wasmtime::Error::new(HostLimitHit::Time)),
            Error::MemoryLimit { .. } => {
                Failed::Stop(wasmtime::Error::new(HostLimitHit::Memory(err.to_string())))
            }
            other => Failed::Store(store::Error::Other(other.to_string())),
        }
    }
}

impl From<wasmtime::Error> for Failed {
    fn from(err: wasmtime::Error) -> Failed {
        Failed::Stop(err)
    }
}

impl From<store::Error> for Failed {
    fn from(err: store::Error) -> Failed {
        Failed::Store(err)
    }
}

impl From<RedisFailed> for Failed {
    fn from(err: RedisFailed) -> Failed {
        match err {
            RedisFailed::Store(message) => Failed::Store(store::Error::Other(message)),
            RedisFailed::Stop(trap) => Failed::Stop(trap),
        }
    }
}

/// A Redis-backed result as the bindings return it.
fn settle_redis<T>(result: Result<T, RedisFailed>) -> wasmtime::Result<Result<T, store::Error>> {
    settle(result.map_err(Failed::from))
}

/// A keyvalue result as the bindings return it: a stop is a trap, an error is the plugin's.
fn settle<T>(result: Result<T, Failed>) -> wasmtime::Result<Result<T, store::Error>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(Failed::Store(err)) => Ok(Err(err)),
        Err(Failed::Stop(trap)) => Err(trap),
    }
}

/// The counter value in `bytes`: decimal ASCII text of an `i64`.
fn parse_counter(key: &str, bytes: &[u8]) -> Result<i64, store::Error> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            store::Error::Other(format!(
                "the value of {key:?} is not a counter (decimal text of a 64-bit integer)"
            ))
        })
}

impl PluginState {
    /// The full key of `key` in `bucket`; a handle that is not in the table is a trap.
    fn full_key(&self, bucket: &Resource<BucketHandle>, key: &str) -> wasmtime::Result<String> {
        Ok(format!("{}{key}", self.table.get(bucket)?.prefix))
    }

    /// The key prefix of `bucket`; a handle that is not in the table is a trap.
    fn prefix(&self, bucket: &Resource<BucketHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(bucket)?.prefix.clone())
    }

    /// Runs `operation` on the plugin's cache engine, holding it for the whole closure, after
    /// checking the plugin's deadline.
    fn with_cache<T>(
        &self,
        operation: impl FnOnce(&mut GuestCache) -> Result<T, Failed>,
    ) -> Result<T, Failed> {
        self.limits.check_time()?;
        let Backend::Local(store) = &self.backend else {
            return Err(Failed::Store(store::Error::Other(
                "internal: a local-store call on a Redis-backed plugin".to_owned(),
            )));
        };
        // The outer error: the cache could not run the call at all (closed, or restarting).
        store
            .inner
            // The bytes a plugin call writes are not known here: an estimate, for the maintenance
            // thread's wake-ups.
            .call(256, |guest| Ok(operation(guest)))
            .unwrap_or_else(|err| Err(Failed::from(err)))
    }

    /// The Redis buckets, when Redis serves this plugin.
    fn redis(&self) -> Option<&RedisBuckets> {
        match &self.backend {
            Backend::Redis(buckets) => Some(buckets),
            Backend::Local(_) => None,
        }
    }

    /// Pushes a new CAS handle, counting the bytes it holds.
    fn push_cas(&mut self, handle: CasHandle) -> wasmtime::Result<Resource<CasHandle>> {
        self.limits.hold(handle.held())?;
        let held = handle.held();
        self.table.push(handle).map_err(|err| {
            self.limits.release(held);
            wasmtime::Error::from(err)
        })
    }

    /// Removes a CAS handle from the table, no longer counting its bytes.
    fn take_cas(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<CasHandle> {
        let handle = self.table.delete(cas)?;
        self.limits.release(handle.held());
        Ok(handle)
    }
}

impl store::Host for PluginState {
    fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<BucketHandle>, store::Error>> {
        self.limits.check_time()?;
        let name = if identifier.is_empty() {
            "default"
        } else {
            &identifier
        };
        if !is_valid_name(name) {
            return Ok(Err(store::Error::AccessDenied));
        }
        let prefix = format!("{name}/");
        // A full table (`MAX_RESOURCES`) stops the plugin at its memory limit.
        Ok(Ok(self.table.push(BucketHandle { prefix })?))
    }
}

impl store::HostBucket for PluginState {
    fn get(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        if let Some(redis) = self.redis() {
            let prefix = self.prefix(&bucket)?;
            let mut reply = self.limits.reply();
            return settle_redis(redis.get(&self.limits, &mut reply, &prefix, &key));
        }
        let key = self.full_key(&bucket, &key)?;
        let mut reply = self.limits.reply();
        settle(self.with_cache(|cache| {
            let value = cache.get(&key)?;
            reply.add(value.as_ref().map_or(0, Vec::len))?;
            Ok(value)
        }))
    }

    fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        if let Some(redis) = self.redis() {
            let prefix = self.prefix(&bucket)?;
            return settle_redis(redis.set(&self.limits, &prefix, &key, &value));
        }
        let key = self.full_key(&bucket, &key)?;
        settle(self.with_cache(|cache| Ok(cache.set(&key, &value, Expiry::Never)?)))
    }

    fn delete(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        if let Some(redis) = self.redis() {
            let prefix = self.prefix(&bucket)?;
            return settle_redis(redis.delete(&self.limits, &prefix, &key));
        }
        let key = self.full_key(&bucket, &key)?;
        settle(self.with_cache(|cache| Ok(cache.delete(&key).map(drop)?)))
    }

    fn exists(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        if let Some(redis) = self.redis() {
            let prefix = self.prefix(&bucket)?;
            return settle_redis(redis.exists(&self.limits, &prefix, &key));
        }
        let key = self.full_key(&bucket, &key)?;
        settle(self.with_cache(|cache| Ok(cache.contains(&key)?)))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        let prefix = self.prefix(&bucket)?;
        if let Some(redis) = self.redis() {
            let mut reply = self.limits.reply();
            return settle_redis(
                redis
                    .list_keys(&self.limits, &mut reply, &prefix, cursor)
                    .map(|(keys, cursor)| store::KeyResponse { keys, cursor }),
            );
        }
        let after = cursor.map(|cursor| format!("{prefix}{cursor}"));
        let mut reply = self.limits.reply();
        settle(self.with_cache(|cache| {
            let page = cache.keys(&prefix, after.as_deref(), LIST_PAGE)?;
            let mut keys = Vec::with_capacity(page.len());
            for key in page {
                let key = key[prefix.len()..].to_owned();
                reply.add(std::mem::size_of::<String>() + key.len())?;
                keys.push(key);
            }
            let cursor = (keys.len() == LIST_PAGE as usize)
                .then(|| keys.last().cloned())
                .flatten();
            Ok(store::KeyResponse { keys, cursor })
        }))
    }

    fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::HostCas for PluginState {
    fn new(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<CasHandle>, store::Error>> {
        if let Some(redis) = self.redis() {
            let prefix = self.prefix(&bucket)?;
            let mut reply = self.limits.reply();
            let seen = match settle_redis(redis.get(&self.limits, &mut reply, &prefix, &key))? {
                Ok(seen) => seen,
                Err(err) => return Ok(Err(err)),
            };
            return Ok(Ok(self.push_cas(CasHandle {
                key: format!("{prefix}{key}"),
                seen,
            })?));
        }
        let key = self.full_key(&bucket, &key)?;
        let seen = match settle(self.with_cache(|cache| Ok(cache.get(&key)?)))? {
            Ok(seen) => seen,
            Err(err) => return Ok(Err(err)),
        };
        Ok(Ok(self.push_cas(CasHandle { key, seen })?))
    }

    fn current(
        &mut self,
        cas: Resource<CasHandle>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        self.limits.check_time()?;
        let handle = self.table.get(&cas)?;
        self.limits.reply().add(handle.held())?;
        Ok(Ok(handle.seen.clone()))
    }

    fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.take_cas(cas)?;
        Ok(())
    }
}

impl atomics::Host for PluginState {
    fn increment(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, store::Error>> {
        if let Some(redis) = self.redis() {
            let prefix = self.prefix(&bucket)?;
            return settle_redis(redis.increment(&self.limits, &prefix, &key, delta));
        }
        let full = self.full_key(&bucket, &key)?;
        let limits = &self.limits;
        settle(self.with_cache(|cache| {
            let base = match cache.get(&full)? {
                Some(bytes) => parse_counter(&key, &bytes)?,
                None => 0,
            };
            let n = base.checked_add(delta).ok_or_else(|| {
                store::Error::Other(format!("{base} + {delta} overflows the counter {key:?}"))
            })?;
            limits.check_time()?;
            cache.set(&full, n.to_string().as_bytes(), Expiry::Never)?;
            Ok(n)
        }))
    }

    fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        // The handle is owned: the plugin gave it up with this call.
        let handle = self.take_cas(cas)?;
        let limits = &self.limits;
        if let Some(redis) = self.redis() {
            // The handle's key is `bucket/key`, as on the local store.
            let (bucket, key) = handle
                .key
                .split_once('/')
                .unwrap_or(("default", &handle.key));
            let mut reply = limits.reply();
            let swapped = redis
                .swap(
                    limits,
                    &mut reply,
                    bucket,
                    key,
                    handle.seen.as_deref(),
                    &value,
                )
                .map_err(Failed::from);
            return self.after_swap(handle, swapped);
        }
        let swapped = self.with_cache(|cache| {
            let now = cache.get(&handle.key)?;
            if now != handle.seen {
                return Ok(Some(now));
            }
            limits.check_time()?;
            cache.set(&handle.key, &value, Expiry::Never)?;
            Ok(None)
        });
        self.after_swap(handle, swapped)
    }
}

impl PluginState {
    /// The reply of `swap`: done, or a fresh handle on what the value is now.
    #[allow(clippy::type_complexity)]
    fn after_swap(
        &mut self,
        handle: CasHandle,
        swapped: Result<Option<Option<Vec<u8>>>, Failed>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        Ok(match settle(swapped)? {
            Ok(None) => Ok(()),
            Ok(Some(now)) => {
                // Changed since the handle was made: a fresh handle for the retry.
                let fresh = self.push_cas(CasHandle {
                    key: handle.key,
                    seen: now,
                })?;
                Err(atomics::CasError::CasFailed(fresh))
            }
            Err(err) => Err(atomics::CasError::StoreError(err)),
        })
    }
}

impl batch::Host for PluginState {
    fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, store::Error>> {
        let prefix = self.prefix(&bucket)?;
        let limits = &self.limits;
        let mut reply = limits.reply();
        if let Some(redis) = self.redis() {
            let values = redis.get_many(limits, &mut reply, &prefix, &keys);
            return settle_redis(values.map(|values| {
                keys.into_iter()
                    .zip(values)
                    .map(|(key, value)| value.map(|value| (key, value)))
                    .collect()
            }));
        }
        settle(self.with_cache(|cache| {
            // Built as the values come, counted before each is kept: the host never holds
            // much more than the memory limit of reply.
            let mut values = Vec::new();
            for key in keys {
                limits.check_time()?;
                let value = cache.get(&format!("{prefix}{key}"))?;
                let bytes = value.as_ref().map_or(0, |v| key.len() + v.len());
                reply.add(REPLY_ENTRY_BYTES + bytes)?;
                values.push(value.map(|value| (key, value)));
            }
            Ok(values)
        }))
    }

    fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let prefix = self.prefix(&bucket)?;
        let limits = &self.limits;
        if let Some(redis) = self.redis() {
            return settle_redis(redis.set_many(limits, &prefix, &key_values));
        }
        settle(self.with_cache(|cache| {
            for (key, value) in &key_values {
                limits.check_time()?;
                cache.set(&format!("{prefix}{key}"), value, Expiry::Never)?;
            }
            Ok(())
        }))
    }

    fn delete_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let prefix = self.prefix(&bucket)?;
        let limits = &self.limits;
        if let Some(redis) = self.redis() {
            return settle_redis(redis.delete_many(limits, &prefix, &keys));
        }
        settle(self.with_cache(|cache| {
            for key in &keys {
                limits.check_time()?;
                cache.delete(&format!("{prefix}{key}"))?;
            }
            Ok(())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_and_bounded() {
        for good in ["default", "a", "word-freq_2.0", &"x".repeat(64)] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a:b",
            "a b",
            "\u{0}",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_engines_limits_stop_the_plugin_and_other_errors_are_its_own() {
        use crate::stop::Stop;
        let time = Failed::from(Error::TimeLimit {
            limit: std::time::Duration::from_secs(1),
        });
        assert!(matches!(time, Failed::Stop(err) if matches!(Stop::of(&err), Stop::TimeLimit)));
        let memory = Failed::from(Error::MemoryLimit { limit: 1 });
        assert!(matches!(memory, Failed::Stop(err) if matches!(Stop::of(&err), Stop::MemoryLimit)));
        let invalid = Failed::from(Error::InvalidKey("empty".into()));
        assert!(matches!(invalid, Failed::Store(store::Error::Other(m)) if m.contains("empty")));
    }

    #[test]
    fn counters_are_decimal_text() {
        assert_eq!(parse_counter("k", b"42").ok(), Some(42));
        assert_eq!(parse_counter("k", b"-7").ok(), Some(-7));
        assert!(parse_counter("k", b"4 2").is_err());
        assert!(parse_counter("k", &[0x18, 42]).is_err());
        assert!(parse_counter("k", b"99999999999999999999").is_err());
    }
}
