//! End-to-end: the real guest component in the real wasmtime host, on real temp directories.

mod common;

use persistent_cache::{CacheOptions, Error, Expiry, ManualClock, PersistentCache};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{child, open, open_with_clock, open_with_default_ttl};

/// Bytes of the cache's own files on disk (segments, snapshot, metadata, in `data/`).
fn bytes_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join(persistent_cache::DATA_DIRECTORY))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let name = e.file_name().into_string().unwrap();
            name.ends_with(".seg") || name == "index.hint" || name == "pcache.meta"
        })
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    email: Option<String>,
    tags: Vec<String>,
    scores: BTreeMap<String, f64>,
    nested: Vec<Vec<i32>>,
}

#[tokio::test]
async fn typed_values_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    let user = User {
        id: 123,
        name: "John".into(),
        email: None,
        tags: vec!["admin".into(), "ünïcødé ✓".into()],
        scores: BTreeMap::from([("a".into(), 1.5), ("b".into(), -0.25)]),
        nested: vec![vec![1, 2], vec![], vec![-3]],
    };
    cache.set("user:123", &user).await.unwrap();
    assert_eq!(cache.get::<User>("user:123").await.unwrap(), Some(user));

    let config = json!({"api_url": "https://api.example.com", "timeout": 30, "retries": 3});
    cache.set("config", &config).await.unwrap();
    assert_eq!(
        cache.get::<serde_json::Value>("config").await.unwrap(),
        Some(config)
    );
    cache.set("user_ids", &[1, 2, 3, 4, 5]).await.unwrap();
    assert_eq!(
        cache.get::<Vec<u32>>("user_ids").await.unwrap(),
        Some(vec![1, 2, 3, 4, 5])
    );
    cache.set("text", "plain string").await.unwrap();
    assert_eq!(
        cache.get::<String>("text").await.unwrap().as_deref(),
        Some("plain string")
    );
    cache.set("empty", &Vec::<u8>::new()).await.unwrap();
    assert_eq!(cache.get::<Vec<u8>>("empty").await.unwrap(), Some(vec![]));
    assert_eq!(cache.get::<User>("missing").await.unwrap(), None);

    // Asking for the wrong type is a clear error, not a panic or a garbage value.
    assert!(matches!(
        cache.get::<User>("config").await,
        Err(Error::Deserialize(_))
    ));
    cache.close().await.unwrap();
}

#[tokio::test]
async fn values_persist_across_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    for i in 0..200 {
        cache.set(&format!("k{i}"), &json!({"i": i})).await.unwrap();
    }
    cache.delete("k7").await.unwrap();
    cache.close().await.unwrap();

    let cache = open(dir.path()).await;
    for i in 0..200 {
        let got: Option<serde_json::Value> = cache.get(&format!("k{i}")).await.unwrap();
        assert_eq!(got, (i != 7).then(|| json!({"i": i})), "k{i}");
    }
    // Dropping the last handle closes the cache as cleanly as close() does.
    drop(cache);
    let cache = open(dir.path()).await;
    assert_eq!(cache.stats().await.unwrap().entries, 199);
}

