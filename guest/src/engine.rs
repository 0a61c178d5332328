//! The cache engine: the `Engine` type, how it is opened, and every public operation.
//!
//! Writes append one record to the active segment. Reads are answered from the in-memory
//! index plus one positioned read. When the directory grows past the size limit, the least
//! recently used entries are evicted and the oldest segment is compacted (its live records
//! copied forward, the file deleted) until the volume is back under the limit.
//!
//! The work behind the operations lives in the child modules, one job each: `recover`
//! (open-time recovery), `log` (segment file I/O), `compact` (size limit, eviction and
//! compaction), `listing` (paging through keys) and `snapshot` (the index snapshot file).

mod compact;
mod follow;
mod listing;
mod log;
mod recover;
mod snapshot;

use crate::counter;
use crate::error::{Error, Result};
use crate::format::{RecordKind, MAX_KEY_LEN, META_LEN, RECORD_HEADER_LEN};
use crate::index::{LruIndex, Slot};
use crate::storage::Storage;
use crate::time::TimeSource;
pub use compact::Maintenance;
use listing::KeyListing;
use log::Segment;
use std::collections::{BTreeMap, BTreeSet};

/// The largest record a non-blocking operation reads from disk or writes (see
/// [`Engine::set_nonblocking`]): bigger ones take long enough to be slow work.
pub const NONBLOCKING_MAX_RECORD: u64 = 64 << 10;

/// The smallest record `read_value` has the host read (see `StorageFile::stage`): the records
/// too big for a non-blocking call. Smaller ones are read through the component, which costs
/// about what a header read plus the host's read would, and keeps them in the hot cache.
pub const STAGED_VALUE_MIN: u64 = NONBLOCKING_MAX_RECORD;

/// Where `Engine::read_value` left a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// The value.
    Value(Vec<u8>),
    /// The host holds it (`StorageFile::stage`), this many bytes.
    Staged(u32),
}

/// Most memory the hot value cache uses by default (a quarter of the size limit when that is
/// smaller; `EngineOptions::memory_budget` sets it).
pub const HOT_CACHE_MAX: u64 = 32 << 20;

/// How an engine is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// Maximum bytes the cache may occupy on disk (default 500 MiB).
    pub size_limit: u64,
    /// Sync every write to stable storage before acknowledging it.
    pub sync_writes: bool,
    /// Open without writing anything, ever (default false). Recovery happens in memory only:
    /// a torn tail is ignored, not cut; damaged segments, a bad snapshot and leftover temporary
    /// files stay on disk; no segment is created and nothing is compacted or evicted, even
    /// past the size limit. Reads work (their recency and expiry changes are kept in memory);
    /// every operation that may write returns `ReadOnly`; `flush` and `close` write nothing.
    pub read_only: bool,
    /// Other processes may open the directory at the same time (default false). Every
    /// operation that may write then returns `NeedsLock` unless the host holds the directory's
    /// write lock (`set_write_locked`), and `catch_up` replays what others wrote. `open` must
    /// run under the write lock.
    pub shared: bool,
    /// Bytes of values kept in memory so that reads skip the disk (the hot value cache);
    /// `None`: a quarter of the size limit, at most [`HOT_CACHE_MAX`]. `Some(0)` keeps none.
    pub memory_budget: Option<u64>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            size_limit: 500 << 20,
            sync_writes: false,
            read_only: false,
            shared: false,
            memory_budget: None,
        }
    }
}

impl EngineOptions {
    /// The hot value cache's size: `memory_budget`, or its default.
    pub fn hot_cache_bytes(&self) -> u64 {
        self.memory_budget
            .unwrap_or((self.size_limit / 4).min(HOT_CACHE_MAX))
    }
}

