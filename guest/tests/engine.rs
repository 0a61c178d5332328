//! Native tests of the engine on real directories (std::fs storage, manual clock).

mod common;

use common::{bytes_on_disk, open_with, segment_paths, TestEngine, T0};
use persistent_cache_guest::format::{self, RecordKind};
use persistent_cache_guest::storage::StdStorage;
use persistent_cache_guest::{Engine, EngineOptions, Error, ManualClock};
use std::collections::HashMap;
use std::fs;
use std::path::Path;

fn open(dir: &Path, clock: &ManualClock) -> TestEngine {
    open_with(dir, clock, 1 << 30)
}

fn get(e: &mut TestEngine, key: &str) -> Option<Vec<u8>> {
    e.get(key).unwrap()
}

#[test]
fn set_get_overwrite_delete_and_persist_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let mut e = open(dir.path(), &clock);
    assert_eq!(get(&mut e, "missing"), None);
    e.set("user:123", b"John", None).unwrap();
    e.set("user:456", b"Jane", None).unwrap();
    e.set("user:123", b"Johnny", None).unwrap();
    assert_eq!(get(&mut e, "user:123").as_deref(), Some(&b"Johnny"[..]));
    assert!(e.delete("user:456").unwrap());
    assert!(!e.delete("user:456").unwrap());
    e.set("../../etc/passwd", b"just a key", None).unwrap();
    let stats = e.stats();
    assert_eq!((stats.entries, stats.hits, stats.misses), (2, 1, 1));
    e.close().unwrap();

    let mut e = open(dir.path(), &clock);
    assert_eq!(get(&mut e, "user:123").as_deref(), Some(&b"Johnny"[..]));
    assert_eq!(get(&mut e, "user:456"), None);
    assert_eq!(
        get(&mut e, "../../etc/passwd").as_deref(),
        Some(&b"just a key"[..])
    );
    assert_eq!(e.stats().entries, 2);
    drop(e); // no close: the next open replays the log instead of trusting the snapshot
    let mut e = open(dir.path(), &clock);
    assert_eq!(get(&mut e, "user:123").as_deref(), Some(&b"Johnny"[..]));
    // The path-like key is only a record: the directory holds nothing but the engine's files.
    for entry in fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            name.ends_with(".seg") || name == format::HINT_FILE || name == format::META_FILE,
            "unexpected {name}"
        );
    }
}

#[test]
fn ttl_expires_entries_and_stays_expired_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let mut e = open(dir.path(), &clock);
    e.set("short", b"1", Some(1_000)).unwrap();
    e.set("long", b"2", Some(60_000)).unwrap();
    e.set("forever", b"3", None).unwrap();
    e.set("zero", b"4", Some(0)).unwrap();
    assert_eq!(get(&mut e, "zero"), None);
    clock.advance(999);
    assert!(get(&mut e, "short").is_some());
    clock.advance(1);
    assert_eq!(get(&mut e, "short"), None);
    assert!(!e.delete("short").unwrap());
    e.close().unwrap();

    clock.advance(60_000);
    let mut e = open(dir.path(), &clock);
    assert_eq!(get(&mut e, "long"), None);
    assert_eq!(get(&mut e, "forever").as_deref(), Some(&b"3"[..]));
    // An overwrite without TTL clears the old TTL.
    e.set("long", b"again", None).unwrap();
    clock.advance(10_000_000);
    assert!(get(&mut e, "long").is_some());
}

#[test]
fn keys_and_values_out_of_bounds_are_rejected_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let mut e = open_with(dir.path(), &clock, 64 * 1024);
    e.set("k", b"v", None).unwrap();
    let before = e.stats();
    assert!(matches!(e.set("", b"v", None), Err(Error::InvalidKey(_))));
    assert!(matches!(e.get(""), Err(Error::InvalidKey(_))));
    let long = "x".repeat(4097);
    assert!(matches!(
        e.set(&long, b"v", None),
        Err(Error::InvalidKey(_))
    ));
    e.set(&"x".repeat(4096), b"v", None).unwrap();
    e.delete(&"x".repeat(4096)).unwrap();
    let huge = vec![0u8; 64 * 1024];
    match e.set("huge", &huge, None) {
        Err(Error::ValueTooLarge { size, limit }) => assert!(size > limit && limit == 64 * 1024),
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert_eq!(get(&mut e, "k").as_deref(), Some(&b"v"[..]));
    assert_eq!(e.stats().entries, before.entries);
}

