//! The record log's file I/O: appending records to segments, rolling, creating, truncating,
//! deleting and syncing segment files, and reading one record back.

use super::Engine;
use crate::error::{io_err, Error, Result};
use crate::format::{
    self, decode_record, encode_record, DecodeError, Record, RecordKind, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};
use crate::index::Slot;
use crate::storage::{Storage, StorageFile};
use crate::time::TimeSource;
use std::ops::ControlFlow;

/// One segment file of the log and its size (the end of its last whole record).
pub(super) struct Segment<F> {
    pub(super) file: F,
    pub(super) size: u64,
    /// Nothing was written to it since its last sync.
    pub(super) synced: bool,
    /// The log position (`Engine::log_seq`) of its last change.
    pub(super) changed: u64,
}

/// Records are read back from disk in chunks of this many bytes (more for a bigger record).
const READ_CHUNK: usize = 1 << 20;

/// What reading a segment's records found besides the records.
#[derive(Default)]
pub(super) struct ScanEnd {
    /// Where the first record that failed to decode starts.
    pub(super) first_failure: Option<u64>,
    /// Stretches of bytes that were not records (each skipped to the next record that decodes).
    pub(super) damaged_regions: u64,
    /// A record decoded after the first failure: the failure was not a torn end.
    pub(super) resumed: bool,
    /// Where the scan stopped because `visit` said so (the end of the last record visited).
    pub(super) stopped_at: Option<u64>,
}

/// How `scan_records` goes on after bytes that do not decode.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum OnFailure {
    /// Stop there (the newest segment: the rest is a torn tail).
    Stop,
    /// Look for the next offset where a record decodes and go on from there (a damaged
    /// stretch costs only the records in it). A false match needs a header CRC-32, a body
    /// hash and a well-formed shape to agree by chance.
    Resync,
}

