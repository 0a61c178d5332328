//! The index snapshot file: writing it when stale, and removing it before anything makes it
//! wrong.

use super::Engine;
use crate::error::{io_err, Result};
use crate::format::{self, SNAPSHOT_FILE, TMP_SUFFIX};
use crate::storage::{Storage, StorageFile};
use crate::time::TimeSource;

/// A checkpoint's snapshot, written (unsynced) to the snapshot's temporary file, that replaces
/// the snapshot once the log it describes is durable.
#[derive(Clone, Copy, Debug)]
pub(super) struct PendingCheckpoint {
    /// The log position the snapshot describes: the log through it must be durable first.
    pub(super) at: u64,
    /// Its bytes (on disk, so counted in the volume).
    pub(super) len: u64,
    /// Its last 4 bytes (the snapshot's crc32): with the length, tells it from a snapshot
    /// another process sharing the directory wrote to the same temporary file since.
    pub(super) tail: [u8; 4],
}

/// The temporary file snapshots are written to before they are renamed into place.
fn snapshot_tmp() -> String {
    format!("{SNAPSHOT_FILE}{TMP_SUFFIX}")
}

impl<S: Storage, T: TimeSource> Engine<S, T> {
    /// Writes the index snapshot, synced, if it is stale (abandoning a pending checkpoint);
    /// the caller has synced the log it describes. If it would not fit the size limit, or
    /// writing it fails, the previous one stays: it still matches the log (the next open
    /// replays more of it).
    pub(super) fn write_snapshot(&mut self) -> Result<()> {
        self.abandon_checkpoint();
        if !self.snapshot_stale {
            return Ok(());
        }
        self.writable()?;
        let bytes = self.encode_snapshot();
        let volume_with_snapshot =
            self.volume() - self.snapshot_len + bytes.len() as u64 + self.announcement_len();
        if volume_with_snapshot > self.options.size_limit {
            return Ok(());
        }
        if let Err(e) = self.storage.write_file_atomic(SNAPSHOT_FILE, &bytes, true) {
            let _ = self.storage.remove(&snapshot_tmp());
            return Err(io_err("write", SNAPSHOT_FILE, e));
        }
        self.snapshot_len = bytes.len() as u64;
        self.snapshot_stale = false;
        self.log_past_snapshot = 0;
        self.recency_changes = 0;
        self.announce_snapshot();
        Ok(())
    }

    /// The bytes `announce_snapshot` appends.
    fn announcement_len(&self) -> u64 {
        if self.options.shared {
            format::RECORD_HEADER_LEN as u64
        } else {
            0
        }
    }

    /// Shared: appends a checkpoint record (replay skips it) after the snapshot file changed,
    /// so that the other processes notice at their next catch-up and count its new size in
    /// the volume. Best effort: a failure costs them only a stale count until the next one.
    fn announce_snapshot(&mut self) {
        if self.options.shared && !self.options.read_only {
            let _ = self.append_record(format::RecordKind::Checkpoint, "", &[], 0);
        }
    }

    /// The index as a snapshot of the log as it is now.
    fn encode_snapshot(&self) -> Vec<u8> {
        let covered_offset = self.segments.get(&self.active).map_or(0, |s| s.size);
        format::encode_snapshot_table(self.active, covered_offset, self.cache_id, || {
            self.index.iter()
        })
    }

    /// One step of a checkpoint that syncs nothing itself (for `maintain`): first writes the
    /// snapshot of the index now to its temporary file, unsynced, and remembers the log
    /// position it describes; once a host reported the log durable through that position,
    /// renames it into place. Until then `Maintenance::sync_through` asks for that sync. So
    /// the snapshot in place never describes log bytes a power cut could take.
    /// Edge cases: a snapshot that would not fit the size limit is skipped (the old one
    /// stays); anything that changes the log's files meanwhile (a segment deleted or cut, a
    /// `flush`) abandons the pending one; a failed write or rename is `Io` and leaves the old
    /// snapshot in place.
    pub(super) fn checkpoint_step(&mut self) -> Result<()> {
        self.writable()?;
        match self.pending_checkpoint {
            None => {
                self.written_since_checkpoint = 0;
                if !self.snapshot_stale {
                    return Ok(());
                }
                let bytes = self.encode_snapshot();
                let len = bytes.len() as u64;
                if self.volume() + len + self.announcement_len() > self.options.size_limit {
                    return Ok(());
                }
                let tmp = snapshot_tmp();
                let written = self.storage.open(&tmp, true).and_then(|file| {
                    file.set_len(0)?;
                    file.write_all_at(&bytes, 0)
                });
                if let Err(e) = written {
                    let _ = self.storage.remove(&tmp);
                    return Err(io_err("write", &tmp, e));
                }
                self.dir_unsynced();
                let mut tail = [0u8; 4];
                tail.copy_from_slice(&bytes[bytes.len() - 4..]);
                self.pending_checkpoint = Some(PendingCheckpoint {
                    at: self.log_seq,
                    len,
                    tail,
                });
                // Writes from now on make the index differ from this snapshot again.
                self.snapshot_stale = false;
                self.log_past_snapshot = 0;
                self.recency_changes = 0;
            }
            Some(pending) if self.durable_seq >= pending.at => {
                self.pending_checkpoint = None;
                if !self.pending_file_is(&pending) {
                    // Another process sharing the directory replaced or removed it.
                    self.snapshot_stale = true;
                    return Ok(());
                }
                if let Err(e) = self.storage.rename(&snapshot_tmp(), SNAPSHOT_FILE) {
                    self.snapshot_stale = true;
                    let _ = self.storage.remove(&snapshot_tmp());
                    return Err(io_err("rename", SNAPSHOT_FILE, e));
                }
                self.dir_unsynced();
                self.snapshot_len = pending.len;
                self.announce_snapshot();
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// True if the snapshot's temporary file still holds `pending`'s snapshot.
    fn pending_file_is(&self, pending: &PendingCheckpoint) -> bool {
        let Ok(file) = self.storage.open_read_only(&snapshot_tmp()) else {
            return false;
        };
        let mut tail = [0u8; 4];
        file.size().is_ok_and(|len| len == pending.len)
            && file.read_exact_at(&mut tail, pending.len - 4).is_ok()
            && tail == pending.tail
    }

    /// Drops a pending checkpoint (see `checkpoint_step`), removing its temporary file.
    pub(super) fn abandon_checkpoint(&mut self) {
        if let Some(pending) = self.pending_checkpoint.take() {
            self.snapshot_stale = true;
            // Not another sharing process's pending snapshot.
            if self.pending_file_is(&pending) {
                let _ = self.storage.remove(&snapshot_tmp());
            }
        }
    }

    /// Removes the snapshot file (a missing one is fine) and marks the index as unsaved.
    pub(super) fn remove_snapshot(&mut self) -> Result<()> {
        self.writable()?;
        self.abandon_checkpoint();
        self.storage
            .remove(SNAPSHOT_FILE)
            .map_err(|e| io_err("remove", SNAPSHOT_FILE, e))?;
        self.snapshot_len = 0;
        self.snapshot_stale = true;
        Ok(())
    }
}
