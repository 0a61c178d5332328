//! Bad input and scarce resources on the real host: invalid keys and oversized values, a full
//! disk (a real tmpfs where the test may mount one, and `RLIMIT_FSIZE` everywhere), read-only
//! and inaccessible directories, and the one-owner-per-directory lock between processes.

mod common;

use persistent_cache::{CacheOptions, Error, Expiry, PersistentCache};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::child;

/// Every engine file of the cache directory `dir` (in its `data/`) with its bytes, by path.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> =
        std::fs::read_dir(dir.join(persistent_cache::DATA_DIRECTORY))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
    files.sort();
    files
}

#[tokio::test]
async fn invalid_keys_and_oversized_values_are_clear_errors_that_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 64 * 1024;
    let cache = PersistentCache::open(CacheOptions::new(dir.path()).size_limit(limit))
        .await
        .unwrap();
    cache.set_raw("keep", b"me", Expiry::Never).await.unwrap();
    let before = snapshot(dir.path());

    // The limit is 4096 bytes of UTF-8, not 4096 characters. (A Rust `&str` is always valid
    // UTF-8, so a key the WIT `string` type cannot carry cannot even be written down.)
    let too_long = [
        "k".repeat(4097),
        "é".repeat(2048) + "k", // 4097 bytes, 2049 characters
        "€".repeat(1366),       // 4098 bytes, 1366 characters
        "😀".repeat(1025),      // 4100 bytes
    ];
    for key in &too_long {
        match cache.set_raw(key, b"v", Expiry::Never).await {
            Err(e @ Error::InvalidKey(_)) => {
                assert!(e.to_string().contains("4096"), "{e}");
                assert!(e.to_string().contains(&key.len().to_string()), "{e}");
            }
            other => panic!("{} bytes: expected InvalidKey, got {other:?}", key.len()),
        }
        assert!(matches!(
            cache.get_raw(key).await,
            Err(Error::InvalidKey(_))
        ));
        assert!(matches!(cache.delete(key).await, Err(Error::InvalidKey(_))));
    }
    match cache.set_raw("", b"v", Expiry::Never).await {
        Err(e @ Error::InvalidKey(_)) => assert!(e.to_string().contains("empty"), "{e}"),
        other => panic!("expected InvalidKey, got {other:?}"),
    }
    // Entries bigger than the whole limit: refused with both sizes named.
    for len in [limit as usize, 10 * limit as usize] {
        match cache.set_raw("huge", &vec![1u8; len], Expiry::Never).await {
            Err(e @ Error::ValueTooLarge { .. }) => {
                let Error::ValueTooLarge { size, limit: l } = e else {
                    unreachable!()
                };
                assert_eq!(l, limit);
                assert_eq!(size, len as u64 + 23 + 4);
                assert!(e.to_string().contains(&size.to_string()));
            }
            other => panic!("expected ValueTooLarge, got {other:?}"),
        }
    }
    // Nothing changed: not the files, not the entries.
    assert_eq!(snapshot(dir.path()), before);
    assert_eq!(cache.stats().await.unwrap().entries, 1);

    // The boundaries themselves are accepted: 4096-byte keys in any script, and the largest
    // value whose entry (23-byte header, key, value) plus the 32-byte metadata file and the
    // 40-byte segment header fits.
    for key in ["k".repeat(4096), "é".repeat(2048), "€".repeat(1365) + "k"] {
        assert_eq!(key.len(), 4096);
        cache.set_raw(&key, b"ok", Expiry::Never).await.unwrap();
        assert_eq!(
            cache.get_raw(&key).await.unwrap().as_deref(),
            Some(&b"ok"[..])
        );
    }
    cache
        .set_raw("nul\0inside", b"fine", Expiry::Never)
        .await
        .unwrap();
    let largest = vec![5u8; limit as usize - 32 - 40 - 23 - 7];
    cache
        .set_raw("largest", &largest, Expiry::Never)
        .await
        .unwrap();
    assert_eq!(
        cache.get_raw("largest").await.unwrap(),
        Some(largest.clone())
    );
    assert!(cache.stats().await.unwrap().volume <= limit);
    cache.close().await.unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()).size_limit(limit))
        .await
        .unwrap();
    assert_eq!(cache.get_raw("largest").await.unwrap(), Some(largest));
}

/// Runs `cache-child SCRATCH diskfull MODE` and checks what it reports.
fn disk_full(mode: &str) -> Option<String> {
    let scratch = tempfile::tempdir().unwrap();
    let out = child()
        .arg(scratch.path())
        .args(["diskfull", mode])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{mode}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(why) = stdout.strip_prefix("unavailable ") {
        return Some(why.trim().to_owned());
    }
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{mode}: no {prefix:?} line in:\n{stdout}"))
            .to_owned()
    };
    assert_eq!(line("mode "), mode);
    let acked: usize = line("acked ").parse().unwrap();
    assert!(
        acked > 10,
        "{mode}: only {acked} writes fit before the disk was full"
    );
    let error = line("full-error ");
    let expected = if mode == "tmpfs" {
        "insufficient-space"
    } else {
        "file-too-large"
    };
    assert!(
        error.starts_with("io ") && error.contains(expected),
        "{mode}: set must fail with a clear Io error, got {error}"
    );
    for check in [
        "readable-while-full",
        "overwrite-refused-old-kept",
        "works-again",
        "reopen-intact",
    ] {
        assert_eq!(
            line(&format!("{check} ")),
            "ok",
            "{mode}: {check}\n{stdout}"
        );
    }
    None
}

