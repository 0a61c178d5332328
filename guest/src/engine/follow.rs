//! Sharing a directory with other processes (`EngineOptions::shared`): replaying what they
//! appended since this engine last looked, forgetting the segments they deleted, and refusing
//! to write unless the host holds the directory's write lock. The protocol is in the format
//! docs ("Several processes").

use super::log::{scan_records, OnFailure};
use super::recover::apply;
use super::Engine;
use crate::error::{io_err, Error, Result};
use crate::format::{self, SEGMENT_HEADER_LEN, SNAPSHOT_FILE};
use crate::storage::{Storage, StorageFile};
use crate::time::TimeSource;
use std::ops::ControlFlow;

impl<S: Storage, T: TimeSource> Engine<S, T> {
    /// Tells a shared engine whether the host holds the directory's write lock now: without
    /// it, every operation that may write returns `NeedsLock` before changing anything. On
    /// taking it, the engine catches up with the files (see `catch_up`) if `others_wrote`
    /// (the host saw another process write since this engine last looked) or if the log does
    /// not end where it thinks (a writer that crashed before saying so): so nothing it writes
    /// next is decided on a stale index or lands on another process's records. What a crashed
    /// writer left torn at the end is marked to be cut by the next append. Costs one `stat`
    /// when nobody else wrote. Edge cases: the errors of `catch_up` (the lock then counts as
    /// not held); damage followed by records at the end of the log: `Stale` (reopen: recovery
    /// sets the damaged tail aside); not shared: does nothing.
    pub fn set_write_locked(&mut self, locked: bool, others_wrote: bool) -> Result<()> {
        if !self.options.shared {
            return Ok(());
        }
        self.write_locked = false;
        if locked {
            let known = self.segments.get(&self.active).map(|s| s.size);
            let mut file_size = self.active_file_size()?;
            if others_wrote || file_size != known {
                self.catch_up()?;
                file_size = self.active_file_size()?;
            }
            // After the replay, what is left past the end is a write torn by a crash (nobody
            // else writes now): the next append cuts it. Unless records follow it: that is
            // damage in the middle of the log, which a reopen's recovery sets aside without
            // destroying a readable byte (readers stop before it, so their positions hold).
            let known = self.segments.get(&self.active).map(|s| s.size);
            if let Some((file, known)) = file_size.zip(known).filter(|(file, known)| file > known) {
                if self.tail_holds_records(self.active, known, file)? {
                    return Err(Error::Stale);
                }
                self.tail_unclean = true;
            }
            self.write_locked = true;
        }
        Ok(())
    }

    /// The size of the active segment's file now (`None` without an active segment).
    fn active_file_size(&self) -> Result<Option<u64>> {
        let Some(segment) = self.segments.get(&self.active) else {
            return Ok(None);
        };
        let name = || format::segment_file_name(self.active);
        segment
            .file
            .size()
            .map(Some)
            .map_err(|e| io_err("stat", &name(), e))
    }

    /// Brings the index up to date with what other processes did to the directory: forgets
    /// the segments they deleted, then replays the records appended after this engine's end of
    /// the log, to the ends of the files. Costs one existence check and one `stat` when
    /// nothing changed, and reads only the records appended since.
    ///
    /// Why this order is safe without the write lock: a process deletes a segment only after
    /// appending copies of its live records (and entries still in it were evicted or cleared
    /// by that process), so once the deletion is seen the copies are in the files and the
    /// replay below moves the entries to them. A record still being written does not decode
    /// yet: the replay stops before it and takes it next time. A record a crashed writer left
    /// complete is replayed (it was a write that happened); a torn one is never replayed, and
    /// under the write lock the next append cuts it, so no reader's position is ever cut.
    ///
    /// Edge cases: if the segment this engine was appending to is gone (it missed a whole
    /// rotation of the log), `Stale`: reopen. Not shared: does nothing.
    pub fn catch_up(&mut self) -> Result<()> {
        if !self.options.shared {
            return Ok(());
        }
        let gone = self.deleted_segments()?;
        if gone.contains(&self.active) {
            return Err(Error::Stale);
        }
        let mut changed = !gone.is_empty();
        for &id in &gone {
            self.forget_segment(id);
        }
        loop {
            let id = self.active;
            let before = self.segments.get(&id).map(|s| s.size);
            let mut sealed = self.replay_tail(id, &mut changed)?;
            let grew = self.segments.get(&id).map(|s| s.size) != before;
            // A segment that grew without a seal is still the newest, but for a `clear`, which
            // starts a new segment without sealing the old one after deleting it (that shows
            // as the active segment gone, next time): look for a newer one only otherwise.
            if !sealed && !grew {
                let next = format::segment_file_name(id + 1);
                if !self
                    .storage
                    .exists(&next)
                    .map_err(|e| io_err("stat", &next, e))?
                {
                    break;
                }
                // A newer segment exists, so this one is final (`clear` starts a new segment
                // without sealing the old one): take what was appended since the look above.
                self.replay_tail(id, &mut changed)?;
                sealed = true;
            }
            if !(sealed && self.follow_next_segment(id + 1)?) {
                break;
            }
            changed = true;
        }
        if changed {
            self.after_others_wrote(!gone.is_empty())?;
        }
        Ok(())
    }