#[tokio::test]
async fn a_second_process_sees_what_the_first_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = child()
        .args([d, "set", "user:1", r#"{"name":"Ann"}"#])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cache = open(dir.path()).await;
    let got: Option<serde_json::Value> = cache.get("user:1").await.unwrap();
    assert_eq!(got, Some(json!({"name": "Ann"})));
    cache.set("user:2", &json!({"name": "Bo"})).await.unwrap();
    cache.close().await.unwrap();

    let out = child().args([d, "get", "user:2"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        r#"{"name":"Bo"}"#
    );
}

#[tokio::test]
async fn a_second_process_is_refused_while_the_first_holds_the_directory_exclusively() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()).exclusive(true))
        .await
        .unwrap();
    cache.set("k", &1).await.unwrap();
    let out = child()
        .args([dir.path().to_str().unwrap(), "get", "k"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(dir.path().file_name().unwrap().to_str().unwrap()),
        "{stderr}"
    );
    cache.close().await.unwrap();

    // Once closed, the other process gets in.
    let out = child()
        .args([dir.path().to_str().unwrap(), "get", "k"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "1");
}

#[tokio::test]
async fn a_killed_holder_releases_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut holder = child()
        .args([dir.path().to_str().unwrap(), "hold"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "open");
    // The holder shares the directory: an exclusive opener waits for it to go.
    assert!(matches!(
        PersistentCache::open(CacheOptions::new(dir.path()).exclusive(true)).await,
        Err(Error::Locked { .. })
    ));
    holder.kill().unwrap(); // SIGKILL
    holder.wait().unwrap();
    let cache = open(dir.path()).await;
    cache.set("after", &true).await.unwrap();
}

#[tokio::test]
async fn ttl_expires_with_a_controlled_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let cache = open_with_clock(dir.path(), &clock).await;
    cache
        .set_with_ttl(
            "session:abc",
            &json!({"user": 1}),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    cache.set("forever", &1).await.unwrap();
    clock.advance(Duration::from_secs(3599));
    assert!(cache
        .get::<serde_json::Value>("session:abc")
        .await
        .unwrap()
        .is_some());
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        cache.get::<serde_json::Value>("session:abc").await.unwrap(),
        None
    );
    assert_eq!(cache.get::<i32>("forever").await.unwrap(), Some(1));
    cache.close().await.unwrap();

    // The default TTL (CACHE_CONTENT_TTL) applies to plain set().
    let dir = tempfile::tempdir().unwrap();
    let cache = open_with_default_ttl(dir.path(), &clock, Duration::from_secs(300)).await;
    cache.set("temp_data", "value").await.unwrap();
    clock.advance(Duration::from_secs(299));
    assert!(cache.get::<String>("temp_data").await.unwrap().is_some());
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.get::<String>("temp_data").await.unwrap(), None);
}

#[tokio::test]
async fn lru_keeps_what_was_read_and_evicts_the_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 200 * 1024;
    let cache = PersistentCache::open(CacheOptions::new(dir.path()).size_limit(limit))
        .await
        .unwrap();
    let value = "x".repeat(1000);
    for i in 0..100 {
        cache.set(&format!("k{i}"), &value).await.unwrap();
    }
    assert!(cache.get::<String>("k0").await.unwrap().is_some());
    let mut i = 100;
    while cache.stats().await.unwrap().entries == i {
        cache.set(&format!("k{i}"), &value).await.unwrap();
        i += 1;
        assert!(i < 2000, "nothing was evicted");
    }
    assert!(
        cache.get::<String>("k0").await.unwrap().is_some(),
        "k0 was read: it stays"
    );
    assert_eq!(
        cache.get::<String>("k1").await.unwrap(),
        None,
        "k1 was least recently used"
    );
    assert!(cache.stats().await.unwrap().volume <= limit);
}

#[tokio::test]
async fn volume_stays_under_the_limit_writing_five_times_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 512 * 1024;
    let cache = PersistentCache::open(CacheOptions::new(dir.path()).size_limit(limit))
        .await
        .unwrap();
    let mut written = 0;
    let mut i = 0u64;
    while written < 5 * limit {
        let value = vec![(i % 256) as u8; 500 + (i as usize * 131) % 4000];
        cache
            .set(&format!("blob:{}", i % 300), &value)
            .await
            .unwrap();
        written += value.len() as u64;
        let stats = cache.stats().await.unwrap();
        assert!(stats.volume <= limit, "volume {} > {limit}", stats.volume);
        i += 1;
    }
    let stats = cache.stats().await.unwrap();
    assert_eq!(
        stats.volume,
        bytes_on_disk(dir.path()),
        "volume is the real disk use"
    );
    cache.close().await.unwrap();
    assert!(bytes_on_disk(dir.path()) <= limit);
}