#[test]
fn lru_evicts_least_recently_used_not_least_recently_stored() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let limit = 100 * 1024;
    let mut e = open_with(dir.path(), &clock, limit);
    let value = vec![7u8; 1000];
    for i in 0..50 {
        e.set(&format!("k{i}"), &value, None).unwrap();
    }
    assert!(get(&mut e, "k0").is_some()); // k0 is now the most recently used
    let mut i = 50;
    while e.stats().entries == i {
        e.set(&format!("k{i}"), &value, None).unwrap();
        i += 1;
        assert!(i < 1000, "nothing was ever evicted");
    }
    assert!(
        get(&mut e, "k1").is_none(),
        "k1 was the least recently used"
    );
    assert!(
        get(&mut e, "k0").is_some(),
        "k0 was read recently and must survive"
    );
    assert!(e.stats().volume <= limit);
}

#[test]
fn recency_survives_a_clean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let limit = 100 * 1024;
    let value = vec![1u8; 1000];
    let mut e = open_with(dir.path(), &clock, limit);
    for i in 0..60 {
        e.set(&format!("k{i}"), &value, None).unwrap();
    }
    assert!(get(&mut e, "k0").is_some());
    e.close().unwrap();
    let mut e = open_with(dir.path(), &clock, limit);
    for i in 60..120 {
        e.set(&format!("k{i}"), &value, None).unwrap();
    }
    assert!(get(&mut e, "k1").is_none(), "k1 was least recently used");
    assert!(
        get(&mut e, "k0").is_some(),
        "k0's read before close must count"
    );
}

#[test]
fn volume_stays_under_the_limit_and_matches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let limit = 256 * 1024;
    let mut e = open_with(dir.path(), &clock, limit);
    let mut written = 0u64;
    let mut i = 0u64;
    while written < 5 * limit {
        let value = vec![(i % 251) as u8; 100 + (i as usize * 37) % 3000];
        e.set(&format!("key-{}", i % 400), &value, None).unwrap();
        if i.is_multiple_of(7) {
            e.delete(&format!("key-{}", (i * 13) % 400)).unwrap();
        }
        written += value.len() as u64;
        let s = e.stats();
        assert!(
            s.volume <= limit,
            "volume {} > limit {limit} after set {i}",
            s.volume
        );
        assert_eq!(
            s.volume,
            bytes_on_disk(dir.path()),
            "volume must be the real disk use"
        );
        i += 1;
    }
    e.close().unwrap();
    assert!(bytes_on_disk(dir.path()) <= limit);
    // Every surviving entry still reads back its own value.
    let mut e = open_with(dir.path(), &clock, limit);
    for k in 0..400u64 {
        if let Some(v) = get(&mut e, &format!("key-{k}")) {
            assert!(v.iter().all(|b| *b == v[0]));
        }
    }
}

#[test]
fn clear_removes_everything_and_survives_a_crash_before_deleting_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let mut e = open(dir.path(), &clock);
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
    fs::remove_file(dir.path().join(format::HINT_FILE)).ok();
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
    let clock = ManualClock::at(T0);
    let mut full = Vec::new();
    format::encode_record(&mut full, RecordKind::Put, "torn", &[5u8; 500], 0);
    for cut in [1, 10, 23, 24, 100, full.len() - 1] {
        let dir = tempfile::tempdir().unwrap();
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
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    // Small segments: 64 KiB limit → 8 KiB segments.
    let limit = 64 * 1024;
    let mut e = open_with(dir.path(), &clock, limit);
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
                assert_eq!(
                    get(&mut e, "victim"),
                    None,
                    "{damage} at {pos} of segment {si}"
                );
                for i in 0..20 {
                    if let Some(v) = get(&mut e, &format!("fill{i}")) {
                        let want = if i < 10 { 1 } else { 2 };
                        assert_eq!(v, vec![want; 1000], "{damage} at {pos} of segment {si}");
                    }
                }
            }
        }
    }
}

