//! Opening a directory again: clean and crashed reopens, torn writes, damage, old and new formats.

use crate::common::{fresh, get, open, open_with, reopen, segment_paths, Rng, NO_LIMIT, T0};
use persistent_cache_guest::format::{self, RecordKind};
use persistent_cache_guest::storage::StdStorage;
use persistent_cache_guest::{Engine, EngineOptions, Error, ManualTime, TimeSource};
use std::collections::HashMap;
use std::fs;

#[test]
fn clear_removes_everything_and_survives_a_crash_before_deleting_old_segments() {
    let (dir, clock, mut e) = fresh(NO_LIMIT);
    e.set("a", b"1", None).unwrap();
    e.set("b", b"2", None).unwrap();
    e.close().unwrap();
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = segment_paths(dir.path())
        .into_iter()
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();

    let mut e = open(dir.path(), &clock);
    e.clear().unwrap();
    assert_eq!(e.stats().entries, 0);
    assert_eq!(get(&mut e, "a"), None);
    e.set("c", b"3", None).unwrap();
    drop(e);
    // Pretend the crash came before the old segments were deleted.
    for (path, bytes) in &saved {
        fs::write(path, bytes).unwrap();
    }
    fs::remove_file(dir.path().join(format::SNAPSHOT_FILE)).ok();
    let mut e = open(dir.path(), &clock);
    assert_eq!(get(&mut e, "a"), None);
    assert_eq!(get(&mut e, "b"), None);
    assert_eq!(get(&mut e, "c").as_deref(), Some(&b"3"[..]));
    assert!(
        saved.iter().all(|(p, _)| !p.exists()),
        "old segments are deleted at open"
    );
}

#[test]
fn a_torn_last_record_is_dropped_and_earlier_writes_survive() {
    let clock = ManualTime::at(T0);
    let mut full = Vec::new();
    format::encode_record(&mut full, RecordKind::Put, "torn", &[5u8; 500], 0);
    for cut in [1, 10, 23, 24, 100, full.len() - 1] {
        let dir = crate::common::scratch_dir();
        let mut e = open(dir.path(), &clock);
        e.set("a", b"1", None).unwrap();
        e.set("torn", b"old", None).unwrap();
        drop(e);
        let seg = segment_paths(dir.path()).pop().unwrap();
        let good_len = fs::metadata(&seg).unwrap().len();
        let mut bytes = fs::read(&seg).unwrap();
        bytes.extend_from_slice(&full[..cut]);
        fs::write(&seg, &bytes).unwrap();

        let mut e = open(dir.path(), &clock);
        assert_eq!(get(&mut e, "a").as_deref(), Some(&b"1"[..]), "cut {cut}");
        assert_eq!(
            get(&mut e, "torn").as_deref(),
            Some(&b"old"[..]),
            "cut {cut}"
        );
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            good_len,
            "torn bytes truncated"
        );
        e.set("after", b"x", None).unwrap();
        drop(e);
        let mut e = open(dir.path(), &clock);
        assert_eq!(get(&mut e, "after").as_deref(), Some(&b"x"[..]));
    }
}

#[test]
fn damage_never_yields_a_wrong_or_resurrected_value() {
    // Small segments: 64 KiB limit → 8 KiB segments.
    let limit = 64 * 1024;
    let (dir, clock, mut e) = fresh(limit);
    e.set("victim", b"old value", None).unwrap();
    for i in 0..10 {
        e.set(&format!("fill{i}"), &[1u8; 1000], None).unwrap();
    }
    e.delete("victim").unwrap(); // the tombstone lands in a later segment than the put
    for i in 10..20 {
        e.set(&format!("fill{i}"), &[2u8; 1000], None).unwrap();
    }
    drop(e); // no snapshot: open replays every segment
    let segs = segment_paths(dir.path());
    assert!(segs.len() >= 2);
    let original: Vec<Vec<u8>> = segs.iter().map(|p| fs::read(p).unwrap()).collect();
    for (si, seg) in segs.iter().enumerate() {
        let len = original[si].len();
        for pos in (0..len).step_by(97).chain([len.saturating_sub(1)]) {
            for damage in ["flip", "truncate"] {
                for (p, bytes) in segs.iter().zip(&original) {
                    fs::write(p, bytes).unwrap();
                }
                let mut bytes = original[si].clone();
                if damage == "flip" {
                    bytes[pos] ^= 0x40;
                } else {
                    bytes.truncate(pos);
                }
                fs::write(seg, &bytes).unwrap();
                let mut e = open_with(dir.path(), &clock, limit);
                let at = format!("{damage} at {pos} of segment {si}");
                // Nothing was flushed: a lost tombstone may bring back the value it deleted,
                // but never anything else.
                let victim = get(&mut e, "victim");
                assert!(
                    matches!(victim.as_deref(), None | Some(b"old value")),
                    "{at}"
                );
                for i in 0..20 {
                    let key = format!("fill{i}");
                    let want = vec![if i < 10 { 1 } else { 2 }; 1000];
                    // Only entries whose records were in the damaged segment may be lost.
                    let in_damaged = original[si]
                        .windows(key.len() + 1)
                        .any(|w| &w[..key.len()] == key.as_bytes() && w[key.len()] == want[0]);
                    match get(&mut e, &key) {
                        Some(v) => assert_eq!(v, want, "{at}: {key}"),
                        None => assert!(in_damaged, "{at}: {key} lost"),
                    }
                }
            }
        }
    }
}