#[tokio::test]
async fn delete_clear_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()).size_limit(10 << 20))
        .await
        .unwrap();
    cache
        .set("user:123", &json!({"name": "John"}))
        .await
        .unwrap();
    cache
        .set("user:456", &json!({"name": "Jane"}))
        .await
        .unwrap();
    assert!(cache.delete("user:123").await.unwrap());
    assert!(!cache.delete("user:123").await.unwrap());
    assert!(!cache.delete("never-set").await.unwrap());
    assert!(cache
        .get::<serde_json::Value>("user:456")
        .await
        .unwrap()
        .is_some());
    assert!(cache
        .get::<serde_json::Value>("user:123")
        .await
        .unwrap()
        .is_none());

    let s = cache.stats().await.unwrap();
    assert_eq!((s.entries, s.hits, s.misses), (1, 1, 1));
    assert_eq!(s.size_limit, 10 << 20);
    assert_eq!(s.directory, dir.path().canonicalize().unwrap());
    assert!(s.volume > 0 && s.volume == bytes_on_disk(dir.path()));

    cache.clear().await.unwrap();
    let s = cache.stats().await.unwrap();
    assert_eq!(s.entries, 0);
    assert!(cache
        .get::<serde_json::Value>("user:456")
        .await
        .unwrap()
        .is_none());
    cache.close().await.unwrap();
    let cache = open(dir.path()).await;
    assert_eq!(cache.stats().await.unwrap().entries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_tasks_share_one_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..64u64 {
        let cache = cache.clone();
        tasks.spawn(async move {
            for i in 0..50u64 {
                let key = format!("task{t}:{i}");
                cache.set(&key, &(t * 1000 + i)).await.unwrap();
                cache.set("shared", &t).await.unwrap();
                assert_eq!(cache.get::<u64>(&key).await.unwrap(), Some(t * 1000 + i));
                assert!(cache.get::<u64>("shared").await.unwrap().unwrap() < 64);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // And from plain threads too.
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    for i in 0..50u64 {
                        cache.set(&format!("thread{t}:{i}"), &i).await.unwrap();
                    }
                })
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(cache.stats().await.unwrap().entries, 64 * 50 + 1 + 8 * 50);
}

#[tokio::test]
async fn bad_keys_and_oversized_values_are_errors_that_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 64 * 1024;
    let cache = PersistentCache::open(CacheOptions::new(dir.path()).size_limit(limit))
        .await
        .unwrap();
    cache.set("keep", &"me").await.unwrap();
    let before = cache.stats().await.unwrap();
    assert!(matches!(cache.set("", &1).await, Err(Error::InvalidKey(_))));
    assert!(matches!(
        cache.get::<i32>("").await,
        Err(Error::InvalidKey(_))
    ));
    assert!(matches!(cache.delete("").await, Err(Error::InvalidKey(_))));
    let long = "k".repeat(4097);
    assert!(matches!(
        cache.set(&long, &1).await,
        Err(Error::InvalidKey(_))
    ));
    cache.set(&"k".repeat(4096), &1).await.unwrap();
    cache.delete(&"k".repeat(4096)).await.unwrap();
    let huge = vec![0u8; limit as usize];
    match cache.set_raw("huge", &huge, Expiry::Never).await {
        Err(Error::ValueTooLarge { size, limit: l }) => assert!(size > l && l == limit),
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert_eq!(
        cache.get::<String>("keep").await.unwrap().as_deref(),
        Some("me")
    );
    assert_eq!(cache.get::<Vec<u8>>("huge").await.unwrap(), None);
    let after = cache.stats().await.unwrap();
    assert_eq!(after.entries, before.entries);
    // A key that looks like a path is just a key: nothing is created outside the directory.
    let outside = dir.path().parent().unwrap().join("escaped-by-key");
    cache
        .set(
            &format!("../{}", outside.file_name().unwrap().to_str().unwrap()),
            &1,
        )
        .await
        .unwrap();
    cache.set("/etc/passwd", &1).await.unwrap();
    assert!(!outside.exists());
    assert_eq!(cache.get::<i32>("/etc/passwd").await.unwrap(), Some(1));
}

#[tokio::test]
async fn a_truncated_last_record_is_recovered_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    cache.set("a", &"first").await.unwrap();
    cache.set("b", &"x".repeat(5000)).await.unwrap();
    cache.close().await.unwrap();
    // Cut the last record in half, as a crash in the middle of its write would.
    let data = dir.path().join(persistent_cache::DATA_DIRECTORY);
    let mut segs: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let last = segs.pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    file.set_len(len - 2500).unwrap();
    std::fs::remove_file(data.join("index.hint")).unwrap();

    let cache = open(dir.path()).await;
    assert_eq!(
        cache.get::<String>("a").await.unwrap().as_deref(),
        Some("first")
    );
    assert_eq!(
        cache.get::<String>("b").await.unwrap(),
        None,
        "the torn value is dropped"
    );
    cache.set("c", &3).await.unwrap();
    cache.close().await.unwrap();
    let cache = open(dir.path()).await;
    assert_eq!(cache.get::<i32>("c").await.unwrap(), Some(3));
}

#[tokio::test]
async fn opening_an_open_directory_shares_the_same_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache1 = open(dir.path()).await;
    let cache2 = PersistentCache::open(CacheOptions::new(dir.path().join(".")))
        .await
        .unwrap();
    cache1.set("k", &"from one").await.unwrap();
    assert_eq!(
        cache2.get::<String>("k").await.unwrap().as_deref(),
        Some("from one")
    );
    cache1.close().await.unwrap(); // the other handle keeps the cache open
    cache2.set("k2", &2).await.unwrap();
    assert_eq!(cache2.get::<i32>("k2").await.unwrap(), Some(2));
    cache2.close().await.unwrap();
    let cache3 = open(dir.path()).await;
    assert_eq!(cache3.get::<i32>("k2").await.unwrap(), Some(2));
}

