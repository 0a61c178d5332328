//! The index snapshot file: writing it when stale, and removing it before anything makes it
//! wrong.

use super::Engine;
use crate::error::{io_err, Result};
use crate::format::{self, SNAPSHOT_FILE};
use crate::storage::Storage;
use crate::time::TimeSource;

impl<S: Storage, T: TimeSource> Engine<S, T> {
    /// Writes the index snapshot if it is stale, synced (`sync`) or not; the caller has synced
    /// the log it describes. If it would not fit the size limit, or writing it fails, the
    /// previous one stays: it still matches the log (the next open replays more of it). An
    /// unsynced snapshot that a power cut tears or loses fails its checksum or its match with
    /// the log at the next open, which then replays the whole log: it costs time, never data.
    pub(super) fn write_snapshot(&mut self, sync: bool) -> Result<()> {
        if !self.snapshot_stale {
            return Ok(());
        }
        self.writable()?;
        let covered_offset = self.segments.get(&self.active).map_or(0, |s| s.size);
        let bytes = format::encode_snapshot(
            self.active,
            covered_offset,
            self.cache_id,
            self.index.len(),
            self.index
                .iter()
                .map(|(k, s)| (k, s.segment, s.offset, s.len, s.expires_at)),
        );
        let volume_with_snapshot = self.volume() - self.snapshot_len + bytes.len() as u64;
        if volume_with_snapshot > self.options.size_limit {
            return Ok(());
        }
        if !sync {
            self.dir_synced = false;
        }
        if let Err(e) = self.storage.write_file_atomic(SNAPSHOT_FILE, &bytes, sync) {
            let _ = self
                .storage
                .remove(&format!("{SNAPSHOT_FILE}{}", format::TMP_SUFFIX));
            return Err(io_err("write", SNAPSHOT_FILE, e));
        }
        self.snapshot_len = bytes.len() as u64;
        self.snapshot_stale = false;
        Ok(())
    }

    /// Removes the snapshot file (a missing one is fine) and marks the index as unsaved.
    pub(super) fn remove_snapshot(&mut self) -> Result<()> {
        self.writable()?;
        self.storage
            .remove(SNAPSHOT_FILE)
            .map_err(|e| io_err("remove", SNAPSHOT_FILE, e))?;
        self.snapshot_len = 0;
        self.snapshot_stale = true;
        Ok(())
    }
}
