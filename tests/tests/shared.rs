//! Several processes on one cache directory, end to end: real child processes
//! (`cache-child`), the real component in the real host, real files and real `flock`s.

mod common;

use common::child;
use persistent_cache::{CacheOptions, Expiry, PersistentCache};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Runs `cache-child DIR args...` to completion and returns its stdout; panics with its stderr
/// if it fails.
fn run_child(dir: &std::path::Path, args: &[&str]) -> String {
    let out = child().arg(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "cache-child {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_second_process_reads_what_the_first_wrote_while_it_is_open_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()))
        .await
        .unwrap();
    cache.set("from:parent", &"hello").await.unwrap();
    // The parent keeps the cache open throughout.
    assert_eq!(
        run_child(dir.path(), &["get", "from:parent"]).trim(),
        "\"hello\""
    );
    run_child(dir.path(), &["set", "from:child", "42"]);
    assert_eq!(cache.get::<i64>("from:child").await.unwrap(), Some(42));
    // Overwrites and deletes cross too.
    run_child(dir.path(), &["set", "from:parent", "\"changed\""]);
    assert_eq!(
        cache.get::<String>("from:parent").await.unwrap().as_deref(),
        Some("changed")
    );
    assert!(cache.delete("from:child").await.unwrap());
    assert_eq!(run_child(dir.path(), &["get", "from:child"]).trim(), "null");
    cache.close().await.unwrap();
}

#[tokio::test]
async fn exclusive_keeps_the_directory_to_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()).exclusive(true))
        .await
        .unwrap();
    cache.set("k", &1).await.unwrap();
    let out = child().arg(dir.path()).args(["get", "k"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("open exclusively in another process"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cache.close().await.unwrap();
    // And the other way round: an exclusive opener is refused while a shared one is open.
    let shared = PersistentCache::open(CacheOptions::new(dir.path()))
        .await
        .unwrap();
    let mut holder = child()
        .arg(dir.path())
        .arg("hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "open", "a second shared opener is fine");
    drop(shared);
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
}

/// 4 processes × 16 tasks: `incr` sums exactly, one `add` wins, one `pop` gets the prize.
#[tokio::test]
async fn incr_add_and_pop_are_atomic_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()))
        .await
        .unwrap();
    cache.set("prize", &"gold").await.unwrap();
    let children: Vec<Child> = (0..4)
        .map(|_| {
            child()
                .arg(dir.path())
                .args(["race", "16", "50"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut wins, mut pops) = (0, 0);
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for part in stdout.split_whitespace() {
            if let Some(n) = part.strip_prefix("wins=") {
                wins += n.parse::<u32>().unwrap();
            }
            if let Some(n) = part.strip_prefix("pops=") {
                pops += n.parse::<u32>().unwrap();
            }
        }
    }
    assert_eq!(cache.get::<i64>("n").await.unwrap(), Some(4 * 16 * 50));
    assert_eq!(wins, 1, "exactly one add wins");
    assert_eq!(pops, 1, "exactly one pop gets the prize");
    assert_eq!(cache.get_raw("prize").await.unwrap(), None);
}

/// `cache-child DIR mixed ID SEED OPS SIZE_LIMIT`, its output piped.
fn spawn_mixed(dir: &std::path::Path, id: u64, seed: u64, ops: u64, size_limit: u64) -> Child {
    child()
        .arg(dir)
        .args([
            "mixed",
            &id.to_string(),
            &seed.to_string(),
            &ops.to_string(),
        ])
        .arg(size_limit.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The last acknowledged version of each key a `mixed` child wrote (`None`: deleted).
fn acked(stdout: &str) -> HashMap<String, Option<u64>> {
    let mut last = HashMap::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("ack ") {
            let (key, version) = rest.split_once(' ').unwrap();
            let version: i64 = version.parse().unwrap();
            last.insert(key.to_owned(), u64::try_from(version).ok());
        }
    }
    last
}

/// The version a value of the mixed workload holds.
fn version_of(value: &[u8]) -> u64 {
    let text = std::str::from_utf8(value).unwrap();
    text.split(':').nth(2).unwrap().parse().unwrap()
}

/// 4 processes run a mixed workload on one directory at once (each checking that what it
/// reads of the others' keys never goes back in time), with a limit small enough that
/// compaction and eviction run all the time; afterwards the directory holds, for every key,
/// its last acknowledged write or nothing (evicted), never an older version.
#[tokio::test]
async fn four_processes_with_mixed_operations_agree_with_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<Child> = (0..4)
        .map(|id| spawn_mixed(dir.path(), id, id * 7 + 1, 3000, 2 << 20))
        .collect();
    let mut model = HashMap::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success() && stdout.ends_with("done\n"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        model.extend(acked(&stdout));
    }
    let cache = PersistentCache::open(CacheOptions::new(dir.path()).size_limit(2 << 20))
        .await
        .unwrap();
    let mut present = 0;
    for (key, version) in &model {
        match (cache.get_raw(key).await.unwrap(), version) {
            (None, _) => {}
            (Some(value), Some(version)) => {
                assert_eq!(version_of(&value), *version, "{key}");
                present += 1;
            }
            (Some(value), None) => {
                panic!("{key} was deleted but holds version {}", version_of(&value))
            }
        }
    }
    assert!(present > 20, "only {present} keys survived eviction");
    let stats = cache.stats().await.unwrap();
    assert!(stats.volume <= 2 << 20, "volume {}", stats.volume);
}

/// A writer killed with SIGKILL while the others write costs them nothing: no stuck lock, no
/// lost acknowledged write, no wrong value; the killed one's keys hold one of its versions.
#[tokio::test]
async fn a_writer_killed_with_sigkill_costs_the_others_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u64 {
        let mut children: Vec<Child> = (0..3)
            .map(|id| spawn_mixed(dir.path(), id, round * 100 + id, 2000, 4 << 20))
            .collect();
        // Kill writer 0 once it has acknowledged some writes.
        let mut victim_out = BufReader::new(children[0].stdout.take().unwrap());
        let mut victim_acks = String::new();
        let started = Instant::now();
        while victim_acks.lines().count() < 50 + round as usize * 97 {
            let mut line = String::new();
            if victim_out.read_line(&mut line).unwrap() == 0 {
                break;
            }
            victim_acks.push_str(&line);
            assert!(started.elapsed() < Duration::from_secs(60));
        }
        children[0].kill().unwrap();
        children[0].wait().unwrap();
        // What it printed before dying (it flushes after every acknowledged write).
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut victim_out, &mut rest);
        victim_acks.push_str(&rest);
        let mut model = acked(&victim_acks);
        for c in children.drain(1..) {
            let out = c.wait_with_output().unwrap();
            let stdout = String::from_utf8(out.stdout).unwrap();
            assert!(
                out.status.success() && stdout.ends_with("done\n"),
                "round {round}: a survivor failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            model.extend(acked(&stdout));
        }
        let cache = PersistentCache::open(CacheOptions::new(dir.path()))
            .await
            .unwrap();
        for (key, version) in &model {
            let value = cache.get_raw(key).await.unwrap();
            if key.starts_with("0:") {
                // The victim may have died between its write and the acknowledgement line.
                if let (Some(value), Some(version)) = (&value, version) {
                    assert!(version_of(value) >= *version, "round {round}: {key}");
                }
            } else {
                // Nothing is evicted at this limit: survivors' last writes are all there.
                assert_eq!(
                    value.as_deref().map(version_of),
                    *version,
                    "round {round}: {key}"
                );
            }
        }
        // The writes of the next round start from here; clear so that versions restart.
        cache.clear().await.unwrap();
        cache.close().await.unwrap();
    }
}

/// The write lock of a process that waits on another process never blocks its runtime: a
/// writer in another process holding the lock does not freeze this one's reads.
#[tokio::test]
async fn reads_do_not_wait_for_another_process_writing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()))
        .await
        .unwrap();
    cache.set_raw("k", b"v", Expiry::Never).await.unwrap();
    // Hold the write lock as another process would, for a long time.
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join(".write-lock"))
        .unwrap();
    lock.lock().unwrap();
    let started = Instant::now();
    for _ in 0..1000 {
        assert_eq!(
            cache.get_raw("k").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // A write waits for the lock off the runtime: a timer still fires meanwhile.
    let writer = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.set_raw("k", b"w", Expiry::Never).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writer.is_finished(), "the write did not wait for the lock");
    lock.unlock().unwrap();
    writer.await.unwrap().unwrap();
    assert_eq!(
        cache.get_raw("k").await.unwrap().as_deref(),
        Some(&b"w"[..])
    );
}

