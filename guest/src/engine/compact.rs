//! The size limit: expiring, evicting least recently used entries, and compacting the oldest
//! segment until the volume fits — all at once (`enforce_limit`), or one bounded step at a
//! time in the background (`maintain`).

use super::log::{scan_records, OnFailure};
use super::Engine;
use crate::error::{io_err, Result};
use crate::format::{self, encode_record, RecordKind};
use crate::storage::Storage;
use crate::time::TimeSource;
use std::ops::ControlFlow;

/// One compaction step reads about this many bytes of the oldest segment (more for a bigger
/// record) and copies the live records among them forward.
/// Small enough that a step holds the engine for a fraction of a millisecond.
pub const COMPACTION_STEP: u64 = 256 << 10;

/// A checkpoint is due after at least this many bytes of log (see `checkpoint_due`).
pub const CHECKPOINT_MIN: u64 = 8 << 20;

/// The compaction of the oldest segment in progress, between steps.
#[derive(Clone, Copy, Debug)]
pub(super) struct Compaction {
    /// The segment being compacted (always the oldest).
    segment: u32,
    /// Where the next step reads.
    next: u64,
    /// A live record was copied forward.
    copied: bool,
    /// All is copied, and the segment is deleted once the log through this position is
    /// durable (a deferred deletion, see `maintain`).
    ready: Option<u64>,
}

/// What background maintenance has to do (from `Engine::maintain` and
/// `Engine::maintenance`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// `maintain` has work to do.
    pub pending: bool,
    /// The next step waits until the log is durable through this position: sync every
    /// segment file and the directory, then pass it to `maintain`. (The engine never syncs
    /// in `maintain`, so that a host can sync while other calls go on.)
    pub sync_through: Option<u64>,
}

impl Compaction {
    /// The segment being compacted.
    pub(super) fn segment(&self) -> u32 {
        self.segment
    }
}

impl<S: Storage, T: TimeSource> Engine<S, T> {
    /// Evicts least recently used entries and compacts until the volume fits the limit.
    pub(super) fn enforce_limit(&mut self) -> Result<()> {
        let limit = self.options.size_limit;
        if self.volume() <= limit {
            return Ok(());
        }
        // Each round compacts one segment; a full rotation reclaims every dead byte.
        let mut rounds = 2 * self.segments.len() + 8;
        let mut swept = false;
        while self.volume() > limit && rounds > 0 {
            rounds -= 1;
            if self.compaction.is_none() {
                self.make_room(limit, limit / 10, &mut swept);
            }
            self.compact_oldest()?;
        }
        if self.volume() > limit && self.snapshot_len > 0 {
            // The last resort: the snapshot only saves time at open (the log alone is right).
            self.remove_snapshot()?;
        }
        Ok(())
    }

    /// The volume above which background maintenance starts compacting: a quarter of the
    /// limit below it, so that writes rarely find the limit itself in their way.
    pub(super) fn low_water(&self) -> u64 {
        let limit = self.options.size_limit;
        limit - limit / 4
    }

    /// One bounded step of background work, after noting that the log is durable through
    /// `durable_through` (a position from `Maintenance::sync_through` that the caller synced
    /// every segment file and the directory after reading; 0 for none). Returns what is left.
    ///
    /// Past the low-water mark (see `low_water`) a step first evicts what compacting the
    /// oldest segment must reclaim (as `enforce_limit` does, towards the low-water mark), then
    /// copies one `COMPACTION_STEP` of that segment forward, or deletes it once all is copied
    /// and the log through that moment is durable. Otherwise, once the log written since the
    /// last checkpoint is longer than the checkpoint interval, a step is one half of a
    /// checkpoint (see `checkpoint_step`). A step never syncs: a deletion or checkpoint waiting
    /// for durability asks for it in `sync_through` and waits (a host that cannot sync files
    /// calls `flush` instead, which syncs under its own lock).
    /// Edge cases: a failed step is `Io` and leaves the cache consistent (the next step goes
    /// on); read-only: does nothing, nothing pending; shared without the write lock:
    /// `NeedsLock`.
    pub fn maintain(&mut self, durable_through: u64) -> Result<Maintenance> {
        if self.options.read_only {
            return Ok(Maintenance::default());
        }
        self.writable()?;
        self.mark_durable(durable_through);
        let low_water = self.low_water();
        if self.compaction.is_some() || self.volume() > low_water {
            if self.compaction.is_none() {
                let mut swept = false;
                let slack = self.options.size_limit / 16;
                self.make_room(low_water, slack, &mut swept);
            }
            self.compact_step(true)?;
        } else if self.pending_checkpoint.is_some() || self.checkpoint_due() {
            self.checkpoint_step()?;
        }
        Ok(self.maintenance())
    }

