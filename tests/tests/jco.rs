//! The same guest component in a second component-model host: jco (`@bytecodealliance/jco-transpile`
//! and `@bytecodealliance/preview2-shim`) in Node.js, driven by `tests/jco/roundtrip.mjs`.
//!
//! Node processes and the Rust host take turns on one directory: Node writes, a second Node
//! process reads it back, the Rust host reads what Node wrote and writes, and Node reads that.
//!
//! Needs `node` (20+: the pinned packages declare it) and `npm` on PATH; without them the test
//! prints why and passes. The npm packages are installed once (`npm ci`, pinned by
//! `tests/jco/package-lock.json`) into `$CARGO_TARGET_TMPDIR/jco` and reused while the manifest
//! and lock file are unchanged; a failing `npm ci` fails the test. `PCACHE_SKIP_JCO=1` skips it.
// The expected results are one large `json!` literal.
#![recursion_limit = "256"]

use persistent_cache::{CacheOptions, PersistentCache, LOCK_FILE_NAME};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The Node project's committed files, copied next to the installed `node_modules`.
const PROJECT_FILES: &[&str] = &[
    "package.json",
    "package-lock.json",
    "transpile.mjs",
    "roundtrip.mjs",
];
/// Written into `node_modules` after a successful `npm ci`: the manifest and lock it installed.
const INSTALL_STAMP: &str = "node_modules/.pcache-installed";

fn project_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jco")
}

/// `PROGRAM --version`'s output, or `None` if it cannot be run.
fn version_of(program: &str) -> Option<String> {
    let output = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Why the test cannot run here, if it cannot.
fn reason_to_skip() -> Option<String> {
    if std::env::var("PCACHE_SKIP_JCO").as_deref() == Ok("1") {
        return Some("skipping: PCACHE_SKIP_JCO=1".into());
    }
    let needs = "the jco test needs Node.js 20+ and npm";
    let Some(node) = version_of("node") else {
        return Some(format!("skipping: node not found; {needs}"));
    };
    let major = node
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    if major.is_none_or(|m| m < 20) {
        return Some(format!("skipping: node {node} is too old; {needs}"));
    }
    if version_of("npm").is_none() {
        return Some(format!("skipping: npm not found; {needs}"));
    }
    None
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Copies the Node project into `work` and installs its packages unless the same manifest and
/// lock are already installed there.
fn prepare_node_project(work: &Path) {
    std::fs::create_dir_all(work).unwrap();
    let source = project_source();
    for file in PROJECT_FILES {
        std::fs::copy(source.join(file), work.join(file))
            .unwrap_or_else(|e| panic!("copy {file} from {}: {e}", source.display()));
    }
    let mut wanted = std::fs::read(work.join("package.json")).unwrap();
    wanted.extend(std::fs::read(work.join("package-lock.json")).unwrap());
    if std::fs::read(work.join(INSTALL_STAMP)).ok().as_ref() == Some(&wanted) {
        return;
    }
    let started = Instant::now();
    let output = run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(work));
    assert!(
        output.status.success(),
        "`npm ci` in {} failed ({}); set PCACHE_SKIP_JCO=1 to skip this test.\nstderr:\n{}\nstdout:\n{}",
        work.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout),
    );
    std::fs::write(work.join(INSTALL_STAMP), wanted).unwrap();
    println!("npm ci: {:.1?}", started.elapsed());
}

/// Runs `node SCRIPT ARGS...` in `work` and returns its stdout; panics with its stderr on failure.
fn node(work: &Path, script: &str, args: &[&Path]) -> String {
    let output = run(Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(work));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node {script} {args:?} failed ({}).\nstderr:\n{stderr}\nstdout:\n{stdout}",
        output.status,
    );
    stdout
}

