//! `pcache` on inputs far larger than memory should hold: piped REPL lines past the size limit,
//! and large JSON values, with the peak memory of the real process measured.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use common::{pcache, run};

/// Runs the piped REPL with `write_input` feeding its stdin; returns its exit code, stdout and
/// peak resident memory in bytes (`wait4`'s `ru_maxrss`, which Linux gives in KiB).
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by libc::wait4, for its resource usage"
)]
fn repl_with_peak_rss(
    dir: &Path,
    args: &[&str],
    write_input: impl FnOnce(&mut dyn Write),
) -> (Option<i32>, String, u64) {
    let mut child = pcache(dir, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut out, &mut text).unwrap();
        text
    });
    let mut stdin = std::io::BufWriter::new(child.stdin.take().unwrap());
    write_input(&mut stdin);
    stdin.flush().unwrap();
    drop(stdin);
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: `rusage` is plain data; all zeroes is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own unreaped child (std's `Child` is never waited on after this).
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let peak = u64::try_from(usage.ru_maxrss).unwrap() * 1024;
    (code, reader.join().unwrap(), peak)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

#[test]
fn a_piped_line_longer_than_the_size_limit_is_skipped_while_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = ["--size-limit", "1MiB", "repl"];
    let after = b"set small 1\nget small\nget big\n";
    // Compiles the component into the code cache, so both runs below load it the same way.
    assert_eq!(
        run(d, &["--size-limit", "1MiB", "stats"]).status.code(),
        Some(0)
    );
    // The same session with a short first line: the process's ordinary peak.
    let (code, out, baseline) = repl_with_peak_rss(d, &args, |stdin| {
        stdin.write_all(b"set big x\ndelete big\n").unwrap();
        stdin.write_all(after).unwrap();
    });
    assert_eq!(code, Some(0));
    assert_eq!(out, "OK\ndeleted\nOK\n1\n(nil)\n");

    // A 64 MiB line, streamed: never held whole, by the test or by pcache.
    let line_mib = 64;
    let (code, out, peak) = repl_with_peak_rss(d, &args, |stdin| {
        stdin.write_all(b"set big '").unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..line_mib {
            stdin.write_all(&chunk).unwrap();
        }
        stdin.write_all(b"'\n").unwrap();
        stdin.write_all(after).unwrap();
    });
    println!(
        "peak RSS: {:.1} MiB with a short line, {:.1} MiB with a {line_mib} MiB line",
        mib(baseline),
        mib(peak)
    );
    assert_eq!(code, Some(0));
    let limit = (1 << 20) + (8 << 10);
    assert_eq!(
        out,
        format!("error: line 1: longer than {limit} bytes; skipped\nOK\n1\n(nil)\n")
    );
    assert!(
        peak < baseline + (line_mib << 20) / 8,
        "peak RSS {:.1} MiB vs {:.1} MiB without the long line",
        mib(peak),
        mib(baseline)
    );
}

#[test]
fn a_large_json_value_is_stored_without_a_json_tree_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = ["--size-limit", "64MiB", "repl"];
    assert_eq!(
        run(d, &["--size-limit", "64MiB", "stats"]).status.code(),
        Some(0)
    );
    let (code, out, baseline) = repl_with_peak_rss(d, &args, |stdin| {
        stdin.write_all(b"set big '[0]'\n").unwrap();
    });
    assert_eq!((code, out.as_str()), (Some(0), "OK\n"));
    // A dense JSON array: a tree would take a 72-byte node for each 2-byte "0,".
    let elements = 8 << 20;
    let line_mib = (2 * elements) >> 20;
    let (code, out, peak) = repl_with_peak_rss(d, &args, |stdin| {
        stdin.write_all(b"set big '[").unwrap();
        let chunk = b"0,".repeat(1 << 19);
        for _ in 0..(elements >> 19) {
            stdin.write_all(&chunk).unwrap();
        }
        stdin.write_all(b"0]'\nstats\n").unwrap();
    });
    println!(
        "peak RSS: {:.1} MiB for a short value, {:.1} MiB for a {line_mib} MiB JSON array",
        mib(baseline),
        mib(peak)
    );
    assert_eq!(code, Some(0));
    assert!(out.starts_with("OK\n{"), "{out}");
    assert!(
        peak < baseline + 10 * (line_mib << 20),
        "peak RSS {:.1} MiB vs {:.1} MiB for a short value",
        mib(peak),
        mib(baseline)
    );
    // Stored whole: an indefinite-length CBOR array of elements + 1 zeros.
    let stored = run(d, &["--size-limit", "64MiB", "get", "--raw", "big"]).stdout;
    assert_eq!(stored.len() as u64, elements + 3);
    assert_eq!(&stored[..2], [0x9f, 0x00]);
    assert_eq!(stored.last(), Some(&0xff));
    assert!(stored[1..stored.len() - 1].iter().all(|&b| b == 0));
}

#[test]
fn a_200_mb_junk_segment_is_set_aside_without_reading_it_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(run(d, &["set", "k", "1"]).status.success());
    let ask = |input: &mut dyn Write| input.write_all(b"get k\nstats\n").unwrap();
    let (code, _, baseline) = repl_with_peak_rss(d, &["repl"], ask);
    assert_eq!(code, Some(0));
    // 200 MB that are not a segment, under a segment's name, newer than the real ones.
    let block = vec![0xA5u8; 1 << 20]; // not a segment header, nor records
    let junk = d.join("cache/data/0000000099.seg");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&junk).unwrap());
    for _ in 0..200 {
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let (code, out, peak) = repl_with_peak_rss(d, &["repl"], ask);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("1\n"), "{out}");
    assert!(out.contains("\"damaged\":1"), "{out}");
    assert!(!junk.exists(), "the junk was moved aside");
    println!(
        "peak RSS: {:.0} MiB without the junk segment, {:.0} MiB with it",
        mib(baseline),
        mib(peak)
    );
    assert!(
        peak < baseline + (32 << 20),
        "the junk cost {:.0} MiB",
        mib(peak.saturating_sub(baseline))
    );
}
