//! `GuestSupervisor`: one cache's guest instance, called inline, restarted after a trap.
//!
//! Calls run on the caller's thread: the filesystem bindings poll inline (see `wasi_fs`), so no
//! thread hop or tokio `block_on` is needed. A trapped instance is dropped and a fresh one
//! reopens the same directory, so the next call works.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::options::CacheOptions;
use crate::runtime::Guest;

enum GuestSlot {
    /// A working guest with the cache open.
    Ready(Box<Guest>),
    /// The previous guest trapped and restarting it failed; the next call tries again.
    NeedsRestart,
    /// The cache was closed.
    Closed,
}

/// One cache's guest and what is needed to restart it after a trap.
pub(crate) struct GuestSupervisor {
    slot: GuestSlot,
    directory: PathBuf,
    options: CacheOptions,
}

impl GuestSupervisor {
    /// Instantiates a guest on `directory` and opens the cache in it.
    ///
    /// Edge cases: the errors of `open` (locked out by nobody here: the host lock is taken
    /// before), a component that fails to compile or instantiate (`Error::Wasm`).
    pub(crate) fn start(directory: PathBuf, options: CacheOptions) -> Result<GuestSupervisor> {
        let guest = start_guest(&directory, &options)?;
        Ok(GuestSupervisor {
            slot: GuestSlot::Ready(guest),
            directory,
            options,
        })
    }

    /// Runs `operation` on the guest, on the calling thread.
    ///
    /// Edge cases: after `close` → `Error::Closed`; the guest is restarted first if an earlier
    /// call trapped and its restart failed, and replaced afterwards if this call traps.
    pub(crate) fn call<T>(&mut self, operation: impl FnOnce(&mut Guest) -> Result<T>) -> Result<T> {
        if matches!(self.slot, GuestSlot::NeedsRestart) {
            self.slot = GuestSlot::Ready(start_guest(&self.directory, &self.options)?);
        }
        let GuestSlot::Ready(guest) = &mut self.slot else {
            return Err(Error::Closed);
        };
        let result = operation(guest);
        if guest.trapped() {
            // Drop the broken instance (and its open files) before starting a new one.
            self.slot = GuestSlot::NeedsRestart;
            if let Err(err) = &result {
                tracing::warn!(directory = %self.directory.display(), error = %err, "the cache guest trapped; restarting it");
            }
            match start_guest(&self.directory, &self.options) {
                Ok(guest) => self.slot = GuestSlot::Ready(guest),
                Err(err) => {
                    tracing::warn!(directory = %self.directory.display(), error = %err, "cannot restart the cache guest; will retry on the next call");
                }
            }
        }
        result
    }

    /// Closes the cache (writes the index snapshot); later calls fail with `Error::Closed`.
    pub(crate) fn close(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.slot, GuestSlot::Closed) {
            GuestSlot::Ready(mut guest) if !guest.trapped() => guest.close(),
            GuestSlot::Ready(_) | GuestSlot::NeedsRestart | GuestSlot::Closed => Ok(()),
        }
    }
}

/// Instantiates a guest on `directory` and opens the cache in it.
fn start_guest(directory: &std::path::Path, options: &CacheOptions) -> Result<Box<Guest>> {
    let mut guest = Box::new(Guest::instantiate(directory, options)?);
    guest.open(options.size_limit, options.sync)?;
    Ok(guest)
}