#[test]
fn a_damaged_snapshot_falls_back_to_replaying_the_log() {
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(dir.path(), &clock);
    for i in 0..100 {
        e.set(&format!("k{i}"), format!("v{i}").as_bytes(), None)
            .unwrap();
    }
    e.close().unwrap();
    let hint = dir.path().join(format::HINT_FILE);
    let mut bytes = fs::read(&hint).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&hint, &bytes).unwrap();
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
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    let mut e = open_with(dir.path(), &clock, 64 * 1024);
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
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    open(dir.path(), &clock).close().unwrap();
    assert_eq!(fs::read(dir.path().join("notes.txt")).unwrap(), b"mine");

    let meta_path = dir.path().join(format::META_FILE);
    let mut meta = fs::read(&meta_path).unwrap();
    meta[8..12].copy_from_slice(&(format::FORMAT_VERSION + 1).to_le_bytes());
    let crc = crc32(&meta[..12]);
    meta[12..].copy_from_slice(&crc.to_le_bytes());
    fs::write(&meta_path, &meta).unwrap();
    let err = Engine::open(
        StdStorage::new(dir.path()).unwrap(),
        clock.clone(),
        EngineOptions::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, Error::IncompatibleFormat(_)), "{err}");

    fs::write(&meta_path, b"garbage").unwrap();
    let err = Engine::open(
        StdStorage::new(dir.path()).unwrap(),
        clock.clone(),
        EngineOptions::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
}

fn crc32(bytes: &[u8]) -> u32 {
    // The metadata checksum is crc32 (IEEE); recompute it the slow, obvious way.
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A small xorshift generator: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_operations_match_a_model_across_reopens() {
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    // Large limit: nothing is evicted, so the model is exact.
    let mut e = open(dir.path(), &clock);
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
            _ => {
                if rng.below(4) == 0 {
                    e.close().unwrap();
                } else {
                    drop(e);
                }
                e = open(dir.path(), &clock);
            }
        }
        if step % 1000 == 999 {
            e.clear().unwrap();
            model.clear();
        }
    }
}

use persistent_cache_guest::Clock;

#[test]
fn random_operations_under_eviction_never_return_a_wrong_value() {
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    let limit = 48 * 1024;
    let mut e = open_with(dir.path(), &clock, limit);
    // The latest value written for each key; None after a delete.
    let mut model: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for step in 0..20_000 {
        let key = format!("k{}", rng.below(200));
        match rng.below(10) {
            0..=4 => {
                let value = vec![rng.next() as u8; rng.below(2_000) as usize];
                e.set(&key, &value, None).unwrap();
                model.insert(key, Some(value));
            }
            5..=7 => {
                if let Some(got) = e.get(&key).unwrap() {
                    assert_eq!(
                        Some(&Some(got)),
                        model.get(&key),
                        "step {step}: wrong value"
                    );
                }
            }
            8 => {
                e.delete(&key).unwrap();
                model.insert(key, None);
            }
            _ if rng.below(20) == 0 => {
                drop(e);
                e = open_with(dir.path(), &clock, limit);
            }
            _ => {}
        }
        let volume = e.stats().volume;
        assert!(volume <= limit, "step {step}: volume {volume} > {limit}");
    }
}

#[test]
fn keys_are_listed_by_prefix_in_pages_without_expired_ones() {
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(dir.path(), &clock);
    for i in (0..250).rev() {
        e.set(&format!("user:{i:03}"), b"u", None).unwrap();
    }
    e.set("file:a", b"f", None).unwrap();
    e.set("user:ttl", b"t", Some(10)).unwrap();
    assert_eq!(e.keys("file:", None, 10), vec!["file:a".to_string()]);
    assert_eq!(e.keys("user:ttl", None, 10).len(), 1);
    clock.advance(10);
    assert!(e.keys("user:ttl", None, 10).is_empty());
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = e.keys("user:", after.as_deref(), 100);
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        all.extend(page);
    }
    let want: Vec<String> = (0..250).map(|i| format!("user:{i:03}")).collect();
    assert_eq!(all, want);
    assert_eq!(e.keys("", None, 0), Vec::<String>::new());
    assert_eq!(e.keys("", None, 1000).len(), 251);
}