#[test]
fn a_damaged_snapshot_falls_back_to_replaying_the_log() {
    let (dir, clock, mut e) = fresh(NO_LIMIT);
    for i in 0..100 {
        e.set(&format!("k{i}"), format!("v{i}").as_bytes(), None)
            .unwrap();
    }
    e.close().unwrap();
    let snapshot = dir.path().join(format::SNAPSHOT_FILE);
    let mut bytes = fs::read(&snapshot).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&snapshot, &bytes).unwrap();
    let mut e = open(dir.path(), &clock);
    for i in 0..100 {
        assert_eq!(
            get(&mut e, &format!("k{i}")),
            Some(format!("v{i}").into_bytes())
        );
    }
}

#[test]
fn a_snapshot_plus_an_unclosed_tail_recovers_everything() {
    let (dir, clock, mut e) = fresh(64 * 1024);
    for i in 0..20 {
        e.set(&format!("k{i}"), &[i as u8; 500], None).unwrap();
    }
    e.close().unwrap();
    let mut e = open_with(dir.path(), &clock, 64 * 1024);
    e.delete("k3").unwrap();
    for i in 20..40 {
        e.set(&format!("k{i}"), &[i as u8; 500], None).unwrap();
    }
    e.set("k5", b"new", None).unwrap();
    let expected: HashMap<String, Option<Vec<u8>>> = (0..40)
        .map(|i| format!("k{i}"))
        .map(|k| (k.clone(), e.get(&k).unwrap()))
        .collect();
    drop(e); // crash: the snapshot on disk is older than the log
    let mut e = open_with(dir.path(), &clock, 64 * 1024);
    for (k, v) in &expected {
        assert_eq!(&e.get(k).unwrap(), v, "{k}");
    }
    assert_eq!(get(&mut e, "k3"), None);
}

#[test]
fn newer_formats_and_damaged_metadata_are_refused_and_unknown_files_kept() {
    let clock = ManualTime::at(T0);
    let dir = crate::common::scratch_dir();
    fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    open(dir.path(), &clock).close().unwrap();
    assert_eq!(fs::read(dir.path().join("notes.txt")).unwrap(), b"mine");

    let meta_path = dir.path().join(format::META_FILE);
    fs::write(
        &meta_path,
        format::encode_meta_version(format::FORMAT_VERSION + 1),
    )
    .unwrap();
    let open_error = || {
        let storage = StdStorage::new(dir.path()).unwrap();
        Engine::open(storage, clock.clone(), EngineOptions::default()).err()
    };
    let err = open_error();
    assert!(matches!(err, Some(Error::IncompatibleFormat(_))), "{err:?}");

    fs::write(&meta_path, b"garbage").unwrap();
    let err = open_error();
    assert!(matches!(err, Some(Error::Corrupt(_))), "{err:?}");
}

/// Writes a version `version` (1 or 2) directory by hand: headerless segments holding
/// `segments`' records, the 16-byte metadata file, no snapshot.
fn legacy_directory(
    dir: &std::path::Path,
    version: u32,
    segments: &[&[(RecordKind, &str, &[u8])]],
) {
    fs::write(
        dir.join(format::META_FILE),
        format::encode_meta_version(version),
    )
    .unwrap();
    for (i, records) in segments.iter().enumerate() {
        let mut bytes = Vec::new();
        for (kind, key, value) in records.iter() {
            format::encode_record(&mut bytes, *kind, key, value, 0);
        }
        fs::write(dir.join(format::segment_file_name(i as u32 + 1)), bytes).unwrap();
    }
}

