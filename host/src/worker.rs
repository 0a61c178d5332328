//! `GuestSupervisor`: one cache's guest instance, called on the caller's thread, restarted
//! after a trap.
//!
//! Calls run on the caller's thread: the filesystem bindings poll inline (see `wasi_fs`), so no
//! thread hop or tokio `block_on` is needed. A call may be tried in the engine's non-blocking
//! mode (`try_call_nonblocking`), which refuses slow work, so that it can run on an async
//! runtime's thread. A trapped instance is dropped and a fresh one reopens the same directory
//! (recovery: slow work, so never in a non-blocking try), so the next call works.
//!
//! On a directory other processes may share (not `exclusive`), every call follows the
//! protocol of `sharing.rs`: a call that writes holds the directory's write lock (its guest
//! catching up with the files as it takes it) and bumps the generation when done; any other
//! call first looks at the generation and lets the guest catch up if another process wrote.
//! A guest that missed a whole rotation of the log (`stale`) is reopened.

use std::path::{Path, PathBuf};

use wasmtime::component::ResourceAny;

use crate::bindings::GuestMaintenance;
use crate::error::{Error, Result};
use crate::instance::{GuestCache, GuestInstance, OpenSettings, GUEST_DIRECTORY};
use crate::options::CacheOptions;
use crate::sharing::WriteLock;

/// A guest instance and the handle of the cache it has open.
struct Running {
    instance: GuestInstance,
    cache: ResourceAny,
    /// The guest's non-blocking mode is on.
    nonblocking: bool,
    /// The guest was told it holds the write lock and not told otherwise since (the host
    /// tells it only before the next call that is not a write: see `Sharing::before`).
    write_locked: bool,
}

/// Whether a call may write (and so holds the write lock of a shared directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// What the protocol of a shared directory did before a call (see `Sharing::before`).
enum Before {
    /// Go ahead (holding the write lock for a `Write` call).
    Ready,
    /// The write lock is held by another process and waiting was not allowed.
    WouldBlock,
    /// The guest must be reopened first.
    Stale,
}

/// The host's half of sharing one directory with other processes (see `sharing.rs`).
struct Sharing {
    /// `None` until a process creates `.write-lock` (only a read-only opener sees that).
    lock: Option<WriteLock>,
    /// The cache directory (where `.lock` and `.write-lock` are, outside the guest's sight).
    directory: PathBuf,
    options: CacheOptions,
}

impl Sharing {
    /// The write lock file, opened now if it was missing before.
    fn lock(&mut self) -> Result<Option<&mut WriteLock>> {
        if self.lock.is_none() {
            self.lock = WriteLock::open(
                &self.directory,
                self.options.modes(),
                self.options.read_only_value(),
            )?;
        }
        Ok(self.lock.as_mut())
    }

    /// Before a call: a `Write` takes the write lock (waiting for it unless `nonblocking`) and
    /// tells the guest, which catches up; a `Read` lets the guest catch up if another process
    /// wrote since the last look.
    fn before(
        &mut self,
        running: &mut Running,
        access: Access,
        nonblocking: bool,
    ) -> Result<Before> {
        let read_only = self.options.read_only_value();
        let Some(lock) = self.lock()? else {
            return Ok(Before::Ready);
        };
        if access == Access::Write && !read_only {
            if nonblocking {
                if !lock.try_lock()? {
                    return Ok(Before::WouldBlock);
                }
            } else {
                lock.lock()?;
            }
            let others_wrote = lock.others_wrote();
            if running.write_locked && !others_wrote && !lock.previous_holder_crashed() {
                // The guest still holds the lock from this process's last write, nobody wrote
                // since (every writer that lived announced; none died mid-write): it is up to
                // date, and telling it again would only cost a guest call.
                return Ok(Before::Ready);
            }
            // A writer that died mid-write left bytes it never announced, which a reader may
            // have replayed: the guest looks at the files whenever that happened.
            let others_wrote = others_wrote || lock.previous_holder_crashed();
            let taken = running.cache().set_write_locked(true, others_wrote);
            running.write_locked = taken.is_ok();
            if running.instance.take_stale() {
                lock.unlock().map_err(Error::Io)?;
                return Ok(Before::Stale);
            }
            if let Err(err) = taken {
                let _ = lock.unlock();
                return Err(err);
            }
            return Ok(Before::Ready);
        }
        if running.write_locked {
            // Before anything that is not a write: the lock went with the last write.
            running.cache().set_write_locked(false, false)?;
            running.write_locked = false;
        }
        if lock.others_wrote() {
            let caught_up = running.cache().catch_up();
            if running.instance.take_stale() {
                return Ok(Before::Stale);
            }
            caught_up?;
        }
        Ok(Before::Ready)
    }