#[test]
fn add_touch_pop_and_incr_behave_and_persist() {
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(dir.path(), &clock);
    assert!(e.add("k", b"first", None).unwrap());
    assert!(!e.add("k", b"second", None).unwrap());
    assert_eq!(get(&mut e, "k").as_deref(), Some(&b"first"[..]));
    // An expired entry counts as absent for add.
    e.set("old", b"x", Some(10)).unwrap();
    clock.advance(10);
    assert!(e.add("old", b"new", None).unwrap());
    assert_eq!(get(&mut e, "old").as_deref(), Some(&b"new"[..]));

    // touch: missing → false; sets, then clears, the TTL without rewriting the value.
    assert!(!e.touch("missing", Some(100)).unwrap());
    assert!(e.touch("k", Some(100)).unwrap());
    clock.advance(99);
    assert!(e.touch("k", None).unwrap());
    clock.advance(1_000_000);
    assert_eq!(get(&mut e, "k").as_deref(), Some(&b"first"[..]));
    assert!(e.touch("k", Some(50)).unwrap());

    // pop returns and removes in one step.
    assert_eq!(e.pop("old").unwrap().as_deref(), Some(&b"new"[..]));
    assert_eq!(e.pop("old").unwrap(), None);
    assert_eq!(get(&mut e, "old"), None);

    // incr: default, then add; a negative delta; persisted as a CBOR integer.
    assert_eq!(e.incr("hits", 1, 0, None).unwrap(), 1);
    assert_eq!(e.incr("hits", 41, 0, None).unwrap(), 42);
    assert_eq!(e.incr("down", -5, 100, None).unwrap(), 95);
    assert_eq!(get(&mut e, "hits").unwrap(), [0x18, 42]);

    // Crash (no close): everything above comes back from the log.
    drop(e);
    let mut e = open(dir.path(), &clock);
    assert_eq!(get(&mut e, "old"), None);
    assert_eq!(e.incr("hits", 0, 0, None).unwrap(), 42);
    assert_eq!(e.incr("down", 0, 0, None).unwrap(), 95);
    clock.advance(49);
    assert_eq!(get(&mut e, "k").as_deref(), Some(&b"first"[..]));
    clock.advance(1);
    assert_eq!(
        get(&mut e, "k"),
        None,
        "the TTL set by the last touch applies"
    );
}

#[test]
fn incr_refuses_non_counters_and_overflow_and_changes_nothing() {
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(dir.path(), &clock);
    e.set("text", &[0x61, b'a'], None).unwrap();
    assert!(matches!(
        e.incr("text", 1, 0, None),
        Err(Error::NotACounter(_))
    ));
    assert_eq!(get(&mut e, "text").unwrap(), [0x61, b'a']);
    assert_eq!(e.incr("max", i64::MAX, 0, None).unwrap(), i64::MAX);
    assert!(matches!(
        e.incr("max", 1, 0, None),
        Err(Error::CounterOverflow(_))
    ));
    assert_eq!(e.incr("max", 0, 0, None).unwrap(), i64::MAX);
    assert!(matches!(
        e.incr("min", -1, i64::MIN, None),
        Err(Error::CounterOverflow(_))
    ));
    assert_eq!(get(&mut e, "min"), None, "a failed incr creates nothing");
    // A new counter gets the TTL; an existing one keeps its expiry.
    assert_eq!(e.incr("rate", 1, 0, Some(100)).unwrap(), 1);
    clock.advance(60);
    assert_eq!(e.incr("rate", 1, 0, Some(100)).unwrap(), 2);
    clock.advance(40);
    assert_eq!(
        e.incr("rate", 1, 0, Some(100)).unwrap(),
        1,
        "expired at 100 ms"
    );
}

