//! The cache engine: record log segments, LRU index, TTL and size limit over a `Storage`.
//!
//! Writes append one record to the active segment. Reads are answered from the in-memory
//! index plus one positioned read. When the directory grows past the size limit, the least
//! recently used entries are evicted and the oldest segment is compacted (its live records
//! copied forward, the file deleted) until the volume is back under the limit.

use crate::clock::Clock;
use crate::counter;
use crate::error::{io_err, Error, Result};
use crate::format::{
    self, decode_record, encode_record, record_len, DecodeError, RecordKind, HINT_FILE,
    MAX_KEY_LEN, META_FILE, META_LEN, RECORD_HEADER_LEN, TMP_SUFFIX,
};
use crate::index::{LruIndex, Slot};
use crate::storage::{Storage, StorageFile};
use std::collections::BTreeMap;

/// The default size limit: 500 MiB.
pub const DEFAULT_SIZE_LIMIT: u64 = 524_288_000;

/// Most memory the hot value cache uses (a quarter of the size limit when that is smaller).
pub const HOT_CACHE_MAX: u64 = 32 << 20;

/// How an engine is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// Maximum bytes the cache may occupy on disk.
    pub size_limit: u64,
    /// Sync every write to stable storage before acknowledging it.
    pub sync_writes: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            size_limit: DEFAULT_SIZE_LIMIT,
            sync_writes: false,
        }
    }
}

/// The engine's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub volume: u64,
    pub size_limit: u64,
    pub hits: u64,
    pub misses: u64,
    /// Entries removed because their TTL had passed, since open.
    pub expired: u64,
    /// Entries removed by LRU eviction to respect the size limit, since open.
    pub evicted: u64,
}

struct Segment<F> {
    file: F,
    size: u64,
}

/// An open cache over one directory.
pub struct Engine<S: Storage, C: Clock> {
    storage: S,
    clock: C,
    options: EngineOptions,
    segment_max: u64,
    index: LruIndex,
    segments: BTreeMap<u32, Segment<S::File>>,
    active: u32,
    /// Sum of segment sizes.
    log_bytes: u64,
    hint_len: u64,
    /// The index snapshot on disk no longer matches the index.
    snapshot_stale: bool,
    /// A failed write may have left bytes past the active segment's size.
    tail_unclean: bool,
    hits: u64,
    misses: u64,
    expired: u64,
    evicted: u64,
    /// The key listing being paged through, if any (see `keys`).
    listing: Option<KeyListing>,
}

/// The sorted keys of a `keys` listing past its first page, so that each later page is a
/// binary search instead of a scan of the whole index.
struct KeyListing {
    prefix: String,
    /// The listing holds every key greater than this that matched when it was built.
    built_after: String,
    /// Matching keys greater than `built_after`, sorted; entries removed since are skipped.
    keys: Vec<Box<str>>,
}

