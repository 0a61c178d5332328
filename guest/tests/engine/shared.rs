//! Several engines on one directory (`EngineOptions::shared`), as several processes run them:
//! each writes only while it "holds the write lock" (`set_write_locked`, which the host takes
//! for real with `flock`), and catches up with the others' writes before acting. Calls are
//! interleaved on one thread here, which is every interleaving of whole calls; what two
//! processes do at the same instant is tested end to end in `tests/tests/shared.rs`.

use crate::common::{bytes_on_disk, open_shared, scratch_dir, segment_paths, Rng, TestEngine, T0};
use persistent_cache_guest::{Error, ManualTime};
use std::collections::BTreeMap;
use std::io::Write;

type Shared = TestEngine;

/// Runs `f` on `e` holding the write lock, as the host runs a writing call.
fn locked<R>(e: &mut Shared, f: impl FnOnce(&mut Shared) -> R) -> R {
    // Told that others wrote: the fast path (nobody did) is covered end to end.
    e.set_write_locked(true, true).unwrap();
    let result = f(e);
    e.set_write_locked(false, false).unwrap();
    result
}

/// Runs `f` on `e` holding the write lock when the host saw no other process write since
/// `e` last looked (as after a writer that crashed before bumping the generation).
fn locked_unannounced<R>(e: &mut Shared, f: impl FnOnce(&mut Shared) -> R) -> R {
    e.set_write_locked(true, false).unwrap();
    let result = f(e);
    e.set_write_locked(false, false).unwrap();
    result
}

/// A read as the host runs it after another process wrote: catch up, then read.
fn read(e: &mut Shared, key: &str) -> Option<Vec<u8>> {
    e.catch_up().unwrap();
    e.get(key).unwrap()
}

#[test]
fn each_engine_reads_what_the_other_wrote_after_catching_up() {
    let dir = scratch_dir();
    let clock = ManualTime::at(T0);
    let mut a = open_shared(dir.path(), &clock, 64 << 20);
    let mut b = open_shared(dir.path(), &clock, 64 << 20);

    locked(&mut a, |a| a.set("k", b"from a", None)).unwrap();
    assert_eq!(read(&mut b, "k").as_deref(), Some(&b"from a"[..]));
    locked(&mut b, |b| b.set("k", b"from b", None)).unwrap();
    assert_eq!(read(&mut a, "k").as_deref(), Some(&b"from b"[..]));

    // Every kind of record crosses over.
    locked(&mut a, |a| {
        a.set("gone", b"1", None).unwrap();
        a.set("p:1", b"1", None).unwrap();
        a.set("p:2", b"2", None).unwrap();
        a.set("ttl", b"t", None).unwrap();
    });
    locked(&mut b, |b| {
        assert!(b.delete("gone").unwrap());
        assert_eq!(b.delete_prefix("p:").unwrap(), 2);
        assert!(b.touch("ttl", Some(1_000)).unwrap());
        assert_eq!(b.incr("n", 5, 0, None).unwrap(), 5);
    });
    a.catch_up().unwrap();
    assert_eq!(a.get("gone").unwrap(), None);
    assert_eq!(a.get("p:1").unwrap(), None);
    assert_eq!(locked(&mut a, |a| a.incr("n", 1, 0, None)).unwrap(), 6);
    assert_eq!(locked(&mut b, |b| b.incr("n", 1, 0, None)).unwrap(), 7);
    clock.advance(1_001);
    assert_eq!(read(&mut a, "ttl"), None, "b's touch reached a");
    assert_eq!(read(&mut b, "ttl"), None);
    assert_eq!(a.keys("", None, 100), b.keys("", None, 100));
    assert_eq!(a.stats().entries, b.stats().entries);
    assert_eq!(a.stats().volume, b.stats().volume);
}