/// What `Engine::stats` reports: the cache's size now, and counters since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Live entries (expired ones not yet noticed are still counted).
    pub entries: u64,
    /// Bytes the cache's files occupy on disk.
    pub volume: u64,
    /// The size limit the engine was opened with.
    pub size_limit: u64,
    /// `get` calls that returned a value, since open.
    pub hits: u64,
    /// `get` calls that returned nothing, since open.
    pub misses: u64,
    /// Entries removed because their TTL had passed, since open.
    pub expired: u64,
    /// Entries removed by LRU eviction to respect the size limit, since open.
    pub evicted: u64,
    /// Damage found at open: files moved into `damaged/` and damaged stretches of the log
    /// skipped (see the format docs).
    pub damaged: u64,
}

/// An open cache over one directory.
pub struct Engine<S: Storage, T: TimeSource> {
    storage: S,
    time: T,
    options: EngineOptions,
    segment_max: u64,
    index: LruIndex,
    segments: BTreeMap<u32, Segment<S::File>>,
    active: u32,
    /// This directory's cache id, in every segment header and snapshot.
    cache_id: u64,
    /// A random id of this open, in the headers of the segments it creates.
    session: u64,
    /// Segments below this id were written by format version 1 or 2 and have no header.
    first_headed: u32,
    /// Bytes of the metadata file.
    meta_len: u64,
    /// No file was created or deleted since the directory's last sync.
    dir_synced: bool,
    /// Counts changes to the log's files and the directory: the position a host that syncs
    /// them itself hands back to `maintain` (see `Maintenance`).
    log_seq: u64,
    /// Every change up to this position is durable (the host synced it, see `maintain`).
    durable_seq: u64,
    /// The position of the directory's last change.
    dir_changed: u64,
    /// Segments holding a record that a write not yet synced superseded (an overwrite or a
    /// delete of its key): compaction must sync the log before deleting one of them.
    superseded_unsynced: BTreeSet<u32>,
    /// A delete-prefix not yet synced may have superseded records in any segment.
    bulk_delete_unsynced: bool,
    /// Sum of segment sizes.
    log_bytes: u64,
    /// Bytes of the snapshot file on disk (0 when there is none).
    snapshot_len: u64,
    /// The index snapshot on disk no longer matches the index.
    snapshot_stale: bool,
    /// Bytes of log appended past the position the snapshot covers (replayed at the next
    /// open); `u64::MAX` while no snapshot was loaded or written (see `log_grew`).
    log_past_snapshot: u64,
    /// Recency changes (reads, touches, expired entries dropped) since the snapshot was
    /// encoded: they make it stale only in bulk (see `recency_changed`).
    recency_changes: u64,
    /// A failed write may have left bytes past the active segment's size.
    tail_unclean: bool,
    hits: u64,
    misses: u64,
    expired: u64,
    evicted: u64,
    damaged: u64,
    /// The key listing being paged through, if any (see `keys`).
    listing: Option<KeyListing>,
    /// The compaction of the oldest segment in progress (see `maintain`).
    compaction: Option<compact::Compaction>,
    /// A checkpoint's snapshot written to its temporary file, waiting for the log it describes
    /// to be durable before it replaces the snapshot (see `maintain`).
    pending_checkpoint: Option<snapshot::PendingCheckpoint>,
    /// Bytes appended to the log since the last flush: a checkpoint is due past an interval.
    written_since_checkpoint: u64,
    /// Operations that would do slow work return `WouldBlock` (see `set_nonblocking`).
    nonblocking: bool,
    /// Bytes one compaction step reads.
    compaction_step: u64,
    /// Shared: the host holds the directory's write lock now (see `set_write_locked`).
    write_locked: bool,
    /// The least log written between checkpoints (see `checkpoint_due`).
    checkpoint_interval: u64,
}

