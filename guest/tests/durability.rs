//! Durability of the engine across crashes: regressions for resurrected values, and a crash
//! injected at every single file operation of a workload that evicts and compacts.

mod common;

use common::{fresh, open_with, segment_paths, Rng, T0};
use persistent_cache_guest::format;
use persistent_cache_guest::storage::{StdFile, StdStorage, Storage, StorageFile};
use persistent_cache_guest::{counter, Engine, EngineOptions, Error, ManualTime};
use std::cell::Cell;
use std::fs;
use std::io;
use std::path::Path;
use std::rc::Rc;

/// Found by the SIGKILL crash test: deleting a key that eviction had already dropped from the
/// index wrote no tombstone, so after a crash the log replay brought the deleted value back.
#[test]
fn a_deleted_key_stays_deleted_after_a_crash_even_if_it_had_been_evicted() {
    let limit = 32 * 1024;
    let (dir, clock, mut e) = fresh(limit);
    let value = vec![3u8; 900];
    for i in 0..10 {
        e.set(&format!("old{i}"), &value, None).unwrap();
    }
    e.set("victim", b"deleted later", None).unwrap();
    // Make the victim the least recently used entry without putting it in the oldest segment,
    // so eviction drops it from the index while compaction leaves its record on disk.
    for i in 0..10 {
        assert!(e.get(&format!("old{i}")).unwrap().is_some());
    }
    let mut i = 0;
    while e.stats().entries == 11 + i {
        e.set(&format!("new{i}"), &value, None).unwrap();
        i += 1;
        assert!(i < 100, "nothing was evicted");
    }
    assert_eq!(e.get("victim").unwrap(), None, "the victim was evicted");
    let on_disk = segment_paths(dir.path()).iter().any(|p| {
        fs::read(p)
            .unwrap()
            .windows(13)
            .any(|w| w == b"deleted later")
    });
    assert!(
        on_disk,
        "the test needs the evicted record to still be on disk"
    );
    assert!(
        !e.delete("victim").unwrap(),
        "deleting an evicted key is a miss"
    );
    drop(e); // crash: no snapshot, the next open replays the log

    let mut e = open_with(dir.path(), &clock, limit);
    assert_eq!(
        e.get("victim").unwrap(),
        None,
        "the deleted value came back"
    );
}

/// The byte offset of the tombstone of key "k" in `bytes`.
fn tombstone_of_k(bytes: &[u8]) -> usize {
    bytes
        .windows(1 + format::RECORD_HEADER_LEN)
        .position(|w| w[8] == 2 && w[format::RECORD_HEADER_LEN] == b'k')
        .unwrap()
}

/// A record that fails to decode in the newest segment, past the last flush, is where the log
/// ends (a power cut may leave exactly that): the tail from it on is moved into `damaged/`,
/// not destroyed, and it stays cut at the next opens, after more records were appended.
#[test]
fn a_bad_record_in_the_unflushed_tail_ends_the_log_and_its_tail_is_kept_aside() {
    let (dir, clock, mut e) = fresh(1 << 30);
    e.set("k", b"old value", None).unwrap();
    e.set("other", b"stored before the damage", None).unwrap();
    e.delete("k").unwrap();
    e.set("after", b"stored after the damage", None).unwrap();
    drop(e); // a crash: nothing was flushed
    let segs = segment_paths(dir.path());
    assert_eq!(segs.len(), 1);
    let mut bytes = fs::read(&segs[0]).unwrap();
    let tombstone = tombstone_of_k(&bytes);
    bytes[tombstone + format::RECORD_HEADER_LEN] ^= 1;
    fs::write(&segs[0], &bytes).unwrap();

    let mut e = open_with(dir.path(), &clock, 1 << 30);
    assert_eq!(e.stats().damaged, 1);
    assert_eq!(
        e.get("other").unwrap().as_deref(),
        Some(&b"stored before the damage"[..])
    );
    assert_eq!(e.get("after").unwrap(), None, "records after the bad one");
    // The lost tombstone was never flushed: the value before it may come back, nothing else.
    assert!(matches!(
        e.get("k").unwrap().as_deref(),
        None | Some(b"old value")
    ));
    let aside: Vec<_> = fs::read_dir(dir.path().join(format::DAMAGED_DIR))
        .unwrap()
        .map(|entry| fs::read(entry.unwrap().path()).unwrap())
        .collect();
    assert_eq!(
        aside,
        vec![bytes[tombstone..].to_vec()],
        "the cut tail is kept aside"
    );
    e.set("x", b"1", None).unwrap();
    drop(e); // crash again: the next open replays the log once more

    for _ in 0..2 {
        let mut e = open_with(dir.path(), &clock, 1 << 30);
        assert_eq!(e.stats().damaged, 0, "the cut is for good");
        assert_eq!(e.get("after").unwrap(), None);
        assert_eq!(e.get("x").unwrap().as_deref(), Some(&b"1"[..]));
        e.close().unwrap();
    }
}

