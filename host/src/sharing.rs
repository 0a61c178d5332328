//! `WriteLock`: the host's half of several processes sharing one cache directory (WASI has no
//! file locks, so the host takes them for its guest): an exclusive lock on `<dir>/.write-lock`
//! around every call that writes, and the *generation* stored in that file, which every writer
//! bumps before it releases the lock, so that each process knows at the cost of one 8-byte
//! read whether another one wrote since its last call (its guest then catches up first).
//!
//! The generation is only a hint to look: what the guest replays is decided from the files
//! (see the engine's `catch_up`), so junk in `.write-lock` costs at most a needless catch-up,
//! never a wrong value.
//!
//! Bytes 8..16 say whether a process holds the lock for a write in progress (1) or not (0):
//! a process that takes the lock and finds 1 knows the previous holder died mid-call without
//! announcing what it wrote, and has its guest look at the files before writing.
//!
//! The generation is read through a shared memory mapping of the file's first 16 bytes, so
//! that looking costs a memory load instead of a `pread` (which alone cost a quarter of a
//! get-hit here). The price, written down in SECURITY.md: a process that truncates
//! `.write-lock` while we have it mapped makes our next look fault (`SIGBUS`); only someone who
//! may write the cache directory can, and they can already delete the cache. A file shorter
//! than 8 bytes (someone truncated it before we opened) is read with `pread` instead.

use std::fs::{File, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::layout::Modes;

/// Name of the write lock file inside the cache directory.
pub const WRITE_LOCK_FILE_NAME: &str = ".write-lock";

/// The write lock of one shared cache directory, and the generation this process last saw.
pub(crate) struct WriteLock {
    file: File,
    /// The file's first 8 bytes, mapped shared (see the module docs); `None`: use `pread`.
    mapped: Option<Mapped>,
    /// The generation after this process's last catch-up or write.
    seen: u64,
    /// This process holds the lock now.
    held: bool,
    /// When the lock was last taken, the previous holder had died in the middle of a write.
    previous_holder_crashed: bool,
}

impl WriteLock {
    /// Opens (creating) `<directory>/.write-lock`, without following a symlink planted there;
    /// `read_only` opens it read-only and creates nothing (`Ok(None)` if it does not exist:
    /// no process has written the directory shared yet; try again later).
    pub(crate) fn open(
        directory: &Path,
        modes: Modes,
        read_only: bool,
    ) -> Result<Option<WriteLock>> {
        let path = directory.join(WRITE_LOCK_FILE_NAME);
        let file = match crate::layout::open_host_file(&path, modes, read_only) {
            Ok(file) => file,
            Err(e) if read_only && e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Directory { path, source }),
        };
        if !read_only && file.metadata().is_ok_and(|m| m.len() < 16) {
            // A new file (or one cut short): the generation and the in-progress flag, zero.
            // Extending a file another process just made 16 bytes long changes nothing.
            let _ = file.set_len(16);
        }
        let mapped = Mapped::new(&file, read_only);
        let mut lock = WriteLock {
            file,
            mapped,
            seen: 0,
            held: false,
            previous_holder_crashed: false,
        };
        lock.seen = lock.generation();
        Ok(Some(lock))
    }

    /// The generation stored now (0 for a new or damaged file).
    fn generation(&self) -> u64 {
        if let Some(mapped) = &self.mapped {
            return mapped.atomic().load(Ordering::Acquire);
        }
        let mut bytes = [0u8; 8];
        match self.file.read_exact_at(&mut bytes, 0) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => 0,
        }
    }

    /// True if another process wrote since this one last looked (and remembers the new
    /// generation): one load from the mapping.
    pub(crate) fn others_wrote(&mut self) -> bool {
        let now = self.generation();
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }

    /// Takes the lock if nobody holds it; false if another process does. (Read-only: a
    /// read-only file can be locked too, but read-only caches never write.)
    pub(crate) fn try_lock(&mut self) -> Result<bool> {
        match self.file.try_lock() {
            Ok(()) => {
                self.taken();
                Ok(true)
            }
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(e)) => Err(Error::Io(e)),
        }
    }

    /// Takes the lock, waiting for the process that holds it (blocking: never on an async
    /// runtime's thread). A process that dies holding it releases it.
    pub(crate) fn lock(&mut self) -> Result<()> {
        self.file.lock().map_err(Error::Io)?;
        self.taken();
        Ok(())
    }

    /// Marks the lock as held for a write in progress, noting whether the previous holder
    /// died with its write in progress. Without a mapping that is unknown: assume it did.
    fn taken(&mut self) {
        self.held = true;
        self.previous_holder_crashed = match &self.mapped {
            Some(mapped) => mapped.in_progress().swap(1, Ordering::AcqRel) != 0,
            None => true,
        };
    }

    /// When the lock was last taken, the previous holder had died in the middle of a write
    /// (or this process cannot tell): what it wrote was never announced.
    pub(crate) fn previous_holder_crashed(&self) -> bool {
        self.previous_holder_crashed
    }

    /// Bumps the generation (this process wrote) and releases the lock. Edge case: not held:
    /// does nothing.
    pub(crate) fn publish_and_unlock(&mut self) -> Result<()> {
        if !self.held {
            return Ok(());
        }
        // Nobody else writes it while we hold the lock: one look is enough.
        let next = self.generation().wrapping_add(1);
        let written = match &self.mapped {
            Some(mapped) => {
                mapped.atomic().store(next, Ordering::Release);
                mapped.in_progress().store(0, Ordering::Release);
                Ok(())
            }
            None => self.file.write_all_at(&next.to_le_bytes(), 0),
        };
        if written.is_ok() {
            self.seen = next;
        }
        self.held = false;
        let unlocked = self.file.unlock();
        written.and(unlocked).map_err(Error::Io)
    }

    /// Releases the lock without publishing (the call changed nothing). Not held: nothing.
    pub(crate) fn unlock(&mut self) -> io::Result<()> {
        if !self.held {
            return Ok(());
        }
        self.held = false;
        if let Some(mapped) = &self.mapped {
            // Nothing was written: no announcement is owed.
            mapped.in_progress().store(0, Ordering::Release);
        }
        self.file.unlock()
    }
}

