//! Non-blocking mode (slow work refused, nothing changed) and background maintenance
//! (compaction ahead of the limit in bounded steps, periodic checkpoints).

use crate::common::{fresh, get, reopen, scratch_dir, T0};
use persistent_cache_guest::engine::NONBLOCKING_MAX_RECORD;
use persistent_cache_guest::storage::StdStorage;
use persistent_cache_guest::{Engine, EngineOptions, Error, Maintenance, ManualTime};
use std::path::Path;

/// One maintenance step as the host's maintenance thread runs it: when the engine waits for
/// the log to be durable, syncs every file of the directory and then the directory first.
fn step(e: &mut Engine<StdStorage, ManualTime>, dir: &Path) -> Maintenance {
    let durable = match e.maintenance().sync_through {
        Some(position) => {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    std::fs::File::open(path).unwrap().sync_data().unwrap();
                }
            }
            std::fs::File::open(dir).unwrap().sync_all().unwrap();
            position
        }
        None => 0,
    };
    e.maintain(durable).unwrap()
}

#[test]
fn nonblocking_mode_refuses_slow_work_and_changes_nothing() {
    let limit = 2 << 20;
    let (dir, clock, mut e) = fresh(limit);
    e.set_nonblocking(true);

    // A big value is slow work both ways.
    let big = vec![9u8; NONBLOCKING_MAX_RECORD as usize];
    let before = e.stats();
    assert_eq!(e.set("big", &big, None), Err(Error::WouldBlock));
    assert_eq!(e.stats(), before, "a refused write changes nothing");
    assert!(!e.contains("big").unwrap());
    e.set_nonblocking(false);
    e.set("big", &big, None).unwrap();

    // Read back from disk (a new open has nothing in memory): refused, then fine.
    let mut e = reopen(e, true, dir.path(), &clock, limit);
    e.set_nonblocking(true);
    assert_eq!(e.get("big"), Err(Error::WouldBlock));
    assert_eq!((e.stats().hits, e.stats().misses), (0, 0), "not counted");
    e.set_nonblocking(false);
    assert_eq!(get(&mut e, "big").as_deref(), Some(&big[..]));

    // Small writes are fine until one would pass the limit: that one must evict and compact.
    e.set_nonblocking(true);
    let value = vec![1u8; 1000];
    let mut i = 0;
    let refused = loop {
        match e.set(&format!("k{i}"), &value, None) {
            Ok(()) => i += 1,
            Err(Error::WouldBlock) => break format!("k{i}"),
            Err(other) => panic!("{other}"),
        }
        assert!(i < 10_000, "never refused");
    };
    assert!(e.stats().volume <= limit);
    assert_eq!(e.stats().evicted, 0, "nothing was evicted inline");
    assert!(!e.contains(&refused).unwrap());
    e.set_nonblocking(false);
    e.set(&refused, &value, None).unwrap();
    assert!(e.stats().evicted > 0 && e.stats().volume <= limit);
}