    /// What `maintain` has to do now (no file is touched). Edge case: read-only: nothing.
    pub fn maintenance(&self) -> Maintenance {
        if self.options.read_only {
            return Maintenance::default();
        }
        let waits = |at: u64| self.durable_seq < at;
        let waiting = self.compaction.and_then(|c| c.ready).is_some_and(waits)
            || self.pending_checkpoint.is_some_and(|p| waits(p.at));
        let pending = waiting
            || self.compaction.is_some()
            || self.pending_checkpoint.is_some()
            || (self.volume() > self.low_water() && self.segments.len() > 1)
            || self.checkpoint_due();
        Maintenance {
            pending,
            sync_through: waiting.then_some(self.log_seq),
        }
    }

    /// The log written since the last checkpoint is longer than the checkpoint interval: the
    /// larger of 8 MiB and the snapshot itself, so that checkpoints never write more than the
    /// log they save replaying (and replaying 8 MiB takes milliseconds).
    fn checkpoint_due(&self) -> bool {
        self.written_since_checkpoint >= self.checkpoint_interval.max(self.snapshot_len)
    }

    /// Evicts expired, then least recently used entries until compacting would bring the
    /// volume to `target` with a tenth of the limit to spare (so that compaction runs once per
    /// many writes, not on every one). Never evicts the most recent entry.
    fn make_room(&mut self, target: u64, slack: u64, swept: &mut bool) {
        let Some(excess) = self.volume().checked_sub(target) else {
            return;
        };
        // Saturating: live bytes counted from a crafted snapshot's summaries may exceed them.
        let mut dead = self.log_bytes.saturating_sub(self.index.live_bytes());
        if dead < excess + slack && !*swept {
            // Expired entries go before any live one is evicted.
            *swept = true;
            self.expire();
            dead = self.log_bytes.saturating_sub(self.index.live_bytes());
        }
        if dead < excess + slack {
            while dead < excess + slack && self.index.len() > 1 {
                if let Some((_, slot)) = self.index.pop_lru() {
                    dead += u64::from(slot.len);
                    self.evicted += 1;
                }
            }
            self.snapshot_stale = true;
        }
    }

    /// Compacts the oldest segments until none is older than `id`: after damage, so that the
    /// records older than the damage are gone for good. The damaged records may have been
    /// overwrites or deletes; the index already forgot what they changed (the snapshot or the
    /// replay says which entries are live), and without this a later replay of the whole log
    /// would find the older records again.
    pub(super) fn compact_before(&mut self, id: u32) -> Result<()> {
        while self
            .segments
            .keys()
            .next()
            .is_some_and(|&oldest| oldest < id)
        {
            self.compact_oldest()?;
        }
        Ok(())
    }

    /// Compacts the oldest segment to the end (finishing a compaction in progress).
    fn compact_oldest(&mut self) -> Result<()> {
        while !self.compact_step(false)? {}
        Ok(())
    }

