//! Fuzzes the decoders: arbitrary bytes never panic, and whatever decodes re-encodes to the
//! same bytes (so a damaged record can never be read as a different one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use persistent_cache_guest::format;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = format::decode_record(data) {
        let mut again = Vec::new();
        format::encode_record(&mut again, rec.kind, rec.key, rec.value, rec.expires_at);
        assert_eq!(&again[..], &data[..rec.len]);
    }
    // Older versions' snapshots are read but never written: only ours re-encode the same.
    if let Some(snapshot) = format::decode_snapshot(data).filter(|s| s.cache_id.is_some()) {
        let again = format::encode_snapshot(
            snapshot.covered_segment,
            snapshot.covered_offset,
            snapshot.cache_id.unwrap_or_default(),
            snapshot.count,
            snapshot.entries()
                .map(|e| (e.key, e.segment, e.offset, e.len, e.expires_at)),
        );
        assert_eq!(again, data);
    }
    // A table checks only its header, sizes and checksum at decode: reading or looking up any
    // entry of one (fuzzers find checksums only by luck, so also with the checksum made to
    // match) never panics. A crafted table may leave an entry out of every bucket: not found.
    let mut table_bytes = data.to_vec();
    if table_bytes.len() >= 8 {
        let body = table_bytes.len() - 8;
        let hash = xxhash_rust::xxh3::xxh3_64(&table_bytes[..body]);
        table_bytes[body..].copy_from_slice(&hash.to_le_bytes());
    }
    for bytes in [data.to_vec(), table_bytes] {
        if let Some(table) = format::SnapshotTable::decode(bytes) {
            for i in 0..table.len().min(4096) {
                let _ = table.slot(i);
                if let Some(key) = table.key(i) {
                    let _ = table.find(key);
                }
            }
            let _ = table.segments().count();
        }
    }
    let _ = format::decode_meta(data);
});
