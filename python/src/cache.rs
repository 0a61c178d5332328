//! `NativeCache`: the extension's handle to one cache directory, behind the Python class
//! `persistent_cache.PersistentCache` (which adds the coroutines, `async with` and the extras
//! written in Python).
//!
//! Every async operation returns its result at once when the engine answered without
//! blocking, or a [`Pending`](crate::bridge::Pending) to await (see `bridge.rs`).

use std::path::PathBuf;
use std::time::Duration;

use parking_lot::RwLock;
use persistent_cache::{CacheOptions, CodeCache, Expiry, PersistentCache};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::bridge::{self, Found};
use crate::cbor::{self, Pickle};
use crate::errors;

/// One open cache directory. Thread-safe: every method may be called from any thread.
#[pyclass(module = "persistent_cache._native", frozen)]
pub struct NativeCache {
    /// `None` once closed.
    handle: RwLock<Option<PersistentCache>>,
    pickle: Pickle,
    directory: String,
    size_limit: u64,
    /// `CACHE_SEARCH_TTL` in seconds, if set.
    search_ttl: Option<f64>,
}

/// `expire` (seconds, as the guide passes it) as an [`Expiry`]: `None` is the cache's default
/// TTL, `math.inf` never, a positive number that many seconds (rounded up to milliseconds).
///
/// Edge cases: zero, a negative number or NaN → `InvalidTtlError` naming the value (to remove
/// an entry, delete it; to keep it forever, pass `math.inf`).
fn expiry(py: Python<'_>, expire: Option<f64>) -> PyResult<Expiry> {
    match expire {
        None => Ok(Expiry::Default),
        Some(seconds) if seconds == f64::INFINITY => Ok(Expiry::Never),
        // Beyond what a `Duration` holds (about 1.8e19 s) is never, in effect.
        Some(seconds) if seconds > 0.0 && seconds.is_finite() => {
            Ok(Duration::try_from_secs_f64(seconds).map_or(Expiry::Never, Expiry::After))
        }
        Some(seconds) => Err(errors::to_py(
            py,
            persistent_cache::Error::InvalidTtl(format!(
                "expire={seconds} seconds: a TTL must be more than 0 (delete the key to remove \
                 it; expire=math.inf never expires)"
            )),
        )),
    }
}

impl NativeCache {
    /// A handle to the open cache; `CacheClosedError` once closed.
    fn handle(&self, py: Python<'_>) -> PyResult<PersistentCache> {
        match &*self.handle.read() {
            Some(handle) => Ok(handle.clone()),
            None => Err(errors::to_py(py, persistent_cache::Error::Closed)),
        }
    }
}

