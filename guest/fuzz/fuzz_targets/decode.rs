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
    let _ = format::decode_meta(data);
});