#[test]
fn a_touched_expiry_survives_compaction_and_crashes() {
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    // A small limit so the segment holding "kept" is compacted many times over.
    let limit = 256 * 1024;
    let mut e = open_with(dir.path(), &clock, limit);
    e.set("kept", b"value", Some(1_000)).unwrap();
    assert!(e.touch("kept", None).unwrap());
    let filler = vec![1u8; 2000];
    for i in 0..2_000 {
        e.set(&format!("filler{i}"), &filler, None).unwrap();
        // Keep "kept" recently used so eviction never takes it.
        assert!(get(&mut e, "kept").is_some(), "step {i}");
    }
    assert!(
        e.stats().evicted > 0,
        "the test must have evicted and compacted"
    );
    let first = segment_paths(dir.path())[0].clone();
    assert!(
        !first.ends_with("0000000001.seg"),
        "segment 1 was compacted"
    );
    drop(e); // crash
    clock.advance(10_000);
    let mut e = open_with(dir.path(), &clock, limit);
    assert_eq!(get(&mut e, "kept").as_deref(), Some(&b"value"[..]));
}

#[test]
fn delete_prefix_and_expire_count_and_persist() {
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(dir.path(), &clock);
    for i in 0..10 {
        e.set(&format!("user:{i}"), b"u", None).unwrap();
        e.set(&format!("file:{i}"), b"f", Some(100)).unwrap();
    }
    e.set("api:x", b"a", None).unwrap();
    assert_eq!(e.delete_prefix("user:").unwrap(), 10);
    assert_eq!(e.delete_prefix("user:").unwrap(), 0);
    assert!(e.keys("user:", None, 100).is_empty());
    assert!(matches!(
        e.delete_prefix(&"p".repeat(4097)),
        Err(Error::InvalidKey(_))
    ));
    assert_eq!(e.expire(), 0);
    clock.advance(100);
    assert_eq!(e.expire(), 10);
    assert_eq!(e.expire(), 0);
    let stats = e.stats();
    assert_eq!((stats.entries, stats.expired), (1, 10));
    drop(e); // crash: the delete-prefix record is replayed
    let mut e = open(dir.path(), &clock);
    assert_eq!(get(&mut e, "user:3"), None);
    assert_eq!(get(&mut e, "api:x").as_deref(), Some(&b"a"[..]));
    assert_eq!(e.delete_prefix("").unwrap(), 1, "the empty prefix clears");
    assert_eq!(e.stats().entries, 0);
}

#[test]
fn delete_prefix_keeps_evicted_entries_from_coming_back_after_a_crash() {
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    let limit = 64 * 1024;
    let mut e = open_with(dir.path(), &clock, limit);
    let value = vec![3u8; 1000];
    let mut i = 0;
    // Fill until eviction starts: old "doomed:" records may still be in the log.
    while e.stats().evicted == 0 {
        e.set(&format!("doomed:{i}"), &value, None).unwrap();
        i += 1;
    }
    e.delete_prefix("doomed:").unwrap();
    drop(e); // crash before any compaction could remove the evicted records
    let mut e = open_with(dir.path(), &clock, limit);
    for j in 0..i {
        assert_eq!(get(&mut e, &format!("doomed:{j}")), None, "doomed:{j}");
    }
}

#[test]
fn expired_entries_go_before_live_ones_are_evicted() {
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    let limit = 100 * 1024;
    let mut e = open_with(dir.path(), &clock, limit);
    let value = vec![5u8; 1000];
    // Least recently used, but live.
    for i in 0..30 {
        e.set(&format!("live{i}"), &value, None).unwrap();
    }
    // More recent, but short-lived.
    for i in 0..40 {
        e.set(&format!("short{i}"), &value, Some(10)).unwrap();
    }
    clock.advance(10);
    // Push the volume past the limit: the expired entries make the room.
    for i in 0..30 {
        e.set(&format!("new{i}"), &value, None).unwrap();
    }
    let stats = e.stats();
    assert!(stats.expired > 0, "{stats:?}");
    assert_eq!(stats.evicted, 0, "{stats:?}");
    for i in 0..30 {
        assert!(get(&mut e, &format!("live{i}")).is_some(), "live{i}");
    }
}

