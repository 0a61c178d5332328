//! `probe`: a test fixture plugin. Each subcommand exercises one part of what the host gives
//! a plugin (its `wasi:keyvalue` buckets, env, stdin, args, exit) or tries to break out of
//! the sandbox (other namespaces, filesystem, network, CPU, memory), and reports what
//! happened on stdout, one `name=value` line per result, for a host test to parse.
//!
//! Failures are reported, not fatal: `name=err:<Debug of the error>`, exit code 0. Only a
//! wrong command line exits with 1 (usage on stderr). `spin`, `alloc`, `trap`, `exit` and the
//! hostile commands (`hostile.rs`) flush stdout first, since the host may stop them.
//! `script` runs keyvalue operations read from stdin (`script.rs`), for the model test.

mod hostile;
mod script;

wit_bindgen::generate!({ path: "../../wit", world: "pcache:cache/plugin", generate_all });
use wasi::keyvalue::{atomics, batch, store};

use std::fmt::Debug;
use std::io::{Read, Write};

const USAGE: &str = "\
usage: probe put BUCKET KEY VALUE | get BUCKET KEY | list BUCKET | incr BUCKET KEY DELTA
           | cas BUCKET KEY NEW | batch BUCKET | escape | env | fs | net | spin | alloc
           | trap | exit N | stdin | args [ANY...] | read PATH | write PATH | script
           | get-many-bomb SIZE_MIB COPIES | cas-hoard SIZE_KIB HANDLES | bucket-hoard N
           | batch-spin set|get|delete N | alias-bomb get|delete|set SIZE_MIB COPIES";

/// How often `cas` retries after `cas-failed`.
const CAS_RETRIES: usize = 10;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        ["put", bucket, key, value] => put(bucket, key, value),
        ["get", bucket, key] => get(bucket, key),
        ["list", bucket] => list(bucket),
        ["incr", bucket, key, delta] => match delta.parse() {
            Ok(delta) => incr(bucket, key, delta),
            Err(_) => usage(&format!("DELTA must be an i64: {delta:?}")),
        },
        ["cas", bucket, key, new] => cas(bucket, key, new),
        ["batch", bucket] => batch(bucket),
        ["escape"] => escape(),
        ["env"] => env(),
        ["fs"] => fs(),
        ["net"] => net(),
        ["spin"] => spin(),
        ["alloc"] => alloc(),
        ["trap"] => trap(),
        ["exit", code] => match code.parse() {
            Ok(code) => exit(code),
            Err(_) => usage(&format!("N must be an i32: {code:?}")),
        },
        ["stdin"] => stdin(),
        ["read", path] => report("read", io_outcome(&std::fs::read(path))),
        ["write", path] => report("write", io_outcome(&std::fs::write(path, "x"))),
        ["args", ..] => print_args(),
        ["script"] => script::run(),
        ["get-many-bomb", size, copies] => hostile::get_many_bomb(number(size), number(copies)),
        ["cas-hoard", size, handles] => hostile::cas_hoard(number(size), number(handles)),
        ["bucket-hoard", n] => hostile::bucket_hoard(number(n)),
        ["batch-spin", op, n] => hostile::batch_spin(op, number(n)),
        ["alias-bomb", op, size, copies] => hostile::alias_bomb(op, number(size), number(copies)),
        _ => usage("unknown command or wrong arguments"),
    }
}

/// `text` as a count, or usage.
fn number(text: &str) -> usize {
    text.parse()
        .unwrap_or_else(|_| usage(&format!("not a count: {text:?}")))
}

fn usage(msg: &str) -> ! {
    eprintln!("probe: {msg}\n{USAGE}");
    exit(1)
}

/// Prints `name=value`.
fn report(name: &str, value: impl std::fmt::Display) {
    println!("{name}={value}");
}

/// `ok`, or `err:<Debug of the error>`.
fn outcome<T, E: Debug>(result: &Result<T, E>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(err) => format!("err:{err:?}"),
    }
}

