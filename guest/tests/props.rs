//! Property tests (proptest): the record, snapshot and metadata decoders on arbitrary bytes,
//! and random operation sequences checked against a simple in-memory model with a fake clock.
//!
//! `PROPTEST_CASES=N` runs more cases. The coverage-guided fuzz targets for the same
//! properties are in `guest/fuzz` (see docs/durability.md).

mod common;

use common::{bytes_on_disk, fresh, open_shared, reopen, NO_LIMIT};
use persistent_cache_guest::format::{self, DecodeError, RecordKind, SnapshotTable};
use persistent_cache_guest::index::{LruIndex, Slot};
use persistent_cache_guest::{counter, Error, ManualTime, TimeSource};
use proptest::prelude::*;
use std::collections::HashMap;

fn kind() -> impl Strategy<Value = RecordKind> {
    prop_oneof![
        Just(RecordKind::Put),
        Just(RecordKind::Delete),
        Just(RecordKind::Clear),
        Just(RecordKind::Seal),
        Just(RecordKind::Touch),
        Just(RecordKind::DeletePrefix),
        Just(RecordKind::Settings),
        Just(RecordKind::Session),
        Just(RecordKind::Checkpoint),
    ]
}

/// A record as the engine would encode it: keys only for put/delete, values only for put.
fn record() -> impl Strategy<Value = (RecordKind, String, Vec<u8>, u64)> {
    (
        kind(),
        "\\PC{1,40}",
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<u64>(),
    )
        .prop_map(|(kind, key, value, expires_at)| match kind {
            RecordKind::Put => (kind, key, value, expires_at),
            RecordKind::Delete | RecordKind::Touch | RecordKind::DeletePrefix => {
                (kind, key, Vec::new(), expires_at)
            }
            RecordKind::Clear | RecordKind::Seal => (kind, String::new(), Vec::new(), 0),
            RecordKind::Settings | RecordKind::Session | RecordKind::Checkpoint => {
                (kind, String::new(), value, 0)
            }
        })
}

fn encode(kind: RecordKind, key: &str, value: &[u8], expires_at: u64) -> Vec<u8> {
    let mut out = Vec::new();
    format::encode_record(&mut out, kind, key, value, expires_at);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes never panic the decoder; anything it accepts is self-consistent.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        match format::decode_record(&bytes) {
            Ok(rec) => {
                prop_assert!(rec.len <= bytes.len());
                prop_assert_eq!(&encode(rec.kind, rec.key, rec.value, rec.expires_at)[..], &bytes[..rec.len]);
            }
            Err(DecodeError::Truncated { needed }) => prop_assert!(needed > bytes.len()),
            Err(DecodeError::BadBody { len }) => prop_assert!(len <= bytes.len()),
            Err(DecodeError::BadHeader) => {}
        }
        let _ = format::decode_snapshot(&bytes);
        let _ = format::decode_meta(&bytes);
    }

    /// Every record round-trips, also with trailing bytes after it.
    #[test]
    fn records_round_trip((kind, key, value, expires_at) in record(), trailing in proptest::collection::vec(any::<u8>(), 0..40)) {
        let mut bytes = encode(kind, &key, &value, expires_at);
        let len = bytes.len();
        prop_assert_eq!(len as u64, format::record_len(key.len(), value.len()));
        bytes.extend_from_slice(&trailing);
        let rec = format::decode_record(&bytes).unwrap();
        prop_assert_eq!((rec.kind, rec.key, rec.value, rec.expires_at, rec.len), (kind, &key[..], &value[..], expires_at, len));
    }

    /// Damage anywhere in a record (any byte changed, or the record cut short) is detected:
    /// it never decodes as a different record.
    #[test]
    fn damaged_records_are_detected((kind, key, value, expires_at) in record(), at in any::<prop::sample::Index>(), xor in 1..=255u8, cut in any::<prop::sample::Index>()) {
        let bytes = encode(kind, &key, &value, expires_at);
        let mut flipped = bytes.clone();
        flipped[at.index(bytes.len())] ^= xor;
        prop_assert!(format::decode_record(&flipped).is_err());
        let short = &bytes[..cut.index(bytes.len())];
        let is_truncated = matches!(format::decode_record(short), Err(DecodeError::Truncated { .. }));
        prop_assert!(is_truncated);
    }

    /// Index snapshots round-trip, and any changed byte or cut makes them invalid (ignored).
    #[test]
    fn snapshots_round_trip_and_reject_damage(
        entries in proptest::collection::vec(("\\PC{1,20}", any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>()), 0..20),
        covered in (any::<u32>(), any::<u64>()),
        at in any::<prop::sample::Index>(),
        xor in 1..=255u8,
    ) {
        let bytes = format::encode_snapshot(covered.0, covered.1, 7, entries.len(),
            entries.iter().map(|(k, s, o, l, e)| (k.as_str(), *s, *o, *l, *e)));
        let snapshot = format::decode_snapshot(&bytes).unwrap();
        prop_assert_eq!((snapshot.covered_segment, snapshot.covered_offset), covered);
        prop_assert_eq!(snapshot.entries().count(), entries.len());
        for (got, (k, s, o, l, e)) in snapshot.entries().zip(&entries) {
            prop_assert_eq!((got.key, got.segment, got.offset, got.len, got.expires_at), (&k[..], *s, *o, *l, *e));
        }
        let mut damaged = bytes.clone();
        damaged[at.index(bytes.len())] ^= xor;
        prop_assert!(format::decode_snapshot(&damaged).is_none());
        prop_assert!(format::decode_snapshot(&bytes[..at.index(bytes.len())]).is_none());
    }
}