/// Damage in the newest segment while two processes have the cache open: readers stop before
/// it (never a wrong value), and the next writer reopens its engine by itself so that recovery
/// sets the damaged tail aside into `damaged/` instead of cutting it as a torn write.
#[tokio::test]
async fn damage_in_the_newest_segment_under_two_processes_never_yields_a_wrong_value() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()))
        .await
        .unwrap();
    for i in 0..5 {
        run_child(dir.path(), &["set", &format!("k{i}"), &i.to_string()]);
    }
    for i in 0..5 {
        assert_eq!(cache.get::<i64>(&format!("k{i}")).await.unwrap(), Some(i));
    }
    let data = dir.path().join(persistent_cache::DATA_DIRECTORY);
    let newest = || {
        let mut segments: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segments.sort();
        segments.pop().unwrap()
    };
    let before = std::fs::metadata(newest()).unwrap().len();
    run_child(dir.path(), &["set", "x1", "\"first\""]);
    let middle = std::fs::metadata(newest()).unwrap().len();
    run_child(dir.path(), &["set", "x2", "\"second\""]);
    run_child(dir.path(), &["set", "x3", "\"third\""]);
    assert!(before < middle);
    // Flip a byte in x2's record header: x3's record still decodes after it.
    let seg = newest();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[middle as usize + 8] ^= 0xFF;
    std::fs::write(&seg, &bytes).unwrap();

    assert_eq!(
        cache.get::<String>("x1").await.unwrap().as_deref(),
        Some("first")
    );
    assert_eq!(cache.get::<String>("x2").await.unwrap(), None);
    assert_eq!(cache.get::<String>("x3").await.unwrap(), None);
    // A write here finds the damage, reopens, and goes on.
    cache.set("y", &"mine").await.unwrap();
    assert_eq!(
        cache.get::<String>("y").await.unwrap().as_deref(),
        Some("mine")
    );
    for i in 0..5 {
        assert_eq!(cache.get::<i64>(&format!("k{i}")).await.unwrap(), Some(i));
    }
    assert_eq!(
        cache.get::<String>("x1").await.unwrap().as_deref(),
        Some("first")
    );
    // x2 is lost; x3 comes back only if recovery could keep it (a snapshot another process
    // wrote may cover it; else the damaged tail went into `damaged/`): never anything else.
    assert_eq!(cache.get::<String>("x2").await.unwrap(), None);
    let x3 = cache.get::<String>("x3").await.unwrap();
    assert!(x3.is_none() || x3.as_deref() == Some("third"), "{x3:?}");
    if x3.is_none() {
        assert!(
            data.join("damaged").read_dir().unwrap().count() > 0,
            "the damaged tail was set aside, not destroyed"
        );
    }
    // Both processes stay aligned on the log: writes keep crossing both ways.
    assert_eq!(run_child(dir.path(), &["get", "y"]).trim(), "\"mine\"");
    run_child(dir.path(), &["set", "z", "\"last\""]);
    assert_eq!(
        cache.get::<String>("z").await.unwrap().as_deref(),
        Some("last")
    );
    cache.set("w", &1).await.unwrap();
    assert_eq!(run_child(dir.path(), &["get", "w"]).trim(), "1");
    cache.close().await.unwrap();
}