#[test]
fn writing_without_the_lock_is_refused_and_changes_nothing() {
    let dir = scratch_dir();
    let clock = ManualTime::at(T0);
    let mut a = open_shared(dir.path(), &clock, 64 << 20);
    locked(&mut a, |a| a.set("k", b"v", None)).unwrap();
    let before = a.stats();
    assert_eq!(a.set("k", b"w", None), Err(Error::NeedsLock));
    assert_eq!(a.delete("k"), Err(Error::NeedsLock));
    assert_eq!(a.incr("n", 1, 0, None), Err(Error::NeedsLock));
    assert_eq!(a.clear(), Err(Error::NeedsLock));
    assert_eq!(a.flush(), Err(Error::NeedsLock));
    assert_eq!(a.maintain(0), Err(Error::NeedsLock));
    assert_eq!(a.stats(), before);
    // Reads need no lock.
    assert_eq!(a.get("k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// Two engines take turns writing far more than the limit (so both evict and compact, each
/// deleting segments the other still has open) and reading: neither ever reads a value the
/// model does not allow, both agree on the volume, and the volume is the bytes on disk.
#[test]
fn turns_of_writes_compactions_and_reads_agree_with_a_model() {
    let dir = scratch_dir();
    let clock = ManualTime::at(T0);
    let limit = 256 << 10;
    let mut engines = [
        open_shared(dir.path(), &clock, limit),
        open_shared(dir.path(), &clock, limit),
        open_shared(dir.path(), &clock, limit),
    ];
    for e in &mut engines {
        e.set_compaction_step(8 << 10);
    }
    // key -> the value of its last write (None once deleted). With evictions a get may also
    // miss, but never return anything else.
    let mut model: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    let mut rng = Rng(0x5EED_5EED);
    let mut hits = 0;
    for step in 0..6_000 {
        let who = rng.below(3) as usize;
        let key = format!("k{}", rng.below(200));
        let e = &mut engines[who];
        match rng.below(10) {
            0..=3 => {
                let value = format!("{step}:{}", "x".repeat(rng.below(3000) as usize));
                locked(e, |e| e.set(&key, value.as_bytes(), None)).unwrap();
                model.insert(key, Some(value.into_bytes()));
            }
            4 => {
                locked(e, |e| e.delete(&key)).unwrap();
                model.insert(key, None);
            }
            5 => {
                locked(e, |e| -> Result<(), Error> {
                    while e.maintenance().pending {
                        let through = e.maintenance().sync_through.unwrap_or(0);
                        e.maintain(through)?;
                    }
                    Ok(())
                })
                .unwrap();
            }
            _ => {
                let got = read(e, &key);
                if got.is_some() {
                    hits += 1;
                    let want = model.get(&key).cloned().flatten();
                    // Not `assert_eq!`: the values are kilobytes long.
                    assert!(got == want, "step {step}: engine {who} read a wrong {key}");
                }
            }
        }
    }
    assert!(hits > 500, "only {hits} hits");
    for e in &mut engines {
        e.catch_up().unwrap();
    }
    let volume = engines[0].stats().volume;
    assert!(volume <= limit);
    for e in &engines {
        assert_eq!(e.stats().volume, volume);
    }
    assert_eq!(volume, bytes_on_disk(dir.path()));
}

/// A writer killed in the middle of a write leaves a complete record and a torn one past
/// the log's end. A reader that replayed the complete one stays aligned: the next writer
/// keeps the complete record, cuts only the torn bytes, and appends after it.
#[test]
fn what_a_crashed_writer_left_is_kept_when_whole_and_cut_when_torn() {
    let dir = scratch_dir();
    let clock = ManualTime::at(T0);
    let mut a = open_shared(dir.path(), &clock, 64 << 20);
    let mut reader = open_shared(dir.path(), &clock, 64 << 20);
    locked(&mut a, |a| a.set("before", b"1", None)).unwrap();
    // The crashed writer: one whole record (written by an engine on a copy of the segment,
    // then appended) and half of another.
    let seg = segment_paths(dir.path()).pop().unwrap();
    let len_before = std::fs::metadata(&seg).unwrap().len();
    locked(&mut a, |a| a.set("whole", b"2", None)).unwrap();
    locked(&mut a, |a| a.set("torn", b"3333", None)).unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let whole_end = {
        // a's two records follow `len_before`; keep the first whole and half of the second.
        let second = bytes.len() - (bytes.len() - len_before as usize) / 2;
        second + (bytes.len() - second) / 2
    };
    drop(a);
    // Put the file back as the crash left it: a was never told these writes happened.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(whole_end as u64)
        .unwrap();
    reader.catch_up().unwrap();
    assert_eq!(reader.get("whole").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(reader.get("torn").unwrap(), None);

    let mut next = open_shared(dir.path(), &clock, 64 << 20);
    locked(&mut next, |n| n.set("after", b"4", None)).unwrap();
    // The crashed writer never said it wrote: the next writer notices by the log's length.
    // Another torn write at the very end, then a writer that did not reopen.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&[0xAB; 17])
        .unwrap();
    locked_unannounced(&mut next, |n| n.set("last", b"5", None)).unwrap();
    // A writer that wrote a whole record and crashed before announcing it; a reader that
    // happened to catch up (another writer's announcement) has read it: the next writer must
    // replay it too rather than cut it, or the reader's position would point into its writes.
    let mut crasher = open_shared(dir.path(), &clock, 64 << 20);
    locked(&mut crasher, |c| c.set("ghost", b"6", None)).unwrap();
    drop(crasher);
    reader.catch_up().unwrap();
    locked_unannounced(&mut next, |n| n.set("final", b"7", None)).unwrap();
    for key in ["before", "whole", "after", "last", "ghost", "final"] {
        assert!(read(&mut reader, key).is_some(), "reader lost {key}");
        assert!(next.get(key).unwrap().is_some(), "writer lost {key}");
    }
    assert_eq!(reader.stats().volume, next.stats().volume);
    assert_eq!(next.stats().volume, bytes_on_disk(dir.path()));
}

#[test]
fn an_engine_that_missed_a_whole_rotation_of_the_log_is_stale() {
    let dir = scratch_dir();
    let clock = ManualTime::at(T0);
    let limit = 128 << 10;
    let mut a = open_shared(dir.path(), &clock, limit);
    let mut idle = open_shared(dir.path(), &clock, limit);
    let value = vec![7u8; 2000];
    for i in 0..2_000 {
        locked(&mut a, |a| a.set(&format!("k{}", i % 300), &value, None)).unwrap();
    }
    assert_eq!(idle.catch_up(), Err(Error::Stale));
    // A fresh open sees everything `a` holds (and may find entries `a` evicted but did not
    // compact away yet, as any replay does).
    let mut fresh = open_shared(dir.path(), &clock, limit);
    for key in a.keys("", None, usize::MAX) {
        assert_eq!(fresh.get(&key).unwrap(), a.get(&key).unwrap(), "{key}");
    }
    assert!(fresh.get("k199").unwrap().is_some(), "the last write");
}

#[test]
fn a_clear_by_one_engine_empties_the_other() {
    let dir = scratch_dir();
    let clock = ManualTime::at(T0);
    let mut a = open_shared(dir.path(), &clock, 64 << 20);
    let mut b = open_shared(dir.path(), &clock, 64 << 20);
    locked(&mut a, |a| a.set("k", b"v", None)).unwrap();
    b.catch_up().unwrap();
    locked(&mut a, |a| a.clear()).unwrap();
    // b was appending to a segment the clear deleted: it must reopen, and then sees nothing.
    match b.catch_up() {
        Ok(()) => assert_eq!(b.get("k").unwrap(), None),
        Err(Error::Stale) => {
            let mut b = open_shared(dir.path(), &clock, 64 << 20);
            assert_eq!(b.get("k").unwrap(), None);
        }
        Err(other) => panic!("{other}"),
    }
    locked(&mut a, |a| a.set("k2", b"v2", None)).unwrap();
    let c = open_shared(dir.path(), &clock, 64 << 20);
    assert_eq!(c.stats().entries, 1);
}

/// Damage in the middle of the newest segment (records follow it) is not mistaken for a torn
/// write by the next writer: it reopens, and recovery sets the damaged tail aside (into
/// `damaged/`) instead of destroying it; every engine then goes on without a wrong value.
#[test]
fn damage_in_the_newest_segment_is_set_aside_not_cut_under_other_engines() {
    let dir = scratch_dir();
    let clock = ManualTime::at(T0);
    let mut a = open_shared(dir.path(), &clock, 64 << 20);
    let mut b = open_shared(dir.path(), &clock, 64 << 20);
    locked(&mut a, |a| a.set("r1", b"one", None)).unwrap();
    b.catch_up().unwrap();
    let seg = segment_paths(dir.path()).pop().unwrap();
    let before = std::fs::metadata(&seg).unwrap().len();
    locked(&mut a, |a| {
        a.set("r2", b"two", None).unwrap();
        a.set("r3", b"three", None).unwrap();
    });
    // Flip a byte of r2's record (b has not read it yet).
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[before as usize + 10] ^= 0xFF;
    std::fs::write(&seg, &bytes).unwrap();

    b.catch_up().unwrap();
    assert_eq!(b.get("r2").unwrap(), None, "b stops before the damage");
    assert_eq!(b.set_write_locked(true, true), Err(Error::Stale));
    let mut b = open_shared(dir.path(), &clock, 64 << 20);
    locked(&mut b, |b| b.set("r4", b"four", None)).unwrap();
    assert_eq!(b.get("r1").unwrap().as_deref(), Some(&b"one"[..]));
    assert!(
        dir.path().join("damaged").read_dir().unwrap().count() > 0,
        "the tail was kept"
    );
    // a knew r2 and r3, which are gone: it reopens and never returns a wrong value.
    match a.catch_up() {
        Err(Error::Stale) => a = open_shared(dir.path(), &clock, 64 << 20),
        other => panic!("expected Stale, got {other:?}"),
    }
    for (key, value) in [("r1", &b"one"[..]), ("r4", b"four")] {
        assert_eq!(a.get(key).unwrap().as_deref(), Some(value), "{key}");
    }
    for key in ["r2", "r3"] {
        assert_eq!(a.get(key).unwrap(), None, "{key}");
    }
}

#[test]
fn opening_and_closing_without_changes_writes_nothing() {
    let dir = scratch_dir();
    let clock = ManualTime::at(T0);
    let mut a = open_shared(dir.path(), &clock, 64 << 20);
    for i in 0..16 {
        locked(&mut a, |a| a.set(&format!("k{i}"), b"1", None)).unwrap();
    }
    a.set_write_locked(true, false).unwrap();
    a.close().unwrap();
    // The close wrote the snapshot and announced it with a checkpoint record after the
    // position the snapshot covers: replaying that record at the next open must not make the
    // snapshot stale, or each open-close of the directory would append another.
    let before = bytes_on_disk(dir.path());
    for _ in 0..3 {
        let mut b = open_shared(dir.path(), &clock, 64 << 20);
        // One read of 16 entries: too little recency to rewrite the snapshot for.
        assert_eq!(read(&mut b, "k3").as_deref(), Some(&b"1"[..]));
        b.set_write_locked(true, false).unwrap();
        b.close().unwrap();
        assert_eq!(bytes_on_disk(dir.path()), before);
    }
}
