//! Recovery at open: claiming the directory, setting foreign segments aside, loading the index
//! snapshot when it matches the log, replaying the log after it, cutting a torn tail, and
//! upgrading an older format (only in memory when read-only). The rules are in the format docs.

use super::log::{scan_records, OnFailure};
use super::{random_id, Engine};
use crate::error::{io_err, Error, Result};
use crate::format::{
    self, decode_record, encode_record, Meta, Record, RecordKind, DAMAGED_DIR, META_FILE, META_LEN,
    SEGMENT_HEADER_LEN, SNAPSHOT_FILE, TMP_SUFFIX,
};
use crate::index::{LruIndex, Slot};
use crate::storage::{Storage, StorageFile};
use crate::time::TimeSource;
use std::collections::BTreeSet;
use std::ops::ControlFlow;

/// A torn tail longer than this is set aside without looking for records in it.
const TAIL_SCAN_MAX: u64 = 1 << 20;
/// Records up to this size are read back even when the size limit is smaller (it may have been
/// lowered since they were written).
pub(super) const MIN_MAX_RECORD: u64 = 256 << 20;

impl<S: Storage, T: TimeSource> Engine<S, T> {
    /// Brings a freshly built engine to the state its directory holds, with an active segment
    /// (none when read-only and the directory has no segment).
    pub(super) fn recover(&mut self) -> Result<()> {
        let read_only = self.options.read_only;
        let meta = self.claim_directory()?;
        let (next_id, set_aside, left_in_place) = self.open_segments()?;
        let start = self.load_snapshot(&set_aside)?;
        let (cleared_at, mut damaged_before) = self.replay(start)?;
        // What was replayed makes the snapshot stale only in bulk (see `log_grew`): a few
        // records past it (a one-shot write, or the checkpoint record announcing it) are
        // replayed again at the next open rather than rewriting an O(entries) file at close.
        let replayed = self.log_after(start);
        if self.snapshot_len > 0 {
            self.log_past_snapshot = replayed;
        }
        if replayed > 0 {
            self.log_grew();
        }
        // A segment set aside from the middle of the log held records too.
        let newest = self.segments.keys().next_back().copied().unwrap_or(0);
        if let Some(&id) = set_aside.range(..newest).next_back() {
            damaged_before = damaged_before.max(Some(id));
        }
        // Expired entries are dropped now, but for those still used in place from a snapshot
        // table: looking at each would be the per-entry work the table exists to avoid. Those
        // are dropped when met (a read, a listing, eviction, compaction, `expire`); until then
        // they count in `stats().entries`, as entries that expire while the cache is open do.
        let now = self.time.now_ms();
        let before = self.index.len();
        self.index.retain_in_memory(|_, slot| !slot.is_expired(now));
        if self.index.len() < before {
            self.recency_changed_by((before - self.index.len()) as u64);
        }
        if read_only {
            if let Some(&last) = self.segments.keys().next_back() {
                self.active = last;
            }
            return Ok(());
        }
        // What an earlier open wrote may not be synced, and may have superseded records in any
        // segment: the first compaction syncs the log before it deletes anything.
        self.bulk_delete_unsynced = true;
        if let Some(clear_segment) = cleared_at {
            self.drop_cleared_segments(clear_segment)?;
        }
        let upgraded = meta.version < format::FORMAT_VERSION;
        if upgraded {
            self.upgrade(next_id)?;
        }
        match self.segments.keys().next_back() {
            // Appending to the newest segment would, at a later roll, reuse the id of a
            // foreign file above it that could not be moved aside.
            Some(&last) if !upgraded && left_in_place.is_none_or(|id| id < last) => {
                self.active = last
            }
            // Segment ids only grow, even when recovery set the newest ones aside.
            _ => self.create_segment(next_id)?,
        }
        if let Some(before) = damaged_before {
            self.compact_before(before)?;
        }
        Ok(())
    }

