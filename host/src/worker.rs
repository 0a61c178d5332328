//! `GuestSupervisor`: one cache's guest instance, called on the caller's thread, restarted
//! after a trap.
//!
//! Calls run on the caller's thread: the filesystem bindings poll inline (see `wasi_fs`), so no
//! thread hop or tokio `block_on` is needed. A call may be tried in the engine's non-blocking
//! mode (`try_call_nonblocking`), which refuses slow work, so that it can run on an async
//! runtime's thread. A trapped instance is dropped and a fresh one reopens the same directory
//! (recovery: slow work, so never in a non-blocking try), so the next call works.

use std::path::{Path, PathBuf};

use wasmtime::component::ResourceAny;

use crate::bindings::GuestMaintenance;
use crate::error::{Error, Result};
use crate::instance::{GuestCache, GuestInstance, OpenSettings, GUEST_DIRECTORY};
use crate::options::CacheOptions;

/// A guest instance and the handle of the cache it has open.
struct Running {
    instance: GuestInstance,
    cache: ResourceAny,
    /// The guest's non-blocking mode is on.
    nonblocking: bool,
}

impl Running {
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
    pub(crate) fn start(directory: PathBuf, options: CacheOptions) -> Result<GuestSupervisor> {
        let running = start_guest(&directory, &options)?;
        Ok(GuestSupervisor {
            state: State::Ready(running),
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
        operation: &impl Fn(&mut GuestCache) -> Result<T>,
    ) -> Option<Result<T>> {
        let running = match &mut self.state {
            State::Ready(running) => running,
            State::NeedsRestart => return None,
            State::Closed => return Some(Err(Error::Closed)),
        };
        let result = running.call(true, operation);
        if running.instance.take_would_block() {
            return None;
        }
        if running.instance.trapped() {
            self.trapped(&result);
        }
        Some(result)
    }

    /// One step of the guest's background work (`maintain`, see there); what is left.
    pub(crate) fn maintain(&mut self, durable_through: u64) -> Result<GuestMaintenance> {
        self.call(|guest| guest.maintain(durable_through))
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
        operation: impl FnOnce(&mut GuestCache) -> Result<T>,
    ) -> Result<T> {
        if matches!(self.state, State::NeedsRestart) {
            self.state = State::Ready(self.restart()?);
        }
        let State::Ready(running) = &mut self.state else {
            return Err(Error::Closed);
        };
        let result = running.call(false, operation);
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
    fn restart(&self) -> Result<Box<Running>> {
        let mut running = start_guest(&self.directory, &self.options)?;
        running.instance.carry(self.carried);
        Ok(running)
    }

    /// Closes the cache (writes the index snapshot); later calls fail with `Error::Closed`.
    pub(crate) fn close(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Ready(mut running) if !running.instance.trapped() => {
                running.instance.cache(running.cache).close()
            }
            State::Ready(_) | State::NeedsRestart | State::Closed => Ok(()),
        }
    }
}

/// Instantiates a guest on `directory` and opens the cache in it.
fn start_guest(directory: &Path, options: &CacheOptions) -> Result<Box<Running>> {
    let read_only = options.read_only_value();
    let mut instance =
        GuestInstance::instantiate(&[(directory, GUEST_DIRECTORY)], read_only, options)?;
    let settings = OpenSettings {
        size_limit: options.size_limit_value(),
        sync_writes: options.sync_value(),
        default_ttl: options.default_ttl_value(),
        read_only,
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
    }))
}
