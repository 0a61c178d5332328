//! Damaged data on the real host: every file of a populated cache directory is truncated and
//! bit-flipped at many positions; open either works or says `Corrupt`, a damaged entry is a
//! miss and never a value the key did not hold (with a snapshot: never a stale or deleted one
//! either). Also: unknown files are left alone and a newer format version is refused.

use persistent_cache::{CacheOptions, Error, Expiry, PersistentCache};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What was written: per key, the final value (`None` once deleted) and every value it held.
#[derive(Default)]
struct Model {
    last: BTreeMap<String, Option<Vec<u8>>>,
    ever: BTreeMap<String, Vec<Vec<u8>>>,
}

impl Model {
    fn set(&mut self, key: &str, value: Vec<u8>) {
        self.ever.entry(key.into()).or_default().push(value.clone());
        self.last.insert(key.into(), Some(value));
    }
}

/// 64 KiB limit → 8 KiB segments: the data spans several sealed segments plus the active one.
const LIMIT: u64 = 64 * 1024;

fn options(dir: &Path) -> CacheOptions {
    CacheOptions::new(dir).size_limit(LIMIT)
}

fn value(i: usize, round: usize) -> Vec<u8> {
    let len = 200 + (i * 97 + round * 31) % 700;
    (0..len).map(|j| (i * 7 + j + round * 13) as u8).collect()
}

/// Fills `dir` with live entries (some with TTLs), overwrites and deletes; nothing is evicted.
async fn populate(dir: &Path) -> Model {
    let cache = PersistentCache::open(options(dir)).await.unwrap();
    let mut model = Model::default();
    for round in 0..2 {
        for i in 0..30 {
            let key = format!("key:{i}");
            let v = value(i, round);
            if i % 4 == 0 {
                let ttl = std::time::Duration::from_secs(3600);
                cache.set_raw(&key, &v, ttl).await.unwrap();
            } else {
                cache.set_raw(&key, &v, Expiry::Never).await.unwrap();
            }
            model.set(&key, v);
        }
        for i in (round..30).step_by(7) {
            let key = format!("key:{i}");
            assert!(cache.delete(&key).await.unwrap());
            model.last.insert(key, None);
        }
    }
    let stats = cache.stats().await.unwrap();
    assert_eq!(
        stats.entries as usize,
        model.last.values().filter(|v| v.is_some()).count()
    );
    cache.close().await.unwrap();
    model
}

/// The engine's files live in the cache directory's `data/`.
fn data(dir: &Path) -> PathBuf {
    dir.join(persistent_cache::DATA_DIRECTORY)
}

/// The engine's files of the cache directory `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(data(to)).unwrap();
    for file in files(from) {
        std::fs::copy(&file, data(to).join(file.file_name().unwrap())).unwrap();
    }
}

/// Positions to damage in a file of `len` bytes: both ends, record-header-sized steps at the
/// start, and an even spread over the rest.
fn positions(len: usize) -> Vec<usize> {
    let mut at: Vec<usize> = (0..len.min(48)).step_by(3).collect();
    at.extend((0..len).step_by((len / 24).max(1)));
    at.extend([len.saturating_sub(1), len / 2]);
    at.retain(|&p| p < len);
    at.sort();
    at.dedup();
    at
}