    /// After a `Write` call: bumps the generation (other processes then catch up) and
    /// releases the lock. The guest is told only before the next call that is not a write
    /// (one guest call less per write): no call reaches it in between without `before`.
    fn after(&mut self, access: Access) -> Result<()> {
        if access != Access::Write || self.options.read_only_value() {
            return Ok(());
        }
        let Some(lock) = self.lock.as_mut() else {
            return Ok(());
        };
        lock.publish_and_unlock()
    }
}

impl Running {
    /// The open cache's typed calls.
    fn cache(&mut self) -> GuestCache<'_> {
        self.instance.cache(self.cache)
    }

    /// Runs `operation` with the guest's non-blocking mode set to `on`.
    fn call<T>(
        &mut self,
        on: bool,
        operation: impl FnOnce(&mut GuestCache) -> Result<T>,
    ) -> Result<T> {
        if self.nonblocking != on {
            self.instance.cache(self.cache).set_nonblocking(on)?;
            self.nonblocking = on;
        }
        operation(&mut self.instance.cache(self.cache))
    }
}

enum State {
    /// A working guest with the cache open.
    Ready(Box<Running>),
    /// The previous guest trapped and restarting it failed; the next call tries again.
    NeedsRestart,
    /// The cache was closed.
    Closed,
}

/// One cache's guest and what is needed to restart it after a trap.
pub(crate) struct GuestSupervisor {
    state: State,
    /// `None` with `exclusive`: nobody else may open the directory.
    sharing: Option<Sharing>,
    directory: PathBuf,
    options: CacheOptions,
    /// Hits and misses of the instances that trapped, so the counters count since open.
    carried: (u64, u64),
}

impl GuestSupervisor {
    /// Instantiates a guest on `directory` and opens the cache in it.
    ///
    /// Edge cases: the errors of `open` (locked out by nobody here: the host lock is taken
    /// before), a component that fails to compile or instantiate (`Error::Wasm`).
    pub(crate) fn start(
        cache_directory: &Path,
        directory: PathBuf,
        options: CacheOptions,
    ) -> Result<GuestSupervisor> {
        let mut sharing = (!options.exclusive_value()).then(|| Sharing {
            lock: None,
            directory: cache_directory.to_path_buf(),
            options: options.clone(),
        });
        let running = start_guest(&directory, &options, sharing.as_mut())?;
        Ok(GuestSupervisor {
            state: State::Ready(running),
            sharing,
            directory,
            options,
            carried: (0, 0),
        })
    }

    /// Tries `operation` in the guest's non-blocking mode, on the calling thread; `None` if it
    /// would do slow work (it then changed nothing: run it with [`call`](Self::call)).
    ///
    /// Edge cases: a guest waiting for its restart after a trap is `None` (restarting
    /// recovers the directory); after `close` → `Some(Err(Error::Closed))`; a call that traps
    /// returns its error and leaves the restart to the next `call`.
    pub(crate) fn try_call_nonblocking<T>(
        &mut self,
        access: Access,
        operation: &impl Fn(&mut GuestCache) -> Result<T>,
    ) -> Option<Result<T>> {
        let running = match &mut self.state {
            State::Ready(running) => running,
            State::NeedsRestart => return None,
            State::Closed => return Some(Err(Error::Closed)),
        };
        if let Some(sharing) = &mut self.sharing {
            match sharing.before(running, access, true) {
                Ok(Before::Ready) => {}
                // Waiting for the lock, or reopening the guest, is slow work.
                Ok(Before::WouldBlock | Before::Stale) => return None,
                Err(err) => return Some(Err(err)),
            }
        }
        let result = running.call(true, operation);
        let would_block = running.instance.take_would_block();
        if let Some(sharing) = &mut self.sharing {
            if let Err(err) = sharing.after(access) {
                return Some(Err(err));
            }
        }
        if would_block {
            return None;
        }
        if running.instance.trapped() {
            self.trapped(&result);
        }
        Some(result)
    }

    /// One step of the guest's background work (`maintain`, see there); what is left.
    pub(crate) fn maintain(&mut self, durable_through: u64) -> Result<GuestMaintenance> {
        self.call(Access::Write, |guest| guest.maintain(durable_through))
    }

    /// Drops a trapped instance, keeping its hit and miss counts; the next `call` restarts it.
    fn trapped<T>(&mut self, result: &Result<T>) {
        if let State::Ready(running) = &self.state {
            let (hits, misses) = running.instance.hits_and_misses();
            self.carried.0 += hits;
            self.carried.1 += misses;
        }
        self.state = State::NeedsRestart;
        if let Err(err) = result {
            tracing::warn!(directory = %self.directory.display(), error = %err, "the cache guest trapped; it restarts at the next call");
        }
    }

