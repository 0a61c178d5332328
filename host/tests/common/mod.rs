//! What the tests of the `pcache` binary share: the binary run with a clean environment, fed
//! input, and its output as text.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `pcache --dir CWD/cache ARGS...` run in `cwd`, with nothing of this process's environment but
/// `PATH`: `home` is its `HOME`, compiled code is kept in `home/xdg-cache` and REPL history in
/// `home/xdg-data`, and no `CACHE_*` variable is set.
pub fn pcache_in(home: &Path, cwd: &Path, args: &[&str]) -> Command {
    pcache_on(home, cwd, &cwd.join("cache"), args)
}

/// [`pcache_in`] on the cache directory `cache`.
pub fn pcache_on(home: &Path, cwd: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pcache"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("xdg-cache"))
        .env("XDG_DATA_HOME", home.join("xdg-data"))
        .current_dir(cwd)
        .arg("--dir")
        .arg(cache)
        .args(args);
    cmd
}

/// Runs `cmd` with `input` on its stdin (then closed), capturing its stdout and stderr.
pub fn output_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Output bytes as text, for comparisons and messages (invalid UTF-8 shows as U+FFFD).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn stdout(out: &Output) -> String {
    text(&out.stdout)
}

pub fn stderr(out: &Output) -> String {
    text(&out.stderr)
}

/// `pcache --dir DIR/cache ARGS...` in `DIR` with a clean environment (see [`pcache_in`]); every
/// test shares one home under the test target directory, so the component is compiled once.
pub fn pcache(dir: &Path, args: &[&str]) -> Command {
    pcache_in(home(), dir, args)
}

/// The home every test's `pcache` shares.
pub fn home() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

pub fn run(dir: &Path, args: &[&str]) -> Output {
    pcache(dir, args).output().unwrap()
}

/// [`run`] in `dir` on the cache directory `cache`.
pub fn run_on(dir: &Path, cache: &Path, args: &[&str]) -> Output {
    pcache_on(home(), dir, cache, args).output().unwrap()
}

/// The piped REPL fed `input`.
pub fn repl(dir: &Path, input: &str) -> Output {
    output_with_input(&mut pcache(dir, &["repl"]), input.as_bytes())
}
