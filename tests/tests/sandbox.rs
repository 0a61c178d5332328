//! The sandbox: memory and time limits, traps, and the one preopened directory. Faults are
//! injected through the test build of the guest (`persistent_cache_tests::FAULT_INJECTION_COMPONENT`),
//! which turns keys starting with `"\0pcache-fault:"` into commands; the released one cannot.

use persistent_cache::test_support::guest_component;
use persistent_cache::{CacheOptions, Error, Expiry, PersistentCache};
use persistent_cache_tests::FAULT_INJECTION_COMPONENT;
use std::path::Path;
use std::time::{Duration, Instant};

const FAULT: &str = "\u{0}pcache-fault:";

/// Options that run the fault-injection test component.
fn options(dir: &Path) -> CacheOptions {
    CacheOptions::new(dir).component(Some(FAULT_INJECTION_COMPONENT.into()))
}

/// Stores 100 entries and deletes every tenth; returns the expected contents.
async fn populate(cache: &PersistentCache) -> Vec<(String, Option<Vec<u8>>)> {
    let mut expected = Vec::new();
    for i in 0..100u32 {
        let key = format!("entry:{i}");
        let value = i.to_le_bytes().repeat(50);
        cache.set_raw(&key, &value, Expiry::Never).await.unwrap();
        if i % 10 == 0 {
            assert!(cache.delete(&key).await.unwrap());
            expected.push((key, None));
        } else {
            expected.push((key, Some(value)));
        }
    }
    expected
}

