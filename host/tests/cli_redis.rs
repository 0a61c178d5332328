//! `pcache` with a Redis tier: `--redis` / `CACHE_REDIS_URL` (never from `.env`), and plugins
//! whose buckets live in Redis (`plugin run --keyvalue`), on two "hosts" (separate processes
//! and cache directories) sharing one server.

mod common;

use std::time::{Duration, Instant};

use common::{pcache, run, stderr, stdout};
use persistent_cache::{Error, PersistentCache, Plugin, PluginFailure, PluginOptions};
use persistent_cache_tests::redis_server::RedisServer;
use persistent_cache_tests::WORDFREQ_PLUGIN;

#[test]
fn two_hosts_share_values_through_redis_and_dotenv_cannot_name_the_server() {
    let Some(server) = RedisServer::start_or_skip("pcache_with_redis") else {
        return;
    };
    let url = server.url();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let set = run(a.path(), &["--redis", &url, "set", "greeting", "\"hello\""]);
    assert!(set.status.success(), "{}", stderr(&set));
    // Another host (directory), the URL from the environment.
    let got = pcache(b.path(), &["get", "greeting"])
        .env("CACHE_REDIS_URL", &url)
        .output()
        .unwrap();
    assert_eq!(stdout(&got), "\"hello\"\n", "{}", stderr(&got));
    let incr = run(b.path(), &["--redis", &url, "incr", "n", "5"]);
    assert_eq!(stdout(&incr), "5\n", "{}", stderr(&incr));
    let incr = run(a.path(), &["--redis", &url, "incr", "n", "2"]);
    assert_eq!(stdout(&incr), "7\n", "{}", stderr(&incr));
    let keys = run(a.path(), &["--redis", &url, "keys"]);
    assert_eq!(stdout(&keys), "greeting\nn\n", "{}", stderr(&keys));

    // A `.env` in the working directory naming a server is not followed: the cache stays
    // local (the key set through Redis is not there) and a warning says why.
    std::fs::write(b.path().join(".env"), format!("CACHE_REDIS_URL={url}\n")).unwrap();
    let local = tempfile::tempdir().unwrap();
    std::fs::write(
        local.path().join(".env"),
        format!("CACHE_REDIS_URL={url}\n"),
    )
    .unwrap();
    let got = run(local.path(), &["get", "greeting"]);
    assert_eq!(got.status.code(), Some(1), "{}", stdout(&got));
    assert!(
        stderr(&got).contains("CACHE_REDIS_URL in .env is ignored"),
        "{}",
        stderr(&got)
    );

    // A server that does not answer: one clear line, exit 2.
    drop(server);
    let down = run(a.path(), &["--redis", &url, "get", "greeting"]);
    assert_eq!(down.status.code(), Some(2));
    assert!(stderr(&down).contains("Redis"), "{}", stderr(&down));
    assert_eq!(stderr(&down).lines().count(), 1, "{}", stderr(&down));
}

