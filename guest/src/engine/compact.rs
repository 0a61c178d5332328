//! The size limit: expiring, evicting least recently used entries, and compacting the oldest
//! segment until the volume fits.

use super::Engine;
use crate::error::Result;
use crate::format::{decode_record, encode_record, RecordKind};
use crate::storage::Storage;
use crate::time::TimeSource;

/// Live records are copied forward in writes of about this many bytes.
const COMPACTION_BATCH: usize = 1 << 20;

impl<S: Storage, T: TimeSource> Engine<S, T> {
    /// Evicts least recently used entries and compacts until the volume fits the limit.
    pub(super) fn enforce_limit(&mut self) -> Result<()> {
        let limit = self.options.size_limit;
        if self.volume() <= limit {
            return Ok(());
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
        if self.volume() > limit && self.snapshot_len > 0 {
            // The last resort: the snapshot only saves time at open (the log alone is right).
            self.remove_snapshot()?;
        }
        Ok(())
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

    /// Copies the live records of the oldest segment to the active one and deletes it. Before
    /// the deletion, the log is synced if the segment held a live record (now copied) or one a
    /// write not yet synced superseded; the deletion is synced before the next one. So a power
    /// cut never loses a key's only copy, nor both its newer and older records, nor deletes
    /// segments out of order.
    fn compact_oldest(&mut self) -> Result<()> {
        let Some(&oldest) = self.segments.keys().next() else {
            return Ok(());
        };
        if oldest == self.active {
            self.roll()?;
        }
        let copies = self.index.live_in(oldest) > 0;
        if copies {
            let data_start = self.data_start(oldest) as usize;
            let data = self.read_segment(oldest)?;
            let mut batch: Vec<u8> = Vec::new();
            let mut batch_keys: Vec<(String, usize)> = Vec::new();
            let mut pos = 0;
            while pos < data.len() {
                let Ok(rec) = decode_record(&data[pos..]) else {
                    // Damage (or a torn write): look for the next record that decodes, as
                    // replay does, so live records after it are copied too.
                    pos += 1;
                    continue;
                };
                let live = rec.kind == RecordKind::Put
                    && self.index.get(rec.key).is_some_and(|s| {
                        s.segment == oldest && s.offset as usize == data_start + pos
                    });
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
                if batch.len() >= COMPACTION_BATCH || (pos >= data.len() && !batch.is_empty()) {
                    self.flush_compaction_batch(&mut batch, &mut batch_keys)?;
                }
            }
            if !batch.is_empty() {
                self.flush_compaction_batch(&mut batch, &mut batch_keys)?;
            }
            // Entries whose records did not decode cannot be read back: they are misses now.
            self.index.retain(|_, slot| slot.segment != oldest);
        }
        // The copies, the name of a segment a roll created for them, and the later writes that
        // made this segment's records dead are durable before the deletion can be — else a
        // power cut could take a key's newer record and its older one both.
        if copies || self.bulk_delete_unsynced || self.superseded_unsynced.contains(&oldest) {
            self.sync_log()?;
        }
        self.superseded_unsynced.remove(&oldest);
        self.delete_segment(oldest)?;
        self.sync_dir()
    }

    /// Appends a batch of copied records and points their keys at the copies.
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
