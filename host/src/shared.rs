//! `SharedCache`: the state every handle to one directory shares in a process — the
//! directory lock, the supervised guest, its maintenance thread, and the registry that hands
//! later openers the same one. Where each kind of call runs is decided here (see
//! [`PersistentCache`](crate::PersistentCache)'s architecture notes in `cache.rs`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::instance::GuestCache;
use crate::layout;
use crate::options::CacheOptions;
use crate::worker::{Access, GuestSupervisor};

/// How long `open` waits for a cache of the same directory that is being opened or shut down
/// in this process to finish before going ahead (the file lock then decides).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// The `written` of a call that writes without appending (`flush`, `clear`): it must hold
/// the write lock of a shared directory all the same.
pub(crate) const WRITES: u64 = 1;

/// Whether a call that appends about `written` bytes may write.
fn access(written: u64) -> Access {
    if written > 0 {
        Access::Write
    } else {
        Access::Read
    }
}

/// Values up to this size are written inline on an async runtime's thread; bigger ones are
/// slow work (the engine's own bound, `NONBLOCKING_MAX_RECORD`, counts the key and header too).
const INLINE_VALUE_MAX: usize = 60 << 10;

/// The guest, shared by the handles and the maintenance thread; calls run one at a time. An
/// async lock, so that a task waiting for it never blocks a runtime thread.
type Guest = Arc<tokio::sync::Mutex<GuestSupervisor>>;

/// Where an async call may run (see `SharedCache::run`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Weight {
    /// Usually microseconds: tried inline on the runtime thread with the engine in
    /// non-blocking mode, moved to a blocking thread if the engine says it would block.
    Light,
    /// Slow work whatever the engine's state (a sync per write, a big value, a scan of the
    /// whole index, a flush): always on a blocking thread.
    Heavy,
}

impl Weight {
    /// The weight of a write of `value_len` bytes to a cache opened with `options`.
    pub(crate) fn of_write(options: &CacheOptions, value_len: usize) -> Weight {
        if options.sync_value() || value_len > INLINE_VALUE_MAX {
            Weight::Heavy
        } else {
            Weight::Light
        }
    }
}

/// The state shared by every handle (async or blocking) to one directory.
pub(crate) struct SharedCache {
    /// Distinguishes this instance's registry entry from a later one for the same directory.
    id: u64,
    pub(crate) directory: PathBuf,
    pub(crate) options: CacheOptions,
    guest: Guest,
    /// Holds the lock on `<dir>/.lock` until shutdown.
    lock_file: Mutex<Option<File>>,
    /// Computations in progress for `get_or_set_with`, by key (see `single_flight`).
    pub(crate) flights: crate::single_flight::Flights,
    /// Wakes the maintenance thread; dropping it stops the thread.
    maintenance: Mutex<Option<SyncSender<()>>>,
    /// Bytes written since the maintenance thread was last woken.
    written: AtomicU64,
    /// Wake the maintenance thread after this many bytes written.
    maintenance_every: u64,
}

/// A directory's entry in the registry of open caches.
enum RegistryEntry {
    /// Being opened by another thread (recovery may take a while): wait for it.
    Opening,
    /// Open (or being shut down, when the `Weak` no longer upgrades).
    Open { id: u64, shared: Weak<SharedCache> },
}

/// The caches open in this process, by canonical directory.
static OPEN_CACHES: LazyLock<Mutex<HashMap<PathBuf, RegistryEntry>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn open_caches() -> MutexGuard<'static, HashMap<PathBuf, RegistryEntry>> {
    OPEN_CACHES.lock()
}

/// Removes the `Opening` mark of a directory when its opener returns or unwinds.
struct OpeningMark(Option<PathBuf>);

impl Drop for OpeningMark {
    fn drop(&mut self) {
        if let Some(directory) = self.0.take() {
            let mut registry = open_caches();
            if matches!(registry.get(&directory), Some(RegistryEntry::Opening)) {
                registry.remove(&directory);
            }
        }
    }
}

