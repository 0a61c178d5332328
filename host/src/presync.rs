//! `Presync`: syncs a cache's recently written segment files and its data directory from the
//! maintenance thread without holding the guest, so that the syncs the engine makes next
//! (before compaction deletes a segment, at a checkpoint) find little left to write instead of
//! taking milliseconds while every other call waits.
//!
//! Only an optimisation: the engine's own syncs are what its durability rests on, so failures
//! here are ignored. Files are opened read-only without following symlinks (`fdatasync` works on
//! a read-only descriptor), and only names the engine gives segments are touched.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use persistent_cache_guest::format::parse_segment_file_name;

/// The data directory of one cache, and the segments as they were when last synced from here.
pub(crate) struct Presync {
    data: PathBuf,
    /// Segment file name → its length when it was last synced from here.
    synced: HashMap<String, u64>,
}

impl Presync {
    pub(crate) fn new(data: PathBuf) -> Presync {
        Presync {
            data,
            synced: HashMap::new(),
        }
    }

    /// Syncs every segment file whose length changed since the last run (segments only grow
    /// by appends, and a new one is new), then the directory if a segment came or went. Edge
    /// cases: a file that vanishes (compacted meanwhile), a symlink, or any I/O error is
    /// skipped (and tried again next time).
    pub(crate) fn run(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.data) else {
            return;
        };
        let mut seen = HashMap::with_capacity(self.synced.len() + 1);
        let mut names_changed = false;
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if parse_segment_file_name(&name).is_none() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let len = meta.len();
            let mut synced_len = self.synced.get(&name).copied();
            names_changed |= synced_len.is_none();
            if synced_len != Some(len) {
                let opened = OpenOptions::new()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(entry.path());
                if opened.and_then(|file| file.sync_data()).is_ok() {
                    synced_len = Some(len);
                }
            }
            if let Some(len) = synced_len {
                seen.insert(name, len);
            }
        }
        names_changed |= seen.len() != self.synced.len();
        if names_changed {
            if let Ok(dir) = File::open(&self.data) {
                let _ = dir.sync_all();
            }
        }
        self.synced = seen;
    }
}
