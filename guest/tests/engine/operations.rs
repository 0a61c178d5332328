//! Every public operation's behaviour and edge cases, and that its effect persists.

use crate::common::{fresh, get, open, NO_LIMIT};
use persistent_cache_guest::{format, Error};
use std::fs;

#[test]
fn set_get_overwrite_delete_and_persist_across_reopen() {
    let (dir, clock, mut e) = fresh(NO_LIMIT);
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
            name.ends_with(".seg") || name == format::SNAPSHOT_FILE || name == format::META_FILE,
            "unexpected {name}"
        );
    }
}

#[test]
fn ttl_expires_entries_and_stays_expired_after_reopen() {
    let (dir, clock, mut e) = fresh(NO_LIMIT);
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
    let (_dir, _clock, mut e) = fresh(64 * 1024);
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
fn add_touch_pop_and_incr_behave_and_persist() {
    let (dir, clock, mut e) = fresh(NO_LIMIT);
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
    let (_dir, clock, mut e) = fresh(NO_LIMIT);
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
fn delete_prefix_and_expire_count_and_persist() {
    let (dir, clock, mut e) = fresh(NO_LIMIT);
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
fn contains_answers_from_the_index_without_a_hit_or_a_use() {
    let (_dir, clock, mut e) = fresh(100 * 1024);
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

#[test]
fn get_many_and_set_many_act_as_their_single_calls_and_check_everything_first() {
    let (dir, clock, mut e) = fresh(NO_LIMIT);
    let one: &[u8] = b"1";
    e.set_many(&[("a", one), ("b", b"22"), ("t", b"ttl")], Some(1000))
        .unwrap();
    e.set_many(&[("a", one), ("b", b"22")], None).unwrap();
    let found = e.get_many(&["a", "missing", "b", "t"]).unwrap();
    assert_eq!(
        found,
        [
            Some(b"1".to_vec()),
            None,
            Some(b"22".to_vec()),
            Some(b"ttl".to_vec())
        ]
    );
    let stats = e.stats();
    assert_eq!((stats.hits, stats.misses), (3, 1));
    clock.advance(1001);
    assert_eq!(
        e.get_many(&["t", "a"]).unwrap(),
        [None, Some(b"1".to_vec())]
    );

    // One bad entry fails the whole batch before anything is written or read.
    let bad_key = e.set_many(&[("c", one), ("", b"y")], None);
    assert!(matches!(bad_key, Err(Error::InvalidKey(_))), "{bad_key:?}");
    let (_small_dir, _, mut small) = fresh(64 << 10);
    let too_large = small.set_many(&[("c", one), ("d", &[0u8; 100 << 10])], None);
    assert!(
        matches!(too_large, Err(Error::ValueTooLarge { .. })),
        "{too_large:?}"
    );
    assert_eq!(small.stats().entries, 0);
    e.set("c", one, None).unwrap();
    let e_hits = e.stats().hits;
    assert!(matches!(e.get_many(&["a", ""]), Err(Error::InvalidKey(_))));
    assert_eq!(e.stats().hits, e_hits, "a refused batch read nothing");
    assert_eq!(get(&mut e, "c"), Some(b"1".to_vec()));
    e.close().unwrap();

    // What a batch wrote persists like single writes.
    let mut e = open(dir.path(), &clock);
    assert_eq!(
        e.get_many(&["a", "b", "c"]).unwrap(),
        [
            Some(b"1".to_vec()),
            Some(b"22".to_vec()),
            Some(b"1".to_vec())
        ]
    );
}

#[test]
fn a_batch_that_would_be_slow_work_is_refused_whole_in_non_blocking_mode() {
    let (dir, clock, mut e) = fresh(NO_LIMIT);
    let value = vec![7u8; 4096];
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &value[..])).collect();
    e.set_nonblocking(true);
    // 40 records of 4 KiB: more than one non-blocking call may write.
    assert!(matches!(e.set_many(&entries, None), Err(Error::WouldBlock)));
    assert_eq!(
        e.stats().entries,
        0,
        "nothing of a refused batch was written"
    );
    e.set_many(&entries[..4], None).unwrap();
    e.set_nonblocking(false);
    e.set_many(&entries, None).unwrap();
    e.close().unwrap();
    // After a reopen nothing is in memory: 40 values to read from disk are slow work.
    let mut e = open(dir.path(), &clock);
    e.set_nonblocking(true);
    assert!(matches!(e.get_many(&keys), Err(Error::WouldBlock)));
    assert_eq!(e.stats().hits, 0);
    assert_eq!(e.get_many(&keys[..2]).unwrap().len(), 2);
    e.set_nonblocking(false);
    let all = e.get_many(&keys).unwrap();
    assert!(all.iter().all(|v| v.as_deref() == Some(&value[..])));
}
