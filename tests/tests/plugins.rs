//! End-to-end: wasi:keyvalue plugin components (the example `wordfreq`, the test `probe`) run by
//! the real host, their buckets served by the real cache guest in real directories.

mod common;

use persistent_cache::{
    Expiry, PersistentCache, Plugin, PluginExit, PluginFailure, PluginOptions, PLUGINS_DIRECTORY,
};
use persistent_cache_tests::{PROBE_PLUGIN, WORDFREQ_PLUGIN};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{open, plugin_failure, probe};

async fn run(cache: &PersistentCache, plugin: &Plugin, args: &[&str]) -> PluginExit {
    let options = PluginOptions::new().args(args.iter().copied());
    cache.run_plugin(plugin, options).await.unwrap()
}

/// The probe's `name=value` lines.
fn report(exit: &PluginExit) -> BTreeMap<String, String> {
    String::from_utf8_lossy(&exit.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn probe_value(
    cache: &PersistentCache,
    plugin: &Plugin,
    args: &[&str],
    name: &str,
) -> String {
    let exit = run(cache, plugin, args).await;
    assert!(exit.success(), "{args:?}: {exit:?}");
    report(&exit)
        .remove(name)
        .unwrap_or_else(|| panic!("{args:?} printed no {name}: {exit:?}"))
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn the_example_plugin_keeps_its_counts_across_runs_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let wordfreq = Plugin::load(WORDFREQ_PLUGIN, None).await.unwrap();
    assert_eq!(wordfreq.name(), "wordfreq");
    let cache = open(dir.path()).await;
    let text = "The cat sat on the mat. The end!";
    let first = run(&cache, &wordfreq, &["add", text]).await;
    assert!(first.success(), "{first:?}");
    assert_eq!(
        String::from_utf8_lossy(&first.stdout).lines().next(),
        Some("added 8 words (6 distinct); 8 words in total over 1 run")
    );
    cache.close().await.unwrap();

    // A new cache handle (the directory closed and reopened): the counts are still there.
    let cache = open(dir.path()).await;
    let options = PluginOptions::new().args(["add"]).stdin(text.as_bytes());
    let second = cache.run_plugin(&wordfreq, options).await.unwrap();
    assert!(second.success(), "{second:?}");
    let counts = run(&cache, &wordfreq, &["count", "the", "cat", "dog"]).await;
    assert_eq!(
        String::from_utf8_lossy(&counts.stdout),
        "the 6\ncat 2\ndog 0\n"
    );
    let top = run(&cache, &wordfreq, &["top", "2"]).await;
    let top = String::from_utf8_lossy(&top.stdout).into_owned();
    let lines: Vec<&str> = top.lines().map(str::trim).collect();
    assert_eq!(lines, ["6 the", "2 cat", "total 16"], "{top}");

    // The counts live in the plugin's own cache directory, as decimal text.
    let own = open(&dir.path().join(PLUGINS_DIRECTORY).join("wordfreq")).await;
    assert_eq!(
        own.get_raw("wordfreq/word:the").await.unwrap().as_deref(),
        Some(&b"6"[..])
    );
    assert_eq!(
        cache.stats().await.unwrap().entries,
        0,
        "the app's cache is untouched"
    );
}

#[tokio::test]
async fn list_keys_pages_through_thousands_of_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    let wordfreq = Plugin::load(WORDFREQ_PLUGIN, None).await.unwrap();
    let words: Vec<String> = (0..2500).map(|i| format!("w{i:05}")).collect();
    let exit = run(&cache, &wordfreq, &["add", &words.join(" ")]).await;
    assert!(exit.success(), "{exit:?}");
    let top = run(&cache, &wordfreq, &["top", "100000"]).await;
    let listed = String::from_utf8_lossy(&top.stdout)
        .lines()
        .filter(|line| line.trim_start().starts_with("1 w"))
        .count();
    assert_eq!(listed, 2500, "every word, across three list-keys pages");
}

#[tokio::test]
async fn plugins_cannot_reach_each_other_or_the_application() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    cache
        .set_raw("shared/secret", b"app data", Expiry::Never)
        .await
        .unwrap();
    cache
        .set_raw("secret", b"app data", Expiry::Never)
        .await
        .unwrap();
    let alpha = probe("alpha").await;
    let beta = probe("beta").await;

    let put = probe_value(
        &cache,
        &alpha,
        &["put", "shared", "secret", "alpha's"],
        "put",
    )
    .await;
    assert_eq!(put, "ok");
    assert_eq!(
        probe_value(&cache, &alpha, &["get", "shared", "secret"], "get").await,
        "alpha's"
    );
    // Same bucket and key names, other plugin: nothing there; and never the app's keys.
    assert_eq!(
        probe_value(&cache, &beta, &["get", "shared", "secret"], "get").await,
        "none"
    );
    assert_eq!(
        probe_value(&cache, &beta, &["list", "shared"], "keys").await,
        ""
    );
    assert_eq!(
        probe_value(&cache, &beta, &["get", "default", "secret"], "get").await,
        "none"
    );
    // Beta writes the same key; alpha's value and the app's are unchanged.
    probe_value(&cache, &beta, &["put", "shared", "secret", "beta's"], "put").await;
    assert_eq!(
        probe_value(&cache, &alpha, &["get", "shared", "secret"], "get").await,
        "alpha's"
    );
    assert_eq!(
        cache.get_raw("shared/secret").await.unwrap().as_deref(),
        Some(&b"app data"[..])
    );
    assert_eq!(cache.keys("").await.unwrap(), ["secret", "shared/secret"]);

    // Escape attempts: bucket names that could leave the namespace are refused; keys that look
    // like paths are just keys, stored inside the plugin's own directory.
    let escape = report(&run(&cache, &alpha, &["escape"]).await);
    let opened: Vec<_> = escape
        .iter()
        .filter(|(k, _)| k.starts_with("open["))
        .collect();
    assert_eq!(opened.len(), 8, "{escape:?}");
    for (attempt, outcome) in opened {
        assert_eq!(outcome, "err:Error::AccessDenied", "{attempt}");
    }
    assert_eq!(escape["key[../../escape]"], "ok");
    let alpha_dir = dir.path().join(PLUGINS_DIRECTORY).join("alpha");
    for file in files_under(dir.path()) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let engine_file = name.ends_with(".seg")
            || [
                "pcache.meta",
                "index.hint",
                ".lock",
                ".write-lock",
                "settings.json",
            ]
            .contains(&name.as_str());
        assert!(engine_file, "unexpected file {}", file.display());
        let app_data = dir.path().join(persistent_cache::DATA_DIRECTORY);
        let in_a_cache = file.parent() == Some(dir.path())
            || file.parent() == Some(app_data.as_path())
            || file.starts_with(&alpha_dir)
            || file.starts_with(dir.path().join(PLUGINS_DIRECTORY).join("beta"));
        assert!(in_a_cache, "file outside the caches: {}", file.display());
    }
}