#[test]
fn a_full_disk_fails_set_keeps_earlier_data_and_recovers_when_space_returns() {
    // A real file system running out of space, where this process may mount one (root, or a
    // user namespace); the file-size limit below runs everywhere.
    if let Some(why) = disk_full("tmpfs") {
        println!("tmpfs variant not run here: {why}");
    }
}

#[test]
fn a_file_size_limit_fails_set_keeps_earlier_data_and_recovers_when_lifted() {
    assert_eq!(disk_full("fsize"), None);
}

/// Runs `cache-child DIR set k 1` as an unprivileged user (root ignores file permissions).
fn set_as_unprivileged(dir: &Path) -> Output {
    let mut command = child();
    command.arg(dir).args(["set", "k", "1"]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::process::CommandExt;
        command.uid(65534).gid(65534);
    }
    command.output().unwrap()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn read_only_and_inaccessible_directories_are_clear_errors() {
    let outer = tempfile::tempdir().unwrap();
    chmod(outer.path(), 0o755); // reachable by the unprivileged child

    // A read-only empty directory: the lock file cannot be created.
    let read_only = outer.path().join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    chmod(&read_only, 0o555);
    // A directory that cannot even be listed or entered.
    let no_access = outer.path().join("no-access");
    std::fs::create_dir(&no_access).unwrap();
    chmod(&no_access, 0o000);
    // A missing directory whose parent is read-only: it cannot be created.
    let parent = outer.path().join("parent");
    std::fs::create_dir(&parent).unwrap();
    chmod(&parent, 0o555);
    let missing = parent.join("cache");

    for dir in [&read_only, &no_access, &missing] {
        let out = set_as_unprivileged(dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", dir.display());
        assert!(
            stderr.contains("cannot use ")
                && stderr.contains(dir.to_str().unwrap())
                && stderr.contains("ermission denied"),
            "{}: {stderr}",
            dir.display()
        );
    }

    // An existing cache whose files were made read-only: open fails with an I/O error naming
    // the file, and nothing is lost once the permissions are back.
    let existing = outer.path().join("existing");
    let out = child()
        .arg(&existing)
        .args(["set", "kept", "\"value\""])
        .output()
        .unwrap();
    assert!(out.status.success());
    // The cache directory and its data/ are 0700 (private): open them to the child.
    let data = existing.join(persistent_cache::DATA_DIRECTORY);
    chmod(&existing, 0o755);
    // The lock file stays usable (by the unprivileged child too): the engine's own files are
    // what cannot be written.
    chmod(&existing.join(persistent_cache::LOCK_FILE_NAME), 0o666);
    chmod(
        &existing.join(persistent_cache::WRITE_LOCK_FILE_NAME),
        0o666,
    );
    for entry in std::fs::read_dir(&data).unwrap() {
        chmod(&entry.unwrap().path(), 0o444);
    }
    chmod(&data, 0o555);
    chmod(&existing, 0o555);
    let out = set_as_unprivileged(&existing);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // The first engine file it must write (the metadata is only read when it is current).
    assert!(
        stderr.contains("ermission denied")
            && (stderr.contains("pcache.meta") || stderr.contains(".seg")),
        "{stderr}"
    );
    chmod(&existing, 0o755);
    chmod(&data, 0o755);
    for entry in std::fs::read_dir(&data).unwrap() {
        chmod(&entry.unwrap().path(), 0o644);
    }
    let out = child()
        .arg(&existing)
        .args(["get", "kept"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"value\"");
    // Let the temporary directory be removed.
    for dir in [&read_only, &no_access, &parent] {
        chmod(dir, 0o755);
    }
}

#[tokio::test]
async fn a_second_process_is_refused_at_once_naming_the_directory_until_an_exclusive_first_closes()
{
    let dir = tempfile::tempdir().unwrap();
    let canonical = dir.path().canonicalize().unwrap();
    let mut holder = child()
        .arg(dir.path())
        .args(["hold", "exclusive"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "open");

    // Another process: refused at once (it does not wait for the lock), naming the directory.
    let started = Instant::now();
    let mut other = child()
        .arg(dir.path())
        .args(["get", "k"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = other.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the second process is waiting for the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut other.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cache directory {} is open exclusively in another process",
            canonical.display()
        )),
        "{stderr}"
    );
    // This process too, with the typed error.
    match PersistentCache::open(CacheOptions::new(dir.path())).await {
        Err(Error::Locked { path }) => assert_eq!(path, canonical),
        other => panic!("expected Locked, got {other:?}"),
    }

    // The holder closes normally (its stdin ends): the lock is released with it.
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    let cache = PersistentCache::open(CacheOptions::new(dir.path()))
        .await
        .unwrap();
    cache.set("k", &1).await.unwrap();
}
