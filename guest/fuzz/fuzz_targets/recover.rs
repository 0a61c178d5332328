//! Fuzzes recovery: arbitrary bytes as the log segments (and index snapshot) of a directory.
//! Opening either works or returns an error, and every key it recovers reads without panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use persistent_cache_guest::format;
use persistent_cache_guest::storage::StdStorage;
use persistent_cache_guest::{Engine, EngineOptions, ManualTime};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    // A version 2 directory: its segments have no header, so the fuzzer's bytes are records.
    std::fs::write(dir.path().join(format::META_FILE), format::encode_meta_version(2)).unwrap();
    // The first byte splits the input: segment 1, segment 2, and the snapshot.
    let (cut, rest) = data.split_first().unwrap_or((&0, &[]));
    let first = (*cut as usize * rest.len()) / 256;
    let (seg1, tail) = rest.split_at(first);
    let (seg2, snapshot) = tail.split_at(tail.len() / 2);
    std::fs::write(dir.path().join(format::segment_file_name(1)), seg1).unwrap();
    std::fs::write(dir.path().join(format::segment_file_name(2)), seg2).unwrap();
    if snapshot.first().is_some_and(|b| b % 2 == 0) {
        std::fs::write(dir.path().join(format::SNAPSHOT_FILE), &snapshot[1..]).unwrap();
    }
    let options = EngineOptions {
        size_limit: 1 << 20,
        ..EngineOptions::default()
    };
    let storage = StdStorage::new(dir.path()).unwrap();
    let Ok(mut engine) = Engine::open(storage, ManualTime::at(1_700_000_000_000), options) else {
        return;
    };
    for key in engine.keys("", None, 1000) {
        let _ = engine.get(&key);
    }
    let _ = engine.set("after", b"recovery", None);
    let _ = engine.close();
});
