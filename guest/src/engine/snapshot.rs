//! The index snapshot file: writing it when stale, and removing it before anything makes it
//! wrong.

use super::Engine;
use crate::clock::Clock;
use crate::error::{io_err, Result};
use crate::format::{self, HINT_FILE};
use crate::storage::Storage;

impl<S: Storage, C: Clock> Engine<S, C> {
    /// Writes the index snapshot if it is stale, or removes it if it would not fit the limit.
    pub(super) fn write_snapshot(&mut self) -> Result<()> {
        if !self.snapshot_stale {
            return Ok(());
        }
        let covered_offset = self.segments.get(&self.active).map_or(0, |s| s.size);
        let bytes = format::encode_hint(
            self.active,
            covered_offset,
            self.index.len(),
            self.index
                .iter()
                .map(|(k, s)| (k, s.segment, s.offset, s.len, s.expires_at)),
        );
        let volume_with_hint = self.volume() - self.hint_len + bytes.len() as u64;
        if volume_with_hint > self.options.size_limit {
            self.remove_hint()?;
        } else {
            self.storage
                .write_file_atomic(HINT_FILE, &bytes, self.options.sync_writes)
                .map_err(|e| io_err("write", HINT_FILE, e))?;
            self.hint_len = bytes.len() as u64;
        }
        self.snapshot_stale = false;
        Ok(())
    }

    /// Removes the snapshot file (a missing one is fine) and marks the index as unsaved.
    pub(super) fn remove_hint(&mut self) -> Result<()> {
        self.storage
            .remove(HINT_FILE)
            .map_err(|e| io_err("remove", HINT_FILE, e))?;
        self.hint_len = 0;
        self.snapshot_stale = true;
        Ok(())
    }
}