#[test]
fn nonblocking_mode_refuses_every_write_when_each_is_synced() {
    let dir = scratch_dir();
    let clock = ManualTime::at(T0);
    let mut e = Engine::open(
        StdStorage::new(dir.path()).unwrap(),
        clock,
        EngineOptions {
            sync_writes: true,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    e.set_nonblocking(true);
    assert_eq!(e.set("k", b"v", None), Err(Error::WouldBlock));
    assert_eq!(e.delete("k"), Err(Error::WouldBlock));
    assert_eq!(e.incr("n", 1, 0, None), Err(Error::WouldBlock));
    // Reads are fine.
    assert_eq!(e.get("k"), Ok(None));
    e.set_nonblocking(false);
    e.set("k", b"v", None).unwrap();
}

/// A writer in non-blocking mode that runs `maintain` whenever it is pending (as the host's
/// maintenance thread does) almost never meets the limit, and each step copies about one
/// compaction step.
#[test]
fn maintenance_keeps_writes_off_the_limit_in_bounded_steps() {
    let limit = 4 << 20;
    let (dir, _clock, mut e) = fresh(limit);
    e.set_compaction_step(64 << 10);
    e.set_nonblocking(true);
    let value = vec![3u8; 1000];
    let (mut refused, mut steps) = (0, 0);
    for i in 0..20_000 {
        let key = format!("k{}", i % 8_000);
        if e.set(&key, &value, None) == Err(Error::WouldBlock) {
            refused += 1;
            e.set_nonblocking(false);
            e.set(&key, &value, None).unwrap();
            e.set_nonblocking(true);
        }
        if i % 64 == 0 {
            while e.maintenance().pending {
                let volume = e.stats().volume;
                step(&mut e, dir.path());
                steps += 1;
                // One step appends at most about one step of copies (or is a checkpoint,
                // which writes the snapshot).
                let len =
                    |name: &str| std::fs::metadata(dir.path().join(name)).map_or(0, |m| m.len());
                let snapshot = len("index.hint").max(len("index.hint.tmp"));
                assert!(e.stats().volume <= volume + (64 << 10) + 4096 + snapshot);
                assert!(e.stats().volume <= limit, "a step passed the limit");
            }
        }
        assert!(e.stats().volume <= limit);
    }
    assert!(steps > 50, "maintenance ran {steps} steps");
    assert!(refused < 20, "{refused} writes met the limit");
    assert!(e.stats().evicted > 0);
}

/// A checkpoint is due after 8 MiB written; after it, a crash loses nothing and the index
/// snapshot covers all but what was written since.
#[test]
fn checkpoints_are_due_after_enough_writes_and_make_them_durable() {
    let limit = 256 << 20;
    let (dir, clock, mut e) = fresh(limit);
    let value = vec![5u8; 4000];
    let mut i = 0;
    while !e.maintenance().pending {
        e.set(&format!("k{i}"), &value, None).unwrap();
        i += 1;
        assert!(i < 10_000, "no checkpoint was ever due");
    }
    // Records of about 4030 bytes: due at 8 MiB written, not before.
    let written = i * 4030;
    assert!(
        (8 << 20..(8 << 20) + 8000).contains(&written),
        "due after {i} writes"
    );
    assert!(!dir.path().join("index.hint").exists());
    // The first step writes the snapshot aside and waits for the log it describes to be
    // durable; a position from before then is not enough.
    let waiting = e.maintain(0).unwrap();
    let position = waiting
        .sync_through
        .expect("the checkpoint waits for a sync");
    assert!(waiting.pending);
    assert_eq!(e.maintain(position - 1).unwrap(), waiting);
    assert!(!dir.path().join("index.hint").exists());
    e.set("during", b"2", None).unwrap();
    let left = step(&mut e, dir.path());
    assert_eq!(left, Maintenance::default(), "the second step checkpoints");
    assert!(dir.path().join("index.hint").exists());
    e.set("after", b"1", None).unwrap();
    // A crash (no close): everything is there.
    let mut e = reopen(e, false, dir.path(), &clock, limit);
    assert_eq!(e.stats().entries, i as u64 + 2);
    assert_eq!(get(&mut e, "k0").as_deref(), Some(&value[..]));
    assert_eq!(get(&mut e, "after").as_deref(), Some(&b"1"[..]));
    assert_eq!(get(&mut e, "during").as_deref(), Some(&b"2"[..]));
}

/// Maintenance interleaved step by step with writes that outgrow the limit five times over
/// (as the host's maintenance thread races them): the volume never passes the limit, whether
/// a deferred deletion is waiting or a step's copies would not fit beside it.
#[test]
fn maintenance_steps_between_writes_never_pass_the_limit() {
    let limit = 512 << 10;
    let (dir, _clock, mut e) = fresh(limit);
    e.set_checkpoint_interval(64 << 10);
    let mut written = 0;
    let mut steps = 0;
    for i in 0u64.. {
        if written >= 5 * limit {
            break;
        }
        let value = vec![(i % 256) as u8; 500 + (i as usize * 131) % 4000];
        e.set_nonblocking(true);
        if e.set(&format!("blob:{}", i % 300), &value, None) == Err(Error::WouldBlock) {
            e.set_nonblocking(false);
            e.set(&format!("blob:{}", i % 300), &value, None).unwrap();
        }
        written += value.len() as u64;
        assert!(e.stats().volume <= limit, "a write passed the limit");
        // Every other write one step, told of a sync only every third time.
        if i % 2 == 0 && e.maintenance().pending {
            if i % 3 == 0 {
                step(&mut e, dir.path());
            } else {
                e.maintain(0).unwrap();
            }
            steps += 1;
            assert!(e.stats().volume <= limit, "a step passed the limit");
        }
    }
    assert!(steps > 100, "{steps} steps");
}