#[tokio::test]
async fn an_unusable_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    match PersistentCache::open(CacheOptions::new(&file)).await {
        Err(e @ Error::Directory { .. }) => assert!(e.to_string().contains("a-file"), "{e}"),
        Err(other) => panic!("expected a Directory error, got {other}"),
        Ok(_) => panic!("opened a file as a cache directory"),
    }
}

#[tokio::test]
async fn keys_lists_by_prefix_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    for i in 0..2500 {
        cache.set(&format!("user:{i:05}"), &i).await.unwrap();
    }
    cache.set("file:/etc/hosts", "h").await.unwrap();
    cache.set("api:x", "a").await.unwrap();
    let users = cache.keys("user:").await.unwrap();
    assert_eq!(users.len(), 2500);
    assert!(
        users.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicates"
    );
    assert_eq!(users[0], "user:00000");
    assert_eq!(cache.keys("file:").await.unwrap(), vec!["file:/etc/hosts"]);
    assert_eq!(cache.keys("").await.unwrap().len(), 2502);
    let page = cache
        .keys_page("user:", Some("user:02497"), 10)
        .await
        .unwrap();
    assert_eq!(page, vec!["user:02498", "user:02499"]);
}

/// A slow open (recovery replaying a big log) does not hold up the open of another directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_open_does_not_hold_up_other_directories() {
    let dir = tempfile::tempdir().unwrap();
    let (big, small) = (dir.path().join("big"), dir.path().join("small"));
    let cache = open(&big).await;
    let value = vec![1u8; 16];
    for i in 0..200_000u32 {
        cache
            .set_raw(&format!("key:{i}"), &value, Expiry::Never)
            .await
            .unwrap();
    }
    cache.close().await.unwrap();
    open(&small).await.close().await.unwrap();
    // No snapshot: the next open replays all 200 000 records.
    std::fs::remove_file(
        big.join(persistent_cache::DATA_DIRECTORY)
            .join("index.hint"),
    )
    .unwrap();

    let started = std::time::Instant::now();
    let slow = tokio::spawn(async move {
        let cache = PersistentCache::open(CacheOptions::new(&big))
            .await
            .unwrap();
        (started.elapsed(), cache)
    });
    // Let the slow open start first.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let other = std::time::Instant::now();
    let small_cache = open(&small).await;
    let small_took = other.elapsed();
    let (big_took, big_cache) = slow.await.unwrap();
    assert_eq!(big_cache.stats().await.unwrap().entries, 200_000);
    assert!(
        small_took * 2 < big_took,
        "the small open took {small_took:?} while the big one took {big_took:?}"
    );
    drop((small_cache, big_cache));
}

/// `flush` makes a write durable at once and writes the index snapshot: the next open after
/// a crash (files as `flush` left them) needs no replay of what came before.
#[tokio::test]
async fn flush_writes_the_snapshot_and_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    cache.set_raw("k", b"v", Expiry::Never).await.unwrap();
    let snapshot = dir
        .path()
        .join(persistent_cache::DATA_DIRECTORY)
        .join("index.hint");
    assert!(!snapshot.exists());
    cache.flush().await.unwrap();
    assert!(snapshot.exists());
    cache.blocking().flush().unwrap();
    cache.close().await.unwrap();
}

