//! The record log's file I/O: appending records to segments, rolling, creating, truncating,
//! deleting and syncing segment files, and reading one record back.

use super::Engine;
use crate::error::{io_err, Error, Result};
use crate::format::{self, decode_record, encode_record, RecordKind, RECORD_HEADER_LEN};
use crate::index::Slot;
use crate::storage::{Storage, StorageFile};
use crate::time::TimeSource;

/// One segment file of the log and its size (the end of its last whole record).
pub(super) struct Segment<F> {
    pub(super) file: F,
    pub(super) size: u64,
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
        Ok((self.active, offset as u32))
    }

    /// Writes `bytes` at the end of segment `id`; on failure, cuts any partial write away.
    fn write_at_end(&mut self, id: u32, bytes: &[u8]) -> Result<u64> {
        self.writable()?;
        let name = || format::segment_file_name(id);
        let Some(segment) = self.segments.get_mut(&id) else {
            return Err(Error::Io {
                kind: std::io::ErrorKind::NotFound,
                message: format!("segment {} is missing", name()),
            });
        };
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
        self.log_bytes += bytes.len() as u64;
        Ok(offset)
    }

    /// Seals the active segment and starts the next one.
    pub(super) fn roll(&mut self) -> Result<()> {
        let mut seal = Vec::with_capacity(RECORD_HEADER_LEN);
        encode_record(&mut seal, RecordKind::Seal, "", &[], 0);
        self.write_at_end(self.active, &seal)?;
        self.create_segment(self.active + 1)
    }

    /// Creates an empty segment file `id` and makes it the active one.
    pub(super) fn create_segment(&mut self, id: u32) -> Result<()> {
        self.writable()?;
        let name = format::segment_file_name(id);
        let file = self
            .storage
            .open(&name, true)
            .map_err(|e| io_err("create", &name, e))?;
        let size = file.size().map_err(|e| io_err("stat", &name, e))?;
        if size != 0 {
            file.set_len(0).map_err(|e| io_err("truncate", &name, e))?;
        }
        if self.options.sync_writes {
            if let Err(e) = self.storage.sync_dir() {
                // An empty newest segment left behind would make the real active one look cut
                // short at the next open.
                drop(file);
                let _ = self.storage.remove(&name);
                return Err(io_err("sync", ".", e));
            }
        }
        self.segments.insert(id, Segment { file, size: 0 });
        self.active = id;
        Ok(())
    }

    /// Cuts segment `id` to `len` bytes (a torn write at the end of the log).
    pub(super) fn truncate_segment(&mut self, id: u32, len: u64) -> Result<()> {
        self.writable()?;
        if let Some(segment) = self.segments.get_mut(&id) {
            segment
                .file
                .set_len(len)
                .map_err(|e| io_err("truncate", &format::segment_file_name(id), e))?;
            self.log_bytes -= segment.size - len;
            segment.size = len;
        }
        Ok(())
    }

    /// Deletes segment file `id`; a missing file is not an error.
    pub(super) fn delete_segment(&mut self, id: u32) -> Result<()> {
        self.writable()?;
        let name = format::segment_file_name(id);
        self.storage
            .remove(&name)
            .map_err(|e| io_err("remove", &name, e))?;
        if let Some(segment) = self.segments.remove(&id) {
            self.log_bytes -= segment.size;
        }
        Ok(())
    }

    /// Flushes the active segment to stable storage when writes are synced.
    pub(super) fn sync_active(&self) -> Result<()> {
        if self.options.sync_writes {
            if let Some(active) = self.segments.get(&self.active) {
                active
                    .file
                    .sync_data()
                    .map_err(|e| io_err("sync", &format::segment_file_name(self.active), e))?;
            }
        }
        Ok(())
    }

    /// The bytes of segment `id` from offset `from` to its end (none if there is no such segment).
    pub(super) fn read_segment(&self, id: u32, from: u64) -> Result<Vec<u8>> {
        let Some(segment) = self.segments.get(&id) else {
            return Ok(Vec::new());
        };
        let len = segment.size.saturating_sub(from);
        let mut data = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
        segment
            .file
            .read_exact_at(&mut data, from)
            .map_err(|e| io_err("read", &format::segment_file_name(id), e))?;
        Ok(data)
    }

    /// Reads and verifies the put record of `key` in `slot`; `None` if it is gone or damaged.
    pub(super) fn read_value(&self, key: &str, slot: Slot) -> Result<Option<Vec<u8>>> {
        let Some(segment) = self.segments.get(&slot.segment) else {
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