#[tokio::test]
async fn a_plugin_sees_only_what_it_is_granted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    let plugin = probe("sandboxed").await;
    std::env::set_var("PCACHE_TEST_SECRET", "host environment");
    let options = PluginOptions::new().args(["env"]).env("GRANTED", "yes");
    let env = report(&cache.run_plugin(&plugin, options).await.unwrap());
    assert_eq!(env["env"], "1");
    assert_eq!(env["env.GRANTED"], "yes");

    let fs = report(&run(&cache, &plugin, &["fs"]).await);
    for probe in ["fs.read", "fs.list_root", "fs.list_cwd", "fs.write"] {
        assert!(fs[probe].starts_with("err:"), "{probe}: {fs:?}");
    }
    let net = report(&run(&cache, &plugin, &["net"]).await);
    assert!(net["net.tcp"].starts_with("err:"), "{net:?}");
    assert!(net["net.dns"].starts_with("err:"), "{net:?}");

    // A granted directory is readable, and only readable; nothing else is.
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("input.txt"), "five!").unwrap();
    let granted = |args: [&str; 2]| {
        PluginOptions::new()
            .args(args)
            .read_only_dir(data.path(), "/data")
    };
    let read = cache.run_plugin(&plugin, granted(["read", "/data/input.txt"]));
    assert_eq!(report(&read.await.unwrap())["read"], "ok");
    let write = cache.run_plugin(&plugin, granted(["write", "/data/new.txt"]));
    assert!(report(&write.await.unwrap())["write"].starts_with("err:"));
    assert!(!data.path().join("new.txt").exists());
    let outside = cache.run_plugin(&plugin, granted(["read", "/data/../../etc/passwd"]));
    assert!(report(&outside.await.unwrap())["read"].starts_with("err:"));
    let ungranted = report(&run(&cache, &plugin, &["read", "/data/input.txt"]).await);
    assert!(ungranted["read"].starts_with("err:"), "{ungranted:?}");

    let options = PluginOptions::new()
        .args(["stdin"])
        .stdin(&b"twelve bytes"[..]);
    let stdin = report(&cache.run_plugin(&plugin, options).await.unwrap());
    assert_eq!(stdin["stdin"], "12");
    // argv[0] is the plugin's name, then its arguments.
    assert_eq!(
        probe_value(&cache, &plugin, &["args"], "args").await,
        "sandboxed|args"
    );
}