    /// One step of compacting the oldest segment: copies the live records of the next
    /// `COMPACTION_STEP` bytes to the active segment, or, when none are left, deletes the
    /// segment; true once it is deleted.
    ///
    /// Between steps other writes may supersede records not yet copied (they are then dead
    /// and skipped) or ones already copied (the copy is then dead): the index decides at each
    /// step. Before the deletion the log is synced if the segment held a live record (now
    /// copied) or one a write not yet synced superseded; the deletion is synced before the
    /// next one. So a power cut never loses a key's only copy, nor both its newer and older
    /// records, nor deletes segments out of order. With `defer` the step syncs nothing: it
    /// deletes only once the log through the moment all was copied is durable (see
    /// `mark_durable`), which covers all of the above, and waits until then.
    fn compact_step(&mut self, defer: bool) -> Result<bool> {
        let Some(&oldest) = self.segments.keys().next() else {
            self.compaction = None;
            return Ok(true);
        };
        if oldest == self.active {
            self.roll()?;
        }
        let mut state = match self.compaction.take() {
            Some(state) if state.segment == oldest => state,
            _ => Compaction {
                segment: oldest,
                next: self.data_start(oldest),
                copied: false,
                ready: None,
            },
        };
        let size = self.segments.get(&oldest).map_or(0, |s| s.size);
        if self.index.live_in(oldest) > 0 && state.next < size {
            let (batch, keys, next) = self.copy_step(oldest, state.next, size)?;
            if defer && self.volume() + batch.len() as u64 > self.options.size_limit {
                // No room for the copies while the segment waits for its deferred deletion
                // (the background fell behind the writes): finish this compaction now, as a
                // write at the limit does, syncing under the lock.
                self.compaction = Some(state);
                self.compact_oldest()?;
                return Ok(true);
            }
            if !batch.is_empty() {
                let (segment, base) = self.append(&batch)?;
                for (key, at) in keys {
                    self.index.relocate(&key, segment, base + at as u32);
                }
                state.copied = true;
            }
            state.next = next;
            if next < size {
                self.compaction = Some(state);
                return Ok(false);
            }
        }
        // Entries whose records did not decode cannot be read back: they are misses now.
        if self.index.live_in(oldest) > 0 {
            self.index.retain(|_, slot| slot.segment != oldest);
        }
        // The copies, the name of a segment a roll created for them, and the later writes that
        // made this segment's records dead are durable before the deletion can be — else a
        // power cut could take a key's newer record and its older one both.
        if defer {
            let ready = *state.ready.get_or_insert(self.log_seq);
            if self.durable_seq < ready {
                self.compaction = Some(state);
                return Ok(false);
            }
        } else if state.copied
            || self.bulk_delete_unsynced
            || self.superseded_unsynced.contains(&oldest)
        {
            if let Err(e) = self.sync_log() {
                self.compaction = Some(state);
                return Err(e);
            }
        } else if let Err(e) = self.sync_dir() {
            // An earlier deferred deletion is durable before this one.
            self.compaction = Some(state);
            return Err(e);
        }
        self.superseded_unsynced.remove(&oldest);
        self.delete_segment(oldest)?;
        if !defer {
            self.sync_dir()?;
        }
        Ok(true)
    }

    /// The live records of segment `id` from `from` on, about `COMPACTION_STEP` bytes of it:
    /// the bytes to append (expiries a touch changed rewritten), each key with its offset in
    /// them, and where the next step starts (`size` when the segment is done).
    #[allow(clippy::type_complexity)]
    fn copy_step(
        &self,
        id: u32,
        from: u64,
        size: u64,
    ) -> Result<(Vec<u8>, Vec<(String, usize)>, u64)> {
        let mut batch: Vec<u8> = Vec::new();
        let mut keys: Vec<(String, usize)> = Vec::new();
        let Some(segment) = self.segments.get(&id) else {
            return Ok((batch, keys, size));
        };
        let index = &self.index;
        let stop_at = from.saturating_add(self.compaction_step);
        let end = scan_records(
            &segment.file,
            size,
            from,
            self.options.size_limit,
            // Damage (or a torn write): look for the next record that decodes, as replay does,
            // so live records after it are copied too.
            OnFailure::Resync,
            |at, rec| {
                let live_slot = index
                    .get(rec.key)
                    .filter(|s| rec.kind == RecordKind::Put && s.segment == id)
                    .filter(|s| u64::from(s.offset) == at);
                if let Some(slot) = live_slot {
                    keys.push((rec.key.to_owned(), batch.len()));
                    if slot.expires_at == rec.expires_at {
                        batch.extend_from_slice(rec.raw);
                    } else {
                        // A touch changed the expiry; its record will not outlive this copy.
                        encode_record(
                            &mut batch,
                            RecordKind::Put,
                            rec.key,
                            rec.value,
                            slot.expires_at,
                        );
                    }
                }
                if at + rec.len as u64 >= stop_at {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .map_err(|e| io_err("read", &format::segment_file_name(id), e))?;
        Ok((batch, keys, end.stopped_at.unwrap_or(size)))
    }
}
