//! Read-only opens: a cache is read without writing a byte, and every write is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use persistent_cache::{BlockingCache, CacheOptions, Error, Expiry};

/// Every file under `dir` with its bytes, length and modification time.
fn files(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let bytes = std::fs::read(entry.path()).unwrap();
                found.insert(entry.path(), (bytes, meta.modified().unwrap()));
            }
        }
    }
    found
}

#[test]
fn a_read_only_open_reads_everything_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache");
    let cache = BlockingCache::open(CacheOptions::new(&path)).unwrap();
    for i in 0..200 {
        cache.set(&format!("user:{i}"), &i).unwrap();
    }
    cache
        .set_with_ttl("later", "soon gone", Duration::from_secs(3600))
        .unwrap();
    cache.delete("user:7").unwrap();
    cache.set("after-snapshot", "replayed").unwrap();
    cache.close().unwrap();
    let before = files(&path);

    let reader = BlockingCache::open(CacheOptions::new(&path).read_only(true)).unwrap();
    assert_eq!(reader.get::<i32>("user:3").unwrap(), Some(3));
    assert_eq!(reader.get::<i32>("user:7").unwrap(), None);
    assert_eq!(
        reader.get::<String>("after-snapshot").unwrap().as_deref(),
        Some("replayed")
    );
    assert_eq!(reader.keys("user:1").unwrap().len(), 111);
    assert!(reader.contains("later").unwrap());
    assert_eq!(reader.stats().unwrap().entries, 201);
    for refused in [
        reader.set("user:3", &0),
        reader.set_with_ttl("x", &1, Expiry::Never),
        reader.delete("user:3").map(drop),
        reader.add("new", &1, Expiry::Default).map(drop),
        reader.touch("user:3", Expiry::Never).map(drop),
        reader.pop::<i32>("user:3").map(drop),
        reader.incr("n", 1, 0).map(drop),
        reader.delete_prefix("user:").map(drop),
        reader.clear(),
    ] {
        assert!(matches!(refused, Err(Error::ReadOnly)), "{refused:?}");
    }
    assert_eq!(
        reader.get::<i32>("user:3").unwrap(),
        Some(3),
        "nothing changed"
    );
    reader.close().unwrap();
    assert_eq!(
        files(&path),
        before,
        "a read-only open wrote to the directory"
    );
}

#[test]
fn a_read_only_open_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let err = BlockingCache::open(CacheOptions::new(&missing).read_only(true)).unwrap_err();
    assert!(matches!(err, Error::Directory { .. }), "{err}");
    assert!(!missing.exists(), "a read-only open created the directory");
    // A directory that is not a cache: no `.lock` is made for it.
    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let err = BlockingCache::open(CacheOptions::new(&plain).read_only(true)).unwrap_err();
    assert!(matches!(err, Error::Directory { .. }), "{err}");
    assert_eq!(std::fs::read_dir(&plain).unwrap().count(), 0);
}
