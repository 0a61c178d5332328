//! `SharedCache`: the state every handle to one directory shares in a process — the
//! directory lock, the supervised guest, the registry that hands later openers the same one.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::instance::GuestCache;
use crate::layout;
use crate::options::CacheOptions;
use crate::worker::GuestSupervisor;

/// How long `open` waits for a cache of the same directory that is being shut down in this
/// process to finish before going ahead (the file lock then decides).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// The state shared by every handle (async or blocking) to one directory.
pub(crate) struct SharedCache {
    /// Distinguishes this instance's registry entry from a later one for the same directory.
    id: u64,
    pub(crate) directory: PathBuf,
    pub(crate) options: CacheOptions,
    /// The cache's guest; calls run one at a time.
    guest: Mutex<GuestSupervisor>,
    /// Holds the lock on `<dir>/.lock` until shutdown.
    lock_file: Mutex<Option<File>>,
    /// Computations in progress for `get_or_set_with`, by key (see `single_flight`).
    pub(crate) flights: crate::single_flight::Flights,
}

/// The caches open in this process, by canonical directory.
static OPEN_CACHES: LazyLock<Mutex<HashMap<PathBuf, RegistryEntry>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

struct RegistryEntry {
    id: u64,
    shared: Weak<SharedCache>,
}

fn open_caches() -> MutexGuard<'static, HashMap<PathBuf, RegistryEntry>> {
    OPEN_CACHES.lock()
}

impl SharedCache {
    /// The cache open in this process on `options`' directory, or a newly opened one.
    ///
    /// Edge cases: a directory already open here returns that cache; its options stay in force
    /// and each option `options` set to something else is named in a warning. A cache of the
    /// directory being shut down on another thread is waited for (up to 10 s). Errors as
    /// [`PersistentCache::open`](crate::PersistentCache::open).
    pub(crate) fn open(options: CacheOptions) -> Result<Arc<SharedCache>> {
        let read_only = options.read_only_value();
        let directory = if read_only {
            layout::existing_cache_directory(options.directory_path())?
        } else {
            layout::create_cache_directory(options.directory_path(), options.modes())?
        };
        let wait_started = Instant::now();
        loop {
            let mut registry = open_caches();
            if let Some(entry) = registry.get(&directory) {
                if let Some(shared) = entry.shared.upgrade() {
                    let ignored = options.differences_from(&shared.options);
                    if !ignored.is_empty() {
                        tracing::warn!(
                            directory = %directory.display(),
                            ignored = ?ignored,
                            "the cache is already open in this process: its first opener's options stay in force"
                        );
                    }
                    return Ok(shared);
                }
                // The last handle is being dropped on another thread; its shutdown removes the
                // entry once the files are closed and unlocked.
                if wait_started.elapsed() < SHUTDOWN_WAIT {
                    drop(registry);
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                registry.remove(&directory);
            }
            let shared = Arc::new(SharedCache::start(directory.clone(), options)?);
            registry.insert(
                directory,
                RegistryEntry {
                    id: shared.id,
                    shared: Arc::downgrade(&shared),
                },
            );
            return Ok(shared);
        }
    }

    /// Locks the directory and starts the guest with the cache open.
    fn start(directory: PathBuf, options: CacheOptions) -> Result<SharedCache> {
        let read_only = options.read_only_value();
        let lock_file = layout::lock(&directory, options.modes(), read_only)?;
        let data = if read_only {
            layout::existing_data_directory(&directory)?
        } else {
            layout::data_directory(&directory, options.modes())?
        };
        let guest = GuestSupervisor::start(data, options.clone())?;
        Ok(SharedCache {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            directory,
            options,
            guest: Mutex::new(guest),
            lock_file: Mutex::new(Some(lock_file)),
            flights: crate::single_flight::Flights::default(),
        })
    }

    /// Runs `operation` on the cache's guest; [`Error::Closed`] once the cache is closed.
    pub(crate) fn call<T>(
        &self,
        operation: impl FnOnce(&mut GuestCache) -> Result<T>,
    ) -> Result<T> {
        // Engine calls take microseconds (a large value or a compaction, milliseconds); they
        // run right here, one at a time.
        self.guest.lock().call(operation)
    }

    /// Closes the guest, releases the directory lock and unregisters this cache. Idempotent.
    pub(crate) fn shutdown(&self) -> Result<()> {
        let mut registry = open_caches();
        let closed = self.guest.lock().close();
        // Dropping the file releases the advisory lock.
        drop(self.lock_file.lock().take());
        if registry
            .get(&self.directory)
            .is_some_and(|entry| entry.id == self.id)
        {
            registry.remove(&self.directory);
        }
        closed
    }

    /// Closes the cache now if `shared` is its last handle in this process; otherwise leaves
    /// it open for the others.
    pub(crate) fn close(shared: Arc<SharedCache>) -> Result<()> {
        match Arc::try_unwrap(shared) {
            Ok(shared) => shared.shutdown(),
            Err(_still_shared) => Ok(()),
        }
    }
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache")
            .field("directory", &self.directory)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for SharedCache {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            tracing::warn!(directory = %self.directory.display(), error = %err, "closing the cache failed");
        }
    }
}