/// Damage before the last flush costs only the entries whose records it hit.
#[test]
fn damage_before_the_last_flush_costs_only_the_entries_in_it() {
    let (dir, clock, mut e) = fresh(1 << 30);
    e.set("k", b"old value", None).unwrap();
    e.set("other", b"a record that gets damaged", None).unwrap();
    e.delete("k").unwrap();
    e.set("after", b"stored after the damage", None).unwrap();
    e.close().unwrap();
    let segs = segment_paths(dir.path());
    let mut bytes = fs::read(&segs[0]).unwrap();
    let at = bytes
        .windows(26)
        .position(|w| w == b"a record that gets damaged")
        .unwrap();
    bytes[at] ^= 1;
    fs::write(&segs[0], &bytes).unwrap();

    let mut e = open_with(dir.path(), &clock, 1 << 30);
    assert_eq!(e.get("other").unwrap(), None, "the damaged entry is a miss");
    assert_eq!(e.get("k").unwrap(), None, "the delete before it holds");
    assert_eq!(
        e.get("after").unwrap().as_deref(),
        Some(&b"stored after the damage"[..])
    );
}

/// A directory whose file operations start failing after a budget of mutating operations
/// (create, write, truncate, rename, remove, create_dir) is spent, as if the process died there: the
/// operation that exhausts the budget does nothing, except a write, which leaves its first half
/// behind (a torn write). Reads keep working.
struct CrashStorage {
    inner: StdStorage,
    budget: Rc<Cell<u64>>,
}

struct CrashFile {
    inner: StdFile,
    budget: Rc<Cell<u64>>,
}

fn dead() -> io::Error {
    io::Error::other("crashed here")
}

/// Spends one mutating operation; false once the budget is gone (the process is dead).
fn spend(budget: &Cell<u64>) -> bool {
    match budget.get() {
        0 => false,
        n => {
            budget.set(n - 1);
            true
        }
    }
}

