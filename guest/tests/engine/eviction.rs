//! The size limit: LRU eviction, compaction, and the volume kept under the limit.

use crate::common::{bytes_on_disk, fresh, get, open_with, reopen, segment_paths, Rng};
use std::collections::HashMap;

#[test]
fn lru_evicts_least_recently_used_not_least_recently_stored() {
    let limit = 100 * 1024;
    let (_dir, _clock, mut e) = fresh(limit);
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
    let limit = 100 * 1024;
    let value = vec![1u8; 1000];
    let (dir, clock, mut e) = fresh(limit);
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

/// A few writes to a big cache must not rewrite its O(entries) snapshot at close either: the
/// next open replays them from the log; past a 64th of the snapshot (at least 64 KiB) of log,
/// the snapshot is rewritten.
#[test]
fn a_few_writes_do_not_rewrite_the_snapshot_and_the_reopen_replays_them() {
    let limit = 64 << 20;
    let (dir, clock, mut e) = fresh(limit);
    for i in 0..5000 {
        e.set(&format!("k{i}"), b"v", None).unwrap();
    }
    e.close().unwrap();
    let snapshot = dir
        .path()
        .join(persistent_cache_guest::format::SNAPSHOT_FILE);
    let written = std::fs::read(&snapshot).unwrap();
    let value = vec![3u8; 1000];
    for round in 0..3 {
        let mut e = open_with(dir.path(), &clock, limit);
        e.set(&format!("new{round}"), &value, None).unwrap();
        assert!(e.delete("k7").unwrap() == (round == 0));
        e.close().unwrap();
        assert!(
            std::fs::read(&snapshot).unwrap() == written,
            "round {round}: rewritten"
        );
    }
    let mut e = open_with(dir.path(), &clock, limit);
    assert_eq!(e.stats().entries, 5002);
    for round in 0..3 {
        assert_eq!(get(&mut e, &format!("new{round}")), Some(value.clone()));
    }
    assert_eq!(get(&mut e, "k7"), None);
    for i in 0..70 {
        e.set(&format!("more{i}"), &value, None).unwrap();
    }
    e.close().unwrap();
    assert!(std::fs::read(&snapshot).unwrap() != written, "70 KB of log");
    let mut e = open_with(dir.path(), &clock, limit);
    assert_eq!(get(&mut e, "more69"), Some(value.clone()));
    assert_eq!(get(&mut e, "k7"), None);
}

/// A read must not write O(entries): the snapshot is rewritten for recency alone only once
/// reads touched an eighth of the entries, and then that recency survives a reopen.
#[test]
fn a_few_reads_do_not_rewrite_the_snapshot_and_many_keep_their_recency() {
    let limit = 100 * 1024;
    let value = vec![1u8; 1000];
    let (dir, clock, mut e) = fresh(limit);
    for i in 0..60 {
        e.set(&format!("k{i}"), &value, None).unwrap();
    }
    e.close().unwrap();
    let snapshot = dir
        .path()
        .join(persistent_cache_guest::format::SNAPSHOT_FILE);
    let written = std::fs::read(&snapshot).unwrap();
    let mut e = open_with(dir.path(), &clock, limit);
    assert!(get(&mut e, "k0").is_some());
    e.close().unwrap();
    assert_eq!(
        std::fs::read(&snapshot).unwrap(),
        written,
        "one read rewrote the snapshot"
    );
    // Eight reads of 60 entries reach the eighth: the recency is written at close.
    let mut e = open_with(dir.path(), &clock, limit);
    for i in 0..8 {
        assert!(get(&mut e, &format!("k{i}")).is_some());
    }
    e.close().unwrap();
    assert_ne!(std::fs::read(&snapshot).unwrap(), written);
    let mut e = open_with(dir.path(), &clock, limit);
    let mut i = 60;
    while e.stats().evicted == 0 {
        e.set(&format!("k{i}"), &value, None).unwrap();
        i += 1;
        assert!(i < 1000, "nothing was ever evicted");
    }
    assert!(get(&mut e, "k8").is_none(), "k8 was least recently used");
    for i in 0..8 {
        assert!(get(&mut e, &format!("k{i}")).is_some(), "k{i} was read");
    }
}

#[test]
fn volume_stays_under_the_limit_and_matches_the_disk() {
    let limit = 256 * 1024;
    let (dir, clock, mut e) = fresh(limit);
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
fn a_touched_expiry_survives_compaction_and_crashes() {
    // A small limit so the segment holding "kept" is compacted many times over.
    let limit = 256 * 1024;
    let (dir, clock, mut e) = fresh(limit);
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
fn delete_prefix_keeps_evicted_entries_from_coming_back_after_a_crash() {
    let limit = 64 * 1024;
    let (dir, clock, mut e) = fresh(limit);
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
    let limit = 100 * 1024;
    let (_dir, clock, mut e) = fresh(limit);
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
fn random_operations_under_eviction_never_return_a_wrong_value() {
    let limit = 48 * 1024;
    let (dir, clock, mut e) = fresh(limit);
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
            _ if rng.below(20) == 0 => e = reopen(e, false, dir.path(), &clock, limit),
            _ => {}
        }
        let volume = e.stats().volume;
        assert!(volume <= limit, "step {step}: volume {volume} > {limit}");
    }
}