#[tokio::test]
async fn runaway_plugins_are_stopped_and_everything_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    let plugin = probe("runaway").await;
    probe_value(&cache, &plugin, &["put", "b", "before", "kept"], "put").await;

    let spin = PluginOptions::new()
        .args(["spin"])
        .time_limit(Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(
        plugin_failure(cache.run_plugin(&plugin, spin).await),
        (
            "runaway".to_owned(),
            PluginFailure::TimeLimit(Duration::from_millis(300))
        )
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let alloc = PluginOptions::new().args(["alloc"]).memory_limit(64 << 20);
    let (_, failure) = plugin_failure(cache.run_plugin(&plugin, alloc).await);
    assert_eq!(failure, PluginFailure::MemoryLimit(64 << 20));

    let trap = PluginOptions::new().args(["trap"]);
    match plugin_failure(cache.run_plugin(&plugin, trap).await) {
        (_, PluginFailure::Trap(message)) => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }

    // Exit codes: WASI 0.2 commands carry success or failure.
    assert_eq!(run(&cache, &plugin, &["exit", "0"]).await.code, 0);
    assert_eq!(run(&cache, &plugin, &["exit", "3"]).await.code, 1);

    // The plugin's cache and the app's cache still work.
    assert_eq!(
        probe_value(&cache, &plugin, &["get", "b", "before"], "get").await,
        "kept"
    );
    cache.set("after", &1).await.unwrap();
    assert_eq!(cache.get::<i32>("after").await.unwrap(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn increment_is_atomic_across_concurrent_plugin_runs_and_cas_retries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    let plugin = probe("counter").await;
    let runs: Vec<_> = (0..16)
        .map(|_| {
            let (cache, plugin) = (cache.clone(), plugin.clone());
            tokio::spawn(async move {
                for _ in 0..5 {
                    let exit = run(&cache, &plugin, &["incr", "b", "n", "3"]).await;
                    assert!(report(&exit)["incr"].parse::<i64>().is_ok(), "{exit:?}");
                }
            })
        })
        .collect();
    for handle in runs {
        handle.await.unwrap();
    }
    // 16 × 5 × 3, stored as decimal text.
    assert_eq!(
        probe_value(&cache, &plugin, &["get", "b", "n"], "get").await,
        "240"
    );
    assert_eq!(
        probe_value(&cache, &plugin, &["cas", "b", "n", "replaced"], "cas").await,
        "ok:240"
    );
    assert_eq!(
        probe_value(&cache, &plugin, &["get", "b", "n"], "get").await,
        "replaced"
    );
    let text = probe_value(&cache, &plugin, &["incr", "b", "n", "1"], "incr").await;
    assert!(text.starts_with("err:"), "not a counter any more: {text}");

    let batch = report(&run(&cache, &plugin, &["batch", "b"]).await);
    assert_eq!(
        batch["get_many"],
        r#"[Some(("a", "1")), None, Some(("c", "3"))]"#
    );
    assert_eq!(batch["after_delete"], "c,n");
}

#[tokio::test]
async fn components_that_are_not_keyvalue_commands_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache_guest = dir.path().join("guest.wasm");
    std::fs::write(
        &cache_guest,
        persistent_cache::test_support::guest_component(),
    )
    .unwrap();
    match plugin_failure(Plugin::load(&cache_guest, None).await) {
        (plugin, PluginFailure::Load(message)) => {
            assert_eq!(plugin, "guest");
            // The cache component imports the host's `value-reader`, which plugins do not get
            // (and it is no `wasi:cli` command either): refused, saying which.
            assert!(
                message.contains("pcache:cache/value-reader") || message.contains("wasi:cli"),
                "{message}"
            );
        }
        other => panic!("expected a load failure, got {other:?}"),
    }
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let (_, failure) = plugin_failure(Plugin::load(&junk, None).await);
    assert!(matches!(failure, PluginFailure::Load(_)), "{failure:?}");
    let bytes = std::fs::read(PROBE_PLUGIN).unwrap();
    let (_, failure) = plugin_failure(Plugin::from_bytes("../escape", bytes, None).await);
    assert!(matches!(failure, PluginFailure::Load(_)), "{failure:?}");
}