/// Opens the damaged directory and checks it; returns whether open said `Corrupt`.
///
/// With `tail_loss`, the log is replayed without a snapshot, so the damaged records' effects are
/// lost as a crash before them would lose them: a key may read any value it ever held (or a
/// deleted one come back). Otherwise (a snapshot written at close anchors the log) a key reads
/// its last value or nothing: damage costs only the entries in it.
///
/// With `snapshot`, open trusted the index snapshot and may not have seen the damage; the
/// second open (a full replay) may then find it and forget more, even the write made between.
async fn check_damaged(
    dir: &Path,
    model: &Model,
    what: &str,
    tail_loss: bool,
    snapshot: bool,
) -> bool {
    let cache = match PersistentCache::open(options(dir)).await {
        Ok(cache) => cache,
        Err(Error::Corrupt(message)) => {
            assert!(!message.is_empty(), "{what}");
            return true;
        }
        Err(other) => panic!("{what}: open failed with {other:?}, not Corrupt"),
    };
    let mut seen = BTreeMap::new();
    for (key, last) in &model.last {
        let got = cache
            .get_raw(key)
            .await
            .unwrap_or_else(|e| panic!("{what}: get {key} failed: {e:?}"));
        if let Some(got) = &got {
            if tail_loss {
                assert!(
                    model.ever[key].contains(got),
                    "{what}: {key} read a value it never held"
                );
            } else {
                assert_eq!(
                    Some(got),
                    last.as_ref(),
                    "{what}: {key} read a stale, deleted or wrong value"
                );
            }
        }
        seen.insert(key.clone(), got);
    }
    // The cache keeps working, and what it forgot stays forgotten: another open that replays
    // the whole log reads the same (with a snapshot at the first open: see below).
    cache
        .set_raw("after-damage", b"new", Expiry::Never)
        .await
        .unwrap();
    assert_eq!(
        cache.get_raw("after-damage").await.unwrap().as_deref(),
        Some(&b"new"[..]),
        "{what}"
    );
    cache.close().await.unwrap();
    // As if the process had crashed instead: no fresh index snapshot, open replays the log.
    let _ = std::fs::remove_file(data(dir).join("index.hint"));
    let cache = PersistentCache::open(options(dir)).await.unwrap();
    for (key, first) in &seen {
        if let Some(got) = cache.get_raw(key).await.unwrap() {
            if snapshot {
                // The first open trusted the snapshot and read around the damage; this replay
                // of the whole log meets it, and the rules of a replay without a snapshot
                // apply: a damaged overwrite or delete may let an earlier value come back.
                assert!(
                    model.ever[key].contains(&got),
                    "{what}: {key} read a value it never held at the next open"
                );
            } else {
                assert_eq!(
                    Some(&got),
                    first.as_ref(),
                    "{what}: {key} came back or changed at the next open"
                );
            }
        }
    }
    let after = cache.get_raw("after-damage").await.unwrap();
    assert!(
        after.as_deref() == Some(&b"new"[..]) || (snapshot && after.is_none()),
        "{what}: the write after recovery was lost"
    );
    cache.close().await.unwrap();
    false
}

async fn damage_every_file(with_snapshot: bool) {
    let pristine = tempfile::tempdir().unwrap();
    let model = populate(pristine.path()).await;
    if !with_snapshot {
        // As after a crash: no index snapshot, open replays the whole log.
        std::fs::remove_file(data(pristine.path()).join("index.hint")).unwrap();
    }
    let targets = files(pristine.path());
    let segments = targets
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .count();
    assert!(segments >= 4, "only {segments} segments");
    let (mut cases, mut corrupt) = (0, 0);
    for target in &targets {
        let name = target.file_name().unwrap().to_str().unwrap().to_owned();
        let original = std::fs::read(target).unwrap();
        for pos in positions(original.len()) {
            for flip in [true, false] {
                let dir = tempfile::tempdir().unwrap();
                copy_dir(pristine.path(), dir.path());
                let mut bytes = original.clone();
                if flip {
                    bytes[pos] ^= 1 << (pos % 8);
                } else {
                    bytes.truncate(pos);
                }
                std::fs::write(data(dir.path()).join(&name), &bytes).unwrap();
                let what = format!(
                    "{} {name} at {pos}",
                    if flip { "bit flip in" } else { "truncating" }
                );
                // Without a snapshot nothing anchors the log: a damaged record that overwrote
                // or deleted a key may let an earlier value of it come back. A truncated file
                // looks like a log copied before its last writes (a snapshot promising more
                // than a segment holds, or a snapshot cut short): open then replays the log.
                let tail_loss = !with_snapshot || !flip;
                corrupt += usize::from(
                    check_damaged(dir.path(), &model, &what, tail_loss, with_snapshot).await,
                );
                cases += 1;
            }
        }
    }
    println!(
        "damage ({}): {cases} damaged copies of {} files, {corrupt} refused as Corrupt",
        if with_snapshot {
            "with index snapshot"
        } else {
            "log replay"
        },
        targets.len()
    );
    // Only the metadata file's damage is reported as Corrupt; everything else is recovered.
    assert!(corrupt > 0 && corrupt < cases / 4, "{corrupt} of {cases}");
}

#[tokio::test]
async fn damage_to_any_file_never_yields_a_wrong_value_with_a_snapshot() {
    damage_every_file(true).await;
}

#[tokio::test]
async fn damage_to_any_file_never_yields_a_wrong_value_on_log_replay() {
    damage_every_file(false).await;
}