/// Reads the records of `file` (`size` bytes) from `from` on, calling `visit(offset, record)`
/// for each until it breaks, in chunks so that memory stays bounded whatever the file holds: a
/// record longer than `max_record` or than what is left of the file is a failure, never an
/// allocation.
pub(super) fn scan_records<F: StorageFile>(
    file: &F,
    size: u64,
    from: u64,
    max_record: u64,
    on_failure: OnFailure,
    mut visit: impl FnMut(u64, &Record<'_>) -> ControlFlow<()>,
) -> std::io::Result<ScanEnd> {
    let mut end = ScanEnd::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_at = from; // file offset of buf[0]
    let mut pos = 0usize; // offset in buf of the next record
    let mut searching = false; // inside a damaged stretch, looking for the next record
    loop {
        let at = buf_at + pos as u64;
        // Inside a damaged stretch, fewer bytes than a record header cannot hold a record.
        if at >= size || (searching && size - at < RECORD_HEADER_LEN as u64) {
            return Ok(end);
        }
        match decode_record(&buf[pos..]) {
            Ok(record) => {
                end.resumed |= searching;
                searching = false;
                pos += record.len;
                if visit(at, &record).is_break() {
                    end.stopped_at = Some(at + record.len as u64);
                    return Ok(end);
                }
            }
            Err(DecodeError::Truncated { needed })
                if (needed as u64) <= size - at && (needed as u64) <= max_record =>
            {
                buf.drain(..pos);
                buf_at = at;
                pos = 0;
                let want = (needed.max(READ_CHUNK) as u64).min(size - at) as usize;
                let have = buf.len();
                if want > have {
                    buf.resize(want, 0);
                    if let Err(e) = file.read_exact_at(&mut buf[have..], at + have as u64) {
                        if e.kind() != std::io::ErrorKind::UnexpectedEof {
                            return Err(e);
                        }
                        // The file shrank under us: what is there is all there is.
                        end.first_failure.get_or_insert(at);
                        return Ok(end);
                    }
                }
            }
            Err(_) => {
                if !searching {
                    end.first_failure.get_or_insert(at);
                    end.damaged_regions += 1;
                    if on_failure == OnFailure::Stop {
                        return Ok(end);
                    }
                    searching = true;
                }
                pos += 1;
            }
        }
    }
}

impl<S: Storage, T: TimeSource> Engine<S, T> {
    /// Appends one record to the active segment; returns where it starts.
    pub(super) fn append_record(
        &mut self,
        kind: RecordKind,
        key: &str,
        value: &[u8],
        expires_at: u64,
    ) -> Result<(u32, u32)> {
        let mut record = Vec::with_capacity(RECORD_HEADER_LEN + key.len() + value.len());
        encode_record(&mut record, kind, key, value, expires_at);
        self.append(&record)
    }

    /// Appends `bytes` (whole records) to the active segment, rolling to a new one when full.
    pub(super) fn append(&mut self, bytes: &[u8]) -> Result<(u32, u32)> {
        let active_size = self.segments.get(&self.active).map_or(0, |s| s.size);
        if active_size > 0 && active_size + bytes.len() as u64 > self.segment_max {
            self.roll()?;
        }
        let offset = self.write_at_end(self.active, bytes)?;
        self.log_past_snapshot = self.log_past_snapshot.saturating_add(bytes.len() as u64);
        Ok((self.active, offset as u32))
    }

    /// Writes `bytes` at the end of segment `id`; on failure, cuts any partial write away.
    pub(super) fn write_at_end(&mut self, id: u32, bytes: &[u8]) -> Result<u64> {
        self.writable()?;
        let name = || format::segment_file_name(id);
        let Some(segment) = self.segments.get_mut(&id) else {
            return Err(Error::Io {
                kind: std::io::ErrorKind::NotFound,
                message: format!("segment {} is missing", name()),
            });
        };
        self.log_seq += 1;
        segment.changed = self.log_seq;
        let offset = segment.size;
        if self.tail_unclean {
            segment
                .file
                .set_len(offset)
                .map_err(|e| io_err("truncate", &name(), e))?;
            self.tail_unclean = false;
        }
        let written = segment.file.write_all_at(bytes, offset).and_then(|()| {
            if self.options.sync_writes {
                segment.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            self.tail_unclean = segment.file.set_len(offset).is_err();
            return Err(io_err("write", &name(), e));
        }
        segment.size += bytes.len() as u64;
        segment.synced = self.options.sync_writes;
        self.log_bytes += bytes.len() as u64;
        self.written_since_checkpoint += bytes.len() as u64;
        Ok(offset)
    }

    /// Seals the active segment and starts the next one. Nothing is synced here (by default):
    /// `flush`, `close` and compaction sync the whole log, so a power cut can tear only what
    /// was written since the last of those, in any segment.
    pub(super) fn roll(&mut self) -> Result<()> {
        let mut seal = Vec::with_capacity(RECORD_HEADER_LEN);
        encode_record(&mut seal, RecordKind::Seal, "", &[], 0);
        self.write_at_end(self.active, &seal)?;
        self.create_segment(self.active + 1)
    }

    /// Makes `file` (`size` bytes, not known to be synced) segment `id` of the log.
    pub(super) fn adopt_segment(&mut self, id: u32, file: S::File, size: u64) {
        self.log_bytes += size;
        self.log_seq += 1;
        let (synced, changed) = (false, self.log_seq);
        self.segments.insert(
            id,
            Segment {
                file,
                size,
                synced,
                changed,
            },
        );
    }

    /// Where records start in segment `id`: after its header, or at 0 in a headerless segment
    /// from format version 1 or 2.
    pub(super) fn data_start(&self, id: u32) -> u64 {
        if id >= self.first_headed {
            SEGMENT_HEADER_LEN as u64
        } else {
            0
        }
    }

    /// Creates segment file `id` holding only its header and makes it the active one.
    pub(super) fn create_segment(&mut self, id: u32) -> Result<()> {
        self.writable()?;
        let name = format::segment_file_name(id);
        let file = self
            .storage
            .open(&name, true)
            .map_err(|e| io_err("create", &name, e))?;
        let header = format::encode_segment_header(id, self.cache_id, self.session);
        let written = file.set_len(0).and_then(|()| file.write_all_at(&header, 0));
        let synced = written.and_then(|()| {
            if self.options.sync_writes {
                self.storage.sync_dir()
            } else {
                Ok(())
            }
        });
        if let Err(e) = synced {
            // A headerless newest segment left behind would be moved aside at the next open.
            drop(file);
            let _ = self.storage.remove(&name);
            return Err(io_err("create", &name, e));
        }
        self.adopt_segment(id, file, header.len() as u64);
        if self.options.sync_writes {
            self.dir_synced = true;
        } else {
            self.dir_unsynced();
        }
        self.active = id;
        Ok(())
    }

    /// Cuts segment `id` to `len` bytes (a torn write at the end of the log).
    pub(super) fn truncate_segment(&mut self, id: u32, len: u64) -> Result<()> {
        self.writable()?;
        self.abandon_checkpoint();
        self.log_seq += 1;
        if let Some(segment) = self.segments.get_mut(&id) {
            segment.changed = self.log_seq;
            segment
                .file
                .set_len(len)
                .map_err(|e| io_err("truncate", &format::segment_file_name(id), e))?;
            self.log_bytes -= segment.size - len;
            segment.size = len;
            segment.synced = false;
        }
        Ok(())
    }

    /// Deletes segment file `id`; a missing file is not an error.
    pub(super) fn delete_segment(&mut self, id: u32) -> Result<()> {
        self.writable()?;
        // A pending checkpoint's snapshot may point into this segment.
        self.abandon_checkpoint();
        let name = format::segment_file_name(id);
        self.storage
            .remove(&name)
            .map_err(|e| io_err("remove", &name, e))?;
        if let Some(segment) = self.segments.remove(&id) {
            self.log_bytes -= segment.size;
        }
        self.dir_unsynced();
        Ok(())
    }

    /// Flushes segment `id`'s data to stable storage, unless nothing was written since the
    /// last time (or there is no such segment).
    pub(super) fn sync_segment(&mut self, id: u32) -> Result<()> {
        if let Some(segment) = self.segments.get_mut(&id) {
            if !segment.synced {
                segment
                    .file
                    .sync_data()
                    .map_err(|e| io_err("sync", &format::segment_file_name(id), e))?;
                segment.synced = true;
            }
        }
        Ok(())
    }

    /// Makes the whole log durable: every segment written since its last sync, and the
    /// directory. Nothing a write superseded can then come back by a power cut.
    pub(super) fn sync_log(&mut self) -> Result<()> {
        let unsynced: Vec<u32> = self
            .segments
            .iter()
            .filter(|(_, s)| !s.synced)
            .map(|(id, _)| *id)
            .collect();
        for id in unsynced {
            self.sync_segment(id)?;
        }
        self.sync_dir()?;
        self.superseded_unsynced.clear();
        self.bulk_delete_unsynced = false;
        Ok(())
    }

    /// Notes that a file was created, renamed or deleted since the directory's last sync.
    pub(super) fn dir_unsynced(&mut self) {
        self.log_seq += 1;
        self.dir_changed = self.log_seq;
        self.dir_synced = false;
    }

    /// Notes that a host synced every segment file and the directory after the log reached
    /// position `through` (from `Maintenance::sync_through`): everything changed up to it is
    /// durable. A position from the future counts as now.
    pub(super) fn mark_durable(&mut self, through: u64) {
        let through = through.min(self.log_seq);
        if through <= self.durable_seq {
            return;
        }
        self.durable_seq = through;
        for segment in self.segments.values_mut() {
            segment.synced |= segment.changed <= through;
        }
        self.dir_synced |= self.dir_changed <= through;
        if through == self.log_seq {
            // Every write is durable, as after `sync_log`.
            self.superseded_unsynced.clear();
            self.bulk_delete_unsynced = false;
        }
    }

    /// Flushes the directory's entries (created and deleted files) to stable storage, unless
    /// none changed since the last time.
    pub(super) fn sync_dir(&mut self) -> Result<()> {
        if !self.dir_synced {
            self.storage
                .sync_dir()
                .map_err(|e| io_err("sync", "the cache directory", e))?;
            self.dir_synced = true;
        }
        Ok(())
    }

    /// The segment `slot` lies in; `None` if it is gone or `slot` reaches past its end (a slot
    /// from a crafted snapshot table may claim any length: nothing is allocated for it).
    fn segment_holding(&self, slot: Slot) -> Option<&Segment<S::File>> {
        let segment = self.segments.get(&slot.segment)?;
        (u64::from(slot.offset) + u64::from(slot.len) <= segment.size).then_some(segment)
    }

    /// Reads and verifies the put record of `key` in `slot`; `None` if it is gone or damaged.
    pub(super) fn read_record_value(&self, key: &str, slot: Slot) -> Result<Option<Vec<u8>>> {
        let Some(segment) = self.segment_holding(slot) else {
            return Ok(None);
        };
        let mut buf = vec![0; slot.len as usize];
        match segment.file.read_exact_at(&mut buf, u64::from(slot.offset)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io_err("read", &format::segment_file_name(slot.segment), e)),
        }
        let intact = matches!(decode_record(&buf),
            Ok(rec) if rec.kind == RecordKind::Put && rec.key == key && rec.len == buf.len());
        if !intact {
            return Ok(None);
        }
        buf.drain(..RECORD_HEADER_LEN + key.len());
        Ok(Some(buf))
    }
}

/// What `stage_record_value` found.
pub(super) enum StageOutcome {
    /// The host holds the value, this many bytes.
    Staged(u32),
    /// The record is not an intact put of the key.
    Damaged,
}

impl<S: Storage, T: TimeSource> Engine<S, T> {
    /// Has the host read the value of `key`'s record in `slot` (see `StorageFile::stage`): reads
    /// and checks the header and key here, then hands the host the value's byte range and the
    /// body hash. `None` if the host declined or the segment is gone or shorter (the caller
    /// then reads the value itself, which tells a short file from damage).
    pub(super) fn stage_record_value(&self, key: &str, slot: Slot) -> Result<Option<StageOutcome>> {
        let Some(segment) = self.segment_holding(slot) else {
            return Ok(None);
        };
        let head_len = RECORD_HEADER_LEN + key.len();
        let mut head = vec![0; head_len];
        match segment
            .file
            .read_exact_at(&mut head, u64::from(slot.offset))
        {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io_err("read", &format::segment_file_name(slot.segment), e)),
        }
        let header = match format::decode_header(&head) {
            Ok(header)
                if header.kind == RecordKind::Put
                    && header.len == slot.len as usize
                    && &head[RECORD_HEADER_LEN..] == key.as_bytes() =>
            {
                header
            }
            _ => return Ok(Some(StageOutcome::Damaged)),
        };
        let value_len = header.value_len as u32;
        let at = u64::from(slot.offset) + head_len as u64;
        Ok(
            match segment.file.stage(at, value_len, key, header.body_hash) {
                crate::storage::Staged::Staged => Some(StageOutcome::Staged(value_len)),
                crate::storage::Staged::Mismatch => Some(StageOutcome::Damaged),
                crate::storage::Staged::Declined => None,
            },
        )
    }
}