async fn assert_contents(cache: &PersistentCache, expected: &[(String, Option<Vec<u8>>)]) {
    for (key, value) in expected {
        assert_eq!(&cache.get_raw(key).await.unwrap(), value, "{key}");
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn fault(
    cache: &PersistentCache,
    command: &str,
    value: &[u8],
) -> persistent_cache::Result<()> {
    cache
        .set_raw(&format!("{FAULT}{command}"), value, Expiry::Never)
        .await
}

#[tokio::test]
async fn a_trap_is_an_error_and_the_restarted_engine_has_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(options(dir.path())).await.unwrap();
    let expected = populate(&cache).await;
    match fault(&cache, "trap", b"").await {
        Err(Error::Wasm(message)) => {
            assert!(message.contains("unreachable"), "{message}");
            assert!(!message.contains('\n'), "one line, no backtrace: {message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // The next call runs on a fresh instance that recovered the directory from disk.
    assert_contents(&cache, &expected).await;
    cache
        .set_raw("after", b"works", Expiry::Never)
        .await
        .unwrap();
    assert_eq!(cache.stats().await.unwrap().entries, 91);

    // A trap after a write completed but before it was acknowledged: the write is on disk and
    // the new instance finds it (a crash at that point could keep it too).
    match fault(&cache, "trap-after-set:half-done", b"landed").await {
        Err(Error::Wasm(_)) => {}
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(
        cache.get_raw("half-done").await.unwrap().as_deref(),
        Some(&b"landed"[..])
    );
    assert_contents(&cache, &expected).await;
    cache.close().await.unwrap();
    let cache = PersistentCache::open(options(dir.path())).await.unwrap();
    assert_contents(&cache, &expected).await;
    assert_eq!(
        cache.get_raw("after").await.unwrap().as_deref(),
        Some(&b"works"[..])
    );
}

/// A guest that panics writes its message to stderr before it traps: on a runtime thread (this
/// test's single-threaded runtime runs light calls inline), that write must not panic the host
/// (wasmtime-wasi's own stream bindings call tokio's `block_on` there).
#[tokio::test]
async fn a_guest_panic_on_a_runtime_thread_is_an_error_not_a_host_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(options(dir.path())).await.unwrap();
    cache.set_raw("k", b"v", Expiry::Never).await.unwrap();
    match fault(&cache, "panic", b"").await {
        Err(Error::Wasm(message)) => assert!(!message.contains('\n'), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(
        cache.get_raw("k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

/// The hit and miss counters count since open, across a trap and the engine's restart.
#[tokio::test]
async fn hit_and_miss_counts_survive_a_trap() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(options(dir.path())).await.unwrap();
    cache.set_raw("k", b"v", Expiry::Never).await.unwrap();
    for _ in 0..3 {
        assert!(cache.get_raw("k").await.unwrap().is_some());
    }
    for _ in 0..2 {
        assert!(cache.get_raw("absent").await.unwrap().is_none());
    }
    assert!(matches!(
        fault(&cache, "trap", b"").await,
        Err(Error::Wasm(_))
    ));
    assert!(cache.get_raw("k").await.unwrap().is_some());
    let stats = cache.stats().await.unwrap();
    assert_eq!((stats.hits, stats.misses), (4, 2), "{stats:?}");
}

#[tokio::test]
async fn a_call_past_the_time_limit_is_interrupted_and_the_engine_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let limit = Duration::from_millis(300);
    let cache = PersistentCache::open(options(dir.path()).time_limit(limit))
        .await
        .unwrap();
    let expected = populate(&cache).await;
    let started = Instant::now();
    match fault(&cache, "spin", b"").await {
        Err(e @ Error::TimeLimit { .. }) => {
            assert!(matches!(e, Error::TimeLimit { limit: l } if l == limit));
            assert!(e.to_string().contains("time limit"), "{e}");
        }
        other => panic!("expected TimeLimit, got {other:?}"),
    }
    // An endless loop is stopped, not waited for (generous bound: only a hang fails it).
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_contents(&cache, &expected).await;
    cache
        .set_raw("after", b"works", Expiry::Never)
        .await
        .unwrap();
    assert_eq!(
        cache.get_raw("after").await.unwrap().as_deref(),
        Some(&b"works"[..])
    );
}

#[tokio::test]
async fn memory_past_the_limit_is_an_error_and_the_engine_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 16 << 20;
    let cache = PersistentCache::open(options(dir.path()).size_limit(64 << 20).memory_limit(limit))
        .await
        .unwrap();
    let expected = populate(&cache).await;
    // A value the size limit allows but the memory limit does not: it cannot even be passed in.
    let big = vec![7u8; 20 << 20];
    match cache.set_raw("big", &big, Expiry::Never).await {
        Err(e @ Error::MemoryLimit { .. }) => {
            assert!(matches!(e, Error::MemoryLimit { limit: l } if l == limit));
            assert!(e.to_string().contains("memory limit"), "{e}");
        }
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
    assert_contents(&cache, &expected).await;
    assert_eq!(cache.get_raw("big").await.unwrap(), None);
    // The engine itself allocating without bound is stopped the same way.
    assert!(matches!(
        fault(&cache, "grow-memory", b"").await,
        Err(Error::MemoryLimit { .. })
    ));
    assert_contents(&cache, &expected).await;
    // Values well within the limit still work.
    let medium = vec![9u8; 2 << 20];
    cache
        .set_raw("medium", &medium, Expiry::Never)
        .await
        .unwrap();
    assert_eq!(cache.get_raw("medium").await.unwrap(), Some(medium));
}

#[tokio::test]
async fn a_memory_limit_below_what_the_engine_needs_fails_open_clearly() {
    let dir = tempfile::tempdir().unwrap();
    match PersistentCache::open(CacheOptions::new(dir.path()).memory_limit(64 * 1024)).await {
        Err(Error::MemoryLimit { limit }) => assert_eq!(limit, 64 * 1024),
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
    // Nothing stays locked: a sane configuration opens the directory.
    let cache = PersistentCache::open(CacheOptions::new(dir.path()))
        .await
        .unwrap();
    cache.set("k", &1).await.unwrap();
}

#[tokio::test]
async fn the_release_component_has_no_fault_hook_and_fault_keys_are_ordinary_keys() {
    // The shipped bytes carry none of the hook: neither its messages nor an option to turn it
    // on. The test build does carry the messages, so the search would find them.
    let release = guest_component();
    for marker in ["pcache-fault", "fault-injection"] {
        assert!(
            !contains(release, marker),
            "the embedded release component contains {marker:?}"
        );
    }
    let test_build = std::fs::read(FAULT_INJECTION_COMPONENT).unwrap();
    assert!(contains(&test_build, "pcache-fault"));
    assert!(!contains(&test_build, "fault-injection"));

    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()))
        .await
        .unwrap();
    for command in ["trap", "spin", "grow-memory", "open-outside"] {
        let key = format!("{FAULT}{command}");
        cache.set_raw(&key, b"data", Expiry::Never).await.unwrap();
        assert_eq!(
            cache.get_raw(&key).await.unwrap().as_deref(),
            Some(&b"data"[..])
        );
    }
}

#[tokio::test]
async fn the_guest_cannot_open_anything_outside_its_directory() {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("cache");
    let secret = outer.path().join("secret.txt");
    std::fs::write(&secret, b"outside").unwrap();
    // The guest's one preopen is the cache directory's data/.
    let data = dir.join(persistent_cache::DATA_DIRECTORY);
    std::fs::create_dir_all(data.join("sub")).unwrap();
    // A symlink inside the directory that points out of it.
    std::os::unix::fs::symlink(&secret, data.join("link-out")).unwrap();
    std::os::unix::fs::symlink(outer.path(), data.join("dir-out")).unwrap();
    let cache = PersistentCache::open(options(&dir)).await.unwrap();
    cache.set_raw("kept", b"yes", Expiry::Never).await.unwrap();
    let attempts = [
        "../secret.txt".to_owned(),
        "../created-by-guest".to_owned(),
        "../../etc/passwd".to_owned(),
        "/etc/passwd".to_owned(),
        secret.display().to_string(),
        "sub/../../secret.txt".to_owned(),
        "link-out".to_owned(),
        "dir-out/secret.txt".to_owned(),
        "dir-out/created-by-guest".to_owned(),
        // The host's own files, next to data/: out of the guest's reach.
        "../.lock".to_owned(),
        "../plugins/x".to_owned(),
    ];
    for path in &attempts {
        match fault(&cache, "open-outside", path.as_bytes()).await {
            // Refused by the one and only preopen, the cache directory.
            Err(Error::Io(err)) => {
                let message = err.to_string();
                assert!(
                    message.contains("refused by every preopen [/cache: ")
                        && !message.contains(", "),
                    "{path}: {message}"
                );
            }
            other => panic!("the guest opened {path:?} outside its directory: {other:?}"),
        }
    }
    // A path inside the directory does open: the refusals above are the sandbox, not a bug.
    assert!(fault(&cache, "open-outside", b"inside-is-fine")
        .await
        .is_ok());
    // `.lock` as the guest names it is a file of data/, never the host's lock next to it.
    assert!(fault(&cache, "open-outside", b".lock").await.is_ok());
    assert!(
        data.join(".lock").is_file(),
        "the guest reached the host's .lock"
    );
    assert_eq!(std::fs::read(&secret).unwrap(), b"outside");
    let outer_names: Vec<String> = std::fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut outer_names = outer_names;
    outer_names.sort();
    assert_eq!(outer_names, ["cache", "secret.txt"]);
    assert_eq!(
        cache.get_raw("kept").await.unwrap().as_deref(),
        Some(&b"yes"[..])
    );
}

#[tokio::test]
async fn keys_that_look_like_paths_stay_keys_inside_the_directory() {
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("cache");
    let cache = PersistentCache::open(CacheOptions::new(&dir))
        .await
        .unwrap();
    let keys = [
        "../../etc/passwd",
        "../escaped",
        "/abs/path",
        "/tmp/pcache-escape",
        "..",
        ".",
        "a/b/c",
        "C:\\Windows\\system32",
        // The engine's own file names, as keys.
        "0000000001.seg",
        "0000000002.seg",
        "index.hint",
        "pcache.meta",
        ".lock",
    ];
    for (i, key) in keys.iter().enumerate() {
        cache
            .set_raw(key, &[i as u8; 64], Expiry::Never)
            .await
            .unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            cache.get_raw(key).await.unwrap(),
            Some(vec![i as u8; 64]),
            "{key}"
        );
    }
    cache.close().await.unwrap();
    // Nothing was created next to the directory, nor anywhere a key names.
    let outer_names: Vec<_> = std::fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outer_names, ["cache"]);
    assert!(!Path::new("/tmp/pcache-escape").exists());
    assert!(!Path::new("/abs/path").exists());
    // Inside, the host's locks, its settings and data/; in data/ only the engine's own files: no
    // subdirectories, nothing named after a key.
    let mut top: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, [".lock", ".write-lock", "data", "settings.json"]);
    for entry in std::fs::read_dir(dir.join(persistent_cache::DATA_DIRECTORY)).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        assert!(entry.file_type().unwrap().is_file(), "{name} is not a file");
        let own = name == "pcache.meta"
            || name == "index.hint"
            || (name.len() == 14 && name.ends_with(".seg"));
        assert!(own, "unexpected file {name}");
    }
    // And the engine's files were not overwritten by the keys named like them.
    let cache = PersistentCache::open(CacheOptions::new(&dir))
        .await
        .unwrap();
    assert_eq!(
        cache.get_raw("index.hint").await.unwrap(),
        Some(vec![10; 64])
    );
    assert_eq!(cache.stats().await.unwrap().entries, keys.len() as u64);
}

/// `value-reader.stage` (the host reading a value for the engine) refuses what a hostile guest
/// could ask of it: a directory, a range past the file's end, 4 GiB of a 10-byte file (no
/// allocation), and bytes whose hash does not match; it stages only what matches.
#[tokio::test]
async fn the_host_reads_values_only_within_files_and_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(options(dir.path())).await.unwrap();
    let outcome = fault(&cache, "stage-hostile", b"").await;
    assert!(outcome.is_ok(), "{outcome:?}");
    cache.close().await.unwrap();
}