/// The options of the cache open in this process on the canonical `directory`, if any.
pub(crate) fn open_options(directory: &Path) -> Option<CacheOptions> {
    let registry = open_caches();
    let shared = registry.get(directory)?.shared.upgrade();
    // Release the registry before `shared` may drop (the last handle's shutdown takes it).
    drop(registry);
    shared.map(|shared| shared.options.clone())
}

/// Runs blocking work (files, the engine's recovery, shutdown) off the async runtime's threads.
pub(crate) async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| Err(Error::Wasm("a blocking task of the cache panicked".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Expiry, PersistentCache};

    #[tokio::test]
    async fn one_directory_shares_one_instance_per_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = PersistentCache::open(CacheOptions::new(dir.path().join("c")))
            .await
            .expect("open");
        let second = PersistentCache::open(CacheOptions::new(dir.path().join("c/../c")))
            .await
            .expect("second open of the same directory");
        assert!(Arc::ptr_eq(&first.inner, &second.inner));
        assert_eq!(first.directory(), second.directory());
        first.set_raw("k", b"v", Expiry::Never).await.expect("set");
        assert_eq!(second.get_raw("k").await.expect("get"), Some(b"v".to_vec()));

        // Closing one of two handles leaves the cache open for the other.
        first.close().await.expect("close shared handle");
        assert!(second.delete("k").await.expect("delete"));
        second.close().await.expect("close last handle");

        // The lock is released and the registry entry gone: a new open starts a new instance.
        let reopened = PersistentCache::open(CacheOptions::new(dir.path().join("c")))
            .await
            .expect("reopen");
        assert_eq!(reopened.get_raw("k").await.expect("get"), None);
    }

    #[tokio::test]
    async fn dropping_the_last_handle_unlocks_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = PersistentCache::open(CacheOptions::new(dir.path()))
            .await
            .expect("open");
        cache.set("kept", &7_u8).await.expect("set");
        assert!(matches!(
            layout::lock(dir.path(), crate::layout::Modes::new(false), false),
            Err(Error::Locked { .. })
        ));
        drop(cache);
        drop(
            layout::lock(dir.path(), crate::layout::Modes::new(false), false)
                .expect("lock released on drop"),
        );
        let reopened = PersistentCache::open(CacheOptions::new(dir.path()))
            .await
            .expect("reopen");
        assert_eq!(reopened.get::<u8>("kept").await.expect("get"), Some(7));
    }

    #[tokio::test]
    async fn a_directory_locked_elsewhere_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = layout::lock(dir.path(), crate::layout::Modes::new(false), false).expect("lock");
        assert!(matches!(
            PersistentCache::open(CacheOptions::new(dir.path())).await,
            Err(Error::Locked { .. })
        ));
        drop(held);
        assert!(PersistentCache::open(CacheOptions::new(dir.path()))
            .await
            .is_ok());
    }

    /// A writer that keeps what the `tracing` subscriber prints, for the test below.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_second_open_with_other_options_keeps_the_first_and_says_which_it_ignores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let first =
                crate::BlockingCache::open(CacheOptions::new(dir.path()).size_limit(1 << 20))
                    .expect("open");
            // Same options, or options left at their defaults: no warning.
            let same =
                crate::BlockingCache::open(CacheOptions::new(dir.path()).size_limit(1 << 20))
                    .expect("second open");
            let defaults =
                crate::BlockingCache::open(CacheOptions::new(dir.path())).expect("third open");
            assert!(
                captured.0.lock().is_empty(),
                "{}",
                String::from_utf8_lossy(&captured.0.lock())
            );
            let other = crate::BlockingCache::open(
                CacheOptions::new(dir.path()).size_limit(2 << 20).sync(true),
            )
            .expect("a later open still gets the cache");
            assert_eq!(
                other.to_async().size_limit(),
                1 << 20,
                "the first opener's limit stays"
            );
            let log = String::from_utf8_lossy(&captured.0.lock()).into_owned();
            assert!(
                log.contains("WARN") && log.contains("size_limit") && log.contains("sync"),
                "{log}"
            );
            assert!(!log.contains("default_ttl"), "{log}");
            drop((first, same, defaults, other));
        });
    }
}