#[test]
fn version_1_and_2_directories_are_read_and_upgraded_once() {
    use RecordKind::{Delete, Put, Seal};
    for version in [1, 2] {
        let dir = crate::common::scratch_dir();
        let clock = ManualTime::at(T0);
        legacy_directory(
            dir.path(),
            version,
            &[
                &[
                    (Put, "a", b"1"),
                    (Put, "b", b"2"),
                    (Delete, "b", b""),
                    (Seal, "", b""),
                ],
                &[(Put, "c", b"3"), (Put, "a", b"4")],
            ],
        );
        let meta_path = dir.path().join(format::META_FILE);
        // Read-only reads it as it is and writes nothing.
        let storage = StdStorage::new(dir.path()).unwrap();
        let options = EngineOptions {
            read_only: true,
            ..EngineOptions::default()
        };
        let mut e = Engine::open(storage, clock.clone(), options).unwrap();
        assert_eq!(get(&mut e, "a").as_deref(), Some(&b"4"[..]));
        drop(e);
        assert_eq!(
            fs::read(&meta_path).unwrap(),
            format::encode_meta_version(version)
        );

        let mut e = open(dir.path(), &clock);
        assert_eq!(get(&mut e, "a").as_deref(), Some(&b"4"[..]));
        assert_eq!(get(&mut e, "b"), None);
        assert_eq!(get(&mut e, "c").as_deref(), Some(&b"3"[..]));
        let meta = format::decode_meta(&fs::read(&meta_path).unwrap()).unwrap();
        assert_eq!(meta.version, format::FORMAT_VERSION);
        assert_eq!(meta.first_headed_segment, 3, "new segments get headers");
        e.set("d", b"5", None).unwrap();
        e.close().unwrap();
        let header = fs::read(dir.path().join(format::segment_file_name(3))).unwrap();
        assert_eq!(
            format::check_segment_header(&header, 3, meta.cache_id),
            Ok(())
        );
        // The old segments are still read (without headers), and the upgrade happens once.
        let mut e = open(dir.path(), &clock);
        for (key, value) in [("a", "4"), ("c", "3"), ("d", "5")] {
            assert_eq!(get(&mut e, key).as_deref(), Some(value.as_bytes()), "{key}");
        }
        assert_eq!(get(&mut e, "b"), None);
        assert_eq!(e.stats().damaged, 0);
        e.close().unwrap();
        assert_eq!(
            format::decode_meta(&fs::read(&meta_path).unwrap()).unwrap(),
            meta
        );
    }
}

#[test]
fn random_operations_match_a_model_across_reopens() {
    // Large limit: nothing is evicted, so the model is exact.
    let (dir, clock, mut e) = fresh(NO_LIMIT);
    let mut model: HashMap<String, (Vec<u8>, u64)> = HashMap::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for step in 0..5000 {
        let key = format!("k{}", rng.below(64));
        let now = clock.now_ms();
        let live = |m: &HashMap<String, (Vec<u8>, u64)>, k: &str| {
            m.get(k)
                .filter(|(_, exp)| *exp == 0 || now < *exp)
                .map(|(v, _)| v.clone())
        };
        match rng.below(10) {
            0..=3 => {
                let value: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
                let ttl = (rng.below(4) == 0).then(|| rng.below(5_000));
                e.set(&key, &value, ttl).unwrap();
                model.insert(key, (value, ttl.map_or(0, |t| (now + t).max(1))));
            }
            4..=6 => assert_eq!(e.get(&key).unwrap(), live(&model, &key), "step {step}"),
            7 => {
                let was = live(&model, &key).is_some();
                assert_eq!(e.delete(&key).unwrap(), was, "step {step}");
                model.remove(&key);
            }
            8 => clock.advance(rng.below(2_000)),
            _ => e = reopen(e, rng.below(4) == 0, dir.path(), &clock, NO_LIMIT),
        }
        if step % 1000 == 999 {
            e.clear().unwrap();
            model.clear();
        }
    }
}