impl<S: Storage, C: Clock> Engine<S, C> {
    /// Opens the cache in `storage`, creating it if empty, and recovers it.
    ///
    /// Edge cases: a torn record at the end of the log is truncated away; damaged data
    /// elsewhere makes every entry stored at or before it a miss; a damaged index snapshot is
    /// ignored and the log replayed. A directory from a newer format fails with
    /// `IncompatibleFormat`, a damaged metadata file with `Corrupt`, and an unreadable or
    /// unwritable directory with `Io`. Unknown files are left alone.
    pub fn open(storage: S, clock: C, options: EngineOptions) -> Result<Self> {
        match storage
            .read_file(META_FILE)
            .map_err(|e| io_err("read", META_FILE, e))?
        {
            Some(bytes) => match format::decode_meta(&bytes) {
                // An older format is a subset of ours: claim the directory before writing
                // records an older engine would take for damage.
                Ok(version) if version < format::FORMAT_VERSION => storage
                    .write_file_atomic(META_FILE, &format::encode_meta(), options.sync_writes)
                    .map_err(|e| io_err("upgrade", META_FILE, e))?,
                Ok(_) => {}
                Err(format::MetaError::Corrupt(why)) => return Err(Error::Corrupt(why)),
                Err(format::MetaError::NewerVersion(v)) => {
                    return Err(Error::IncompatibleFormat(format!(
                        "the directory uses format version {v}; this engine reads up to {}",
                        format::FORMAT_VERSION
                    )))
                }
            },
            None => storage
                .write_file_atomic(META_FILE, &format::encode_meta(), options.sync_writes)
                .map_err(|e| io_err("create", META_FILE, e))?,
        }

        let mut segments = BTreeMap::new();
        let mut log_bytes = 0;
        for name in storage.list().map_err(|e| io_err("list", ".", e))? {
            // Only the engine's own half-written files: a user's `notes.tmp` is left alone.
            let own_tmp = name
                .strip_suffix(TMP_SUFFIX)
                .is_some_and(|stem| stem == HINT_FILE || stem == META_FILE);
            if own_tmp {
                storage
                    .remove(&name)
                    .map_err(|e| io_err("remove", &name, e))?;
            } else if let Some(id) = format::parse_segment_file_name(&name) {
                let file = storage
                    .open(&name, false)
                    .map_err(|e| io_err("open", &name, e))?;
                let size = file.size().map_err(|e| io_err("stat", &name, e))?;
                log_bytes += size;
                segments.insert(id, Segment { file, size });
            }
        }
        let hint_bytes = storage
            .read_file(HINT_FILE)
            .map_err(|e| io_err("read", HINT_FILE, e))?;
        let hint_len = hint_bytes.as_ref().map_or(0, |b| b.len() as u64);

        let mut engine = Self {
            storage,
            clock,
            options,
            segment_max: (options.size_limit / 8).clamp(4096, 64 << 20),
            index: LruIndex::default(),
            segments,
            active: 0,
            log_bytes,
            hint_len,
            snapshot_stale: false,
            tail_unclean: false,
            hits: 0,
            misses: 0,
            expired: 0,
            evicted: 0,
            listing: None,
        };
        let hint = hint_bytes.as_deref().and_then(format::decode_hint);
        if hint.is_none() && hint_bytes.is_some() {
            engine.remove_hint()?;
        }
        // Segment ids only grow, even when recovery deletes the newest segments.
        let first_free = engine.segments.keys().next_back().map_or(1, |id| id + 1);
        engine
            .index
            .set_hot_budget((options.size_limit / 4).min(HOT_CACHE_MAX) as usize);
        engine.recover(hint)?;
        match engine.segments.keys().next_back() {
            Some(&last) => engine.active = last,
            None => engine.create_segment(first_free)?,
        }
        engine.enforce_limit()?;
        Ok(engine)
    }