#[pymethods]
impl NativeCache {
    /// Opens (creating if needed) the cache, reading `CACHE_*` from the environment and `.env`
    /// for what is not given. Blocks while the engine recovers the directory (GIL released).
    #[new]
    #[pyo3(signature = (cache_dir=None, size_limit=None, *, default_ttl=None, pickle=false, sync=false, read_only=false, exclusive=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        cache_dir: Option<PathBuf>,
        size_limit: Option<u64>,
        default_ttl: Option<f64>,
        pickle: bool,
        sync: bool,
        read_only: bool,
        exclusive: bool,
    ) -> PyResult<NativeCache> {
        let mut options = CacheOptions::from_env().map_err(|err| errors::to_py(py, err))?;
        if let Some(dir) = cache_dir {
            options = options.directory(dir);
        }
        if let Some(bytes) = size_limit {
            options = options.size_limit(bytes);
        }
        if let Some(seconds) = default_ttl {
            let ttl = match expiry(py, Some(seconds))? {
                Expiry::After(ttl) => Some(ttl),
                _ => None,
            };
            options = options.default_ttl(ttl);
        }
        if sync {
            options = options.sync(true);
        }
        if read_only {
            options = options.read_only(true);
        }
        if exclusive {
            options = options.exclusive(true);
        }
        let options = options.code_cache(CodeCache::for_user());
        // Opened on the runtime the calls run on, so a Redis tier's connections and listeners
        // (`CACHE_REDIS_URL`) live on it, as long as the process.
        let handle = py
            .detach(|| {
                pyo3_async_runtimes::tokio::get_runtime().block_on(PersistentCache::open(options))
            })
            .map_err(|err| errors::to_py(py, err))?;
        let search_ttl = match handle.search_expiry() {
            Expiry::After(ttl) => Some(ttl.as_secs_f64()),
            _ => None,
        };
        Ok(NativeCache {
            directory: handle.directory().display().to_string(),
            size_limit: handle.size_limit(),
            search_ttl,
            handle: RwLock::new(Some(handle)),
            pickle: if pickle {
                Pickle::Allow
            } else {
                Pickle::Refuse
            },
        })
    }

    /// The cache directory (canonical absolute path).
    #[getter]
    fn directory(&self) -> &str {
        &self.directory
    }

    /// The size limit in force, in bytes.
    #[getter]
    fn size_limit(&self) -> u64 {
        self.size_limit
    }

    /// `CACHE_SEARCH_TTL` in seconds, or `None` (then the default TTL applies).
    #[getter]
    fn search_ttl(&self) -> Option<f64> {
        self.search_ttl
    }

    /// Whether `pickle=True` was given.
    #[getter]
    fn pickle(&self) -> bool {
        self.pickle == Pickle::Allow
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.handle.read().is_none()
    }

    #[pyo3(signature = (key, value, expire=None))]
    fn set(
        &self,
        py: Python<'_>,
        key: String,
        value: &Bound<'_, PyAny>,
        expire: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let bytes = cbor::encode(value, self.pickle)?;
        let expiry = expiry(py, expire)?;
        let cache = self.handle(py)?;
        bridge::start(py, self.pickle, async move {
            cache.set_raw(&key, &bytes, expiry).await
        })
    }

    fn get(&self, py: Python<'_>, key: String) -> PyResult<Py<PyAny>> {
        let cache = self.handle(py)?;
        bridge::start(py, self.pickle, async move {
            cache.get_raw(&key).await.map(Found)
        })
    }

    fn delete(&self, py: Python<'_>, key: String) -> PyResult<Py<PyAny>> {
        let cache = self.handle(py)?;
        bridge::start(py, self.pickle, async move { cache.delete(&key).await })
    }

    fn contains(&self, py: Python<'_>, key: String) -> PyResult<Py<PyAny>> {
        let cache = self.handle(py)?;
        bridge::start(py, self.pickle, async move { cache.contains(&key).await })
    }

    #[pyo3(signature = (key, value, expire=None))]
    fn add(
        &self,
        py: Python<'_>,
        key: String,
        value: &Bound<'_, PyAny>,
        expire: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let bytes = cbor::encode(value, self.pickle)?;
        let expiry = expiry(py, expire)?;
        let cache = self.handle(py)?;
        bridge::start(py, self.pickle, async move {
            cache.add_raw(&key, &bytes, expiry).await
        })
    }

    #[pyo3(signature = (key, delta=1, default=0, expire=None))]
    fn incr(
        &self,
        py: Python<'_>,
        key: String,
        delta: i64,
        default: i64,
        expire: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let expiry = expiry(py, expire)?;
        let cache = self.handle(py)?;
        bridge::start(py, self.pickle, async move {
            cache.incr_with_ttl(&key, delta, default, expiry).await
        })
    }

    fn pop(&self, py: Python<'_>, key: String) -> PyResult<Py<PyAny>> {
        let cache = self.handle(py)?;
        bridge::start(py, self.pickle, async move {
            cache.pop_raw(&key).await.map(Found)
        })
    }

    #[pyo3(signature = (key, expire=None))]
    fn touch(&self, py: Python<'_>, key: String, expire: Option<f64>) -> PyResult<Py<PyAny>> {
        let expiry = expiry(py, expire)?;
        let cache = self.handle(py)?;
        bridge::start(
            py,
            self.pickle,
            async move { cache.touch(&key, expiry).await },
        )
    }

    #[pyo3(signature = (prefix=String::new()))]
    fn keys(&self, py: Python<'_>, prefix: String) -> PyResult<Py<PyAny>> {
        let cache = self.handle(py)?;
        bridge::start(py, self.pickle, async move { cache.keys(&prefix).await })
    }

    fn delete_prefix(&self, py: Python<'_>, prefix: String) -> PyResult<Py<PyAny>> {
        let cache = self.handle(py)?;
        bridge::start(py, self.pickle, async move {
            cache.delete_prefix(&prefix).await
        })
    }

    fn expire(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let cache = self.handle(py)?;
        bridge::start(py, self.pickle, async move { cache.expire().await })
    }

    fn clear(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let cache = self.handle(py)?;
        bridge::start(py, self.pickle, async move { cache.clear().await })
    }

    fn flush(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let cache = self.handle(py)?;
        bridge::start(py, self.pickle, async move { cache.flush().await })
    }

    /// The counters as a dict: the guide's `size`, `volume`, `directory`, then the rest.
    /// Synchronous, as in the guide (GIL released): a few microseconds, unless a slow call
    /// (a `clear`, a sync) holds the engine, which it then waits for.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let cache = self.handle(py)?.blocking();
        let stats = py
            .detach(|| cache.stats())
            .map_err(|err| errors::to_py(py, err))?;
        let dict = PyDict::new(py);
        dict.set_item("size", stats.entries)?;
        dict.set_item("volume", stats.volume)?;
        dict.set_item("directory", stats.directory.display().to_string())?;
        dict.set_item("size_limit", stats.size_limit)?;
        dict.set_item("hits", stats.hits)?;
        dict.set_item("misses", stats.misses)?;
        dict.set_item("expired", stats.expired)?;
        dict.set_item("evicted", stats.evicted)?;
        dict.set_item("damaged", stats.damaged)?;
        dict.set_item("plugin_volume", stats.plugin_volume)?;
        dict.set_item("plugin_budget", stats.plugin_budget)?;
        Ok(dict)
    }

    /// Closes this handle: if it is the process's last one on the directory, the engine
    /// flushes, writes its index and releases the directory. Later calls raise
    /// `CacheClosedError`; closing again does nothing.
    ///
    /// With a running event loop (`await cache.close()`, or a plain `cache.close()` in a
    /// coroutine) the close runs on the runtime and this returns a `Pending`; the close goes on
    /// even if it is never awaited. Without one (plain code), it closes here and returns `None`.
    fn close(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let Some(cache) = self.handle.write().take() else {
            return Ok(py.None());
        };
        let running_loop = py
            .import("asyncio")?
            .getattr("_get_running_loop")?
            .call0()?;
        if running_loop.is_none() {
            // The handle itself is closed (a blocking handle made from it would be a second
            // one, and closing that would leave the engine open).
            let closed =
                py.detach(|| pyo3_async_runtimes::tokio::get_runtime().block_on(cache.close()));
            return match closed {
                Ok(()) => Ok(py.None()),
                Err(err) => Err(errors::to_py(py, err)),
            };
        }
        bridge::start(py, self.pickle, async move { cache.close().await })
    }
}
