//! `Presync`: syncs a cache's recently written segment files and its data directory from the
//! maintenance thread without holding the guest, so that the syncs the engine makes next
//! (before compaction deletes a segment, at a checkpoint) find nothing left to write and take
//! ~0.1 ms instead of milliseconds while every other call waits.
//!
//! Only an optimisation: the engine's own syncs are what its durability rests on, so failures
//! here are ignored. Files are opened read-only without following symlinks (`fdatasync` works on
//! a read-only descriptor), and only names the engine gives segments are touched.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use persistent_cache_guest::format::parse_segment_file_name;

/// Files modified this long before the previous run are synced again, so that a coarse or
/// skewed modification time never hides a write.
const SLACK: Duration = Duration::from_secs(2);

/// The data directory of one cache and when it was last synced from here.
pub(crate) struct Presync {
    data: PathBuf,
    last: SystemTime,
}

impl Presync {
    pub(crate) fn new(data: PathBuf) -> Presync {
        Presync {
            data,
            last: SystemTime::UNIX_EPOCH,
        }
    }

    /// Syncs every segment file modified since the last run (less `SLACK`), then the
    /// directory. Edge cases: a file that vanishes (compacted meanwhile), a symlink, or any
    /// I/O error is skipped.
    pub(crate) fn run(&mut self) {
        let started = SystemTime::now();
        let since = self
            .last
            .checked_sub(SLACK)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let Ok(entries) = std::fs::read_dir(&self.data) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if parse_segment_file_name(name).is_none() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || meta.modified().is_ok_and(|m| m < since) {
                continue;
            }
            let opened = OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(entry.path());
            if let Ok(file) = opened {
                let _ = file.sync_data();
            }
        }
        if let Ok(dir) = File::open(&self.data) {
            let _ = dir.sync_all();
        }
        self.last = started;
    }
}