    /// Reads the metadata file, creating it for a new cache (read-only: an empty directory is an
    /// empty cache). Sets the cache id and where headed segments start.
    fn claim_directory(&mut self) -> Result<Meta> {
        let bytes = self.read_small_file(META_FILE, 4096)?;
        let meta = match bytes.as_deref().map(format::decode_meta) {
            None => {
                let meta = Meta {
                    version: format::FORMAT_VERSION,
                    cache_id: random_id(),
                    first_headed_segment: 1,
                };
                if !self.options.read_only {
                    self.storage
                        .write_file_atomic(META_FILE, &format::encode_meta(&meta), true)
                        .map_err(|e| io_err("create", META_FILE, e))?;
                }
                meta
            }
            Some(Ok(meta)) => meta,
            Some(Err(format::MetaError::Corrupt(why))) => return Err(Error::Corrupt(why)),
            Some(Err(format::MetaError::NewerVersion(v))) => {
                return Err(Error::IncompatibleFormat(format!(
                    "the directory uses format version {v}; this engine reads up to {}",
                    format::FORMAT_VERSION
                )))
            }
        };
        self.cache_id = meta.cache_id;
        self.first_headed = meta.first_headed_segment;
        self.meta_len = bytes.map_or(META_LEN, |b| b.len()) as u64;
        Ok(meta)
    }

