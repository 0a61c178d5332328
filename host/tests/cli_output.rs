//! What `pcache` prints for scripts: one-line errors that say each thing once, and key listings
//! that stay unambiguous whatever the keys hold.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Output;

use common::{home, pcache_on, repl, run, run_on, stderr, stdout};

/// Asserts that `out` is a failure (exit 2) reported on one line of stderr that says no part
/// twice, and returns that line.
fn one_line_error(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("pcache: "), "{err}");
    let parts: Vec<&str> = err.trim_end().split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part),
            "{part:?} is said twice: {err}"
        );
    }
    err
}

#[test]
fn every_error_is_one_line_that_says_each_thing_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Not WebAssembly: wasmparser pretty-prints the bytes it expected over many lines.
    std::fs::write(d.join("junk.wasm"), "junk").unwrap();
    let junk = d.join("junk.wasm");
    let junk = junk.to_str().unwrap();
    let err = one_line_error(&run(d, &["--component", junk, "get", "k"]));
    assert!(err.contains("magic"), "{err}");
    let err = one_line_error(&run(d, &["plugin", "run", junk]));
    assert!(err.starts_with("pcache: plugin junk: cannot load"), "{err}");
    // A cache directory under a regular file: the OS error is said once.
    std::fs::write(d.join("file"), "x").unwrap();
    let under_file = d.join("file").join("cache");
    let out = run_on(d, &under_file, &["get", "k"]);
    let err = one_line_error(&out);
    assert!(err.contains(under_file.to_str().unwrap()), "{err}");
    // A symlinked lock file is named as what it is, not as the cache directory.
    let cache = d.join("linked");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::symlink(d.join("nowhere"), cache.join(".lock")).unwrap();
    let out = run_on(d, &cache, &["get", "k"]);
    let err = one_line_error(&out);
    assert!(err.contains("symlink"), "{err}");
    assert!(
        !err.contains("directory"),
        "the lock file is called a directory: {err}"
    );
    // A directory the user may not write to: root ignores permissions, so as root pcache runs
    // as nobody (65534).
    std::fs::set_permissions(d, PermissionsExt::from_mode(0o755)).unwrap();
    let read_only = d.join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    std::fs::set_permissions(&read_only, PermissionsExt::from_mode(0o555)).unwrap();
    // A write: a read falls back to a read-only open.
    let mut cmd = pcache_on(home(), d, &read_only.join("cache"), &["set", "k", "1"]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    if out.status.success() {
        println!("skipped the read-only directory case: pcache could write to a 0555 directory");
    } else {
        let err = one_line_error(&out);
        assert!(err.contains("ermission denied"), "{err}");
    }
}

#[test]
fn keys_with_newlines_or_named_like_a_marker_list_unambiguously() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys = ["(empty)", "a\nb", "a", "b", "back\\slash", "tab\tand\u{1b}"];
    for key in keys {
        let out = run(d, &["set", key, "1"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let mut sorted = keys.map(String::from).to_vec();
    sorted.sort();
    // One key a line, escaped: a key with a newline is one line, "(empty)" is a key.
    let human = "(empty)\na\na\\nb\nb\nback\\\\slash\ntab\\tand\\u{1b}\n";
    assert_eq!(stdout(&run(d, &["keys"])), human);
    let json = run(d, &["keys", "--json"]);
    assert_eq!(json.status.code(), Some(0));
    let listed: Vec<String> = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(listed, sorted);
    assert_eq!(
        stdout(&run(d, &["--json", "keys", "a"])),
        "[\"a\",\"a\\nb\"]\n"
    );
    let null = run(d, &["keys", "-0"]);
    assert_eq!(null.status.code(), Some(0));
    let expected: Vec<u8> = sorted
        .iter()
        .flat_map(|k| [k.as_bytes(), b"\0"].concat())
        .collect();
    assert_eq!(null.stdout, expected);
    assert_eq!(run(d, &["keys", "--null", "b"]).stdout, b"b\0back\\slash\0");
    // No keys: nothing (or an empty array), exit 0.
    let none = run(d, &["keys", "zz"]);
    assert_eq!(
        (none.status.code(), stdout(&none)),
        (Some(0), String::new())
    );
    assert_eq!(stdout(&run(d, &["keys", "zz", "-0"])), "");
    assert_eq!(stdout(&run(d, &["keys", "zz", "--json"])), "[]\n");
    let both = run(d, &["keys", "--json", "-0"]);
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));

    // The REPL's keys take the same flags.
    let out = repl(
        d,
        "keys b\nkeys --json a\nkeys -0 b\nkeys zz\nkeys zz --json\nkeys zz -0\nkeys -0 --json\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    let mut lines = printed.split('\n');
    assert_eq!(lines.next(), Some("b"));
    assert_eq!(lines.next(), Some("back\\\\slash"));
    assert_eq!(lines.next(), Some("[\"a\",\"a\\nb\"]"));
    assert_eq!(lines.next(), Some("b\0back\\slash\0"));
    assert_eq!(lines.next(), Some("[]"));
    assert_eq!(
        lines.next(),
        Some(""),
        "keys -0 with no keys ends its (empty) list"
    );
    assert!(lines.next().unwrap().starts_with("error: "), "{printed}");
    assert_eq!(lines.next(), Some(""));
    assert_eq!(lines.next(), None);
    assert_eq!(stderr(&out), "(no keys)\n");
}
