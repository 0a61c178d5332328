//! The real `pcache` binary against a hostile environment: a planted code cache file, a code
//! cache file truncated under a running REPL, a `.env` that tries to move the code cache, a
//! symlinked lock file; and the modes of what a new cache directory contains.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};

use common::{pcache_in, text};

/// A home of its own for one test (the code cache and its key live under it), and a working
/// directory beside it.
struct Home {
    root: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("work")).unwrap();
        Home { root }
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    /// The working directory to run `pcache` in: `pcache` there uses the cache `work/cache`.
    fn work(&self) -> PathBuf {
        self.path().join("work")
    }

    /// Where `pcache` keeps compiled code with this home (`$XDG_CACHE_HOME/persistent-cache`).
    fn code_dir(&self) -> PathBuf {
        self.path().join("xdg-cache").join("persistent-cache")
    }

    /// `pcache ARGS...` run in `cwd` on the cache `cwd/cache`, with only this home.
    fn pcache(&self, cwd: &Path, args: &[&str]) -> Command {
        pcache_in(self.path(), cwd, args)
    }

    /// A piped `pcache repl` in `cwd`: the child, its stdin and its stdout.
    fn repl(&self, cwd: &Path) -> (Child, ChildStdin, BufReader<ChildStdout>) {
        let mut child = self
            .pcache(cwd, &["repl"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        (child, stdin, stdout)
    }

    fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        self.pcache(cwd, args).output().unwrap()
    }

    /// The compiled-code files in the code cache.
    fn code_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.code_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect();
        files.sort();
        files
    }
}

#[test]
fn another_components_valid_code_planted_under_the_guests_name_is_recompiled() {
    let home = Home::new();
    let w = &home.work();
    let out = home.run(w, &["set", "k", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let guest_files = home.code_files();
    assert_eq!(guest_files.len(), 1, "{guest_files:?}");
    // Running the probe plugin caches its code next to the guest's.
    let probe = persistent_cache_tests::PROBE_PLUGIN;
    let out = home.run(w, &["plugin", "run", probe, "args"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plugin_file = home
        .code_files()
        .into_iter()
        .find(|f| !guest_files.contains(f))
        .expect("the plugin's code is cached");
    // Valid native code of another component, under the guest's name.
    std::fs::copy(&plugin_file, &guest_files[0]).unwrap();
    for _ in 0..2 {
        let out = home.run(w, &["get", "k"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "1\n");
    }
    assert_ne!(
        std::fs::read(&guest_files[0]).unwrap(),
        std::fs::read(&plugin_file).unwrap(),
        "the planted file was not replaced"
    );
}

/// Sends one line to a piped REPL and returns the line it prints.
fn ask(stdin: &mut ChildStdin, stdout: &mut BufReader<ChildStdout>, command: &str) -> String {
    writeln!(stdin, "{command}").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    line
}

#[test]
fn truncating_the_code_file_under_a_running_repl_does_not_kill_it() {
    let home = Home::new();
    let w = &home.work();
    // First run compiles and caches; the REPL below loads the cached code.
    assert!(home.run(w, &["set", "k", "1"]).status.success());
    let code = home.code_files();
    let (child, mut stdin, mut stdout) = home.repl(w);
    assert_eq!(ask(&mut stdin, &mut stdout, "get k"), "1\n");
    for file in &code {
        std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
    // Every command, so code that had not run yet runs now.
    let commands = [
        "set a 2",
        "get a",
        "add b 3",
        "touch a --ttl 60",
        "incr n 5",
        "keys",
        "pop b",
        "delete-prefix zz",
        "expire",
        "stats",
        "delete a",
        "clear",
        "get k",
    ];
    for command in commands {
        writeln!(stdin, "{command}").unwrap();
    }
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the REPL died ({:?}) after its code file was truncated; printed {rest:?}, stderr {}",
        out.status,
        text(&out.stderr)
    );
    assert!(rest.starts_with("OK\n2\nadded\nOK\n5\n"), "{rest}");
    assert!(rest.ends_with("(nil)\n"), "{rest}");
}

#[test]
fn a_dotenv_file_cannot_move_the_code_cache_or_touch_the_environment() {
    let home = Home::new();
    let w = &home.work();
    let evil = w.join("evil");
    let evil = evil.display();
    std::fs::write(
        w.join(".env"),
        format!("XDG_CACHE_HOME={evil}\nXDG_DATA_HOME={evil}\nCACHE_SIZE_LIMIT=123456\n"),
    )
    .unwrap();
    // Without XDG_* in the real environment the code cache defaults to $HOME/.cache.
    let run = |args: &[&str]| {
        let mut cmd = home.pcache(w, args);
        cmd.env_remove("XDG_CACHE_HOME").env_remove("XDG_DATA_HOME");
        cmd.output().unwrap()
    };
    let out = run(&["set", "k", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!w.join("evil").exists(), ".env moved the code cache");
    assert!(home.path().join(".cache/persistent-cache").is_dir());
    // The CACHE_* settings of .env still apply.
    let out = run(&["--json", "stats"]);
    assert!(
        text(&out.stdout).contains("\"size_limit\":123456"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_symlinked_lock_file_is_refused_without_creating_its_target() {
    let home = Home::new();
    let w = &home.work();
    let target = w.join("anywhere");
    std::fs::create_dir(w.join("cache")).unwrap();
    std::os::unix::fs::symlink(&target, w.join("cache").join(".lock")).unwrap();
    let out = home.run(w, &["get", "a"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("symlink"), "{stderr}");
    assert!(!target.exists(), "the lock's symlink was followed");
    // A symlinked data directory is refused the same way.
    std::fs::remove_file(w.join("cache").join(".lock")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), w.join("cache").join("data")).unwrap();
    let out = home.run(w, &["set", "a", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn a_new_cache_is_private_and_a_flat_one_is_moved_into_data() {
    let home = Home::new();
    let w = &home.work();
    assert!(home
        .run(w, &["set", "secret", "\"token\""])
        .status
        .success());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let cache = w.join("cache");
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(mode(&cache.join("data")), 0o700);
    assert_eq!(mode(&cache.join(".lock")), 0o600);
    let data_files: Vec<PathBuf> = std::fs::read_dir(cache.join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(data_files.len() >= 2, "{data_files:?}");
    for file in &data_files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    for file in home.code_files() {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(&home.code_dir()), 0o700);
    // A directory of the flat layout (engine files next to .lock) is moved into data/.
    for file in &data_files {
        std::fs::rename(file, cache.join(file.file_name().unwrap())).unwrap();
    }
    std::fs::remove_dir(cache.join("data")).unwrap();
    let out = home.run(w, &["get", "secret"]);
    assert_eq!(text(&out.stdout), "\"token\"\n", "{}", text(&out.stderr));
    assert!(cache.join("data").join("pcache.meta").is_file());
    assert!(!cache.join("pcache.meta").exists());
}

#[test]
fn a_repl_whose_directory_was_removed_refuses_commands_instead_of_printing_ok() {
    let home = Home::new();
    let w = &home.work();
    let dir = w.join("cache"); // where `Home::pcache` points `--dir`
    let (mut child, mut stdin, mut stdout) = home.repl(w);
    assert_eq!(ask(&mut stdin, &mut stdout, "set a 1"), "OK\n");
    std::fs::remove_dir_all(&dir).unwrap();
    let line = ask(&mut stdin, &mut stdout, "set b 2");
    assert!(
        line.starts_with("error: the cache directory") && line.contains("was removed"),
        "{line:?}"
    );
    drop(stdin);
    child.wait().unwrap();
}