impl SharedCache {
    /// The cache open in this process on `options`' directory, or a newly opened one.
    ///
    /// Edge cases: a directory already open here returns that cache; its options stay in force
    /// and each option `options` set to something else is named in a warning. A cache of the
    /// directory being opened or shut down on another thread is waited for (up to 10 s);
    /// other directories are not (the registry is not held while a cache opens or closes).
    /// Errors as [`PersistentCache::open`](crate::PersistentCache::open).
    pub(crate) fn open(options: CacheOptions) -> Result<Arc<SharedCache>> {
        let read_only = options.read_only_value();
        let directory = if read_only {
            layout::existing_cache_directory(options.directory_path())?
        } else {
            layout::create_cache_directory(options.directory_path(), options.modes())?
        };
        let wait_started = Instant::now();
        let mut mark = loop {
            let mut registry = open_caches();
            let busy = match registry.get(&directory) {
                None => false,
                Some(RegistryEntry::Opening) => true,
                Some(RegistryEntry::Open { shared, .. }) => match shared.upgrade() {
                    Some(shared) => {
                        drop(registry);
                        shared.warn_ignored(&options);
                        return Ok(shared);
                    }
                    // The last handle is being dropped; its shutdown removes the entry once
                    // the files are closed and unlocked.
                    None => true,
                },
            };
            if busy && wait_started.elapsed() < SHUTDOWN_WAIT {
                drop(registry);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            registry.insert(directory.clone(), RegistryEntry::Opening);
            break OpeningMark(Some(directory.clone()));
        };
        // Recovery runs without the registry held: opening another directory does not wait.
        let shared = Arc::new(SharedCache::start(directory.clone(), options)?);
        let mut registry = open_caches();
        registry.insert(
            directory,
            RegistryEntry::Open {
                id: shared.id,
                shared: Arc::downgrade(&shared),
            },
        );
        mark.0 = None;
        Ok(shared)
    }

    /// Warns about each option of `options` that differs from the ones in force.
    fn warn_ignored(&self, options: &CacheOptions) {
        let ignored = options.differences_from(&self.options);
        if !ignored.is_empty() {
            tracing::warn!(
                directory = %self.directory.display(),
                ignored = ?ignored,
                "the cache is already open in this process: its first opener's options stay in force"
            );
        }
    }

    /// Locks the directory, starts the guest with the cache open and its maintenance thread.
    fn start(directory: PathBuf, options: CacheOptions) -> Result<SharedCache> {
        let read_only = options.read_only_value();
        let lock_file = layout::lock(
            &directory,
            options.modes(),
            read_only,
            options.exclusive_value(),
        )?;
        // The size limit and default TTL the caller left unset are the ones stored with the
        // cache (and what it set is stored).
        let options = crate::settings::resolve(&directory, options);
        let data = if read_only {
            layout::existing_data_directory(&directory)?
        } else {
            layout::data_directory(&directory, options.modes())?
        };
        let log_sync = crate::log_sync::LogSync::new(data.clone());
        let guest = Arc::new(tokio::sync::Mutex::new(GuestSupervisor::start(
            &directory,
            data,
            options.clone(),
        )?));
        let maintenance = if read_only {
            None
        } else {
            Some(start_maintenance(&guest, &directory, log_sync)?)
        };
        let limit = options.size_limit_value();
        Ok(SharedCache {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            directory,
            options,
            guest,
            lock_file: Mutex::new(Some(lock_file)),
            flights: crate::single_flight::Flights::default(),
            maintenance: Mutex::new(maintenance),
            written: AtomicU64::new(0),
            maintenance_every: (limit / 64).clamp(4 << 10, 1 << 20),
        })
    }

    /// Runs `operation` on the cache's guest on the calling thread, waiting for it if another
    /// call runs (blocking: for [`BlockingCache`](crate::BlockingCache), plugins and blocking
    /// threads, never an async runtime's threads). `written`: about how many bytes it appends
    /// to the log, for the maintenance thread; more than 0 for every call that may write (it
    /// then holds the write lock of a shared directory). [`Error::Closed`] once the cache is
    /// closed.
    pub(crate) fn call<T>(
        &self,
        written: u64,
        operation: impl FnOnce(&mut GuestCache) -> Result<T>,
    ) -> Result<T> {
        // `pollster` rather than tokio's `blocking_lock`, which panics when a blocking handle
        // is (wrongly) used on a runtime thread: there it only blocks, as documented.
        let result = pollster::block_on(self.guest.lock()).call(access(written), operation);
        self.wrote(written);
        result
    }

    /// Runs `operation` on the cache's guest for an async caller, never blocking the runtime:
    /// waiting for the guest is an await, a `Light` call runs inline in the engine's
    /// non-blocking mode and moves to a blocking thread only if the engine says it would
    /// block, and a `Heavy` one always runs on a blocking thread. Spends a unit of the task's
    /// cooperative budget, so a task looping over calls lets other tasks run.
    ///
    /// Edge cases: dropping the future while the call runs on a blocking thread lets it finish
    /// there (the guest is never left half-way); [`Error::Closed`] once the cache is closed.
    pub(crate) async fn run<T, F>(&self, weight: Weight, written: u64, operation: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut GuestCache) -> Result<T> + Send + 'static,
    {
        tokio::task::coop::consume_budget().await;
        let mut guest = Arc::clone(&self.guest).lock_owned().await;
        if weight == Weight::Light {
            if let Some(result) = guest.try_call_nonblocking(access(written), &operation) {
                drop(guest);
                self.wrote(written);
                return result;
            }
        }
        let result = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn_blocking(move || guest.call(access(written), operation))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Wasm("a blocking task of the cache panicked".into()))
                }),
            // Driven by a minimal executor on a plain thread (`BlockingCache::get_or_set_with`):
            // that thread may block.
            Err(_) => guest.call(access(written), operation),
        };
        self.wrote(written);
        result
    }

    /// Counts `bytes` written and wakes the maintenance thread every `maintenance_every`.
    fn wrote(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let before = self.written.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes >= self.maintenance_every {
            self.written.store(0, Ordering::Relaxed);
            if let Some(wake) = &*self.maintenance.lock() {
                // Full: it is already woken.
                if let Err(TrySendError::Disconnected(())) = wake.try_send(()) {
                    tracing::debug!("the maintenance thread has stopped");
                }
            }
        }
    }

    /// Makes everything written so far durable and writes the index snapshot (blocking).
    pub(crate) fn flush(&self) -> Result<()> {
        self.call(WRITES, |guest| guest.flush())
    }

    /// Closes the guest, releases the directory lock and unregisters this cache. Idempotent.
    pub(crate) fn shutdown(&self) -> Result<()> {
        drop(self.maintenance.lock().take());
        shut_down(&self.guest, &self.lock_file, &self.directory, self.id)
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

/// Closes `guest` (blocking: it flushes), releases the directory lock, then removes the
/// registry entry `id` of `directory` — without holding the registry meanwhile, so other
/// directories open and close freely; an opener of this directory waits for the removal.
fn shut_down(
    guest: &Guest,
    lock_file: &Mutex<Option<File>>,
    directory: &Path,
    id: u64,
) -> Result<()> {
    let closed = pollster::block_on(guest.lock()).close();
    // Dropping the file releases the advisory lock.
    drop(lock_file.lock().take());
    let mut registry = open_caches();
    if matches!(registry.get(directory), Some(RegistryEntry::Open { id: open, .. }) if *open == id)
    {
        registry.remove(directory);
    }
    closed
}

/// Starts the thread that runs the guest's background work (compaction ahead of the size
/// limit, periodic checkpoints) one bounded step at a time, releasing the guest between
/// steps so that calls interleave. It sleeps until woken and stops when the waker is dropped.
fn start_maintenance(
    guest: &Guest,
    directory: &Path,
    log_sync: crate::log_sync::LogSync,
) -> Result<SyncSender<()>> {
    let (wake, woken) = sync_channel(1);
    let guest = Arc::downgrade(guest);
    std::thread::Builder::new()
        .name("pcache-maintain".into())
        .spawn(move || maintain(&guest, &woken, &log_sync))
        .map_err(|source| Error::Directory {
            path: directory.to_path_buf(),
            source,
        })?;
    Ok(wake)
}

/// The maintenance thread's loop (see `start_maintenance`). Each step holds the guest for
/// one bounded `maintain` call; when a step waits for the log to be durable, the thread syncs
/// it here, between steps, while other calls go on, and tells the next step how far.
fn maintain(
    guest: &Weak<tokio::sync::Mutex<GuestSupervisor>>,
    woken: &Receiver<()>,
    log_sync: &crate::log_sync::LogSync,
) {
    // At most this many steps per wake-up, so that a step that makes no progress (a failing
    // disk) cannot spin; the next writes wake the thread again.
    const STEPS_PER_WAKE: u32 = 256;
    while woken.recv().is_ok() {
        let Some(strong) = guest.upgrade() else {
            return;
        };
        let first = pollster::block_on(strong.lock())
            .call(Access::Read, |guest| guest.maintenance_pending());
        drop(strong);
        let mut left = match first {
            Ok(left) => left,
            Err(Error::Closed) => return,
            Err(_) => continue,
        };
        for _ in 0..STEPS_PER_WAKE {
            if !left.pending {
                break;
            }
            // Everything the engine had written when it reported `position` is in the files
            // now, so syncing them all makes it durable.
            let durable = match left.sync_through {
                Some(position) if log_sync.sync_all() => position,
                _ => 0,
            };
            let Some(strong) = guest.upgrade() else {
                return;
            };
            let step = pollster::block_on(strong.lock()).maintain(durable);
            match step {
                Ok(next) => left = next,
                Err(Error::Closed) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "background maintenance of the cache failed; retrying after the next writes");
                    break;
                }
            }
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
    /// Shuts the cache down; on an async runtime's thread, on a thread of its own instead (the
    /// final flush syncs files), so the lock is released a moment after the drop — an `open`
    /// of the directory waits for it. `close().await` is the way to know it is done.
    fn drop(&mut self) {
        drop(self.maintenance.lock().take());
        if self.lock_file.lock().is_none() {
            // `close` shut it down already.
            return;
        }
        let guest = Arc::clone(&self.guest);
        let lock_file = Mutex::new(self.lock_file.lock().take());
        let directory = std::mem::take(&mut self.directory);
        let id = self.id;
        let shut = move || {
            if let Err(err) = shut_down(&guest, &lock_file, &directory, id) {
                tracing::warn!(directory = %directory.display(), error = %err, "closing the cache failed");
            }
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return shut();
        }
        // A thread of its own rather than `spawn_blocking`: a runtime shutting down cancels
        // blocking tasks that have not started, which would skip the flush and leave the
        // registry entry behind.
        let spawned = std::thread::Builder::new()
            .name("pcache-close".into())
            .spawn(shut);
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "cannot start a thread to close the cache: it is dropped without its final flush (recovery replays the log at the next open)");
        }
    }
}