/// One step of a random session.
#[derive(Clone, Debug)]
enum Op {
    Set {
        key: u8,
        len: u16,
        ttl_ms: Option<u32>,
    },
    Get {
        key: u8,
    },
    Delete {
        key: u8,
    },
    Clear,
    Add {
        key: u8,
        len: u16,
        ttl_ms: Option<u32>,
    },
    Touch {
        key: u8,
        ttl_ms: Option<u32>,
    },
    Pop {
        key: u8,
    },
    Incr {
        key: u8,
        delta: i64,
    },
    /// Deletes the keys of one of four prefix groups (see `key_name`).
    DeletePrefix {
        group: u8,
    },
    Expire,
    Advance {
        ms: u32,
    },
    /// Close cleanly (`clean`) or drop without closing (a crash), then open again.
    Reopen {
        clean: bool,
    },
}

/// TTLs and clock steps are multiples of 250 ms, so reads land exactly on expiry times too.
fn op(keys: u8, max_len: u16) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..keys, 0..max_len, prop::option::weighted(0.25, (0..10u32).prop_map(|n| n * 500)))
            .prop_map(|(key, len, ttl_ms)| Op::Set { key, len, ttl_ms }),
        6 => (0..keys).prop_map(|key| Op::Get { key }),
        3 => (0..keys).prop_map(|key| Op::Delete { key }),
        1 => Just(Op::Clear),
        2 => (0..keys, 0..max_len, ttl()).prop_map(|(key, len, ttl_ms)| Op::Add { key, len, ttl_ms }),
        2 => (0..keys, ttl()).prop_map(|(key, ttl_ms)| Op::Touch { key, ttl_ms }),
        2 => (0..keys).prop_map(|key| Op::Pop { key }),
        3 => (0..keys, -3..4i64).prop_map(|(key, delta)| Op::Incr { key, delta }),
        1 => (0..4u8).prop_map(|group| Op::DeletePrefix { group }),
        1 => Just(Op::Expire),
        2 => (0..12u32).prop_map(|n| Op::Advance { ms: n * 250 }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

fn ttl() -> impl Strategy<Value = Option<u32>> {
    prop::option::weighted(0.4, (0..10u32).prop_map(|n| n * 500))
}

/// Keys fall in four prefix groups, `g0/` to `g3/`, for `DeletePrefix`.
fn key_name(key: u8) -> String {
    format!("g{}/{key}", key % 4)
}

/// The default `incr` starts from, and the TTL it gives a new counter.
const INCR_DEFAULT: i64 = 10;
const INCR_TTL_MS: u64 = 1_500;

fn value_for(step: usize, len: u16) -> Vec<u8> {
    (0..len as usize).map(|i| (step * 31 + i) as u8).collect()
}

/// When an entry written at `now` with `ttl_ms` expires (0 = never).
fn expiry(now: u64, ttl_ms: Option<u32>) -> u64 {
    ttl_ms.map_or(0, |ms| (now + u64::from(ms)).max(1))
}

/// Per key: its latest value and expiry (`None` when unknown), or `None` once deleted.
type Latest = HashMap<u8, Option<(Vec<u8>, Option<u64>)>>;

/// Whether `got` is the latest value of `key` and, when its expiry is known, not expired.
fn is_latest(latest: &Latest, key: u8, got: &[u8], now: u64) -> bool {
    matches!(latest.get(&key), Some(Some((v, exp)))
        if v == got && exp.is_none_or(|exp| exp == 0 || now < exp))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// With a limit nothing reaches, the engine is exactly the model: a map of key to value
    /// and expiry, read against the fake clock, across clean and crashing reopens.
    #[test]
    fn operations_match_the_model(ops in proptest::collection::vec(op(16, 600), 1..150)) {
        let (dir, clock, mut engine) = fresh(NO_LIMIT);
        let mut model: HashMap<u8, (Vec<u8>, u64)> = HashMap::new();
        // Keys `Expire` dropped and nothing wrote since: after a crash, an entry still in the
        // snapshot table comes back (expired: never read), so `expire` may count it again.
        let mut may_come_back: std::collections::HashSet<u8> = Default::default();
        for (step, op) in ops.into_iter().enumerate() {
            match &op {
                Op::Set { key, .. } | Op::Delete { key } | Op::Add { key, .. } | Op::Pop { key } | Op::Incr { key, .. } => {
                    may_come_back.remove(key);
                }
                Op::Clear => may_come_back.clear(),
                Op::DeletePrefix { group } => may_come_back.retain(|k| k % 4 != *group),
                _ => {}
            }
            let now = clock.now_ms();
            let live = |model: &HashMap<u8, (Vec<u8>, u64)>, key: u8| {
                model.get(&key).filter(|(_, exp)| *exp == 0 || now < *exp).map(|(v, _)| v.clone())
            };
            match op {
                Op::Set { key, len, ttl_ms } => {
                    let value = value_for(step, len);
                    engine.set(&key_name(key), &value, ttl_ms.map(u64::from)).unwrap();
                    model.insert(key, (value, expiry(now, ttl_ms)));
                }
                Op::Get { key } => {
                    prop_assert_eq!(engine.get(&key_name(key)).unwrap(), live(&model, key), "step {}", step);
                }
                Op::Delete { key } => {
                    let was = live(&model, key).is_some();
                    prop_assert_eq!(engine.delete(&key_name(key)).unwrap(), was, "step {}", step);
                    model.remove(&key);
                }
                Op::Clear => {
                    engine.clear().unwrap();
                    model.clear();
                }
                Op::Add { key, len, ttl_ms } => {
                    let value = value_for(step, len);
                    let absent = live(&model, key).is_none();
                    prop_assert_eq!(engine.add(&key_name(key), &value, ttl_ms.map(u64::from)).unwrap(), absent, "step {}", step);
                    if absent {
                        model.insert(key, (value, expiry(now, ttl_ms)));
                    }
                }
                Op::Touch { key, ttl_ms } => {
                    let present = live(&model, key).is_some();
                    prop_assert_eq!(engine.touch(&key_name(key), ttl_ms.map(u64::from)).unwrap(), present, "step {}", step);
                    if present {
                        model.get_mut(&key).unwrap().1 = expiry(now, ttl_ms);
                    }
                }
                Op::Pop { key } => {
                    prop_assert_eq!(engine.pop(&key_name(key)).unwrap(), live(&model, key), "step {}", step);
                    model.remove(&key);
                }
                Op::Incr { key, delta } => {
                    let got = engine.incr(&key_name(key), delta, INCR_DEFAULT, Some(INCR_TTL_MS));
                    match live(&model, key) {
                        None => {
                            prop_assert_eq!(got.unwrap(), INCR_DEFAULT + delta, "step {}", step);
                            model.insert(key, (counter::encode(INCR_DEFAULT + delta), now + INCR_TTL_MS));
                        }
                        Some(value) => match counter::decode(&value) {
                            Some(n) => {
                                prop_assert_eq!(got.unwrap(), n + delta, "step {}", step);
                                model.get_mut(&key).unwrap().0 = counter::encode(n + delta);
                            }
                            None => prop_assert!(matches!(got, Err(Error::NotACounter(_))), "step {}: {:?}", step, got),
                        },
                    }
                }
                Op::DeletePrefix { group } => {
                    let live_in_group = (0..16).filter(|k| k % 4 == group && live(&model, *k).is_some()).count() as u64;
                    prop_assert_eq!(engine.delete_prefix(&format!("g{group}/")).unwrap(), live_in_group, "step {}", step);
                    model.retain(|k, _| k % 4 != group);
                }
                Op::Expire => {
                    // Reopening drops expired entries too, so expire may find fewer.
                    let expired = model.values().filter(|(_, exp)| *exp != 0 && now >= *exp).count() as u64;
                    let removed = engine.expire();
                    let bound = expired + may_come_back.len() as u64;
                    prop_assert!(removed <= bound, "step {}: expire removed {} of {}", step, removed, bound);
                    may_come_back.extend(model.iter().filter(|(_, (_, exp))| *exp != 0 && now >= *exp).map(|(k, _)| *k));
                    model.retain(|_, (_, exp)| *exp == 0 || now < *exp);
                }
                Op::Advance { ms } => clock.advance(u64::from(ms)),
                Op::Reopen { clean } => engine = reopen(engine, clean, dir.path(), &clock, NO_LIMIT),
            }
        }
        // Finally every key, after a crash.
        let mut engine = reopen(engine, false, dir.path(), &clock, NO_LIMIT);
        let now = clock.now_ms();
        for key in 0..16 {
            let expected = model.get(&key).filter(|(_, exp)| *exp == 0 || now < *exp).map(|(v, _)| v.clone());
            prop_assert_eq!(engine.get(&key_name(key)).unwrap(), expected);
        }
    }

    /// With a small limit entries are evicted: a read may miss, but never returns a value other
    /// than the key's latest, and after every operation the volume is within the limit and
    /// equal to the bytes on disk.
    #[test]
    fn eviction_keeps_the_size_invariant_and_never_a_wrong_value(ops in proptest::collection::vec(op(40, 3_000), 1..150)) {
        let limit = 32 * 1024;
        let (dir, clock, mut engine) = fresh(limit);
        // The latest value per key and its expiry (None: not known, after an incr that may
        // have found the key evicted); None once deleted or cleared.
        let mut latest: Latest = HashMap::new();
        for (step, op) in ops.into_iter().enumerate() {
            let now = clock.now_ms();
            match op {
                Op::Set { key, len, ttl_ms } => {
                    let value = value_for(step, len);
                    engine.set(&key_name(key), &value, ttl_ms.map(u64::from)).unwrap();
                    latest.insert(key, Some((value, Some(expiry(now, ttl_ms)))));
                }
                Op::Get { key } => {
                    if let Some(got) = engine.get(&key_name(key)).unwrap() {
                        prop_assert!(is_latest(&latest, key, &got, now), "step {}: key {} returned a stale, deleted or expired value", step, key);
                    }
                }
                Op::Add { key, len, ttl_ms } => {
                    let value = value_for(step, len);
                    if engine.add(&key_name(key), &value, ttl_ms.map(u64::from)).unwrap() {
                        latest.insert(key, Some((value, Some(expiry(now, ttl_ms)))));
                    }
                }
                Op::Touch { key, ttl_ms } => {
                    if engine.touch(&key_name(key), ttl_ms.map(u64::from)).unwrap() {
                        let entry = latest.get_mut(&key).and_then(Option::as_mut);
                        prop_assert!(entry.is_some(), "step {}: touch found deleted key {}", step, key);
                        entry.unwrap().1 = Some(expiry(now, ttl_ms));
                    }
                }
                Op::Pop { key } => {
                    if let Some(got) = engine.pop(&key_name(key)).unwrap() {
                        prop_assert!(is_latest(&latest, key, &got, now), "step {}: pop of key {} returned a stale value", step, key);
                    }
                    latest.insert(key, None);
                }
                Op::Incr { key, delta } => {
                    match engine.incr(&key_name(key), delta, INCR_DEFAULT, Some(INCR_TTL_MS)) {
                        Ok(n) => {
                            latest.insert(key, Some((counter::encode(n), None)));
                        }
                        Err(Error::NotACounter(_)) => {}
                        Err(e) => prop_assert!(false, "step {}: incr failed: {}", step, e),
                    }
                }
                Op::DeletePrefix { group } => {
                    engine.delete_prefix(&format!("g{group}/")).unwrap();
                    for (k, v) in latest.iter_mut() {
                        if k % 4 == group {
                            *v = None;
                        }
                    }
                }
                Op::Expire => {
                    engine.expire();
                }
                Op::Delete { key } => {
                    engine.delete(&key_name(key)).unwrap();
                    latest.insert(key, None);
                }
                Op::Clear => {
                    engine.clear().unwrap();
                    latest.clear();
                }
                Op::Advance { ms } => clock.advance(u64::from(ms)),
                Op::Reopen { clean } => engine = reopen(engine, clean, dir.path(), &clock, limit),
            }
            let volume = engine.stats().volume;
            prop_assert!(volume <= limit, "step {}: volume {} > {}", step, volume, limit);
            prop_assert_eq!(volume, bytes_on_disk(dir.path()), "step {}", step);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Two engines on one directory, as two processes: each op runs on one of them, writes
    /// under the write lock (catching up as they take it), reads after catching up. With a
    /// small limit both evict and compact, deleting segments the other still has open: a read
    /// may miss, but never returns a value other than the key's latest, the volume stays
    /// within the limit, and at the end both agree with the bytes on disk.
    #[test]
    fn two_engines_on_one_directory_never_return_a_wrong_value(
        ops in proptest::collection::vec((any::<bool>(), op(40, 3_000)), 1..200)
    ) {
        let limit = 32 * 1024;
        let dir = common::scratch_dir();
        let clock = ManualTime::at(common::T0);
        let mut engines = [open_shared(dir.path(), &clock, limit), open_shared(dir.path(), &clock, limit)];
        for e in &mut engines {
            e.set_compaction_step(2048);
        }
        let mut latest: Latest = HashMap::new();
        for (step, (who, op)) in ops.into_iter().enumerate() {
            let now = clock.now_ms();
            let e = &mut engines[usize::from(who)];
            let writes = !matches!(op, Op::Get { .. } | Op::Advance { .. } | Op::Expire | Op::Reopen { .. });
            let caught_up = if writes { e.set_write_locked(true, true) } else { e.catch_up() };
            if caught_up == Err(Error::Stale) {
                // It missed a whole rotation of the log: reopen it, as the host does.
                *e = open_shared(dir.path(), &clock, limit);
                if writes {
                    e.set_write_locked(true, true).unwrap();
                }
            } else {
                caught_up.unwrap();
            }
            match op {
                Op::Set { key, len, ttl_ms } => {
                    let value = value_for(step, len);
                    e.set(&key_name(key), &value, ttl_ms.map(u64::from)).unwrap();
                    latest.insert(key, Some((value, Some(expiry(now, ttl_ms)))));
                }
                Op::Get { key } => {
                    if let Some(got) = e.get(&key_name(key)).unwrap() {
                        prop_assert!(is_latest(&latest, key, &got, now), "step {}: key {} read a stale, deleted or expired value", step, key);
                    }
                }
                Op::Add { key, len, ttl_ms } => {
                    let value = value_for(step, len);
                    if e.add(&key_name(key), &value, ttl_ms.map(u64::from)).unwrap() {
                        latest.insert(key, Some((value, Some(expiry(now, ttl_ms)))));
                    }
                }
                Op::Pop { key } | Op::Delete { key } => {
                    if let Some(got) = e.pop(&key_name(key)).unwrap() {
                        prop_assert!(is_latest(&latest, key, &got, now), "step {}: pop of key {} returned a stale value", step, key);
                    }
                    latest.insert(key, None);
                }
                Op::Touch { key, ttl_ms } => {
                    if e.touch(&key_name(key), ttl_ms.map(u64::from)).unwrap() {
                        if let Some(Some(entry)) = latest.get_mut(&key) {
                            entry.1 = Some(expiry(now, ttl_ms));
                        }
                    }
                }
                Op::Incr { key, delta } => {
                    match e.incr(&key_name(key), delta, INCR_DEFAULT, Some(INCR_TTL_MS)) {
                        Ok(n) => {
                            latest.insert(key, Some((counter::encode(n), None)));
                        }
                        Err(Error::NotACounter(_)) => {}
                        Err(other) => prop_assert!(false, "step {}: incr failed: {}", step, other),
                    }
                }
                Op::DeletePrefix { group } => {
                    e.delete_prefix(&format!("g{group}/")).unwrap();
                    latest.retain(|k, _| k % 4 != group);
                }
                Op::Clear => {
                    e.clear().unwrap();
                    latest.clear();
                }
                Op::Expire => {
                    e.expire();
                }
                Op::Advance { ms } => clock.advance(u64::from(ms)),
                Op::Reopen { clean } => {
                    let old = std::mem::replace(e, open_shared(dir.path(), &clock, limit));
                    if clean {
                        let mut old = old;
                        old.set_write_locked(true, true).unwrap();
                        old.close().unwrap();
                    }
                }
            }
            if writes {
                while e.maintenance().pending {
                    let through = e.maintenance().sync_through.unwrap_or(0);
                    e.maintain(through).unwrap();
                }
                e.set_write_locked(false, false).unwrap();
            }
            prop_assert!(e.stats().volume <= limit, "step {}: volume {}", step, e.stats().volume);
        }
        for e in &mut engines {
            if e.catch_up() == Err(Error::Stale) {
                *e = open_shared(dir.path(), &clock, limit);
            }
        }
        let volume = engines[0].stats().volume;
        prop_assert_eq!(engines[1].stats().volume, volume);
        prop_assert_eq!(volume, bytes_on_disk(dir.path()));
    }
}

/// The entries of a test snapshot table: keys `k0..kn`, over segments 1 to 3.
fn table_entries(n: usize) -> Vec<(String, Slot)> {
    (0..n)
        .map(|i| {
            let slot = Slot {
                segment: 1 + (i % 3) as u32,
                offset: 40 + 10 * i as u32,
                len: 10 + (i % 7) as u32,
                expires_at: (i % 5) as u64 * 1000,
            };
            (format!("k{i}"), slot)
        })
        .collect()
}

fn encode_table(entries: &[(String, Slot)]) -> Vec<u8> {
    format::encode_snapshot_table(1, 0, 7, || entries.iter().map(|(k, s)| (k.as_str(), *s)))
}

/// The same index two ways: started from a snapshot table (used in place) and built by
/// inserting the same entries one by one.
fn both_ways(entries: &[(String, Slot)]) -> (LruIndex, LruIndex) {
    let mut in_place = LruIndex::default();
    assert!(in_place.start_from(SnapshotTable::decode(encode_table(entries)).unwrap()));
    let mut built = LruIndex::default();
    for (key, slot) in entries {
        built.insert(key, *slot);
    }
    (in_place, built)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Snapshot tables round-trip: every key is found with its slot, in LRU order, and any
    /// changed byte or cut makes the table invalid (the log is then replayed).
    #[test]
    fn snapshot_tables_round_trip_and_reject_damage(
        n in 0..200usize,
        at in any::<prop::sample::Index>(),
        xor in 1..=255u8,
    ) {
        let entries = table_entries(n);
        let bytes = encode_table(&entries);
        prop_assert!(format::decode_snapshot(&bytes).is_none(), "not a layout 0 snapshot");
        let table = SnapshotTable::decode(bytes.clone()).unwrap();
        prop_assert_eq!(table.len(), n);
        for (i, (key, slot)) in entries.iter().enumerate() {
            prop_assert_eq!(table.find(key), Some(i));
            prop_assert_eq!(table.key(i), Some(key.as_str()));
            prop_assert_eq!(table.slot(i), *slot);
        }
        prop_assert_eq!(table.find("absent"), None);
        let live: u64 = entries.iter().map(|(_, s)| u64::from(s.len)).sum();
        prop_assert_eq!(table.segments().map(|s| s.live_bytes).sum::<u64>(), live);
        let mut damaged = bytes.clone();
        damaged[at.index(bytes.len())] ^= xor;
        prop_assert!(SnapshotTable::decode(damaged).is_none());
        prop_assert!(SnapshotTable::decode(bytes[..at.index(bytes.len())].to_vec()).is_none());
    }

    /// A table whose bytes were changed and whose checksum was then made to match (only a
    /// crafted file does that) never panics the index or makes it loop: every entry it can
    /// read is either found or reads as absent, and popping empties it.
    #[test]
    fn crafted_snapshot_tables_never_panic(
        n in 0..100usize,
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..20),
    ) {
        let mut bytes = encode_table(&table_entries(n));
        let body = bytes.len() - 8;
        for (at, byte) in changes {
            // Past the layout field, so that it is still a table.
            let at = 44 + at.index(body - 44);
            bytes[at] = byte;
        }
        let hash = xxhash_rust::xxh3::xxh3_64(&bytes[..body]);
        bytes[body..].copy_from_slice(&hash.to_le_bytes());
        let Some(table) = SnapshotTable::decode(bytes) else {
            return Ok(());
        };
        for i in 0..n + 3 {
            let _ = table.find(&format!("k{i}"));
        }
        let mut index = LruIndex::default();
        index.start_from(table);
        let listed = index.iter().count();
        prop_assert!(listed <= index.len());
        let _ = index.get("k1");
        let _ = index.get_and_touch("k2");
        index.retain(|k, _| k != "k3");
        let mut popped = 0;
        while index.pop_lru().is_some() {
            popped += 1;
            prop_assert!(popped <= n + 1);
        }
        prop_assert!(index.is_empty());
    }

    /// An index started from a snapshot table answers every operation exactly as one built
    /// entry by entry: lookups, recency, writes, removals, eviction order, live bytes.
    #[test]
    fn an_index_started_from_a_table_matches_one_built_entry_by_entry(
        n in 0..60usize,
        ops in proptest::collection::vec((0..9u8, 0..80usize, 0..4u32), 0..150),
    ) {
        let entries = table_entries(n);
        let (mut a, mut b) = both_ways(&entries);
        for (step, (op, key, x)) in ops.into_iter().enumerate() {
            let key = format!("k{key}");
            let slot = Slot { segment: 1 + x, offset: 4000 + step as u32, len: 5 + x, expires_at: 0 };
            match op {
                0 => prop_assert_eq!(a.get(&key), b.get(&key)),
                1 => prop_assert_eq!(a.get_and_touch(&key), b.get_and_touch(&key)),
                2 => {
                    a.touch(&key);
                    b.touch(&key);
                }
                3 => prop_assert_eq!(a.insert(&key, slot), b.insert(&key, slot)),
                4 => prop_assert_eq!(a.remove(&key), b.remove(&key)),
                5 => prop_assert_eq!(a.pop_lru(), b.pop_lru()),
                6 => prop_assert_eq!(a.set_expires_at(&key, u64::from(x)), b.set_expires_at(&key, u64::from(x))),
                7 => {
                    a.relocate(&key, 4, 100 + step as u32);
                    b.relocate(&key, 4, 100 + step as u32);
                }
                _ => {
                    let digit = char::from(b'0' + x as u8);
                    a.retain(|k, _| !k.ends_with(digit));
                    b.retain(|k, _| !k.ends_with(digit));
                }
            }
            prop_assert_eq!(a.len(), b.len(), "step {}", step);
            prop_assert_eq!(a.live_bytes(), b.live_bytes(), "step {}", step);
            for segment in 1..=5 {
                prop_assert_eq!(a.live_in(segment), b.live_in(segment), "step {}", step);
            }
            prop_assert_eq!(a.lru_key().map(str::to_owned), b.lru_key().map(str::to_owned));
        }
        let order = |index: &LruIndex| index.iter().map(|(k, s)| (k.to_owned(), s)).collect::<Vec<_>>();
        prop_assert_eq!(order(&a), order(&b));
    }
}