impl StorageFile for CrashFile {
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !spend(&self.budget) {
            return Err(dead());
        }
        if self.budget.get() == 0 {
            // The last thing this process does: a write cut in half.
            self.inner.write_all_at(&buf[..buf.len() / 2], offset)?;
            return Err(dead());
        }
        self.inner.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        if !spend(&self.budget) || self.budget.get() == 0 {
            return Err(dead());
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
}

impl Storage for CrashStorage {
    type File = CrashFile;
    fn open(&self, name: &str, create: bool) -> io::Result<CrashFile> {
        if create && (!spend(&self.budget) || self.budget.get() == 0) {
            return Err(dead());
        }
        Ok(CrashFile {
            inner: self.inner.open(name, create)?,
            budget: Rc::clone(&self.budget),
        })
    }
    fn open_read_only(&self, name: &str) -> io::Result<CrashFile> {
        Ok(CrashFile {
            inner: self.inner.open_read_only(name)?,
            budget: Rc::clone(&self.budget),
        })
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn exists(&self, name: &str) -> io::Result<bool> {
        self.inner.exists(name)
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        if !spend(&self.budget) || self.budget.get() == 0 {
            return Err(dead());
        }
        self.inner.remove(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        if !spend(&self.budget) || self.budget.get() == 0 {
            return Err(dead());
        }
        self.inner.rename(from, to)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }
    fn create_dir(&self, name: &str) -> io::Result<()> {
        if !spend(&self.budget) || self.budget.get() == 0 {
            return Err(dead());
        }
        self.inner.create_dir(name)
    }
}

fn open_crashing(
    dir: &Path,
    clock: &ManualTime,
    size_limit: u64,
    budget: u64,
) -> (
    persistent_cache_guest::Result<Engine<CrashStorage, ManualTime>>,
    Rc<Cell<u64>>,
) {
    let budget = Rc::new(Cell::new(budget));
    let storage = CrashStorage {
        inner: StdStorage::new(dir).unwrap(),
        budget: Rc::clone(&budget),
    };
    let options = EngineOptions {
        size_limit,
        ..EngineOptions::default()
    };
    (Engine::open(storage, clock.clone(), options), budget)
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Set(usize, usize),
    Delete(usize),
    Get(usize),
    Clear,
    /// `incr(key, delta, INCR_DEFAULT)`.
    Incr(usize, i64),
    /// Delete every key of one of the `GROUPS` prefix groups.
    DeletePrefix(usize),
    /// Close cleanly (writes the index snapshot) and reopen.
    Reopen,
}

/// Keys fall in this many prefix groups (see `key_of`).
const GROUPS: usize = 3;
const INCR_DEFAULT: i64 = 1000;

/// A fixed pseudo-random workload over `keys` keys with values up to `max_len` bytes.
fn workload(seed: u64, ops: usize, keys: usize, max_len: usize) -> Vec<Op> {
    let mut rng = Rng(seed | 1);
    (0..ops)
        .map(|_| {
            let key = rng.below(keys as u64) as usize;
            match rng.below(100) {
                0 => Op::Clear,
                1..=3 => Op::Reopen,
                4..=15 => Op::Delete(key),
                16..=17 => Op::DeletePrefix(key % GROUPS),
                18..=25 => Op::Incr(key, rng.next() as i64 % 7 - 3),
                26..=33 => Op::Get(key),
                _ => Op::Set(key, 1 + rng.below(max_len as u64) as usize),
            }
        })
        .collect()
}

fn value_of(step: usize, len: usize) -> Vec<u8> {
    let mut v = vec![(step % 251) as u8; len];
    v[..len.min(8)].copy_from_slice(&(step as u64).to_le_bytes()[..len.min(8)]);
    v
}

fn key_of(i: usize) -> String {
    format!("g{}/key-{i}", i % GROUPS)
}

/// What each key may read as: `None` in a set means "missing".
type Allowed = Vec<Vec<Option<Vec<u8>>>>;

/// Runs `ops` until the crash; returns what each key may read as afterwards.
fn run_until_crash(
    dir: &Path,
    clock: &ManualTime,
    limit: u64,
    budget: u64,
    ops: &[Op],
    keys: usize,
    evicting: bool,
) -> (Allowed, bool) {
    let mut acked: Vec<Option<Vec<u8>>> = vec![None; keys];
    let (opened, mut spent) = open_crashing(dir, clock, limit, budget);
    let Ok(mut e) = opened else {
        return (acked.into_iter().map(|v| vec![v]).collect(), true);
    };
    for (step, op) in ops.iter().enumerate() {
        let outcome = match *op {
            Op::Set(k, len) => {
                let v = value_of(step, len);
                let ttl = (step % 5 == 0).then_some(1 << 40);
                e.set(&key_of(k), &v, ttl).map(|()| acked[k] = Some(v))
            }
            Op::Delete(k) => e.delete(&key_of(k)).map(|_| acked[k] = None),
            Op::Get(k) => e.get(&key_of(k)).map(|got| {
                if let Some(got) = got {
                    assert!(acked[k].as_ref() == Some(&got) || evicting);
                }
            }),
            Op::Clear => e.clear().map(|()| acked.fill(None)),
            Op::Incr(k, delta) => match e.incr(&key_of(k), delta, INCR_DEFAULT, None) {
                Ok(n) => {
                    acked[k] = Some(counter::encode(n));
                    Ok(())
                }
                // Most values are not counters; nothing changed.
                Err(Error::NotACounter(_)) => Ok(()),
                Err(err) => Err(err),
            },
            Op::DeletePrefix(group) => e.delete_prefix(&format!("g{group}/")).map(|_| {
                for (k, v) in acked.iter_mut().enumerate() {
                    if k % GROUPS == group {
                        *v = None;
                    }
                }
            }),
            Op::Reopen => {
                let left = spent.get();
                let closed = e.close();
                if closed.is_err() {
                    return (in_flight(&acked, None), true);
                }
                let (opened, budget) = open_crashing(dir, clock, limit, left);
                match opened {
                    Ok(reopened) => {
                        e = reopened;
                        spent = budget;
                        Ok(())
                    }
                    Err(_) => return (in_flight(&acked, None), true),
                }
            }
        };
        if outcome.is_err() {
            // The crash: the operation in flight may or may not have happened.
            let pending = match *op {
                Op::Set(k, len) => Some((k, Some(value_of(step, len)))),
                Op::Delete(k) => Some((k, None)),
                Op::Clear => {
                    let mut allowed = in_flight(&acked, None);
                    allowed.iter_mut().for_each(|a| a.push(None));
                    return (allowed, true);
                }
                Op::DeletePrefix(group) => {
                    let mut allowed = in_flight(&acked, None);
                    for (k, a) in allowed.iter_mut().enumerate() {
                        if k % GROUPS == group {
                            a.push(None);
                        }
                    }
                    return (allowed, true);
                }
                Op::Incr(k, delta) => {
                    // From the acknowledged counter, or from the default if it was absent
                    // (or, when evicting, evicted).
                    let mut allowed = in_flight(&acked, None);
                    let from_acked = acked[k].as_deref().and_then(counter::decode);
                    for base in from_acked.into_iter().chain(Some(INCR_DEFAULT)) {
                        allowed[k].push(Some(counter::encode(base + delta)));
                    }
                    return (allowed, true);
                }
                Op::Get(_) | Op::Reopen => None,
            };
            return (in_flight(&acked, pending), true);
        }
    }
    (in_flight(&acked, None), false)
}

fn in_flight(acked: &[Option<Vec<u8>>], pending: Option<(usize, Option<Vec<u8>>)>) -> Allowed {
    let mut allowed: Allowed = acked.iter().map(|v| vec![v.clone()]).collect();
    if let Some((k, v)) = pending {
        allowed[k].push(v);
    }
    allowed
}

/// Crashes the same workload at every one of its mutating file operations in turn (and, at
/// each, once more during the recovery that follows); every acknowledged write must survive.
fn crash_at_every_operation(limit: u64, keys: usize, max_len: usize, evicting: bool) -> u64 {
    let clock = ManualTime::at(T0);
    let ops = workload(0x5EED ^ limit, 400, keys, max_len);
    let mut crash_points = 0;
    for budget in 0.. {
        let dir = common::scratch_dir();
        let (allowed, crashed) =
            run_until_crash(dir.path(), &clock, limit, budget, &ops, keys, evicting);
        if !crashed {
            break;
        }
        crash_points += 1;
        // A second crash, a few operations into the recovery.
        let (_, _) = open_crashing(dir.path(), &clock, limit, budget % 4);
        let mut e = open_with(dir.path(), &clock, limit);
        for (k, allowed) in allowed.iter().enumerate() {
            let got = e.get(&key_of(k)).unwrap();
            let ok = allowed.contains(&got) || (evicting && got.is_none());
            assert!(
                ok,
                "crash at operation {budget}: {} reads {:?}, allowed {:?}",
                key_of(k),
                got.as_ref().map(|v| &v[..8.min(v.len())]),
                allowed
                    .iter()
                    .map(|v| v.as_ref().map(|v| v[..8.min(v.len())].to_vec()))
                    .collect::<Vec<_>>()
            );
        }
        assert!(e.stats().volume <= limit, "crash at operation {budget}");
    }
    crash_points
}

#[test]
fn compaction_loses_nothing_whatever_operation_a_crash_interrupts() {
    // 16 KiB limit (4 KiB segments) and at most 12 × ~600 bytes live: overwrites and deletes
    // make the engine compact every few writes, but nothing is ever evicted.
    let points = crash_at_every_operation(16 * 1024, 12, 600, false);
    println!("compaction: crashed at each of {points} file operations");
    assert!(points > 300, "only {points} crash points");
}

#[test]
fn eviction_never_resurrects_or_corrupts_whatever_operation_a_crash_interrupts() {
    // 40 keys of up to 1.5 KiB in 16 KiB: constant eviction. A key may be missing, never wrong.
    let points = crash_at_every_operation(16 * 1024, 40, 1_500, true);
    println!("eviction: crashed at each of {points} file operations");
    assert!(points > 300, "only {points} crash points");
}

#[test]
fn a_workload_without_crash_points_matches_its_model() {
    // The harness itself: with an unlimited budget nothing crashes and the model is exact.
    let dir = common::scratch_dir();
    let clock = ManualTime::at(T0);
    let ops = workload(7, 400, 12, 600);
    let (allowed, crashed) =
        run_until_crash(dir.path(), &clock, 16 * 1024, u64::MAX, &ops, 12, false);
    assert!(!crashed);
    let mut e = open_with(dir.path(), &clock, 16 * 1024);
    let mut present = 0;
    for (k, allowed) in allowed.iter().enumerate() {
        assert_eq!(allowed.len(), 1);
        let got = e.get(&key_of(k)).unwrap();
        present += usize::from(got.is_some());
        assert_eq!(got, allowed[0]);
    }
    assert!(present > 3, "the workload must leave data to check");
    // And it compacts: the first segments are gone.
    let first = segment_paths(dir.path()).first().cloned().unwrap();
    assert!(
        first.file_name().unwrap().to_str().unwrap() > "0000000010.seg",
        "the workload never compacted ({})",
        first.display()
    );
}
