//! `wasi:keyvalue@0.2.0-draft2` store, atomics and batch, served from a plugin's own cache.
//!
//! Bucket `b` is the key prefix `b/` in the plugin's cache; bucket names cannot contain `/`, so
//! one bucket never reaches another's keys. Every operation is one call into the cache engine
//! (several engine calls under one lock for `increment`, `swap` and the batch calls), so no
//! other user of the same cache can come between its steps. Counters written by `increment`
//! are decimal ASCII text (`b"42"`), as Redis `INCRBY` and wasmtime's own keyvalue host keep
//! them, so plugins read them the same way on every backend.

use wasmtime::component::Resource;

use super::bindings::wasi::keyvalue::{atomics, batch, store};
use super::PluginState;
use crate::error::Error;
use crate::runtime::Guest;

/// Keys returned per `list-keys` page.
const LIST_PAGE: u32 = 1000;

/// What a `bucket` handle refers to: the key prefix of the bucket in the plugin's cache.
pub struct BucketHandle {
    prefix: String,
}

/// A compare-and-swap handle: the full key and the value it held when the handle was made.
pub struct CasHandle {
    key: String,
    seen: Option<Vec<u8>>,
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

/// A cache error as the plugin sees it.
fn other(err: Error) -> store::Error {
    store::Error::Other(err.to_string())
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

    /// Runs `operation` on the plugin's cache engine, holding it for the whole closure.
    fn with_cache<T>(
        &self,
        operation: impl FnOnce(&mut Guest) -> Result<T, store::Error>,
    ) -> Result<T, store::Error> {
        // The outer error: the cache could not run the call at all (closed, or restarting).
        self.store
            .inner
            .call(|guest| Ok(operation(guest)))
            .unwrap_or_else(|err| Err(other(err)))
    }
}

impl store::Host for PluginState {
    fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<BucketHandle>, store::Error>> {
        let name = if identifier.is_empty() {
            "default"
        } else {
            &identifier
        };
        if !is_valid_name(name) {
            return Ok(Err(store::Error::AccessDenied));
        }
        let prefix = format!("{name}/");
        Ok(Ok(self.table.push(BucketHandle { prefix })?))
    }
}

impl store::HostBucket for PluginState {
    fn get(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        let key = self.full_key(&bucket, &key)?;
        Ok(self.with_cache(|cache| cache.get(&key).map_err(other)))
    }

    fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let key = self.full_key(&bucket, &key)?;
        Ok(self.with_cache(|cache| cache.set(&key, &value, None).map_err(other)))
    }

    fn delete(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let key = self.full_key(&bucket, &key)?;
        Ok(self.with_cache(|cache| cache.delete(&key).map(drop).map_err(other)))
    }

    fn exists(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        let key = self.full_key(&bucket, &key)?;
        Ok(self.with_cache(|cache| cache.contains(&key).map_err(other)))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        let prefix = self.table.get(&bucket)?.prefix.clone();
        let after = cursor.map(|cursor| format!("{prefix}{cursor}"));
        let page = self.with_cache(|cache| {
            cache
                .keys(&prefix, after.as_deref(), LIST_PAGE)
                .map_err(other)
        });
        Ok(page.map(|page| {
            let keys: Vec<String> = page
                .into_iter()
                .map(|key| key[prefix.len()..].to_owned())
                .collect();
            let cursor = (keys.len() == LIST_PAGE as usize)
                .then(|| keys.last().cloned())
                .flatten();
            store::KeyResponse { keys, cursor }
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
        let key = self.full_key(&bucket, &key)?;
        let seen = match self.with_cache(|cache| cache.get(&key).map_err(other)) {
            Ok(seen) => seen,
            Err(err) => return Ok(Err(err)),
        };
        Ok(Ok(self.table.push(CasHandle { key, seen })?))
    }

    fn current(
        &mut self,
        cas: Resource<CasHandle>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        Ok(Ok(self.table.get(&cas)?.seen.clone()))
    }

    fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
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
        let full = self.full_key(&bucket, &key)?;
        Ok(self.with_cache(|cache| {
            let base = match cache.get(&full).map_err(other)? {
                Some(bytes) => parse_counter(&key, &bytes)?,
                None => 0,
            };
            let n = base.checked_add(delta).ok_or_else(|| {
                store::Error::Other(format!("{base} + {delta} overflows the counter {key:?}"))
            })?;
            cache
                .set(&full, n.to_string().as_bytes(), None)
                .map_err(other)?;
            Ok(n)
        }))
    }

    fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        // The handle is owned: the plugin gave it up with this call.
        let handle = self.table.delete(cas)?;
        let swapped = self.with_cache(|cache| {
            let now = cache.get(&handle.key).map_err(other)?;
            if now != handle.seen {
                return Ok(Some(now));
            }
            cache.set(&handle.key, &value, None).map_err(other)?;
            Ok(None)
        });
        Ok(match swapped {
            Ok(None) => Ok(()),
            Ok(Some(now)) => {
                // Changed since the handle was made: a fresh handle for the retry.
                let fresh = self.table.push(CasHandle {
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
        let prefix = self.table.get(&bucket)?.prefix.clone();
        Ok(self.with_cache(|cache| {
            keys.into_iter()
                .map(|key| {
                    let value = cache.get(&format!("{prefix}{key}")).map_err(other)?;
                    Ok(value.map(|value| (key, value)))
                })
                .collect()
        }))
    }

    fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let prefix = self.table.get(&bucket)?.prefix.clone();
        Ok(self.with_cache(|cache| {
            for (key, value) in &key_values {
                cache
                    .set(&format!("{prefix}{key}"), value, None)
                    .map_err(other)?;
            }
            Ok(())
        }))
    }

    fn delete_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let prefix = self.table.get(&bucket)?.prefix.clone();
        Ok(self.with_cache(|cache| {
            for key in &keys {
                cache.delete(&format!("{prefix}{key}")).map_err(other)?;
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
    fn counters_are_decimal_text() {
        assert_eq!(parse_counter("k", b"42").ok(), Some(42));
        assert_eq!(parse_counter("k", b"-7").ok(), Some(-7));
        assert!(parse_counter("k", b"4 2").is_err());
        assert!(parse_counter("k", &[0x18, 42]).is_err());
        assert!(parse_counter("k", b"99999999999999999999").is_err());
    }
}