#[tokio::test]
async fn unknown_files_and_directories_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let foreign: Vec<(&str, &[u8])> = vec![
        ("notes.txt", b"mine"),
        ("backup.tmp", b"a user's temporary file"),
        ("0000000001.seg.bak", b"not a segment"),
        ("index.hint.old", b"not a snapshot"),
        ("sub/0000000002.seg", b"inside a subdirectory"),
    ];
    // In the engine's own directory and, as a version 0.2 directory would have them, in the
    // cache directory itself (from which open moves the engine's files into data/).
    let places = [dir.path().to_path_buf(), data(dir.path())];
    for place in &places {
        std::fs::create_dir_all(place.join("sub")).unwrap();
        for (name, bytes) in &foreign {
            std::fs::write(place.join(name), bytes).unwrap();
        }
    }
    // Small limit: the writes below evict and compact, and clear deletes every segment.
    let cache = PersistentCache::open(CacheOptions::new(dir.path()).size_limit(32 * 1024))
        .await
        .unwrap();
    for i in 0..200 {
        cache
            .set_raw(&format!("k{i}"), &[i as u8; 700], Expiry::Never)
            .await
            .unwrap();
    }
    cache.clear().await.unwrap();
    cache.set_raw("k", b"v", Expiry::Never).await.unwrap();
    cache.close().await.unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()).size_limit(32 * 1024))
        .await
        .unwrap();
    assert_eq!(
        cache.get_raw("k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    cache.close().await.unwrap();
    for place in &places {
        for (name, bytes) in &foreign {
            assert_eq!(
                std::fs::read(place.join(name)).unwrap(),
                *bytes,
                "{name} in {} was changed",
                place.display()
            );
        }
    }
}

#[tokio::test]
async fn a_directory_from_a_newer_format_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()))
        .await
        .unwrap();
    cache.set("k", &1).await.unwrap();
    cache.close().await.unwrap();
    // What a future engine would write: the next format version, with a valid checksum.
    let meta = data(dir.path()).join("pcache.meta");
    let mut bytes = std::fs::read(&meta).unwrap();
    assert_eq!(bytes.len(), 32);
    let future = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) + 1;
    bytes[8..12].copy_from_slice(&future.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..28]);
    bytes[28..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&meta, &bytes).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> = files(dir.path())
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();

    match PersistentCache::open(CacheOptions::new(dir.path())).await {
        Err(e @ Error::IncompatibleFormat(_)) => {
            let message = e.to_string();
            assert!(message.contains(&format!("version {future}")), "{message}");
        }
        other => panic!("expected IncompatibleFormat, got {other:?}"),
    }
    let after: Vec<(PathBuf, Vec<u8>)> = files(dir.path())
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    assert_eq!(before, after, "a refused directory must not be modified");
    // The refusal released the directory: nothing is left locked.
    assert!(!matches!(
        PersistentCache::open(CacheOptions::new(dir.path())).await,
        Err(Error::Locked { .. })
    ));
}

/// A snapshot whose entries claim lengths far past their segment, its checksum made to match
/// (only a crafted file does that), on the real component: those entries read as misses and
/// the rest of the cache works. (A claimed length over 64 KiB takes the host-read path, whose
/// header check already refused it; the engine now also refuses any slot past its segment's
/// end before allocating for it.)
#[tokio::test]
async fn a_crafted_snapshot_entry_claiming_a_huge_length_reads_as_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()))
        .await
        .unwrap();
    // Under the 64 KiB the engine reads into its own memory (bigger values the host reads,
    // after the engine checked the record's header against the entry).
    let value = vec![5u8; 10_000];
    for key in ["a", "b", "c"] {
        cache.set_raw(key, &value, Expiry::Never).await.unwrap();
    }
    cache.close().await.unwrap();
    let path = data(dir.path()).join("index.hint");
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(persistent_cache_guest::format::is_snapshot_table(&bytes));
    // The layout of format.rs: the header's entry count at 24 and segment count at 44, 24-byte
    // segment summaries after the 56-byte header, then 32-byte entries with the length at 8.
    let segments = u32::from_le_bytes(bytes[44..48].try_into().unwrap()) as usize;
    let count = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    assert_eq!(count, 3);
    let entries_at = 56 + segments * 24;
    for i in 0..count {
        let len_at = entries_at + i * 32 + 8;
        bytes[len_at..len_at + 4].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
    }
    let body = bytes.len() - 8;
    let hash = xxhash_rust::xxh3::xxh3_64(&bytes[..body]);
    bytes[body..].copy_from_slice(&hash.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let cache = PersistentCache::open(CacheOptions::new(dir.path()))
        .await
        .unwrap();
    for key in ["a", "b", "c"] {
        assert_eq!(cache.get_raw(key).await.unwrap(), None, "{key}");
    }
    cache.set_raw("d", b"fine", Expiry::Never).await.unwrap();
    assert_eq!(
        cache.get_raw("d").await.unwrap().as_deref(),
        Some(&b"fine"[..])
    );
    cache.close().await.unwrap();
}
