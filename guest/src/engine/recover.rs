//! Recovery at open: claiming the directory, loading the index snapshot, replaying the log
//! after it, and repairing torn or damaged tails (only in memory when read-only).

use super::log::Segment;
use super::Engine;
use crate::error::{io_err, Error, Result};
use crate::format::{
    self, decode_record, DecodeError, RecordKind, META_FILE, SNAPSHOT_FILE, TMP_SUFFIX,
};
use crate::index::Slot;
use crate::storage::{Storage, StorageFile};
use crate::time::TimeSource;

/// What loading the snapshot and replaying the log found that open must make durable.
#[derive(Default)]
struct Repairs {
    /// The newest segment whose entries must all be forgotten (see the format docs).
    forget_through: Option<u32>,
    /// The newest segment that starts with a clear record.
    cleared_at: Option<u32>,
}

impl<S: Storage, T: TimeSource> Engine<S, T> {
    /// Brings a freshly built engine to the state its directory holds, with an active segment
    /// (none when read-only and the directory has no segment).
    pub(super) fn recover(&mut self) -> Result<()> {
        let read_only = self.options.read_only;
        self.claim_directory()?;
        self.open_segments()?;
        let snapshot_bytes = self
            .storage
            .read_file(SNAPSHOT_FILE)
            .map_err(|e| io_err("read", SNAPSHOT_FILE, e))?;
        self.snapshot_len = snapshot_bytes.as_ref().map_or(0, |b| b.len() as u64);
        let snapshot = snapshot_bytes.as_deref().and_then(format::decode_snapshot);
        if snapshot.is_none() && snapshot_bytes.is_some() && !read_only {
            self.remove_snapshot()?;
        }
        // Segment ids only grow, even when recovery deletes the newest segments.
        let first_free = self.segments.keys().next_back().map_or(1, |id| id + 1);
        let mut repairs = Repairs::default();
        let start = match snapshot {
            Some(snapshot) => self.load_snapshot(&snapshot, &mut repairs),
            None => (0, 0),
        };
        self.replay(start, &mut repairs)?;
        let now = self.time.now_ms();
        if self.index.iter().any(|(_, slot)| slot.is_expired(now)) {
            self.index.retain(|_, slot| !slot.is_expired(now));
            self.snapshot_stale = true;
        }
        if !read_only {
            self.repair(repairs)?;
        }
        match self.segments.keys().next_back() {
            Some(&last) => self.active = last,
            None if read_only => {}
            None => self.create_segment(first_free)?,
        }
        Ok(())
    }

    /// Checks the metadata file's format version, writing the file if it is missing or older
    /// (read-only: writing nothing; a missing file is an empty cache, an older one is read).
    fn claim_directory(&self) -> Result<()> {
        let (read_only, sync) = (self.options.read_only, self.options.sync_writes);
        let meta = self
            .storage
            .read_file(META_FILE)
            .map_err(|e| io_err("read", META_FILE, e))?;
        match meta.as_deref().map(format::decode_meta) {
            None if read_only => Ok(()),
            None => self
                .storage
                .write_file_atomic(META_FILE, &format::encode_meta(), sync)
                .map_err(|e| io_err("create", META_FILE, e)),
            // An older format is a subset of ours: claim the directory before writing
            // records an older engine would take for damage.
            Some(Ok(version)) if version < format::FORMAT_VERSION && !read_only => self
                .storage
                .write_file_atomic(META_FILE, &format::encode_meta(), sync)
                .map_err(|e| io_err("upgrade", META_FILE, e)),
            Some(Ok(_)) => Ok(()),
            Some(Err(format::MetaError::Corrupt(why))) => Err(Error::Corrupt(why)),
            Some(Err(format::MetaError::NewerVersion(v))) => {
                Err(Error::IncompatibleFormat(format!(
                    "the directory uses format version {v}; this engine reads up to {}",
                    format::FORMAT_VERSION
                )))
            }
        }
    }

    /// Opens every segment file and removes the engine's own half-written files (read-only:
    /// opens the segments for reading and leaves those files alone).
    fn open_segments(&mut self) -> Result<()> {
        let read_only = self.options.read_only;
        for name in self.storage.list().map_err(|e| io_err("list", ".", e))? {
            // Only the engine's own half-written files: a user's `notes.tmp` is left alone.
            let own_tmp = name
                .strip_suffix(TMP_SUFFIX)
                .is_some_and(|stem| stem == SNAPSHOT_FILE || stem == META_FILE);
            if own_tmp && !read_only {
                self.storage
                    .remove(&name)
                    .map_err(|e| io_err("remove", &name, e))?;
            } else if let Some(id) = format::parse_segment_file_name(&name) {
                let file = if read_only {
                    self.storage.open_read_only(&name)
                } else {
                    self.storage.open(&name, false)
                };
                let file = file.map_err(|e| io_err("open", &name, e))?;
                let size = file.size().map_err(|e| io_err("stat", &name, e))?;
                self.log_bytes += size;
                self.segments.insert(id, Segment { file, size });
            }
        }
        Ok(())
    }