/// Runs one phase of `roundtrip.mjs` on `cache_dir` (and the second cache's `other_dir`) and
/// returns its JSON results, without the fields that vary from run to run (elapsed time, bytes
/// on disk), after checking that using a closed handle threw in JS.
fn roundtrip(work: &Path, module: &Path, cache_dir: &Path, other_dir: &Path, phase: &str) -> Value {
    let started = Instant::now();
    let stdout = node(
        work,
        "roundtrip.mjs",
        &[module, cache_dir, other_dir, Path::new(phase)],
    );
    let line = stdout.lines().last().unwrap_or_default();
    let mut results: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("roundtrip.mjs {phase}: not JSON ({e}):\n{stdout}"));
    let object = results.as_object_mut().unwrap();
    println!(
        "node roundtrip {phase}: {:.1?} (cache calls {} ms)",
        started.elapsed(),
        object["elapsedMs"]
    );
    object.remove("elapsedMs");
    let volume = object["stats"]
        .as_object_mut()
        .and_then(|stats| stats.remove("volume"));
    assert!(
        volume.is_some(),
        "roundtrip.mjs {phase}: no stats.volume in {results}"
    );
    // `close` consumed the handle; jco refuses a consumed handle before calling the guest.
    let after_close = object.remove("get after close").unwrap_or_default();
    let thrown = after_close["thrown"].as_str().unwrap_or_default();
    assert!(
        thrown.to_lowercase().contains("resource"),
        "roundtrip.mjs {phase}: a closed handle must not be usable: {after_close}"
    );
    results
}

