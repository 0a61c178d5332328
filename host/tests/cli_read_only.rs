//! `pcache` on a cache it may not write: `--read-only`, and reads that fall back to it.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{home, pcache_on, stderr, stdout};

/// The cache's files (`.lock`, and `data/`'s) with their bytes and modification times.
fn files(cache: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let data = std::fs::read_dir(cache.join("data")).unwrap();
    let paths = data.map(|entry| entry.unwrap().path());
    std::iter::once(cache.join(".lock"))
        .chain(paths)
        .map(|path| {
            let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            (path, (bytes, modified))
        })
        .collect()
}

/// Sets the mode of `dir`, everything under it, and what it holds: `dirs` for directories,
/// `files` for files.
fn chmod_all(dir: &Path, dirs: u32, files: u32) {
    std::fs::set_permissions(dir, PermissionsExt::from_mode(dirs)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            chmod_all(&path, dirs, files);
        } else {
            std::fs::set_permissions(&path, PermissionsExt::from_mode(files)).unwrap();
        }
    }
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn read_only_reads_everything_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    let run = |args: &[&str]| pcache_on(home(), d, &cache, args).output().unwrap();
    for (key, value) in [("user:1", "\"Ann\""), ("user:2", "\"Bob\""), ("n", "5")] {
        assert_eq!(code(&run(&["set", key, value])), Some(0));
    }
    let before = files(&cache);

    let out = run(&["--read-only", "get", "user:1"]);
    assert_eq!(
        (code(&out), stdout(&out)),
        (Some(0), "\"Ann\"\n".to_owned()),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&run(&["--read-only", "keys", "user:"])),
        "user:1\nuser:2\n"
    );
    let stats = stdout(&run(&["--read-only", "--json", "stats"]));
    assert!(stats.contains("\"entries\":3"), "{stats}");
    for write in [
        &["--read-only", "set", "user:1", "x"][..],
        &["--read-only", "delete", "user:1"],
        &["--read-only", "incr", "n"],
        &["--read-only", "clear"],
    ] {
        let out = run(write);
        assert_eq!(code(&out), Some(2), "{write:?}");
        assert!(
            stderr(&out).contains("read-only"),
            "{write:?}: {}",
            stderr(&out)
        );
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    assert_eq!(
        files(&cache),
        before,
        "a read-only pcache wrote to the directory"
    );
    assert_eq!(stdout(&run(&["get", "n"])), "5\n");
}

#[test]
fn a_cache_the_user_cannot_write_can_still_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    let out = pcache_on(home(), d, &cache, &["set", "greeting", "hello"])
        .output()
        .unwrap();
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    // Readable by everyone, writable by no one; root ignores modes, so as root the readers run
    // as nobody (65534), for whom the files are not theirs to write either.
    std::fs::set_permissions(d, PermissionsExt::from_mode(0o755)).unwrap();
    chmod_all(&cache, 0o555, 0o444);
    let before = files(&cache);
    let as_reader = |args: &[&str]| {
        let mut cmd = pcache_on(home(), d, &cache, args);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            cmd.uid(65534).gid(65534);
        }
        cmd.output().unwrap()
    };
    let write = as_reader(&["set", "greeting", "bye"]);
    if write.status.success() {
        chmod_all(&cache, 0o755, 0o644);
        println!("skipped: pcache could write to a directory of mode 0555");
        return;
    }
    assert_eq!(code(&write), Some(2));
    assert!(
        stderr(&write).contains("ermission denied"),
        "{}",
        stderr(&write)
    );

    // Reads fall back to a read-only open by themselves.
    let out = as_reader(&["get", "greeting"]);
    assert_eq!(
        (code(&out), stdout(&out)),
        (Some(0), "\"hello\"\n".to_owned()),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&as_reader(&["keys"])), "greeting\n");
    assert_eq!(code(&as_reader(&["stats"])), Some(0));
    assert_eq!(files(&cache), before);
    chmod_all(&cache, 0o755, 0o644);
}

#[test]
fn one_shot_reads_write_nothing_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let run = |args: &[&str]| {
        pcache_on(home(), dir.path(), &cache, args)
            .output()
            .unwrap()
    };
    for i in 0..20 {
        assert!(run(&["set", &format!("k{i}"), &i.to_string()])
            .status
            .success());
    }
    let before = files(&cache);
    // A get changes recency, which a writing open would save in the snapshot at close.
    let out = run(&["get", "k3"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "3\n"));
    assert!(run(&["keys"]).status.success());
    assert!(run(&["stats"]).status.success());
    assert!(
        files(&cache) == before,
        "a one-shot read changed the directory"
    );
    // A miss on a directory that is not a cache yet still works (and creates it).
    let fresh = dir.path().join("fresh");
    let out = pcache_on(home(), dir.path(), &fresh, &["get", "nothing"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}