impl<S: Storage, T: TimeSource> Engine<S, T> {
    /// Opens the cache in `storage`, creating it if empty, and recovers it.
    ///
    /// Edge cases: a torn record at the end of the log is cut away (its bytes kept in
    /// `damaged/` if records that decode follow it); damaged records elsewhere are skipped and
    /// cost only the entries in them; a foreign, oversized or headerless segment file is moved
    /// into `damaged/`; an index snapshot that is damaged or does not match the log is removed
    /// and the log replayed (see the format docs). A directory from a newer format fails with
    /// `IncompatibleFormat`, a damaged metadata file with `Corrupt`, and an unreadable or
    /// unwritable directory with `Io`. Unknown files are left alone. With `read_only` nothing is
    /// written (see [`EngineOptions::read_only`]) and an empty directory is an empty cache.
    pub fn open(storage: S, time: T, options: EngineOptions) -> Result<Self> {
        let mut engine = Self {
            storage,
            time,
            options,
            segment_max: (options.size_limit / 8).clamp(4096, 64 << 20),
            index: LruIndex::default(),
            segments: BTreeMap::new(),
            active: 0,
            cache_id: 0,
            session: random_id(),
            first_headed: 1,
            meta_len: META_LEN as u64,
            dir_synced: false,
            log_seq: 1,
            durable_seq: 0,
            dir_changed: 1,
            superseded_unsynced: BTreeSet::new(),
            bulk_delete_unsynced: false,
            log_bytes: 0,
            snapshot_len: 0,
            snapshot_stale: false,
            log_past_snapshot: u64::MAX,
            recency_changes: 0,
            tail_unclean: false,
            hits: 0,
            misses: 0,
            expired: 0,
            evicted: 0,
            damaged: 0,
            listing: None,
            compaction: None,
            pending_checkpoint: None,
            written_since_checkpoint: 0,
            nonblocking: false,
            compaction_step: compact::COMPACTION_STEP,
            checkpoint_interval: compact::CHECKPOINT_MIN,
            // `open` runs under the host's write lock.
            write_locked: true,
        };
        engine
            .index
            .set_hot_budget(usize::try_from(options.hot_cache_bytes()).unwrap_or(usize::MAX));
        engine.recover()?;
        if !options.read_only {
            engine.enforce_limit()?;
        }
        // Shared: the host releases the write lock when `open` returns.
        engine.write_locked = !options.shared;
        Ok(engine)
    }

    /// In non-blocking mode (off by default), an operation that would do slow work returns
    /// `WouldBlock` before changing anything (a read may already have marked its entry as
    /// used, which running it again repeats), so the caller can run it again where blocking is
    /// fine (the host: off its async runtime's threads). Slow work is: syncing a write
    /// (`sync_writes`), writing or reading from disk a record larger than
    /// [`NONBLOCKING_MAX_RECORD`], and a write that would take the volume past the size limit
    /// (it must evict and compact first). Eviction and compaction ahead of the limit are
    /// `maintain`'s job. `clear`, `delete_prefix`, `expire`, `keys`, `flush` and `close` are
    /// not checked: their cost depends on the cache's size, so callers run them where blocking
    /// is fine.
    pub fn set_nonblocking(&mut self, on: bool) {
        self.nonblocking = on;
    }

    /// Sets how many bytes of a segment one `maintain` step reads (default
    /// [`COMPACTION_STEP`](compact::COMPACTION_STEP)); for tests that want compactions to span
    /// many steps.
    #[doc(hidden)]
    pub fn set_compaction_step(&mut self, bytes: u64) {
        self.compaction_step = bytes.max(1);
    }

    /// Sets the least log written between checkpoints (default
    /// [`CHECKPOINT_MIN`](compact::CHECKPOINT_MIN)); for tests that want many checkpoints.
    #[doc(hidden)]
    pub fn set_checkpoint_interval(&mut self, bytes: u64) {
        self.checkpoint_interval = bytes.max(1);
    }

    /// `WouldBlock` if, in non-blocking mode, appending a record of `len` bytes is slow work.
    fn check_light_write(&self, len: u64) -> Result<()> {
        if self.nonblocking
            && (self.options.sync_writes
                || len > NONBLOCKING_MAX_RECORD
                || self.volume() + len + crate::format::SEGMENT_HEADER_LEN as u64
                    > self.options.size_limit)
        {
            return Err(Error::WouldBlock);
        }
        Ok(())
    }