#[test]
fn wordfreq_on_two_hosts_shares_its_counts_in_redis() {
    let Some(server) = RedisServer::start_or_skip("wordfreq_on_two_hosts") else {
        return;
    };
    let url = server.url();
    let hosts = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let texts = ["the cat sat on the mat", "the dog ate the cat food"];
    // Both hosts add at once, three times each.
    let children: Vec<_> = (0..6)
        .map(|i| {
            pcache(
                hosts[i % 2].path(),
                &[
                    "plugin",
                    "run",
                    "--keyvalue",
                    &url,
                    WORDFREQ_PLUGIN,
                    "add",
                    texts[i % 2],
                ],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    for host in &hosts {
        let counts = run(
            host.path(),
            &[
                "plugin",
                "run",
                "--keyvalue",
                &url,
                WORDFREQ_PLUGIN,
                "count",
                "the",
                "cat",
                "dog",
                "mat",
            ],
        );
        assert_eq!(
            stdout(&counts),
            "the 12\ncat 6\ndog 3\nmat 3\n",
            "{}",
            stderr(&counts)
        );
        // Nothing was kept in the host's own plugin store.
        assert!(!host.path().join("cache/plugins/wordfreq").exists());
    }
    // The same plugin on the local store of a host sees none of it.
    let local = run(
        hosts[0].path(),
        &["plugin", "run", WORDFREQ_PLUGIN, "count", "the"],
    );
    assert_eq!(stdout(&local), "the 0\n", "{}", stderr(&local));
    // The counters are Redis's own: INCRBY's decimal text under the plugin's bucket prefix.
    assert_eq!(
        server.command("GET pcache:kv:{wordfreq/wordfreq}:word:the"),
        "12"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_waiting_on_redis_stops_at_its_deadline() {
    let Some(server) = RedisServer::start_or_skip("plugin_deadline_on_redis") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(persistent_cache::CacheOptions::new(dir.path()))
        .await
        .unwrap();
    let wordfreq = Plugin::load(WORDFREQ_PLUGIN, None).await.unwrap();
    let options = || {
        PluginOptions::new()
            .keyvalue_redis(server.url())
            .time_limit(Duration::from_millis(400))
    };
    let added = cache
        .run_plugin(&wordfreq, options().args(["add", "one two two"]))
        .await
        .unwrap();
    assert!(added.success(), "{added:?}");
    // Redis holds every write for 3 s: the plugin's next INCRBY waits until its deadline only.
    assert_eq!(server.command("CLIENT PAUSE 3000 WRITE"), "+OK");
    let started = Instant::now();
    let stalled = cache
        .run_plugin(&wordfreq, options().args(["add", "three"]))
        .await;
    let elapsed = started.elapsed();
    assert!(
        matches!(
            stalled,
            Err(Error::Plugin {
                failure: PluginFailure::TimeLimit(_),
                ..
            })
        ),
        "{stalled:?}"
    );
    // The bug this guards against waits out the 3 s pause; the bound leaves a loaded debug
    // build 2.1 s over the deadline for the plugin's own start and teardown.
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    assert_eq!(server.command("CLIENT UNPAUSE"), "+OK");
    let counted = cache
        .run_plugin(&wordfreq, options().args(["count", "one", "two"]))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&counted.stdout), "one 1\ntwo 2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordfreq_runs_unchanged_on_a_redis_cluster() {
    let Some(cluster) =
        persistent_cache_tests::redis_server::RedisCluster::start_or_skip("wordfreq_on_a_cluster")
    else {
        return;
    };
    let url = cluster.urls().join(",");
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(persistent_cache::CacheOptions::new(dir.path()))
        .await
        .unwrap();
    let wordfreq = Plugin::load(WORDFREQ_PLUGIN, None).await.unwrap();
    let run = |args: &'static [&'static str]| {
        let options = PluginOptions::new()
            .keyvalue_redis(url.clone())
            .args(args.iter().copied());
        let (cache, wordfreq) = (cache.clone(), wordfreq.clone());
        async move { cache.run_plugin(&wordfreq, options).await.unwrap() }
    };
    assert!(run(&["add", "a b b c c c"]).await.success());
    assert!(run(&["add", "c d"]).await.success());
    // `top` lists the bucket's keys (SCAN on the master that owns the bucket's slot).
    let top = run(&["top", "3"]).await;
    let top = String::from_utf8_lossy(&top.stdout).into_owned();
    let lines: Vec<&str> = top.lines().map(str::trim).collect();
    assert_eq!(lines, ["4 c", "2 b", "1 a", "total 8"], "{top}");
}

#[test]
fn bench_runs_the_two_tier_workloads_beside_plain_redis() {
    let Some(server) = RedisServer::start_or_skip("bench_two_tier_smoke") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["--redis", &server.url(), "bench", "--n", "200"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    for row in [
        "local-only get-hit",
        "two-tier get-hit (local)",
        "two-tier get-hit (remote)",
        "redis GET (same client)",
        "redis SET (same client)",
        "two-tier set",
    ] {
        assert!(table.contains(row), "no {row} in\n{table}");
    }
    assert!(
        table.contains("invalidations during the local-hit pass: 0"),
        "{table}"
    );
    // The bench cleaned up after itself.
    assert_eq!(server.command("DBSIZE"), ":0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_replies_from_redis_are_bounded_by_its_memory_limit() {
    let Some(server) = RedisServer::start_or_skip("plugin_reply_bound_on_redis") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(persistent_cache::CacheOptions::new(dir.path()))
        .await
        .unwrap();
    let bytes = std::fs::read(persistent_cache_tests::PROBE_PLUGIN).unwrap();
    let probe = Plugin::from_bytes("probe", bytes, None).await.unwrap();
    // One 4 MiB value asked for 1000 times in one get-many: 4 GB if the host fetched it all.
    let options = PluginOptions::new()
        .keyvalue_redis(server.url())
        .memory_limit(64 << 20)
        .args(["get-many-bomb", "4", "1000"]);
    let started = Instant::now();
    let stopped = cache.run_plugin(&probe, options).await;
    assert!(
        matches!(
            stopped,
            Err(Error::Plugin {
                failure: PluginFailure::MemoryLimit(_),
                ..
            })
        ),
        "{stopped:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Redis and the host are fine afterwards.
    assert_eq!(server.command("PING"), "+PONG");
}