#[test]
fn a_version_1_directory_is_read_and_upgraded() {
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(dir.path(), &clock);
    e.set("k", b"from v1", None).unwrap();
    e.close().unwrap();
    // Version 1 directories hold the same records and snapshot, with version 1 in the header.
    let meta_path = dir.path().join(format::META_FILE);
    fs::write(&meta_path, format::encode_meta_version(1)).unwrap();
    let mut e = open(dir.path(), &clock);
    assert_eq!(get(&mut e, "k").as_deref(), Some(&b"from v1"[..]));
    assert_eq!(
        format::decode_meta(&fs::read(&meta_path).unwrap()),
        Ok(format::FORMAT_VERSION)
    );
}

#[test]
fn paging_through_keys_while_they_change_lists_each_surviving_key_once() {
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(dir.path(), &clock);
    for i in 0..1000 {
        e.set(&format!("k:{i:04}"), b"v", None).unwrap();
    }
    e.set("other", b"v", None).unwrap();
    let mut listed: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    let mut deleted_unlisted = Vec::new();
    loop {
        let page = e.keys("k:", after.as_deref(), 64);
        if page.is_empty() {
            break;
        }
        pages += 1;
        after = page.last().cloned();
        listed.extend(page);
        // Between pages: delete keys not listed yet, overwrite some, add new ones.
        let doomed = format!("k:{:04}", 999 - pages);
        if !listed.contains(&doomed) {
            deleted_unlisted.push(doomed.clone());
        }
        e.delete(&doomed).unwrap();
        e.set(&format!("k:{:04}", 500 + pages), b"w", None).unwrap();
        e.set(&format!("k:new{pages}"), b"n", None).unwrap();
    }
    assert!(deleted_unlisted.len() > 5);
    let mut sorted = listed.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(listed, sorted, "sorted, each key once");
    for i in 0..1000 {
        let key = format!("k:{i:04}");
        let deleted = deleted_unlisted.contains(&key);
        assert_eq!(listed.contains(&key), !deleted, "{key}");
    }
    assert!(!listed.iter().any(|k| k == "other"));
    // A fresh listing sees the keys added meanwhile, and a restarted cursor works.
    let all = e.keys("k:", None, 10_000);
    assert!(all.iter().any(|k| k == "k:new1"));
    let from_start = e.keys("k:", Some("k:"), 3);
    assert_eq!(from_start, all[..3]);
    let later = e.keys("k:", Some(&all[100]), 2);
    assert_eq!(later, all[101..103]);
    let earlier = e.keys("k:", Some(&all[10]), 2);
    assert_eq!(earlier, all[11..13]);
}

#[test]
fn contains_answers_from_the_index_without_a_hit_or_a_use() {
    let clock = ManualClock::at(T0);
    let dir = tempfile::tempdir().unwrap();
    let mut e = open_with(dir.path(), &clock, 100 * 1024);
    let value = vec![1u8; 1000];
    e.set("first", &value, None).unwrap();
    e.set("short", b"v", Some(10)).unwrap();
    for i in 0..60 {
        e.set(&format!("k{i}"), &value, None).unwrap();
    }
    assert!(e.contains("first").unwrap());
    assert!(!e.contains("missing").unwrap());
    assert!(matches!(e.contains(""), Err(Error::InvalidKey(_))));
    clock.advance(10);
    assert!(!e.contains("short").unwrap(), "expired");
    let stats = e.stats();
    assert_eq!((stats.hits, stats.misses), (0, 0));
    // Had `contains` made "first" recently used, the first eviction would spare it.
    let mut i = 60;
    while e.stats().evicted == 0 {
        e.set(&format!("k{i}"), &value, None).unwrap();
        i += 1;
        assert!(i < 1000, "nothing was evicted");
    }
    assert!(
        !e.contains("first").unwrap(),
        "still the least recently used"
    );
}