    /// Runs `operation` on the cache, on the calling thread.
    ///
    /// Edge cases: after `close` → `Error::Closed`; the guest is restarted first if an earlier
    /// call trapped and its restart failed, and replaced afterwards if this call traps.
    pub(crate) fn call<T>(
        &mut self,
        access: Access,
        operation: impl FnOnce(&mut GuestCache) -> Result<T>,
    ) -> Result<T> {
        if matches!(self.state, State::NeedsRestart) {
            self.state = State::Ready(self.restart()?);
        }
        for attempt in 0.. {
            let State::Ready(running) = &mut self.state else {
                return Err(Error::Closed);
            };
            let Some(sharing) = &mut self.sharing else {
                break;
            };
            match sharing.before(running, access, false)? {
                Before::Ready => break,
                Before::WouldBlock => unreachable!("waited for the lock"),
                Before::Stale if attempt == 0 => {
                    tracing::info!(directory = %self.directory.display(), "other processes rewrote the whole log since this cache last looked; reopening it");
                    self.state = State::NeedsRestart;
                    self.state = State::Ready(self.restart()?);
                }
                Before::Stale => {
                    return Err(Error::Wasm("the cache stays stale after reopening".into()))
                }
            }
        }
        let State::Ready(running) = &mut self.state else {
            return Err(Error::Closed);
        };
        let result = running.call(false, operation);
        if let Some(sharing) = &mut self.sharing {
            let released = sharing.after(access);
            if let (Ok(_), Err(err)) = (&result, released) {
                if !running.instance.trapped() {
                    return Err(err);
                }
            }
        }
        if running.instance.trapped() {
            // Drop the broken instance (and its open files) before starting a new one.
            self.trapped(&result);
            match self.restart() {
                Ok(running) => self.state = State::Ready(running),
                Err(err) => {
                    tracing::warn!(directory = %self.directory.display(), error = %err, "cannot restart the cache guest; will retry on the next call");
                }
            }
        }
        result
    }

    /// A new guest on the directory, its counters continuing the trapped ones'.
    fn restart(&mut self) -> Result<Box<Running>> {
        let mut running = start_guest(&self.directory, &self.options, self.sharing.as_mut())?;
        running.instance.carry(self.carried);
        Ok(running)
    }

    /// Closes the cache (writes the index snapshot); later calls fail with `Error::Closed`.
    pub(crate) fn close(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Ready(mut running) if !running.instance.trapped() => {
                // Closing writes the index snapshot: under the write lock when shared.
                if let Some(sharing) = &mut self.sharing {
                    if let Before::Stale = sharing.before(&mut running, Access::Write, false)? {
                        return Ok(());
                    }
                }
                let closed = running.instance.cache(running.cache).close();
                if let Some(lock) = self.sharing.as_mut().and_then(|s| s.lock.as_mut()) {
                    lock.publish_and_unlock()?;
                }
                closed
            }
            State::Ready(_) | State::NeedsRestart | State::Closed => Ok(()),
        }
    }
}

/// Instantiates a guest on `directory` and opens the cache in it.
fn start_guest(
    directory: &Path,
    options: &CacheOptions,
    sharing: Option<&mut Sharing>,
) -> Result<Box<Running>> {
    let read_only = options.read_only_value();
    // A shared open recovers (and may cut a crashed writer's torn tail) under the write lock.
    let mut lock = match sharing {
        Some(sharing) if !read_only => sharing.lock()?,
        _ => None,
    };
    if let Some(lock) = lock.as_deref_mut() {
        lock.lock()?;
    }
    let started = open_guest(directory, options);
    if let Some(lock) = lock {
        // Recovery may have changed the files (cut a torn tail, set a file aside).
        if started.is_ok() {
            lock.publish_and_unlock()?;
        } else {
            lock.unlock().map_err(Error::Io)?;
        }
    }
    started
}

/// Instantiates a guest on `directory` and opens the cache in it (see `start_guest`).
fn open_guest(directory: &Path, options: &CacheOptions) -> Result<Box<Running>> {
    let read_only = options.read_only_value();
    let mut instance =
        GuestInstance::instantiate(&[(directory, GUEST_DIRECTORY)], read_only, options)?;
    let settings = OpenSettings {
        size_limit: options.size_limit_value(),
        sync_writes: options.sync_value(),
        default_ttl: options.default_ttl_value(),
        read_only,
        shared: !options.exclusive_value(),
        memory_budget: options.memory_budget_setting(),
    };
    let cache = instance.open(GUEST_DIRECTORY, settings)?.handle();
    // Report damage recovery found once, when it is found (`stats` keeps counting it).
    let damaged = instance.cache(cache).stats().map_or(0, |s| s.damaged);
    if damaged > 0 {
        tracing::warn!(
            directory = %directory.display(),
            damaged,
            "recovery found damage: files moved into damaged/ or damaged records skipped (each costs only the entries in it)"
        );
    }
    Ok(Box::new(Running {
        instance,
        cache,
        nonblocking: false,
        write_locked: false,
    }))
}