    /// The whole of a file the engine expects to be small; `None` if it is missing, `Corrupt`
    /// if it is bigger than `max` (it is never read into memory then).
    fn read_small_file(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let file = match self.storage.open_read_only(name) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", name, e)),
        };
        let size = file.size().map_err(|e| io_err("stat", name, e))?;
        if size > max {
            return Err(Error::Corrupt(format!(
                "{name} is {size} bytes; it cannot be more than {max}"
            )));
        }
        let mut buf = vec![0; size as usize];
        file.read_exact_at(&mut buf, 0)
            .map_err(|e| io_err("read", name, e))?;
        Ok(Some(buf))
    }

    /// Opens every segment file, sets foreign ones aside and removes the engine's own
    /// half-written files (read-only: skips the foreign ones and leaves those files alone).
    /// Returns the id the next new segment gets (above every segment file seen), the ids of
    /// the segments set aside, and the highest of those that could not be moved.
    fn open_segments(&mut self) -> Result<(u32, BTreeSet<u32>, Option<u32>)> {
        let mut set_aside = BTreeSet::new();
        let mut left_in_place = None;
        let mut empty = Vec::new();
        let read_only = self.options.read_only;
        let mut next_id = match self.first_headed {
            u32::MAX => 1, // version 1 or 2: no segment has a header yet
            first => first.max(1),
        };
        for name in self.storage.list().map_err(|e| io_err("list", ".", e))? {
            // Only the engine's own half-written files: a user's `notes.tmp` is left alone.
            let own_tmp = name
                .strip_suffix(TMP_SUFFIX)
                .is_some_and(|stem| stem == SNAPSHOT_FILE || stem == META_FILE);
            if own_tmp && !read_only {
                self.storage
                    .remove(&name)
                    .map_err(|e| io_err("remove", &name, e))?;
                continue;
            }
            let Some(id) = format::parse_segment_file_name(&name) else {
                continue;
            };
            next_id = next_id.max(id.saturating_add(1));
            let file = if read_only {
                self.storage.open_read_only(&name)
            } else {
                self.storage.open(&name, false)
            };
            let file = file.map_err(|e| io_err("open", &name, e))?;
            let size = file.size().map_err(|e| io_err("stat", &name, e))?;
            if size == 0 && id >= self.first_headed {
                // Nothing in it to keep: see below.
                empty.push(id);
                continue;
            }
            if self.foreign_segment(&file, id, size)? {
                drop(file);
                if !self.set_aside(&name) {
                    left_in_place = left_in_place.max(Some(id));
                }
                set_aside.insert(id);
                continue;
            }
            self.adopt_segment(id, file, size);
        }
        // An empty newest segment is one whose creation a crash cut short; an empty one
        // before another segment lost its records (damage).
        let newest = self.segments.keys().next_back().copied().unwrap_or(0);
        for id in empty {
            if id < newest {
                self.damaged += 1;
                set_aside.insert(id);
            }
            if !read_only {
                let name = format::segment_file_name(id);
                self.storage
                    .remove(&name)
                    .map_err(|e| io_err("remove", &name, e))?;
                self.dir_unsynced();
            }
        }
        Ok((next_id, set_aside, left_in_place))
    }

    /// True if segment file `id` (`size` bytes) cannot be part of this cache's log: too big for
    /// record offsets, or a header that is missing, damaged or names another segment or cache.
    fn foreign_segment(&self, file: &S::File, id: u32, size: u64) -> Result<bool> {
        if size > u64::from(u32::MAX) {
            return Ok(true);
        }
        if id < self.first_headed {
            return Ok(false);
        }
        if size < SEGMENT_HEADER_LEN as u64 {
            return Ok(true);
        }
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| io_err("read", &format::segment_file_name(id), e))?;
        Ok(format::check_segment_header(&header, id, self.cache_id).is_err())
    }

    /// Moves file `name` into `damaged/` (it is never read again) and counts it. Read-only, or
    /// if it cannot be moved (a file named `damaged` in the way, say), it is only counted: it
    /// stays where it is and is ignored at every open. Returns whether it was moved.
    fn set_aside(&mut self, name: &str) -> bool {
        self.damaged += 1;
        if self.options.read_only {
            return false;
        }
        let to = format!(
            "{DAMAGED_DIR}/{name}.{}.{}",
            self.time.now_ms(),
            self.damaged
        );
        let moved = self
            .storage
            .create_dir(DAMAGED_DIR)
            .and_then(|()| self.storage.rename(name, &to));
        if moved.is_ok() {
            self.dir_unsynced();
        }
        moved.is_ok()
    }

    /// Loads the index snapshot if it matches the log and returns the log position replay
    /// starts at; a snapshot that is damaged, foreign, oversized or does not match the log is
    /// removed (read-only: ignored) and the whole log replayed.
    fn load_snapshot(&mut self, set_aside: &BTreeSet<u32>) -> Result<(u32, u64)> {
        let whole_log = (0, 0);
        // A snapshot is only written when it fits the size limit.
        let max = self.options.size_limit.max(1 << 20);
        let bytes = match self.read_small_file(SNAPSHOT_FILE, max) {
            Ok(bytes) => bytes,
            Err(Error::Corrupt(_)) => {
                self.discard_snapshot()?;
                return Ok(whole_log);
            }
            Err(e) => return Err(e),
        };
        let Some(bytes) = bytes else {
            return Ok(whole_log);
        };
        self.snapshot_len = bytes.len() as u64;
        if format::is_snapshot_table(&bytes) {
            return self.load_snapshot_table(bytes, set_aside);
        }
        let snapshot = format::decode_snapshot(&bytes)
            .filter(|s| s.cache_id.is_none_or(|id| id == self.cache_id))
            .filter(|s| self.snapshot_matches_log(s, set_aside));
        let Some(snapshot) = snapshot else {
            self.discard_snapshot()?;
            return Ok(whole_log);
        };
        let oldest = self.segments.keys().next().copied().unwrap_or(u32::MAX);
        // At most what the file holds: the count is checked against the bytes when decoded.
        self.index.reserve(snapshot.count);
        for e in snapshot.entries() {
            // Entries in segments compaction has deleted since are dropped: replay finds the
            // copies compaction made of the live ones. So are those in segments set aside.
            if e.segment >= oldest && !set_aside.contains(&e.segment) {
                // Expired entries are loaded too: a touch later in the log may extend them.
                // They are dropped once the replay is done.
                self.index.insert(
                    e.key,
                    Slot {
                        segment: e.segment,
                        offset: e.offset,
                        len: e.len,
                        expires_at: e.expires_at,
                    },
                );
            } else {
                self.snapshot_stale = true;
            }
        }
        if snapshot.covered_segment < oldest {
            return Ok((oldest, 0));
        }
        if set_aside.contains(&snapshot.covered_segment) {
            return Ok((snapshot.covered_segment.saturating_add(1), 0));
        }
        Ok((snapshot.covered_segment, snapshot.covered_offset))
    }

    /// `load_snapshot` for a layout 1 snapshot: the table becomes the index's base, used in
    /// place, after checks that visit its segment summaries but no entry (unless it holds
    /// entries in segments deleted or set aside since: those are dropped one by one).
    fn load_snapshot_table(
        &mut self,
        bytes: Vec<u8>,
        set_aside: &BTreeSet<u32>,
    ) -> Result<(u32, u64)> {
        let whole_log = (0, 0);
        let table = format::SnapshotTable::decode(bytes)
            .filter(|t| t.cache_id == self.cache_id)
            .filter(|t| self.table_matches_log(t, set_aside));
        let Some(table) = table else {
            self.discard_snapshot()?;
            return Ok(whole_log);
        };
        let oldest = self.segments.keys().next().copied().unwrap_or(u32::MAX);
        let dropped = |segment: u32| segment < oldest || set_aside.contains(&segment);
        let drops_entries = table.segments().any(|s| dropped(s.id));
        let covered = (table.covered_segment, table.covered_offset);
        let started = self.index.start_from(table);
        debug_assert!(started, "recovery starts from an empty index");
        if drops_entries {
            // Entries in segments compaction has deleted since are dropped: replay finds the
            // copies compaction made of the live ones. So are those in segments set aside.
            self.index.retain(|_, slot| !dropped(slot.segment));
            self.snapshot_stale = true;
        }
        if covered.0 < oldest {
            return Ok((oldest, 0));
        }
        if set_aside.contains(&covered.0) {
            return Ok((covered.0.saturating_add(1), 0));
        }
        Ok(covered)
    }

    /// True if bytes `start..end` of segment `segment` are in the log, or the segment is older
    /// than the oldest (deleted by compaction since) or set aside as damaged: what a snapshot
    /// may point at.
    fn lies_in_log(&self, set_aside: &BTreeSet<u32>, segment: u32, start: u64, end: u64) -> bool {
        let oldest = self.segments.keys().next().copied().unwrap_or(u32::MAX);
        segment < oldest
            || set_aside.contains(&segment)
            || self
                .segments
                .get(&segment)
                .is_some_and(|s| start >= self.data_start(segment) && end <= s.size)
    }

    /// `snapshot_matches_log` for a table, from its segment summaries.
    fn table_matches_log(&self, table: &format::SnapshotTable, set_aside: &BTreeSet<u32>) -> bool {
        let inside = |segment, start, end| self.lies_in_log(set_aside, segment, start, end);
        let covered = table.covered_offset;
        inside(table.covered_segment, covered, covered)
            && table.segments().all(|s| {
                // Live bytes past the span of the entries: only a crafted file says that.
                s.live_bytes <= s.end.saturating_sub(u64::from(s.start))
                    && inside(s.id, u64::from(s.start), s.end)
            })
    }

    /// True if every entry of `snapshot` lies inside an existing segment (or in one older than
    /// the oldest, deleted by compaction since, or one set aside as damaged) and the log
    /// reaches its covered position.
    fn snapshot_matches_log(
        &self,
        snapshot: &format::Snapshot<'_>,
        set_aside: &BTreeSet<u32>,
    ) -> bool {
        let inside = |segment, start, end| self.lies_in_log(set_aside, segment, start, end);
        let covered = snapshot.covered_offset;
        inside(snapshot.covered_segment, covered, covered)
            && snapshot.entries().all(|e| {
                let start = u64::from(e.offset);
                inside(e.segment, start, start + u64::from(e.len))
            })
    }

    /// Removes an unusable snapshot (read-only: ignores it). The snapshot is derived from the
    /// log, never the only copy of a value, so removing it loses nothing but time.
    fn discard_snapshot(&mut self) -> Result<()> {
        self.snapshot_len = 0;
        self.snapshot_stale = true;
        if self.options.read_only {
            return Ok(());
        }
        self.remove_snapshot()
    }

    /// Bytes of log at or after position `start` (segment, offset).
    fn log_after(&self, start: (u32, u64)) -> u64 {
        self.segments
            .range(start.0..)
            .map(|(&id, segment)| {
                let from = if id == start.0 { start.1 } else { 0 };
                segment.size.saturating_sub(from.max(self.data_start(id)))
            })
            .sum()
    }

    /// Replays the log from `start` (segment, offset) into the index: a failure in the newest
    /// segment is a torn tail (cut; read-only: ignored), one elsewhere is damage that costs the
    /// rest of that segment. Returns the newest segment that starts with a clear record, and
    /// the segment id below which the log must be compacted to make the damage's cost final.
    fn replay(&mut self, start: (u32, u64)) -> Result<(Option<u32>, Option<u32>)> {
        let (start_segment, start_offset) = start;
        let newest = self.segments.keys().next_back().copied();
        let max_record = self.options.size_limit.max(MIN_MAX_RECORD);
        let ids: Vec<u32> = self
            .segments
            .range(start_segment..)
            .map(|(id, _)| *id)
            .collect();
        let mut cleared_at = None;
        let mut damaged_before = None;
        for id in ids {
            let data_start = self.data_start(id);
            let segment = &self.segments[&id];
            let size = segment.size;
            let from = if id == start_segment {
                start_offset.clamp(data_start, size)
            } else {
                data_start
            };
            let index = &mut self.index;
            let is_newest = Some(id) == newest;
            let on_failure = if is_newest {
                OnFailure::Stop
            } else {
                OnFailure::Resync
            };
            let end = scan_records(
                &segment.file,
                size,
                from,
                max_record,
                on_failure,
                |at, record| {
                    if apply(index, id, at, record) {
                        cleared_at = Some(id);
                    }
                    ControlFlow::Continue(())
                },
            )
            .map_err(|e| io_err("read", &format::segment_file_name(id), e))?;
            if end.first_failure.is_some() {
                self.snapshot_stale = true;
            }
            match end.first_failure {
                None => {}
                // Nothing decodes after the failure: a write torn by a crash or a power cut
                // (a segment other than the newest may have been torn too: only `flush`,
                // `close` and compaction sync the log).
                Some(at) if is_newest || !end.resumed => self.cut_torn_tail(id, at)?,
                // Records follow: damage, costing the records in the damaged stretches.
                Some(_) => {
                    self.damaged += end.damaged_regions;
                    damaged_before = Some(id + 1);
                }
            }
        }
        Ok((cleared_at, damaged_before))
    }

    /// Cuts the newest segment `id` at `at`, where a record failed to decode: a power cut or
    /// crash tore the tail, which was never synced. If the tail still holds a record that
    /// decodes (or is too long to look through), it is first copied into `damaged/` and
    /// synced, so no readable byte is destroyed, and the segment is never missing meanwhile.
    fn cut_torn_tail(&mut self, id: u32, at: u64) -> Result<()> {
        if self.options.read_only {
            return Ok(());
        }
        if self.tail_holds_records(id, at, self.segments[&id].size)? {
            let name = format::segment_file_name(id);
            self.storage
                .create_dir(DAMAGED_DIR)
                .map_err(|e| io_err("create", DAMAGED_DIR, e))?;
            self.damaged += 1;
            let aside = format!(
                "{DAMAGED_DIR}/{name}.{}.{}.tail",
                self.time.now_ms(),
                self.damaged
            );
            let copy = self
                .storage
                .open(&aside, true)
                .map_err(|e| io_err("create", &aside, e))?;
            let segment = &self.segments[&id];
            copy_range(&segment.file, &copy, at, segment.size)
                .and_then(|()| copy.sync_data())
                .and_then(|()| self.storage.sync_dir())
                .map_err(|e| io_err("copy the tail of", &name, e))?;
        }
        self.truncate_segment(id, at)
    }

    /// True if the bytes of segment `id` from `at` to `end` hold a record that decodes at some
    /// later offset, or are too many to look through.
    pub(super) fn tail_holds_records(&self, id: u32, at: u64, end: u64) -> Result<bool> {
        let segment = &self.segments[&id];
        let len = end.saturating_sub(at);
        if len > TAIL_SCAN_MAX {
            return Ok(true);
        }
        let mut tail = vec![0; len as usize];
        segment
            .file
            .read_exact_at(&mut tail, at)
            .map_err(|e| io_err("read", &format::segment_file_name(id), e))?;
        if tail.iter().all(|b| *b == 0) {
            return Ok(false);
        }
        Ok((1..tail.len()).any(|i| decode_record(&tail[i..]).is_ok()))
    }

    /// Deletes the segments older than the newest clear record, and the snapshot that
    /// predates it.
    fn drop_cleared_segments(&mut self, clear_segment: u32) -> Result<()> {
        self.remove_snapshot()?;
        let older: Vec<u32> = self
            .segments
            .range(..clear_segment)
            .map(|(id, _)| *id)
            .collect();
        for id in older {
            self.delete_segment(id)?;
        }
        self.sync_dir()
    }

    /// Upgrades a format version 1 or 2 directory: seals its newest segment, syncs them all,
    /// then writes version 3 metadata naming `next_id` as the first segment with a header. The
    /// caller then creates that segment.
    fn upgrade(&mut self, next_id: u32) -> Result<()> {
        if let Some(&newest) = self.segments.keys().next_back() {
            let mut seal = Vec::new();
            encode_record(&mut seal, RecordKind::Seal, "", &[], 0);
            self.write_at_end(newest, &seal)?;
        }
        let ids: Vec<u32> = self.segments.keys().copied().collect();
        for id in ids {
            self.sync_segment(id)?;
        }
        self.sync_dir()?;
        let meta = Meta {
            version: format::FORMAT_VERSION,
            cache_id: random_id(),
            first_headed_segment: next_id,
        };
        self.storage
            .write_file_atomic(META_FILE, &format::encode_meta(&meta), true)
            .map_err(|e| io_err("upgrade", META_FILE, e))?;
        self.cache_id = meta.cache_id;
        self.first_headed = next_id;
        self.meta_len = META_LEN as u64;
        Ok(())
    }
}