/// Batches through the component: the same results as single calls, typed and raw, a bad entry
/// refused whole, and batches big enough to run off the runtime's threads.
#[tokio::test]
async fn get_many_and_set_many_match_single_calls() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()).memory_budget(0))
        .await
        .unwrap();
    cache
        .set_many(
            &[("a", json!(1)), ("b", json!({"x": [1, 2]}))],
            Expiry::Never,
        )
        .await
        .unwrap();
    let typed: Vec<Option<serde_json::Value>> =
        cache.get_many(&["a", "missing", "b"]).await.unwrap();
    assert_eq!(typed, [Some(json!(1)), None, Some(json!({"x": [1, 2]}))]);
    let refused = cache
        .set_many_raw(&[("c", &b"1"[..]), ("", &b"2"[..])], Expiry::Never)
        .await;
    assert!(matches!(refused, Err(Error::InvalidKey(_))), "{refused:?}");
    assert_eq!(cache.get_raw("c").await.unwrap(), None);
    // 1000 entries of 1 KiB: more than one inline call may take, so off the runtime.
    let keys: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
    let entries: Vec<(&str, Vec<u8>)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), vec![i as u8; 1024]))
        .collect();
    cache
        .set_many_raw(&entries, Duration::from_secs(60))
        .await
        .unwrap();
    let found = cache.get_many_raw(&keys).await.unwrap();
    for (i, value) in found.iter().enumerate() {
        assert_eq!(value.as_deref(), Some(&entries[i].1[..]), "k{i}");
    }
    let stats = cache.stats().await.unwrap();
    assert_eq!((stats.hits, stats.misses), (1002, 2));
    cache.close().await.unwrap();
    let cache = open(dir.path()).await;
    assert_eq!(
        cache.get_raw("k999").await.unwrap(),
        Some(vec![231u8; 1024])
    );
}

/// A big value is read and checked by the host (`value-reader`), not copied through the
/// component: a 40 MiB value reads back under a 24 MiB guest memory limit (through the guest
/// it could not), and a damaged byte in it is caught by the host's check.
#[tokio::test]
async fn big_values_are_read_by_the_host_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let options = CacheOptions::new(dir.path()).size_limit(200 << 20);
    let big: Vec<u8> = (0..40u32 << 20).map(|i| (i % 251) as u8).collect();
    let cache = PersistentCache::open(options.clone().memory_limit(256 << 20))
        .await
        .unwrap();
    cache.set_raw("big", &big, Expiry::Never).await.unwrap();
    cache
        .set_raw("other", &[5u8; 100 << 10], Expiry::Never)
        .await
        .unwrap();
    cache.close().await.unwrap();

    let cache = PersistentCache::open(options.clone().memory_limit(24 << 20))
        .await
        .unwrap();
    let got = cache.get_raw("big").await.unwrap().expect("a hit");
    assert!(got == big, "the value read back differs");
    cache.close().await.unwrap();

    // Damage one byte in the middle of the value: the host's hash check refuses it.
    let data = dir.path().join(persistent_cache::DATA_DIRECTORY);
    let segment = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::metadata(p).unwrap().len() > 40 << 20)
        .expect("the segment holding the big value");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes
        .windows(251)
        .position(|w| w == &big[..251])
        .expect("the value's bytes")
        + (20 << 20);
    bytes[at] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    let cache = PersistentCache::open(options.memory_limit(24 << 20))
        .await
        .unwrap();
    assert_eq!(cache.get_raw("big").await.unwrap(), None);
    assert_eq!(
        cache.get_raw("other").await.unwrap(),
        Some(vec![5u8; 100 << 10])
    );
    cache.close().await.unwrap();
}

/// A batch bigger than the engine's memory limit is refused with `MemoryLimit` (the engine is
/// restarted), and the cache keeps working with what it held.
#[tokio::test]
async fn a_batch_past_the_memory_limit_is_refused_and_the_cache_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(
        CacheOptions::new(dir.path())
            .size_limit(400 << 20)
            .memory_limit(48 << 20),
    )
    .await
    .unwrap();
    cache
        .set_raw("before", b"kept", Expiry::Never)
        .await
        .unwrap();
    let keys: Vec<String> = (0..80).map(|i| format!("big{i}")).collect();
    let value = vec![1u8; 1 << 20];
    let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &value[..])).collect();
    let refused = cache.set_many_raw(&entries, Expiry::Never).await;
    assert!(
        matches!(refused, Err(Error::MemoryLimit { .. })),
        "{refused:?}"
    );
    assert_eq!(
        cache.get_raw("before").await.unwrap(),
        Some(b"kept".to_vec())
    );
    cache
        .set_many_raw(&entries[..4], Expiry::Never)
        .await
        .unwrap();
    let found = cache.get_many_raw(&keys[..4]).await.unwrap();
    assert!(found.iter().all(|v| v.as_deref() == Some(&value[..])));
    cache.close().await.unwrap();
}
