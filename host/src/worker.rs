//! `GuestSupervisor`: one cache's guest instance, called inline, restarted after a trap.
//!
//! Calls run on the caller's thread: the filesystem bindings poll inline (see `wasi_fs`), so no
//! thread hop or tokio `block_on` is needed. A trapped instance is dropped and a fresh one
//! reopens the same directory, so the next call works.

use std::path::{Path, PathBuf};

use wasmtime::component::ResourceAny;

use crate::error::{Error, Result};
use crate::instance::{GuestCache, GuestInstance, OpenSettings, GUEST_DIRECTORY};
use crate::options::CacheOptions;

/// A guest instance and the handle of the cache it has open.
struct Running {
    instance: GuestInstance,
    cache: ResourceAny,
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
        })
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
            self.state = State::Ready(start_guest(&self.directory, &self.options)?);
        }
        let State::Ready(running) = &mut self.state else {
            return Err(Error::Closed);
        };
        let result = operation(&mut running.instance.cache(running.cache));
        if running.instance.trapped() {
            // Drop the broken instance (and its open files) before starting a new one.
            self.state = State::NeedsRestart;
            if let Err(err) = &result {
                tracing::warn!(directory = %self.directory.display(), error = %err, "the cache guest trapped; restarting it");
            }
            match start_guest(&self.directory, &self.options) {
                Ok(running) => self.state = State::Ready(running),
                Err(err) => {
                    tracing::warn!(directory = %self.directory.display(), error = %err, "cannot restart the cache guest; will retry on the next call");
                }
            }
        }
        result
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
    Ok(Box::new(Running { instance, cache }))
}