    /// `ReadOnly` if the engine was opened read-only: the first check of every operation that
    /// may write, and of every file write (a last guard).
    fn writable(&self) -> Result<()> {
        if self.options.read_only {
            return Err(Error::ReadOnly);
        }
        if self.options.shared && !self.write_locked {
            return Err(Error::NeedsLock);
        }
        Ok(())
    }

    /// The value stored under `key`.
    ///
    /// Edge cases: a miss, an expired entry (removed now), or an entry whose bytes on disk
    /// fail their checksum (removed now, with a tombstone so that no older record of the key
    /// resurfaces at a later replay; read-only: in memory only) return `Ok(None)` and count
    /// as a miss. An invalid key
    /// is `InvalidKey`; a failed read is `Io`.
    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        match self.live_slot_used(key) {
            Some(slot) => self.read_live(key, slot),
            None => {
                self.misses += 1;
                Ok(None)
            }
        }
    }

    /// `get`'s answer for the live entry in `slot` (found by `live_slot_used`), counted as a
    /// hit or, if its record is damaged, a miss.
    fn read_live(&mut self, key: &str, slot: Slot) -> Result<Option<Vec<u8>>> {
        match self.live_value(key, slot)? {
            Some(value) => {
                self.recency_changed();
                self.hits += 1;
                Ok(Some(value))
            }
            None => {
                self.misses += 1;
                Ok(None)
            }
        }
    }

    /// The values under `keys`, in order: `get` for each, in one call.
    ///
    /// Edge cases: as for `get`, per key (a miss, an expired or damaged entry is `None`); an
    /// invalid key is `InvalidKey` before anything is read. Non-blocking mode: `WouldBlock`
    /// before anything is read if the values to read from disk add up to more than
    /// [`NONBLOCKING_MAX_RECORD`] (many small reads are slow work too).
    pub fn get_many<K: AsRef<str>>(&mut self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        for key in keys {
            check_key(key.as_ref())?;
        }
        if self.nonblocking {
            let mut from_disk = 0u64;
            for key in keys {
                let key = key.as_ref();
                if let Some(slot) = self.index.get(key) {
                    if !self.index.is_hot(key) {
                        from_disk += u64::from(slot.len);
                    }
                }
            }
            if from_disk > NONBLOCKING_MAX_RECORD {
                return Err(Error::WouldBlock);
            }
        }
        keys.iter().map(|key| self.get(key.as_ref())).collect()
    }

    /// Stores every `(key, value)` in order, all with `ttl_ms`: `set` for each, in one call.
    ///
    /// Edge cases: an invalid key or a value too large for the limit is an error before
    /// anything is written (`InvalidKey`, `ValueTooLarge`); a failed write (`Io`) stops there,
    /// and the entries before it stay stored. Non-blocking mode: `WouldBlock` before anything
    /// is written if the batch as a whole is slow work (its records add up to more than
    /// [`NONBLOCKING_MAX_RECORD`], or would take the volume past the limit). Read-only:
    /// `ReadOnly`; shared without the write lock: `NeedsLock`.
    pub fn set_many<K: AsRef<str>, V: AsRef<[u8]>>(
        &mut self,
        entries: &[(K, V)],
        ttl_ms: Option<u64>,
    ) -> Result<()> {
        self.writable()?;
        let mut total = 0u64;
        for (key, value) in entries {
            check_key(key.as_ref())?;
            total += self.check_fits(key.as_ref(), value.as_ref())?;
        }
        self.check_light_write(total)?;
        for (key, value) in entries {
            self.set(key.as_ref(), value.as_ref(), ttl_ms)?;
        }
        Ok(())
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
    /// counted as expired). Recency unchanged.
    fn live_slot(&mut self, key: &str) -> Option<Slot> {
        self.lookup(key, false)
    }

    /// `live_slot` for a read: the entry also becomes the most recently used, in the same
    /// index lookup (a read that then finds the record damaged removes it anyway).
    fn live_slot_used(&mut self, key: &str) -> Option<Slot> {
        self.lookup(key, true)
    }

    /// `live_slot`, marking the entry used if `used`.
    fn lookup(&mut self, key: &str, used: bool) -> Option<Slot> {
        let slot = if used {
            self.index.get_and_touch(key)?
        } else {
            self.index.get(key)?
        };
        if slot.expires_at != 0 && slot.is_expired(self.time.now_ms()) {
            self.index.remove(key);
            // The snapshot need not know at once: an entry it holds past its expiry is
            // dropped the same way after the next open.
            self.recency_changed();
            self.expired += 1;
            return None;
        }
        Some(slot)
    }

    /// The value `key` holds now: `live_slot`, then `live_value`.
    fn current_value(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.live_slot(key) {
            Some(slot) => self.live_value(key, slot),
            None => Ok(None),
        }
    }

    /// The value of the live entry in `slot`, from the hot cache or the disk (then cached);
    /// an entry whose record fails its checksum is removed now and is `None`.
    fn live_value(&mut self, key: &str, slot: Slot) -> Result<Option<Vec<u8>>> {
        if let Some(value) = self.index.hot_value(key) {
            return Ok(Some(value.to_vec()));
        }
        if self.nonblocking && u64::from(slot.len) > NONBLOCKING_MAX_RECORD {
            return Err(Error::WouldBlock);
        }
        let value = self.read_record_value(key, slot)?;
        match &value {
            Some(value) => self.index.cache_value(key, value),
            None => self.drop_damaged(key),
        }
        Ok(value)
    }

    /// Removes `key`, whose record failed its checks. A tombstone makes the loss final:
    /// without it, a replay of the whole log (after a crash) could find an older record of the
    /// key and bring it back. Best effort: the read's answer stands either way.
    fn drop_damaged(&mut self, key: &str) {
        self.index.remove(key);
        self.snapshot_stale = true;
        if !self.options.read_only {
            let _ = self.append_record(RecordKind::Delete, key, &[], 0);
        }
    }

    /// The value under `key`, as `get`, except that a value of at least [`STAGED_VALUE_MIN`]
    /// bytes not in the hot cache is read and checked by the host where the storage offers
    /// it (`StorageFile::stage`): then `Found::Staged` and the host holds the bytes. Such a
    /// value is not put in the hot cache.
    ///
    /// Edge cases: as for `get` (a miss, an expired entry, or a record that fails its checks
    /// is `None`, and the last is removed); where the storage declines, the value is read here
    /// (`Found::Value`). Non-blocking mode: `WouldBlock` for a value over
    /// [`NONBLOCKING_MAX_RECORD`] that is not in memory.
    pub fn read_value(&mut self, key: &str) -> Result<Option<Found>> {
        check_key(key)?;
        let Some(slot) = self.live_slot_used(key) else {
            self.misses += 1;
            return Ok(None);
        };
        if u64::from(slot.len) < STAGED_VALUE_MIN || self.index.is_hot(key) {
            return Ok(self.read_live(key, slot)?.map(Found::Value));
        }
        if self.nonblocking && u64::from(slot.len) > NONBLOCKING_MAX_RECORD {
            return Err(Error::WouldBlock);
        }
        match self.stage_record_value(key, slot)? {
            Some(log::StageOutcome::Staged(len)) => {
                self.recency_changed();
                self.hits += 1;
                Ok(Some(Found::Staged(len)))
            }
            Some(log::StageOutcome::Damaged) => {
                self.drop_damaged(key);
                self.misses += 1;
                Ok(None)
            }
            None => Ok(self.read_live(key, slot)?.map(Found::Value)),
        }
    }

    /// Stores `value` under `key`, replacing any previous value; with `ttl_ms` it expires that
    /// many milliseconds from now (`Some(0)` stores an already expired entry).
    ///
    /// Edge cases: an invalid key is `InvalidKey`; an entry bigger than the size limit is
    /// `ValueTooLarge`; in both cases nothing changes. A failed write (disk full) is `Io`
    /// and leaves the previous value in place. When the volume passes the size limit, least
    /// recently used entries are evicted before this returns; if that eviction's compaction
    /// fails, the new value is still stored and `Ok` returned (an error always means nothing
    /// changed), and the limit is enforced again at the next write. Read-only: `ReadOnly`.
    pub fn set(&mut self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<()> {
        self.writable()?;
        check_key(key)?;
        let expires_at = self.expires_at(ttl_ms);
        self.put(key, value, expires_at)
    }

    /// When an entry written now with `ttl_ms` expires (0 = never).
    fn expires_at(&self, ttl_ms: Option<u64>) -> u64 {
        match ttl_ms {
            None => 0,
            Some(ms) => self.time.now_ms().saturating_add(ms).max(1),
        }
    }

    /// Writes a put record for a checked key and makes it the most recently used entry.
    fn put(&mut self, key: &str, value: &[u8], expires_at: u64) -> Result<()> {
        let size = self.check_fits(key, value)?;
        self.check_light_write(size)?;
        let (segment, offset) = self.append_record(RecordKind::Put, key, value, expires_at)?;
        let old = self.index.insert(
            key,
            Slot {
                segment,
                offset,
                len: size as u32,
                expires_at,
            },
        );
        self.superseded(old);
        self.index.cache_value(key, value);
        self.log_grew();
        self.after_write();
        Ok(())
    }

    /// Notes a change the log does not record (a read's or a touch's recency, an expired entry
    /// dropped). Such changes make the snapshot stale only once they number an eighth of the
    /// entries: a few reads (a one-shot `pcache get`) never rewrite an O(entries) snapshot,
    /// and rewriting it for recency costs amortised O(1) per read. Recency newer than the
    /// snapshot is lost at a reopen (those entries then rank by their last write).
    fn recency_changed(&mut self) {
        self.recency_changed_by(1);
    }

    /// Notes a write the log records (a put, a tombstone, a touch): it makes the snapshot
    /// stale only once the log past the snapshot reaches a 64th of the snapshot's size (at
    /// least 64 KiB). The next open replays that much in milliseconds, so one-shot writes to a
    /// big cache do not each rewrite its O(entries) snapshot at close. Without a snapshot, any
    /// write makes it stale.
    fn log_grew(&mut self) {
        if self.log_past_snapshot >= (self.snapshot_len / 64).max(64 << 10) {
            self.snapshot_stale = true;
        }
    }

    /// `recency_changed` for `n` changes at once.
    fn recency_changed_by(&mut self, n: u64) {
        self.recency_changes += n;
        if self.recency_changes.saturating_mul(8) >= self.index.len() as u64 {
            self.snapshot_stale = true;
        }
    }

    /// Notes that a write not yet synced superseded the record in `old`, if any.
    fn superseded(&mut self, old: Option<Slot>) {
        if let Some(old) = old {
            if old.segment != self.active {
                self.superseded_unsynced.insert(old.segment);
            }
        }
    }

    /// Enforces the size limit after a write that succeeded. The write stands whatever happens
    /// here, so a failure (a full disk while compacting) is not reported: the volume stays over
    /// the limit until the next write enforces it again.
    fn after_write(&mut self) {
        let _ = self.enforce_limit();
    }

    /// The record size of `key` and `value`, or `ValueTooLarge` if it cannot fit the limit.
    fn check_fits(&self, key: &str, value: &[u8]) -> Result<u64> {
        let size = crate::format::record_len(key.len(), value.len());
        if value.len() > u32::MAX as usize - RECORD_HEADER_LEN - MAX_KEY_LEN
            || size
                > (self.options.size_limit)
                    .saturating_sub((META_LEN + crate::format::SEGMENT_HEADER_LEN) as u64)
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
    /// is `Io` and the entry stays. Read-only: `ReadOnly`.
    pub fn delete(&mut self, key: &str) -> Result<bool> {
        self.writable()?;
        check_key(key)?;
        let live = self.live_slot(key).is_some();
        self.write_tombstone(key)?;
        Ok(live)
    }

    /// Writes a tombstone for `key` and drops it from the index.
    fn write_tombstone(&mut self, key: &str) -> Result<()> {
        self.write_marker(RecordKind::Delete, key, 0)?;
        let old = self.index.remove(key);
        self.superseded(old);
        self.after_write();
        Ok(())
    }

    /// Appends a record without a value (tombstone, touch, delete-prefix).
    fn write_marker(&mut self, kind: RecordKind, key: &str, expires_at: u64) -> Result<()> {
        self.check_light_write(crate::format::record_len(key.len(), 0))?;
        self.append_record(kind, key, &[], expires_at)?;
        self.log_grew();
        Ok(())
    }

    /// Stores `value` under `key` only if the key holds no live entry; true if it was stored.
    ///
    /// Edge cases: an expired entry counts as absent (and is replaced); the check and the write
    /// are one engine call, so no other operation can come between them. Errors as for `set`;
    /// an invalid key or a too large value is an error even when the key is present.
    /// Read-only: `ReadOnly`, present or not.
    pub fn add(&mut self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<bool> {
        self.writable()?;
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
    /// `InvalidKey`; a failed write is `Io` and the old expiry stays. Read-only: `ReadOnly`,
    /// even for a miss.
    pub fn touch(&mut self, key: &str, ttl_ms: Option<u64>) -> Result<bool> {
        self.writable()?;
        check_key(key)?;
        let Some(slot) = self.live_slot(key) else {
            return Ok(false);
        };
        let expires_at = self.expires_at(ttl_ms);
        self.index.touch(key);
        self.recency_changed();
        if expires_at != slot.expires_at {
            self.write_marker(RecordKind::Touch, key, expires_at)?;
            self.index.set_expires_at(key, expires_at);
            self.after_write();
        }
        Ok(true)
    }

    /// Removes `key` and returns the value it held, in one step.
    ///
    /// Edge cases: a miss, an expired entry or a damaged record returns `Ok(None)` (a tombstone
    /// is written anyway, as for `delete`). An invalid key is `InvalidKey`; a failed read or
    /// write is `Io` and the entry stays. Does not count as a hit or a miss. Read-only:
    /// `ReadOnly`.
    pub fn pop(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        self.writable()?;
        check_key(key)?;
        self.check_light_write(crate::format::record_len(key.len(), 0))?;
        let value = self.current_value(key)?;
        self.write_tombstone(key)?;
        Ok(value)
    }

    /// Adds `delta` to the integer counter under `key` and returns the new value; a key with
    /// no live entry starts from `default` and gets `ttl_ms` (an existing counter keeps its
    /// expiry). Counters are stored as one CBOR integer, so a typed `get` reads them as `i64`.
    ///
    /// Edge cases: a value that is not a CBOR integer is `NotACounter`; a result outside the
    /// `i64` range is `CounterOverflow`; in both cases nothing changes. A damaged record counts
    /// as absent. Errors otherwise as for `set` (read-only: `ReadOnly`).
    pub fn incr(
        &mut self,
        key: &str,
        delta: i64,
        default: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64> {
        self.writable()?;
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
    /// Scans the index once. Read-only: `ReadOnly`.
    pub fn delete_prefix(&mut self, prefix: &str) -> Result<u64> {
        self.writable()?;
        if prefix.len() > MAX_KEY_LEN {
            return Err(Error::InvalidKey(format!(
                "the prefix is {} bytes long; at most {MAX_KEY_LEN} are allowed",
                prefix.len()
            )));
        }
        let now = self.time.now_ms();
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
        self.bulk_delete_unsynced = true;
        self.index.retain(|key, _| !key.starts_with(prefix));
        self.after_write();
        Ok(live)
    }

    /// Removes every expired entry now and returns how many there were; touches no file (their
    /// records are reclaimed by compaction, and replay skips expired records), so it works
    /// read-only too.
    pub fn expire(&mut self) -> u64 {
        let now = self.time.now_ms();
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
    /// Read-only: `ReadOnly`.
    pub fn clear(&mut self) -> Result<()> {
        self.writable()?;
        let old: Vec<u32> = self.segments.keys().copied().collect();
        let previous = self.active;
        let new = self.active + 1;
        self.create_segment(new)?;
        // The clear record must be durable before any old segment goes: a power cut must not
        // leave some old segments without the record that voids them.
        let written = self
            .append_record(RecordKind::Clear, "", &[], 0)
            .and_then(|_| self.sync_segment(new))
            .and_then(|()| self.sync_dir());
        if let Err(e) = written {
            // The old segments are untouched; back out.
            let _ = self.delete_segment(new);
            self.active = previous;
            return Err(e);
        }
        self.index.clear();
        self.snapshot_stale = true;
        self.compaction = None;
        // From here on the clear has happened (the record is durable): a failure to delete an
        // old file is finished by the next open, not reported.
        let _ = self.remove_snapshot();
        for id in old {
            let _ = self.delete_segment(id);
        }
        let _ = self.sync_dir();
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
        match after {
            None => {
                self.listing = None;
                self.scan_keys(prefix, limit)
            }
            Some(after) => self.next_page(prefix, after, limit),
        }
    }

    /// The cache's size and counters; touches no file.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            entries: self.index.len() as u64,
            volume: self.volume(),
            size_limit: self.options.size_limit,
            hits: self.hits,
            misses: self.misses,
            expired: self.expired,
            evicted: self.evicted,
            damaged: self.damaged,
        }
    }

    /// Flushes (see [`Engine::flush`]) and closes.
    ///
    /// Edge cases: as for `flush`; the engine is gone either way. Read-only: writes nothing and
    /// succeeds.
    pub fn close(mut self) -> Result<()> {
        self.flush()
    }

    /// Makes everything written so far durable, then writes the index snapshot if it is
    /// stale, so the next open replays little or nothing. After `Ok`, a power cut loses
    /// nothing the cache held at this point (see the format docs).
    ///
    /// Edge cases: shared without the write lock: `NeedsLock`. A failed sync of the log or the
    /// directory is `Io` (the data may then not be
    /// durable). The snapshot only saves time at the next open: if writing it fails (a full
    /// disk) or it would push the volume past the size limit, the previous one stays (the
    /// next open replays more of the log) and this still succeeds. Read-only: writes nothing
    /// and succeeds.
    pub fn flush(&mut self) -> Result<()> {
        if self.options.read_only {
            return Ok(());
        }
        self.writable()?;
        self.sync_log()?;
        let _ = self.write_snapshot();
        self.written_since_checkpoint = 0;
        Ok(())
    }

    /// Bytes the cache occupies on disk.
    fn volume(&self) -> u64 {
        let pending = self.pending_checkpoint.as_ref().map_or(0, |p| p.len);
        self.meta_len + self.snapshot_len + self.log_bytes + pending
    }
}

/// A random 64-bit id. Hand-made from std's randomly keyed hasher (seeded from the OS, or from
/// `wasi:random` in the component) so the engine needs no RNG crate for two ids per open.
pub(crate) fn random_id() -> u64 {
    use std::hash::BuildHasher;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::collections::hash_map::RandomState::new().hash_one((n, crate::time::WallClock.now_ms()))
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