    /// Loads the snapshot, replays the log after it, and repairs torn or damaged tails.
    fn recover(&mut self, hint: Option<format::Hint>) -> Result<()> {
        let now = self.clock.now_ms();
        // The newest segment whose entries must all be forgotten (see the format docs).
        let mut forget_through: Option<u32> = None;
        let (start_segment, start_offset) = match hint {
            Some(hint) => {
                // The snapshot knows how long the log was: a log that is shorter now, or an
                // entry whose record is gone, means lost data (a damaged or truncated file).
                // Lost records may be tombstones or overwrites, so it is damage like any other.
                let covered = self.segments.get(&hint.covered_segment);
                if covered.is_none_or(|s| s.size < hint.covered_offset) {
                    forget_through = Some(hint.covered_segment);
                }
                for e in hint.entries() {
                    let fits = self.segments.get(&e.segment).is_some_and(|s| {
                        u64::from(e.offset) + u64::from(e.len) <= s.size
                            && e.segment <= hint.covered_segment
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
                        forget_through = forget_through.max(Some(e.segment));
                        self.snapshot_stale = true;
                    }
                }
                if let Some(through) = forget_through {
                    self.index.retain(|_, slot| slot.segment > through);
                    self.snapshot_stale = true;
                }
                (hint.covered_segment, hint.covered_offset)
            }
            None => (0, 0),
        };

        let last = self.segments.keys().next_back().copied();
        let ids: Vec<u32> = self
            .segments
            .range(start_segment..)
            .map(|(id, _)| *id)
            .collect();
        let mut cleared_at = None;
        for id in ids {
            let name = format::segment_file_name(id);
            let size = self.segments[&id].size;
            let from = if id == start_segment {
                start_offset.min(size)
            } else {
                0
            };
            if from < size {
                self.snapshot_stale = true;
            }
            let mut data = vec![0; usize::try_from(size - from).unwrap_or(usize::MAX)];
            self.segments[&id]
                .file
                .read_exact_at(&mut data, from)
                .map_err(|e| io_err("read", &name, e))?;
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
                                cleared_at = Some(id);
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
                        if !damaged {
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
                forget_through = forget_through.max(Some(id));
            }
        }
        if let Some(through) = forget_through {
            // Make the forgetting durable: delete every segment at or before the damage. Cutting
            // the damage away instead would let a later open replay the records before it and
            // bring back values whose tombstones were lost. The damaged segment goes last, so a
            // crash part-way leaves it to be found (and forgotten) again.
            self.remove_hint()?;
            let doomed: Vec<u32> = self.segments.range(..=through).map(|(id, _)| *id).collect();
            for id in doomed {
                self.delete_segment(id)?;
            }
        }
        if self.index.iter().any(|(_, slot)| slot.is_expired(now)) {
            self.index.retain(|_, slot| !slot.is_expired(now));
            self.snapshot_stale = true;
        }
        if let Some(clear_segment) = cleared_at {
            // The snapshot predates the clear: it must not outlive the segments it describes.
            self.remove_hint()?;
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

    /// The value stored under `key`.
    ///
    /// Edge cases: a miss, an expired entry (removed now), or an entry whose bytes on disk
    /// fail their checksum (removed now) return `Ok(None)` and count as a miss. An invalid key
    /// is `InvalidKey`; a failed read is `Io`.
    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        let value = match self.live_slot(key) {
            Some(slot) => self.live_value(key, slot)?,
            None => None,
        };
        match value {
            Some(value) => {
                self.index.touch(key);
                self.snapshot_stale = true;
                self.hits += 1;
                Ok(Some(value))
            }
            None => {
                self.misses += 1;
                Ok(None)
            }
        }
    }

    /// True if `key` holds a live entry. Answered from the index: reads no file, counts as
    /// neither hit nor miss and leaves recency alone.
    ///
    /// Edge cases: an expired entry is `false` (and removed now); an invalid key is `InvalidKey`.
    pub fn contains(&mut self, key: &str) -> Result<bool> {
        check_key(key)?;
        Ok(self.live_slot(key).is_some())
    }

    /// The slot of `key` if it holds a live entry; an expired entry is removed now (and
    /// counted as expired).
    fn live_slot(&mut self, key: &str) -> Option<Slot> {
        let slot = self.index.get(key)?;
        if slot.expires_at != 0 && slot.is_expired(self.clock.now_ms()) {
            self.index.remove(key);
            self.snapshot_stale = true;
            self.expired += 1;
            return None;
        }
        Some(slot)
    }

    /// The value of the live entry in `slot`, from the hot cache or the disk (then cached);
    /// an entry whose record fails its checksum is removed now and is `None`.
    fn live_value(&mut self, key: &str, slot: Slot) -> Result<Option<Vec<u8>>> {
        if let Some(value) = self.index.hot_value(key) {
            return Ok(Some(value.to_vec()));
        }
        let value = self.read_value(key, slot)?;
        match &value {
            Some(value) => self.index.cache_value(key, value),
            None => {
                self.index.remove(key);
                self.snapshot_stale = true;
            }
        }
        Ok(value)
    }

    /// Reads and verifies the record in `slot`; `None` if it is damaged.
    fn read_value(&self, key: &str, slot: Slot) -> Result<Option<Vec<u8>>> {
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

    /// Stores `value` under `key`, replacing any previous value; with `ttl_ms` it expires that
    /// many milliseconds from now (`Some(0)` stores an already expired entry).
    ///
    /// Edge cases: an invalid key is `InvalidKey`; an entry bigger than the size limit is
    /// `ValueTooLarge`; in both cases nothing changes. A failed write (disk full) is `Io`
    /// and leaves the previous value in place; if the record was written but the eviction or
    /// compaction after it fails, the new value stays and the `Io` error is still returned.
    /// When the volume passes the size limit, least recently used entries are evicted before
    /// this returns.
    pub fn set(&mut self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<()> {
        check_key(key)?;
        let expires_at = self.expires_at(ttl_ms);
        self.put(key, value, expires_at)
    }

    /// When an entry written now with `ttl_ms` expires (0 = never).
    fn expires_at(&self, ttl_ms: Option<u64>) -> u64 {
        match ttl_ms {
            None => 0,
            Some(ms) => self.clock.now_ms().saturating_add(ms).max(1),
        }
    }

    /// Writes a put record for a checked key and makes it the most recently used entry.
    fn put(&mut self, key: &str, value: &[u8], expires_at: u64) -> Result<()> {
        let size = self.check_fits(key, value)?;
        let (segment, offset) = {
            // Freed before eviction and compaction run, so a large value is not held twice.
            let mut record = Vec::with_capacity(size as usize);
            encode_record(&mut record, RecordKind::Put, key, value, expires_at);
            self.append(&record)?
        };
        self.index.insert(
            key,
            Slot {
                segment,
                offset,
                len: size as u32,
                expires_at,
            },
        );
        self.index.cache_value(key, value);
        self.snapshot_stale = true;
        self.enforce_limit()
    }

    /// The record size of `key` and `value`, or `ValueTooLarge` if it cannot fit the limit.
    fn check_fits(&self, key: &str, value: &[u8]) -> Result<u64> {
        let size = record_len(key.len(), value.len());
        if value.len() > u32::MAX as usize - RECORD_HEADER_LEN - MAX_KEY_LEN
            || size > self.options.size_limit.saturating_sub(META_LEN as u64)
        {
            return Err(Error::ValueTooLarge {
                size,
                limit: self.options.size_limit,
            });
        }
        Ok(size)
    }

    /// Removes `key`; true if it held a value that had not expired.
    ///
    /// Edge cases: a miss returns `Ok(false)` but still writes a tombstone (eviction drops
    /// entries from the index without one, and their records may still be in the log, where a
    /// crash's replay would find them again); an invalid key is `InvalidKey`; a failed write
    /// is `Io` and the entry stays.
    pub fn delete(&mut self, key: &str) -> Result<bool> {
        check_key(key)?;
        let live = self.live_slot(key).is_some();
        self.write_tombstone(key)?;
        Ok(live)
    }

    /// Writes a tombstone for `key` and drops it from the index.
    fn write_tombstone(&mut self, key: &str) -> Result<()> {
        self.write_marker(RecordKind::Delete, key, 0)?;
        self.index.remove(key);
        self.enforce_limit()
    }

    /// Appends a record without a value (tombstone, touch, delete-prefix).
    fn write_marker(&mut self, kind: RecordKind, key: &str, expires_at: u64) -> Result<()> {
        let mut record = Vec::with_capacity(RECORD_HEADER_LEN + key.len());
        encode_record(&mut record, kind, key, &[], expires_at);
        self.append(&record)?;
        self.snapshot_stale = true;
        Ok(())
    }

    /// Stores `value` under `key` only if the key holds no live entry; true if it was stored.
    ///
    /// Edge cases: an expired entry counts as absent (and is replaced); the check and the write
    /// are one engine call, so no other operation can come between them. Errors as for `set`;
    /// an invalid key or a too large value is an error even when the key is present.
    pub fn add(&mut self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<bool> {
        check_key(key)?;
        if self.live_slot(key).is_some() {
            self.check_fits(key, value)?;
            return Ok(false);
        }
        self.set(key, value, ttl_ms)?;
        Ok(true)
    }

    /// Marks `key` as the most recently used and sets its TTL to `ttl_ms` from now (`None`:
    /// never expires) without rewriting the value; true if the key held a live entry.
    ///
    /// Edge cases: a miss or an expired entry returns `Ok(false)` and writes nothing; an
    /// unchanged expiry writes nothing; `Some(0)` expires the entry at once. An invalid key is
    /// `InvalidKey`; a failed write is `Io` and the old expiry stays.
    pub fn touch(&mut self, key: &str, ttl_ms: Option<u64>) -> Result<bool> {
        check_key(key)?;
        let Some(slot) = self.live_slot(key) else {
            return Ok(false);
        };
        let expires_at = self.expires_at(ttl_ms);
        self.index.touch(key);
        self.snapshot_stale = true;
        if expires_at != slot.expires_at {
            self.write_marker(RecordKind::Touch, key, expires_at)?;
            self.index.set_expires_at(key, expires_at);
            self.enforce_limit()?;
        }
        Ok(true)
    }

    /// Removes `key` and returns the value it held, in one step.
    ///
    /// Edge cases: a miss, an expired entry or a damaged record returns `Ok(None)` (a tombstone
    /// is written anyway, as for `delete`). An invalid key is `InvalidKey`; a failed read or
    /// write is `Io` and the entry stays. Does not count as a hit or a miss.
    pub fn pop(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        let value = match self.live_slot(key) {
            Some(slot) => self.live_value(key, slot)?,
            None => None,
        };
        self.write_tombstone(key)?;
        Ok(value)
    }

    /// Adds `delta` to the integer counter under `key` and returns the new value; a key with
    /// no live entry starts from `default` and gets `ttl_ms` (an existing counter keeps its
    /// expiry). Counters are stored as one CBOR integer, so a typed `get` reads them as `i64`.
    ///
    /// Edge cases: a value that is not a CBOR integer is `NotACounter`; a result outside the
    /// `i64` range is `CounterOverflow`; in both cases nothing changes. A damaged record counts
    /// as absent. Errors otherwise as for `set`.
    pub fn incr(
        &mut self,
        key: &str,
        delta: i64,
        default: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64> {
        check_key(key)?;
        let current = match self.live_slot(key) {
            Some(slot) => self
                .live_value(key, slot)?
                .map(|value| (value, slot.expires_at)),
            None => None,
        };
        let (base, expires_at) = match current {
            Some((value, expires_at)) => {
                let n = counter::decode(&value).ok_or_else(|| {
                    Error::NotACounter(format!(
                        "the value under {key:?} is not an integer ({} bytes of CBOR)",
                        value.len()
                    ))
                })?;
                (n, expires_at)
            }
            None => (default, self.expires_at(ttl_ms)),
        };
        let n = base.checked_add(delta).ok_or_else(|| {
            Error::CounterOverflow(format!("{base} + {delta} does not fit in an i64 ({key:?})"))
        })?;
        self.put(key, &counter::encode(n), expires_at)?;
        Ok(n)
    }

    /// Removes every key that starts with `prefix` and returns how many live entries that was.
    ///
    /// Edge cases: `""` removes everything (as `clear`); no match returns 0 (a delete-prefix
    /// record is written anyway, so evicted entries cannot come back after a crash); a prefix
    /// longer than 4096 bytes is `InvalidKey`; a failed write is `Io` and nothing changes.
    /// Scans the index once.
    pub fn delete_prefix(&mut self, prefix: &str) -> Result<u64> {
        if prefix.len() > MAX_KEY_LEN {
            return Err(Error::InvalidKey(format!(
                "the prefix is {} bytes long; at most {MAX_KEY_LEN} are allowed",
                prefix.len()
            )));
        }
        let now = self.clock.now_ms();
        let live = self
            .index
            .iter()
            .filter(|(key, slot)| key.starts_with(prefix) && !slot.is_expired(now))
            .count() as u64;
        if prefix.is_empty() {
            self.clear()?;
            return Ok(live);
        }
        self.write_marker(RecordKind::DeletePrefix, prefix, 0)?;
        self.index.retain(|key, _| !key.starts_with(prefix));
        self.enforce_limit()?;
        Ok(live)
    }

    /// Removes every expired entry now and returns how many there were; touches no file (their
    /// records are reclaimed by compaction, and replay skips expired records).
    pub fn expire(&mut self) -> u64 {
        let now = self.clock.now_ms();
        if !self.index.iter().any(|(_, slot)| slot.is_expired(now)) {
            return 0;
        }
        let before = self.index.len();
        self.index.retain(|_, slot| !slot.is_expired(now));
        let removed = (before - self.index.len()) as u64;
        self.expired += removed;
        self.snapshot_stale = true;
        removed
    }

    /// Removes every entry and deletes every segment file.
    ///
    /// Edge cases: a crash part-way is finished at the next open (a clear record starts the
    /// new segment, older segments are then deleted); a failed write is `Io` and nothing changes.
    pub fn clear(&mut self) -> Result<()> {
        let old: Vec<u32> = self.segments.keys().copied().collect();
        let new = self.active + 1;
        self.create_segment(new)?;
        let mut record = Vec::with_capacity(RECORD_HEADER_LEN);
        encode_record(&mut record, RecordKind::Clear, "", &[], 0);
        if let Err(e) = self.append(&record) {
            // The new segment is still empty and the old ones untouched; back out.
            let _ = self.delete_segment(new);
            self.active = old.last().copied().unwrap_or(new);
            return Err(e);
        }
        self.index.clear();
        self.snapshot_stale = true;
        self.remove_hint()?;
        for id in old {
            self.delete_segment(id)?;
        }
        Ok(())
    }

    /// Up to `limit` live keys starting with `prefix`, in byte order, all greater than `after`.
    ///
    /// Edge cases: expired entries are skipped; an empty page means there are no more keys;
    /// `limit` 0 returns an empty page. Touches no file and does not change recency.
    ///
    /// Cost: the first page scans the index (O(n log limit)). The second page of a listing
    /// sorts the keys still to come once and keeps them, so every later page is a binary
    /// search; keys removed meanwhile are skipped, keys added meanwhile may be missed (as with
    /// any paged listing of a changing set). The kept list is dropped at the last page, or
    /// when a listing with another prefix or an earlier cursor starts.
    pub fn keys(&mut self, prefix: &str, after: Option<&str>, limit: usize) -> Vec<String> {
        let Some(after) = after else {
            self.listing = None;
            return self.scan_keys(prefix, limit);
        };
        let now = self.clock.now_ms();
        let reusable = self
            .listing
            .as_ref()
            .is_some_and(|l| l.prefix == prefix && l.built_after.as_str() <= after);
        if !reusable {
            let mut keys: Vec<Box<str>> = self
                .index
                .iter()
                .filter(|(key, slot)| {
                    key.starts_with(prefix) && *key > after && !slot.is_expired(now)
                })
                .map(|(key, _)| key.into())
                .collect();
            keys.sort_unstable();
            self.listing = Some(KeyListing {
                prefix: prefix.to_owned(),
                built_after: after.to_owned(),
                keys,
            });
        }
        let Some(listing) = &self.listing else {
            return Vec::new();
        };
        let start = listing.keys.partition_point(|k| &**k <= after);
        let mut page = Vec::with_capacity(limit.min(listing.keys.len() - start));
        let mut end = start;
        for key in &listing.keys[start..] {
            if page.len() == limit {
                break;
            }
            end += 1;
            let live = self
                .index
                .get(key)
                .is_some_and(|slot| !slot.is_expired(now));
            if live {
                page.push(key.to_string());
            }
        }
        if end == listing.keys.len() {
            self.listing = None;
        }
        page
    }

    /// The first page of `keys` (the `limit` smallest live keys with `prefix`), by scanning the
    /// whole index.
    fn scan_keys(&self, prefix: &str, limit: usize) -> Vec<String> {
        let now = self.clock.now_ms();
        // The `limit` smallest matching keys, kept in a max-heap.
        let mut page: std::collections::BinaryHeap<&str> =
            std::collections::BinaryHeap::with_capacity(limit.min(1 << 16) + 1);
        for (key, slot) in self.index.iter() {
            if limit == 0
                || !key.starts_with(prefix)
                || (slot.expires_at != 0 && slot.is_expired(now))
            {
                continue;
            }
            if page.len() < limit {
                page.push(key);
            } else if page.peek().is_some_and(|largest| key < *largest) {
                page.pop();
                page.push(key);
            }
        }
        page.into_sorted_vec()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// The engine's counters; touches no file.
    pub fn stats(&self) -> Stats {
        Stats {
            entries: self.index.len() as u64,
            volume: self.volume(),
            size_limit: self.options.size_limit,
            hits: self.hits,
            misses: self.misses,
            expired: self.expired,
            evicted: self.evicted,
        }
    }

    /// Writes the index snapshot (when it fits under the size limit) and syncs if configured.
    ///
    /// Edge cases: a failed snapshot write is `Io`; the data is intact either way (the next
    /// open replays the log instead).
    pub fn close(mut self) -> Result<()> {
        self.flush()
    }

    /// Writes the index snapshot if it is stale, so the next open replays little or nothing.
    ///
    /// Edge cases: if the snapshot would push the volume past the size limit, it is removed
    /// instead (the next open replays the log); a failed write is `Io`.
    pub fn flush(&mut self) -> Result<()> {
        if self.options.sync_writes {
            if let Some(active) = self.segments.get(&self.active) {
                active
                    .file
                    .sync_data()
                    .map_err(|e| io_err("sync", &format::segment_file_name(self.active), e))?;
            }
        }
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

    /// Bytes the cache occupies on disk.
    fn volume(&self) -> u64 {
        META_LEN as u64 + self.hint_len + self.log_bytes
    }

    /// Appends `bytes` (whole records) to the active segment, rolling to a new one when full.
    fn append(&mut self, bytes: &[u8]) -> Result<(u32, u32)> {
        let active_size = self.segments.get(&self.active).map_or(0, |s| s.size);
        if active_size > 0 && active_size + bytes.len() as u64 > self.segment_max {
            self.roll()?;
        }
        let offset = self.write_at_end(self.active, bytes)?;
        Ok((self.active, offset as u32))
    }

    /// Writes `bytes` at the end of segment `id`; on failure, cuts any partial write away.
    fn write_at_end(&mut self, id: u32, bytes: &[u8]) -> Result<u64> {
        let name = || format::segment_file_name(id);
        let Some(segment) = self.segments.get_mut(&id) else {
            return Err(Error::Io(format!("segment {} is missing", name())));
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
    fn roll(&mut self) -> Result<()> {
        let mut seal = Vec::with_capacity(RECORD_HEADER_LEN);
        encode_record(&mut seal, RecordKind::Seal, "", &[], 0);
        self.write_at_end(self.active, &seal)?;
        self.create_segment(self.active + 1)
    }

    /// Creates an empty segment file `id` and makes it the active one.
    fn create_segment(&mut self, id: u32) -> Result<()> {
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

    fn truncate_segment(&mut self, id: u32, len: u64) -> Result<()> {
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

    fn delete_segment(&mut self, id: u32) -> Result<()> {
        let name = format::segment_file_name(id);
        self.storage
            .remove(&name)
            .map_err(|e| io_err("remove", &name, e))?;
        if let Some(segment) = self.segments.remove(&id) {
            self.log_bytes -= segment.size;
        }
        Ok(())
    }

    fn remove_hint(&mut self) -> Result<()> {
        self.storage
            .remove(HINT_FILE)
            .map_err(|e| io_err("remove", HINT_FILE, e))?;
        self.hint_len = 0;
        self.snapshot_stale = true;
        Ok(())
    }

    /// Evicts least recently used entries and compacts until the volume fits the limit.
    fn enforce_limit(&mut self) -> Result<()> {
        let limit = self.options.size_limit;
        if self.volume() <= limit {
            return Ok(());
        }
        if self.hint_len > 0 {
            self.remove_hint()?;
        }
        // Evict a tenth of the limit beyond what is needed, so that compaction runs once
        // per many sets rather than on every one.
        let slack = limit / 10;
        // Each round compacts one segment; a full rotation reclaims every dead byte.
        let mut rounds = 2 * self.segments.len() + 8;
        let mut swept = false;
        while self.volume() > limit && rounds > 0 {
            rounds -= 1;
            let excess = self.volume() - limit;
            let mut dead = self.log_bytes - self.index.live_bytes();
            if dead < excess + slack && !swept {
                // Expired entries go before any live one is evicted.
                swept = true;
                self.expire();
                dead = self.log_bytes - self.index.live_bytes();
            }
            if dead < excess + slack {
                // Never evict the entry just written: it is the most recent one.
                while dead < excess + slack && self.index.len() > 1 {
                    if let Some((_, slot)) = self.index.pop_lru() {
                        dead += u64::from(slot.len);
                        self.evicted += 1;
                    }
                }
                self.snapshot_stale = true;
            }
            self.compact_oldest()?;
        }
        Ok(())
    }

    /// Copies the live records of the oldest segment to the active one and deletes it.
    fn compact_oldest(&mut self) -> Result<()> {
        let Some(&oldest) = self.segments.keys().next() else {
            return Ok(());
        };
        if oldest == self.active {
            self.roll()?;
        }
        if self.index.live_in(oldest) > 0 {
            let name = format::segment_file_name(oldest);
            let size = self.segments[&oldest].size;
            let mut data = vec![0; size as usize];
            self.segments[&oldest]
                .file
                .read_exact_at(&mut data, 0)
                .map_err(|e| io_err("read", &name, e))?;
            // Live records, batched into writes of about 1 MiB.
            let mut batch: Vec<u8> = Vec::new();
            let mut batch_keys: Vec<(String, usize)> = Vec::new();
            let mut pos = 0;
            while pos < data.len() {
                let Ok(rec) = decode_record(&data[pos..]) else {
                    break;
                };
                let live = rec.kind == RecordKind::Put
                    && self
                        .index
                        .get(rec.key)
                        .is_some_and(|s| s.segment == oldest && s.offset as usize == pos);
                if live {
                    batch_keys.push((rec.key.to_owned(), batch.len()));
                    let expires_at = self.index.get(rec.key).map_or(0, |s| s.expires_at);
                    if expires_at == rec.expires_at {
                        batch.extend_from_slice(&data[pos..pos + rec.len]);
                    } else {
                        // A touch changed the expiry; its record will not outlive this copy.
                        encode_record(&mut batch, RecordKind::Put, rec.key, rec.value, expires_at);
                    }
                }
                pos += rec.len;
                if batch.len() >= 1 << 20 || (pos >= data.len() && !batch.is_empty()) {
                    self.flush_compaction_batch(&mut batch, &mut batch_keys)?;
                }
            }
            if !batch.is_empty() {
                self.flush_compaction_batch(&mut batch, &mut batch_keys)?;
            }
            // Entries past damage in this segment cannot be read back: they are misses now.
            self.index.retain(|_, slot| slot.segment != oldest);
        }
        self.delete_segment(oldest)
    }

    fn flush_compaction_batch(
        &mut self,
        batch: &mut Vec<u8>,
        keys: &mut Vec<(String, usize)>,
    ) -> Result<()> {
        let (segment, base) = self.append(batch)?;
        for (key, at) in keys.drain(..) {
            self.index.relocate(&key, segment, base + at as u32);
        }
        batch.clear();
        Ok(())
    }
}

/// Checks that `key` is 1..=4096 bytes.
fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey("the key is empty".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidKey(format!(
            "the key is {} bytes long; at most {MAX_KEY_LEN} are allowed",
            key.len()
        )));
    }
    Ok(())
}