/// `ok`, or `err:<Debug of the io::ErrorKind>`.
fn io_outcome<T>(result: &std::io::Result<T>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(err) => format!("err:{:?}", err.kind()),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every key of `bucket`, following the cursor page by page.
fn all_keys(bucket: &store::Bucket) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = bucket
            .list_keys(cursor.as_deref())
            .map_err(|e| format!("{e:?}"))?;
        keys.extend(page.keys);
        match page.cursor {
            // A host whose cursor does not advance would make this loop forever.
            Some(next) if cursor.as_ref() == Some(&next) => {
                return Err(format!("cursor did not advance: {next:?}"));
            }
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
}

/// The keys of `bucket`, comma-separated (escaped, so that a line stays a line), or
/// `err:<..>`.
fn keys_line(bucket: &store::Bucket) -> String {
    match all_keys(bucket) {
        Ok(keys) => keys
            .iter()
            .map(|k| k.escape_debug().to_string())
            .collect::<Vec<_>>()
            .join(","),
        Err(err) => format!("err:{err}"),
    }
}

/// Opens `bucket`, or reports the error as `name=err:<..>`.
fn open_or_report(name: &str, bucket: &str) -> Option<store::Bucket> {
    store::open(bucket)
        .inspect_err(|err| report(name, format!("err:{err:?}")))
        .ok()
}

fn put(bucket: &str, key: &str, value: &str) {
    if let Some(bucket) = open_or_report("put", bucket) {
        report("put", outcome(&bucket.set(key, value.as_bytes())));
    }
}

fn get(bucket: &str, key: &str) {
    if let Some(bucket) = open_or_report("get", bucket) {
        match bucket.get(key) {
            Ok(Some(value)) => report("get", text(&value)),
            Ok(None) => report("get", "none"),
            Err(err) => report("get", format!("err:{err:?}")),
        }
    }
}

fn list(bucket: &str) {
    if let Some(bucket) = open_or_report("keys", bucket) {
        report("keys", keys_line(&bucket));
    }
}

fn incr(bucket: &str, key: &str, delta: i64) {
    if let Some(bucket) = open_or_report("incr", bucket) {
        match atomics::increment(&bucket, key, delta) {
            Ok(n) => report("incr", n),
            Err(err) => report("incr", format!("err:{err:?}")),
        }
    }
}

fn cas(bucket: &str, key: &str, new: &str) {
    if let Some(bucket) = open_or_report("cas", bucket) {
        let result = cas_swap(&bucket, key, new.as_bytes());
        match result {
            Ok(Some(old)) => report("cas", format!("ok:{}", text(&old))),
            Ok(None) => report("cas", "ok:none"),
            Err(err) => report("cas", format!("err:{err}")),
        }
    }
}

/// Swaps in `new`, retrying on `cas-failed`; returns the value it replaced.
fn cas_swap(bucket: &store::Bucket, key: &str, new: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut handle = atomics::Cas::new(bucket, key).map_err(|e| format!("new:{e:?}"))?;
    for _ in 0..=CAS_RETRIES {
        let old = handle.current().map_err(|e| format!("current:{e:?}"))?;
        match atomics::swap(handle, new) {
            Ok(()) => return Ok(old),
            Err(atomics::CasError::CasFailed(fresh)) => handle = fresh,
            Err(atomics::CasError::StoreError(e)) => return Err(format!("swap:{e:?}")),
        }
    }
    Err(format!("cas-failed {} times", CAS_RETRIES + 1))
}

fn batch(bucket: &str) {
    let Some(bucket) = open_or_report("set_many", bucket) else {
        return;
    };
    let pairs: Vec<(String, Vec<u8>)> = [("a", "1"), ("b", "2"), ("c", "3")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    report("set_many", outcome(&batch::set_many(&bucket, &pairs)));

    let wanted = ["a", "missing", "c"].map(String::from);
    match batch::get_many(&bucket, &wanted) {
        Ok(got) => {
            let got: Vec<Option<(String, String)>> = got
                .into_iter()
                .map(|kv| kv.map(|(k, v)| (k, text(&v))))
                .collect();
            report("get_many", format!("{got:?}"));
        }
        Err(err) => report("get_many", format!("err:{err:?}")),
    }

    let doomed = ["a", "b"].map(String::from);
    report(
        "delete_many",
        outcome(&batch::delete_many(&bucket, &doomed)),
    );
    report("after_delete", keys_line(&bucket));
}

/// Tries bucket identifiers and keys that could reach outside the plugin's namespace.
fn escape() {
    let long = "x".repeat(65);
    let identifiers = [
        "../other",
        "a/b",
        "a:b",
        ".",
        "..",
        "plugin:other",
        long.as_str(),
        "\u{0}",
    ];
    for id in identifiers {
        let name = format!("open[{}]", id.escape_debug());
        report(&name, outcome(&store::open(id)));
    }

    let Some(bucket) = open_or_report("open[default]", "default") else {
        return;
    };
    for key in ["../../escape", "/abs", "a\u{0}b"] {
        let value = format!("value of {key}");
        let result = bucket
            .set(key, value.as_bytes())
            .and_then(|()| bucket.get(key));
        let line = match result {
            Ok(Some(got)) if got == value.as_bytes() => "ok".to_string(),
            Ok(got) => format!("err:read back {:?}", got.as_deref().map(text)),
            Err(err) => format!("err:{err:?}"),
        };
        report(&format!("key[{}]", key.escape_debug()), line);
    }
    report("keys", keys_line(&bucket));
}

fn env() {
    let vars: Vec<_> = std::env::vars_os().collect();
    report("env", vars.len());
    for (name, value) in vars {
        report(
            &format!("env.{}", name.to_string_lossy()),
            value.to_string_lossy(),
        );
    }
}

fn fs() {
    report("fs.read", io_outcome(&std::fs::read("/etc/passwd")));
    report("fs.list_root", io_outcome(&std::fs::read_dir("/")));
    report("fs.list_cwd", io_outcome(&std::fs::read_dir(".")));
    report("fs.write", io_outcome(&std::fs::write("escape.txt", "x")));
}

fn net() {
    use std::net::TcpStream;
    report("net.tcp", io_outcome(&TcpStream::connect("127.0.0.1:22")));
    report("net.dns", io_outcome(&TcpStream::connect("example.com:80")));
}

pub(crate) fn flush() {
    // Nothing to do about a failed flush: the host reads what arrived.
    let _ = std::io::stdout().flush();
}

/// Burns CPU until the host's time limit stops it.
fn spin() -> ! {
    report("spin", "start");
    flush();
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocates (and keeps, and touches) memory until the host's memory limit stops it.
fn alloc() -> ! {
    report("alloc", "start");
    flush();
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        kept.push(vec![1u8; 16 << 20]);
        std::hint::black_box(&kept);
    }
}

fn trap() -> ! {
    report("trap", "start");
    flush();
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    panic!("probe trap");
}

fn exit(code: i32) -> ! {
    flush();
    std::process::exit(code)
}

fn stdin() {
    let mut input = Vec::new();
    match std::io::stdin().read_to_end(&mut input) {
        Ok(n) => report("stdin", n),
        Err(err) => report("stdin", format!("err:{:?}", err.kind())),
    }
}

fn print_args() {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    report("args", args.join("|"));
}