    /// Replays the records appended to segment `id` after its known end, up to the first one
    /// that does not decode (yet); true if the last one replayed is a seal.
    fn replay_tail(&mut self, id: u32, changed: &mut bool) -> Result<bool> {
        let max_record = self.options.size_limit.max(super::recover::MIN_MAX_RECORD);
        let Some(segment) = self.segments.get(&id) else {
            return Ok(false);
        };
        let name = || format::segment_file_name(id);
        let from = segment.size;
        let file_size = segment
            .file
            .size()
            .map_err(|e| io_err("stat", &name(), e))?;
        if file_size < from {
            // Cut under this engine (another process's recovery set a damaged tail aside):
            // what it knows past the cut is gone, and its appends would leave a hole.
            return Err(Error::Stale);
        }
        if file_size == from {
            return Ok(false);
        }
        let index = &mut self.index;
        let mut sealed = false;
        let mut replayed_to = from;
        scan_records(
            &segment.file,
            file_size,
            from,
            max_record,
            OnFailure::Stop,
            |at, record| {
                apply(index, id, at, record);
                sealed = record.kind == format::RecordKind::Seal;
                replayed_to = at + record.len as u64;
                ControlFlow::Continue(())
            },
        )
        .map_err(|e| io_err("read", &name(), e))?;
        if replayed_to > from {
            *changed = true;
            self.grew(id, replayed_to - from);
        }
        Ok(sealed)
    }

    /// The oldest segments whose files are gone (deleted by another process).
    fn deleted_segments(&self) -> Result<Vec<u32>> {
        let mut gone = Vec::new();
        for &id in self.segments.keys() {
            let name = format::segment_file_name(id);
            let exists = self
                .storage
                .exists(&name)
                .map_err(|e| io_err("stat", &name, e))?;
            if exists {
                break;
            }
            gone.push(id);
        }
        Ok(gone)
    }

    /// Opens segment `id`, which another process created, and makes it the active one;
    /// false if it does not exist (yet).
    fn follow_next_segment(&mut self, id: u32) -> Result<bool> {
        let name = format::segment_file_name(id);
        let opened = if self.options.read_only {
            self.storage.open_read_only(&name)
        } else {
            self.storage.open(&name, false)
        };
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err("open", &name, e)),
        };
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        if file.read_exact_at(&mut header, 0).is_err()
            || format::check_segment_header(&header, id, self.cache_id).is_err()
        {
            // Being created (the header not yet written), or not ours: look again next time.
            return Ok(false);
        }
        self.adopt_segment(id, file, SEGMENT_HEADER_LEN as u64);
        self.active = id;
        Ok(true)
    }

    /// Counts `bytes` another process appended to segment `id`.
    fn grew(&mut self, id: u32, bytes: u64) {
        self.log_seq += 1;
        if let Some(segment) = self.segments.get_mut(&id) {
            segment.size += bytes;
            segment.synced = false;
            segment.changed = self.log_seq;
        }
        self.log_bytes += bytes;
    }

    /// Forgets segment `id`, which another process deleted: the index entries still in it
    /// (evicted or cleared there) and its file.
    fn forget_segment(&mut self, id: u32) {
        self.index.retain(|_, slot| slot.segment != id);
        if let Some(segment) = self.segments.remove(&id) {
            self.log_bytes -= segment.size;
        }
        if self.compaction.is_some_and(|c| c.segment() == id) {
            self.compaction = None;
        }
    }

    /// Bookkeeping after replaying other processes' changes: a pending snapshot may point into
    /// a deleted segment, the snapshot's size is read again, the index differs from any
    /// snapshot, and what they wrote may not be synced.
    fn after_others_wrote(&mut self, deleted: bool) -> Result<()> {
        if deleted {
            self.abandon_checkpoint();
        }
        self.snapshot_len = match self.storage.open_read_only(SNAPSHOT_FILE) {
            Ok(file) => file.size().map_err(|e| io_err("stat", SNAPSHOT_FILE, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err("open", SNAPSHOT_FILE, e)),
        };
        self.snapshot_stale = true;
        self.bulk_delete_unsynced = true;
        self.dir_unsynced();
        Ok(())
    }
}