/// A shared mapping of the first 16 bytes of `.write-lock`: the generation and the in-progress
/// flag, little-endian.
struct Mapped(NonNull<AtomicU64>);

// The mapping is only read and written through atomics.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps `file`'s first 16 bytes, writable unless `read_only`; `None` if it is shorter than
    /// that or cannot be mapped (then `pread` and `pwrite` are used).
    fn new(file: &File, read_only: bool) -> Option<Mapped> {
        if file.metadata().ok()?.len() < 16 {
            return None;
        }
        let prot = if read_only {
            rustix::mm::ProtFlags::READ
        } else {
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE
        };
        // SAFETY: a fresh mapping chosen by the kernel (no existing memory is replaced), of a
        // file at least 16 bytes long; it is only accessed as two `AtomicU64`s (page-aligned,
        // so aligned), and unmapped in `drop`.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                16,
                prot,
                rustix::mm::MapFlags::SHARED,
                file,
                0,
            )
        }
        .ok()?;
        NonNull::new(ptr.cast::<AtomicU64>()).map(Mapped)
    }

    fn atomic(&self) -> &AtomicU64 {
        // SAFETY: the mapping lives as long as `self` (see `new`).
        unsafe { self.0.as_ref() }
    }

    fn in_progress(&self) -> &AtomicU64 {
        // SAFETY: as `atomic`; the second of the two words mapped.
        unsafe { &*self.0.as_ptr().add(1) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, not used after this.
        unsafe {
            let _ = rustix::mm::munmap(self.0.as_ptr().cast(), 16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> WriteLock {
        WriteLock::open(dir, Modes::new(false), false)
            .unwrap()
            .expect("created")
    }

    #[test]
    fn the_generation_announces_writes_and_a_holder_that_died_mid_write_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = open(dir.path());
        let mut b = open(dir.path());
        assert!(!b.others_wrote());
        a.lock().unwrap();
        assert!(!a.previous_holder_crashed());
        assert!(!b.try_lock().unwrap(), "held by a");
        a.publish_and_unlock().unwrap();
        assert!(b.others_wrote(), "a's write is announced");
        assert!(!b.others_wrote(), "once");
        assert!(!a.others_wrote(), "a's own write is not news to a");
        // A holder that dies (its descriptor closed by the kernel) without announcing.
        a.lock().unwrap();
        drop(a);
        assert!(b.try_lock().unwrap());
        assert!(b.previous_holder_crashed());
        b.publish_and_unlock().unwrap();
        let mut c = open(dir.path());
        c.lock().unwrap();
        assert!(!c.previous_holder_crashed());
        c.unlock().unwrap();
        // Junk in the file costs a look, nothing else.
        std::fs::write(dir.path().join(WRITE_LOCK_FILE_NAME), [0xFFu8; 16]).unwrap();
        assert!(c.others_wrote());
    }
}