/// Applies one replayed record of segment `id` at offset `at` to `index`; true for a clear.
pub(super) fn apply(index: &mut LruIndex, id: u32, at: u64, record: &Record<'_>) -> bool {
    match record.kind {
        RecordKind::Put => {
            let slot = Slot {
                segment: id,
                offset: at as u32,
                len: record.len as u32,
                expires_at: record.expires_at,
            };
            index.insert(record.key, slot);
        }
        RecordKind::Delete => {
            index.remove(record.key);
        }
        RecordKind::Touch => {
            index.set_expires_at(record.key, record.expires_at);
        }
        RecordKind::DeletePrefix => {
            index.retain(|key, _| !key.starts_with(record.key));
        }
        RecordKind::Clear => {
            index.clear();
            return true;
        }
        RecordKind::Seal | RecordKind::Settings | RecordKind::Session | RecordKind::Checkpoint => {}
    }
    false
}

/// Copies the bytes `start..end` of `from` into the empty file `to`, a chunk at a time;
/// chunks of zeros are not written (the copy is sparse where the source was).
fn copy_range<F: StorageFile>(from: &F, to: &F, start: u64, end: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = start;
    to.set_len(0)?;
    while done < end {
        let n = (end - done).min(buf.len() as u64) as usize;
        from.read_exact_at(&mut buf[..n], done)?;
        if buf[..n].iter().any(|b| *b != 0) {
            to.write_all_at(&buf[..n], done - start)?;
        }
        done += n as u64;
    }
    to.set_len(end - start)
}