    /// Loads the snapshot's entries into the index and returns the log position replay starts
    /// at; entries whose records are gone mark damage in `repairs`.
    fn load_snapshot(&mut self, snapshot: &format::Snapshot, repairs: &mut Repairs) -> (u32, u64) {
        // The snapshot knows how long the log was: a log that is shorter now, or an entry
        // whose record is gone, means lost data (a damaged or truncated file). Lost records
        // may be tombstones or overwrites, so it is damage like any other.
        let covered = self.segments.get(&snapshot.covered_segment);
        if covered.is_none_or(|s| s.size < snapshot.covered_offset) {
            repairs.forget_through = Some(snapshot.covered_segment);
        }
        for e in snapshot.entries() {
            let fits = self.segments.get(&e.segment).is_some_and(|s| {
                u64::from(e.offset) + u64::from(e.len) <= s.size
                    && e.segment <= snapshot.covered_segment
            });
            let slot = Slot {
                segment: e.segment,
                offset: e.offset,
                len: e.len,
                expires_at: e.expires_at,
            };
            // Expired entries are loaded too: a touch later in the log may extend them.
            // They are dropped once the replay is done.
            if fits {
                self.index.insert(e.key, slot);
            } else {
                repairs.forget_through = repairs.forget_through.max(Some(e.segment));
                self.snapshot_stale = true;
            }
        }
        if let Some(through) = repairs.forget_through {
            self.index.retain(|_, slot| slot.segment > through);
            self.snapshot_stale = true;
        }
        (snapshot.covered_segment, snapshot.covered_offset)
    }

    /// Replays the log from `start` (segment, offset) into the index, cutting a torn tail away
    /// (read-only: ignoring it) and noting damage and clears in `repairs`.
    fn replay(&mut self, start: (u32, u64), repairs: &mut Repairs) -> Result<()> {
        let (start_segment, start_offset) = start;
        let last = self.segments.keys().next_back().copied();
        let ids: Vec<u32> = self
            .segments
            .range(start_segment..)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let size = self.segments[&id].size;
            let from = if id == start_segment {
                start_offset.min(size)
            } else {
                0
            };
            if from < size {
                self.snapshot_stale = true;
            }
            let data = self.read_segment(id, from)?;
            let mut pos = 0;
            let mut ends_sealed = false;
            let mut damaged = false;
            while pos < data.len() {
                match decode_record(&data[pos..]) {
                    Ok(rec) => {
                        let offset = (from + pos as u64) as u32;
                        ends_sealed = rec.kind == RecordKind::Seal;
                        match rec.kind {
                            RecordKind::Put => {
                                let slot = Slot {
                                    segment: id,
                                    offset,
                                    len: rec.len as u32,
                                    expires_at: rec.expires_at,
                                };
                                self.index.insert(rec.key, slot);
                            }
                            RecordKind::Delete => {
                                self.index.remove(rec.key);
                            }
                            RecordKind::Touch => {
                                self.index.set_expires_at(rec.key, rec.expires_at);
                            }
                            RecordKind::DeletePrefix => {
                                self.index.retain(|key, _| !key.starts_with(rec.key));
                            }
                            RecordKind::Clear => {
                                self.index.clear();
                                repairs.cleared_at = Some(id);
                            }
                            RecordKind::Seal => {}
                        }
                        pos += rec.len;
                    }
                    Err(e) => {
                        let rest = &data[pos..];
                        let torn = match e {
                            DecodeError::Truncated { .. } => true,
                            DecodeError::BadBody { len } => len == rest.len(),
                            DecodeError::BadHeader => rest.iter().all(|b| *b == 0),
                        };
                        damaged = !(torn && Some(id) == last);
                        if !damaged && !self.options.read_only {
                            // A torn write at the end of the log: it was never acknowledged.
                            self.truncate_segment(id, from + pos as u64)?;
                        }
                        break;
                    }
                }
            }
            let cut_short = Some(id) != last && !ends_sealed;
            if damaged || cut_short {
                // Lost records may have been tombstones or overwrites of older entries: forget
                // everything stored at or before this point rather than risk a stale value.
                self.index.retain(|_, slot| slot.segment > id);
                self.snapshot_stale = true;
                repairs.forget_through = repairs.forget_through.max(Some(id));
            }
        }
        Ok(())
    }

    /// Makes what replay found durable: deletes the segments whose entries were forgotten and
    /// those before the newest clear (never called read-only).
    fn repair(&mut self, repairs: Repairs) -> Result<()> {
        if let Some(through) = repairs.forget_through {
            // Make the forgetting durable: delete every segment at or before the damage. Cutting
            // the damage away instead would let a later open replay the records before it and
            // bring back values whose tombstones were lost. The damaged segment goes last, so a
            // crash part-way leaves it to be found (and forgotten) again.
            self.remove_snapshot()?;
            let doomed: Vec<u32> = self.segments.range(..=through).map(|(id, _)| *id).collect();
            for id in doomed {
                self.delete_segment(id)?;
            }
        }
        if let Some(clear_segment) = repairs.cleared_at {
            // The snapshot predates the clear: it must not outlive the segments it describes.
            self.remove_snapshot()?;
            let older: Vec<u32> = self
                .segments
                .range(..clear_segment)
                .map(|(id, _)| *id)
                .collect();
            for id in older {
                self.delete_segment(id)?;
            }
        }
        Ok(())
    }
}