/// The options of the cache open in this process on the canonical `directory`, if any.
pub(crate) fn open_options(directory: &Path) -> Option<CacheOptions> {
    let registry = open_caches();
    let shared = match registry.get(directory)? {
        RegistryEntry::Open { shared, .. } => shared.upgrade(),
        RegistryEntry::Opening => None,
    };
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
            layout::lock(dir.path(), crate::layout::Modes::new(false), false, true),
            Err(Error::Locked { .. })
        ));
        // On a runtime thread the drop's shutdown (a flush: syncs) runs on a blocking thread:
        // the lock is released a moment later.
        drop(cache);
        let dropped = Instant::now();
        let lock = loop {
            match layout::lock(dir.path(), crate::layout::Modes::new(false), false, true) {
                Ok(lock) => break lock,
                Err(Error::Locked { .. }) if dropped.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(err) => panic!("lock not released on drop: {err}"),
            }
        };
        drop(lock);
        let reopened = PersistentCache::open(CacheOptions::new(dir.path()))
            .await
            .expect("reopen");
        assert_eq!(reopened.get::<u8>("kept").await.expect("get"), Some(7));
    }

    #[tokio::test]
    async fn a_directory_locked_elsewhere_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held =
            layout::lock(dir.path(), crate::layout::Modes::new(false), false, true).expect("lock");
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