/// CBOR (RFC 8949) of a short text string, as `PersistentCache::set(key, &str)` stores it.
fn cbor_text(text: &str) -> Vec<u8> {
    let len = text.len();
    let mut bytes = match len {
        0..=23 => vec![0x60 | len as u8],
        24..=255 => vec![0x78, len as u8],
        _ => panic!("cbor_text is for short strings"),
    };
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_guest_runs_under_jco_in_node_and_shares_its_directory_with_the_rust_host() {
    if let Some(reason) = reason_to_skip() {
        println!("{reason}");
        return;
    }
    let started = Instant::now();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("jco");
    prepare_node_project(&work);

    // Transpile the embedded guest (the bytes the Rust host runs) into a per-run directory
    // inside `work`, so the generated module resolves the shim from `work/node_modules`.
    let out = tempfile::Builder::new()
        .prefix("out-")
        .tempdir_in(&work)
        .unwrap();
    let component = out.path().join("persistent_cache_guest.wasm");
    std::fs::write(
        &component,
        persistent_cache::test_support::guest_component(),
    )
    .unwrap();
    let transpile_started = Instant::now();
    node(&work, "transpile.mjs", &[&component, out.path()]);
    println!("transpile: {:.1?}", transpile_started.elapsed());
    let module = out.path().join("pcache.js");
    assert!(
        module.is_file(),
        "transpile.mjs wrote no {}",
        module.display()
    );

    let cache_dir = tempfile::tempdir().unwrap();
    let dir = cache_dir.path();
    // The Rust host gives the guest the cache directory's data/ as its one preopen; Node
    // preopens the same data/ directly.
    let data = dir.join(persistent_cache::DATA_DIRECTORY);
    std::fs::create_dir(&data).unwrap();
    // The second cache of the same component instance.
    let other_dir = tempfile::tempdir().unwrap();
    let other = other_dir.path();
    let greeting = "hello from node ✓";

    // 1. Node, new directory: every operation once.
    let first = roundtrip(&work, &module, &data, other, "first");
    assert_eq!(
        first,
        json!({
            "open": null,
            "open other": null,
            "set bytes": null,
            "set greeting": null,
            "set ttl": null,
            "set short": null,
            "set empty": null,
            "set big": null,
            "set tmp:1": null,
            "set tmp:2": null,
            "get bytes": "000102feff",
            "get empty": "",
            "get missing": null,
            "get short": null,
            "incr n": "5",
            "incr n again": "3",
            "incr bytes": {"error": {
                "tag": "not-a-counter",
                "val": "the value under \"bytes\" is not an integer (5 bytes of CBOR)"
            }},
            "add bytes": false,
            "add added": true,
            "touch added": true,
            "touch missing": false,
            "keys": ["added", "big", "bytes", "empty", "greeting", "n", "tmp:1", "tmp:2", "ttl"],
            "keys page": ["bytes", "empty"],
            "keys tmp": ["tmp:1", "tmp:2"],
            "pop added": hex(b"yes"),
            "pop added again": null,
            "delete tmp:1": true,
            "delete missing": false,
            "delete-prefix tmp": "1",
            "expire": "0",
            "set empty key": {"error": {"tag": "invalid-key", "val": "the key is empty"}},
            "set too large": {"error": {"tag": "value-too-large", "val": {
                "size": "73400347", "limit": "67108864"
            }}},
            "set zero ttl": {"error": {"tag": "invalid-ttl", "val":
                "a TTL must be at least 1 ms; use `never` for an entry that does not expire"}},
            "other set": null,
            "other get greeting": null,
            "other keys": ["where"],
            "stats": {
                "entries": "6", "sizeLimit": "67108864", "hits": "2", "misses": "2",
                "expired": "1", "evicted": "0", "damaged": "0"
            },
            "close": null,
            "other close": null,
            "phase": "first",
        })
    );
    assert!(
        data.join("pcache.meta").is_file(),
        "no pcache.meta in {}",
        data.display()
    );

    // 2. A second Node process on the same directory finds everything.
    let second = roundtrip(&work, &module, &data, other, "second");
    assert_eq!(
        second,
        json!({
            "open": null,
            "open other": null,
            "get bytes": "000102feff",
            "get greeting": hex(&cbor_text(greeting)),
            "get ttl": hex(b"one hour"),
            "get big length": 100_000,
            "get short": null,
            "get added": null,
            "incr n": "4",
            "keys": ["big", "bytes", "empty", "greeting", "n", "ttl"],
            "other get where": hex(b"other"),
            "other keys": ["where"],
            "stats": {
                "entries": "6", "sizeLimit": "67108864", "hits": "4", "misses": "2",
                "expired": "0", "evicted": "0", "damaged": "0"
            },
            "close": null,
            "other close": null,
            "phase": "second",
        })
    );

    // 3. The Rust host reads what Node wrote (typed and raw) and writes for Node.
    let rust_started = Instant::now();
    let cache = PersistentCache::open(CacheOptions::new(dir)).await.unwrap();
    assert_eq!(
        cache.get::<String>("greeting").await.unwrap().as_deref(),
        Some(greeting)
    );
    assert_eq!(
        cache.get_raw("bytes").await.unwrap(),
        Some(vec![0, 1, 2, 254, 255])
    );
    assert_eq!(
        cache.get_raw("ttl").await.unwrap().as_deref(),
        Some(&b"one hour"[..])
    );
    assert_eq!(cache.get_raw("empty").await.unwrap(), Some(vec![]));
    assert_eq!(cache.get_raw("big").await.unwrap(), Some(vec![7; 100_000]));
    assert_eq!(cache.get::<i64>("n").await.unwrap(), Some(4));
    assert_eq!(cache.incr("n", 10, 0).await.unwrap(), 14);
    assert_eq!(
        cache.keys("").await.unwrap(),
        ["big", "bytes", "empty", "greeting", "n", "ttl"]
    );
    cache.set("from-rust", "hello from rust ✓").await.unwrap();
    cache
        .set_raw("raw-from-rust", &[9, 8, 7], Duration::from_secs(3600))
        .await
        .unwrap();
    cache.close().await.unwrap();
    println!("rust host: {:.1?}", rust_started.elapsed());
    // The host's advisory lock file stays behind; the guest ignores it.
    assert!(dir.join(LOCK_FILE_NAME).exists());

    // 4. Node reads what the Rust host wrote, then clears the cache.
    let third = roundtrip(&work, &module, &data, other, "third");
    assert_eq!(
        third,
        json!({
            "open": null,
            "open other": null,
            "get from-rust": hex(&cbor_text("hello from rust ✓")),
            "get raw-from-rust": "090807",
            "get greeting": hex(&cbor_text(greeting)),
            "incr n": "15",
            "keys": [
                "big", "bytes", "empty", "from-rust", "greeting", "n", "raw-from-rust", "ttl"
            ],
            "clear": null,
            "keys after clear": [],
            "stats": {
                "entries": "0", "sizeLimit": "67108864", "hits": "3", "misses": "0",
                "expired": "0", "evicted": "0", "damaged": "0"
            },
            "close": null,
            "other close": null,
            "phase": "third",
        })
    );

    // 5. The Rust host sees Node's clear.
    let cache = PersistentCache::open(CacheOptions::new(dir)).await.unwrap();
    assert_eq!(cache.keys("").await.unwrap(), Vec::<String>::new());
    assert_eq!(cache.get::<String>("from-rust").await.unwrap(), None);
    cache.close().await.unwrap();

    println!("jco test: {:.1?} in all", started.elapsed());
}
