//! The two-tier cache on a real Redis server: three node processes (`redis-node`) with their
//! own local directories sharing one server, coherence after overwrites and deletes, atomic
//! `incr`/`add`, a cross-machine single-flight stampede; in this process, Redis SIGKILLed and
//! restarted mid-workload, and the invalidation connection killed (`CLIENT KILL`).
//!
//! Each test starts its own server (Unix socket, persistence off) and skips loudly without
//! one (fails under `CI=true`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use persistent_cache::{CacheOptions, Error, PersistentCache};
use persistent_cache_tests::redis_server::{RedisCluster, RedisServer};

/// The staleness bound the tests run with.
const BOUND: Duration = Duration::from_millis(300);

/// One `redis-node` process.
struct Node {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Node {
    fn start(dir: &std::path::Path, url: &str, namespace: &str) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_redis-node"))
            .arg(dir)
            .arg(url)
            .arg(namespace)
            .arg(BOUND.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut node = Node {
            child,
            stdin,
            stdout,
        };
        assert_eq!(node.recv(), "ready");
        node
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn recv(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the node exited");
        line.trim_end().to_owned()
    }

    fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.recv()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

/// Three nodes with their own local directories on `server`.
fn three_nodes(server: &RedisServer, dirs: &tempfile::TempDir) -> Vec<Node> {
    (0..3)
        .map(|i| Node::start(&dirs.path().join(format!("node{i}")), &server.url(), "t"))
        .collect()
}

#[test]
fn three_nodes_share_values_and_never_serve_them_stale_after_invalidation() {
    let Some(server) = RedisServer::start_or_skip("three_nodes_share_values") else {
        return;
    };
    let dirs = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(&server, &dirs);
    let (a, rest) = nodes.split_first_mut().unwrap();
    assert_eq!(a.ask("set user v1"), "ok");
    for node in rest.iter_mut() {
        assert_eq!(node.ask("get user"), "v1");
        // Now a local copy: served again from the local tier.
        assert_eq!(node.ask("get user"), "v1");
    }
    let mut delays = Vec::new();
    for version in 2..=6 {
        let value = format!("v{version}");
        assert_eq!(a.ask(&format!("set user {value}")), "ok");
        for node in rest.iter_mut() {
            let reply = node.ask(&format!("until user {value}"));
            let words: Vec<&str> = reply.split_whitespace().collect();
            let ["after", micros, "stale", stale] = words.as_slice() else {
                panic!("unexpected reply {reply:?}");
            };
            assert_eq!(*stale, "0", "a node read an old value after the new one");
            delays.push(micros.parse::<u64>().unwrap());
        }
    }
    delays.sort_unstable();
    eprintln!(
        "invalidation seen after a write was acknowledged: median {} µs, max {} µs (bound {BOUND:?})",
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
    assert!(
        delays[delays.len() - 1] < BOUND.as_micros() as u64,
        "{delays:?}"
    );
    assert_eq!(a.ask("delete user"), "true");
    for node in rest.iter_mut() {
        assert_eq!(node.ask("until user (nil)").split(' ').nth(3), Some("0"));
    }
    for node in rest.iter_mut() {
        let status = node.ask("status");
        assert!(status.starts_with("served=true"), "{status}");
    }
}

#[test]
fn incr_from_three_nodes_sums_exactly_and_add_has_one_winner() {
    let Some(server) = RedisServer::start_or_skip("incr_and_add_across_nodes") else {
        return;
    };
    let dirs = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(&server, &dirs);
    for node in nodes.iter_mut() {
        node.send("incr hits 1 300");
    }
    let lasts: Vec<i64> = nodes
        .iter_mut()
        .map(|n| n.recv().parse().unwrap())
        .collect();
    assert_eq!(lasts.iter().max(), Some(&900), "{lasts:?}");
    for node in nodes.iter_mut() {
        assert_eq!(node.ask("incr hits 0 1"), "900");
    }
    for round in 0..20 {
        for (i, node) in nodes.iter_mut().enumerate() {
            node.send(&format!("add winner{round} node{i}"));
        }
        let wins: Vec<String> = nodes.iter_mut().map(Node::recv).collect();
        assert_eq!(
            wins.iter().filter(|w| *w == "true").count(),
            1,
            "round {round}: {wins:?}"
        );
        let winner = wins.iter().position(|w| w == "true").unwrap();
        for node in nodes.iter_mut() {
            assert_eq!(
                node.ask(&format!("get winner{round}")),
                format!("node{winner}")
            );
        }
    }
}

#[test]
fn a_get_or_set_stampede_across_three_nodes_computes_once() {
    let Some(server) = RedisServer::start_or_skip("get_or_set_stampede_across_nodes") else {
        return;
    };
    let dirs = tempfile::tempdir().unwrap();
    let mut nodes = three_nodes(&server, &dirs);
    for round in 0..3 {
        for node in nodes.iter_mut() {
            node.send(&format!("gos report{round} 300"));
        }
        let replies: Vec<String> = nodes.iter_mut().map(Node::recv).collect();
        let computed: Vec<&String> = replies
            .iter()
            .filter(|r| r.starts_with("computed "))
            .collect();
        assert_eq!(computed.len(), 1, "round {round}: {replies:?}");
        let value = computed[0].trim_start_matches("computed ");
        for reply in &replies {
            assert!(reply.ends_with(value), "round {round}: {replies:?}");
        }
    }
}

/// Keys the in-process tests write: `k0`..`k19`.
fn key(i: usize) -> String {
    format!("k{i}")
}

async fn open_two_tier(dir: &std::path::Path, server: &RedisServer) -> PersistentCache {
    let cache = PersistentCache::open(
        CacheOptions::new(dir)
            .redis(server.url())
            .redis_namespace("t")
            .max_staleness(BOUND),
    )
    .await
    .unwrap();
    wait_served(&cache, Duration::from_secs(10)).await;
    cache
}

async fn wait_served(cache: &PersistentCache, limit: Duration) {
    let started = Instant::now();
    while !cache.remote_status().unwrap().local_served {
        assert!(started.elapsed() < limit, "local copies never served");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_workload() {
    let Some(mut server) = RedisServer::start_or_skip("redis_killed_and_restarted") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = open_two_tier(dir.path(), &server).await;
    for i in 0..20 {
        cache.set(&key(i), &format!("value {i}")).await.unwrap();
    }
    for i in 0..20 {
        // A miss locally (our own write's invalidation dropped it) copies it back.
        assert_eq!(
            cache.get::<String>(&key(i)).await.unwrap(),
            Some(format!("value {i}"))
        );
    }
    // A mixed workload on four tasks until told to stop, counting what it sees.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, remote_errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (cache, stop, ok, remote_errors) = (
                cache.clone(),
                stop.clone(),
                ok.clone(),
                remote_errors.clone(),
            );
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let k = format!("w{w}:{}", n % 50);
                    let result = match n % 4 {
                        0 => cache.set(&k, &n).await.map(drop),
                        1 => cache.get::<usize>(&k).await.map(drop),
                        2 => cache.incr("counter", 1, 0).await.map(drop),
                        _ => cache.delete(&k).await.map(drop),
                    };
                    match result {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(Error::Remote(_)) => remote_errors.fetch_add(1, Ordering::Relaxed),
                        Err(other) => panic!("not a Redis error while Redis is away: {other}"),
                    };
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before_kill = ok.load(Ordering::Relaxed);
    assert!(before_kill > 0);
    server.kill();
    let killed = Instant::now();
    // Within the bound: local copies are still served; writes fail with a clear error.
    let local = cache.get::<String>(&key(3)).await;
    let elapsed = killed.elapsed();
    if elapsed < BOUND / 2 {
        assert_eq!(local.unwrap(), Some("value 3".to_owned()));
    }
    let write = cache.set("during", "x").await;
    assert!(matches!(write, Err(Error::Remote(_))), "{write:?}");
    eprintln!("while down: {}", write.unwrap_err());
    // Past the bound: no local copy is served as fresh.
    tokio::time::sleep(BOUND).await;
    let read = cache.get::<String>(&key(3)).await;
    assert!(matches!(read, Err(Error::Remote(_))), "{read:?}");
    // The local tier is intact: a local-only handle to the same directory reads every copy.
    let local_only = PersistentCache::open(CacheOptions::new(dir.path()))
        .await
        .unwrap();
    for i in 0..20 {
        assert_eq!(
            local_only.get::<String>(&key(i)).await.unwrap(),
            Some(format!("value {i}")),
            "the local copy of {} was lost while Redis was down",
            key(i)
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let errors_while_down = remote_errors.load(Ordering::Relaxed);
    assert!(errors_while_down > 0);
    server.start();
    // Reconnected by itself; the restarted server is empty (no persistence), so every local
    // copy failed revalidation and was dropped.
    wait_served(&cache, Duration::from_secs(10)).await;
    let after_restart = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("a workload task panicked");
    }
    assert!(
        ok.load(Ordering::Relaxed) > after_restart,
        "no operation succeeded after the restart"
    );
    assert_eq!(cache.get::<String>(&key(3)).await.unwrap(), None);
    cache.set("after", "back").await.unwrap();
    assert_eq!(
        cache.get::<String>("after").await.unwrap().as_deref(),
        Some("back")
    );
    eprintln!(
        "ok {} (before the kill {before_kill}), Redis errors {}",
        ok.load(Ordering::Relaxed),
        remote_errors.load(Ordering::Relaxed)
    );
    drop(local_only);
    cache.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_invalidation_connection_serves_nothing_stale_beyond_the_bound() {
    let Some(server) = RedisServer::start_or_skip("killed_invalidation_connection") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = open_two_tier(dir.path(), &server).await;
    for round in 0..5 {
        let k = format!("page{round}");
        cache.set(&k, "old").await.unwrap();
        assert_eq!(
            cache.get::<String>(&k).await.unwrap().as_deref(),
            Some("old")
        );
        assert_eq!(
            cache.get::<String>(&k).await.unwrap().as_deref(),
            Some("old")
        );
        // In one transaction: the invalidation connection is killed and the value replaced,
        // so its invalidation is never delivered to this cache.
        // The invalidation connection is (back) up and the copy is served locally.
        let started = Instant::now();
        while !server
            .command("CLIENT LIST")
            .contains("pcache-invalidation")
            || !cache.remote_status().unwrap().local_served
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no invalidation connection"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let new = cbor_text("new");
        let replies = server.transaction(&[
            "CLIENT KILL TYPE normal SKIPME yes".to_owned(),
            format!("SET t:v:{k} {new}"),
        ]);
        let written = Instant::now();
        assert!(
            replies.len() == 2 && replies[0].starts_with(':') && replies[1] == "+OK",
            "{replies:?}"
        );
        let mut stale_after = Duration::ZERO;
        loop {
            let value = cache.get::<String>(&k).await;
            match value.as_ref().map(|v| v.as_deref()) {
                Ok(Some("new")) => break,
                Ok(Some("old")) | Err(Error::Remote(_)) => {
                    if value.is_ok() {
                        stale_after = written.elapsed();
                    }
                    assert!(
                        written.elapsed() < BOUND * 10,
                        "round {round}: still {value:?} {:?} after the write",
                        written.elapsed()
                    );
                }
                other => panic!("round {round}: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            stale_after < BOUND,
            "round {round}: the old value was served {stale_after:?} after it was replaced"
        );
        eprintln!("round {round}: last stale read {stale_after:?} after the write");
    }
    cache.close().await.unwrap();
}

/// `text` as a CBOR text string, written as an inline-command argument (ASCII only, < 24
/// bytes): what `cache.set(key, text)` stores.
fn cbor_text(text: &str) -> String {
    assert!(text.len() < 24 && text.is_ascii());
    format!("\"\\x{:02x}{text}\"", 0x60 + text.len())
}

/// Cluster variant: two caches (separate directories, separate Redis clients) on a 3-master
/// cluster: values on all three masters, coherence after overwrites and deletes, `incr` sums,
/// `add` has one winner, `keys` and `delete_prefix` across the masters, single flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_three_masters_keeps_coherence_and_atomicity() {
    let Some(cluster) = RedisCluster::start_or_skip("cluster_coherence_and_atomicity") else {
        return;
    };
    let url = cluster.urls().join(",");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let open = |dir: std::path::PathBuf| {
        let url = url.clone();
        async move {
            let cache = PersistentCache::open(
                CacheOptions::new(dir)
                    .redis(url)
                    .redis_namespace("c")
                    .max_staleness(BOUND),
            )
            .await
            .unwrap();
            wait_served(&cache, Duration::from_secs(10)).await;
            cache
        }
    };
    let a = open(dir_a.path().to_owned()).await;
    let b = open(dir_b.path().to_owned()).await;
    for i in 0..30 {
        a.set(&key(i), &format!("v1 {i}")).await.unwrap();
    }
    // The keys landed on every master.
    for node in cluster.nodes() {
        let size = node.command("DBSIZE");
        let count: u64 = size.trim_start_matches(':').parse().unwrap();
        assert!(count > 0, "a master holds none of the keys: {size}");
    }
    for i in 0..30 {
        assert_eq!(
            b.get::<String>(&key(i)).await.unwrap(),
            Some(format!("v1 {i}"))
        );
    }
    // Overwrites and deletes on A reach B's local copies, on every master.
    let started = Instant::now();
    for i in 0..30 {
        if i % 3 == 0 {
            assert!(a.delete(&key(i)).await.unwrap());
        } else {
            a.set(&key(i), &format!("v2 {i}")).await.unwrap();
        }
    }
    let written = Instant::now();
    for i in 0..30 {
        let want = (i % 3 != 0).then(|| format!("v2 {i}"));
        loop {
            let got = b.get::<String>(&key(i)).await.unwrap();
            if got == want {
                break;
            }
            assert_eq!(got, Some(format!("v1 {i}")), "neither old nor new");
            assert!(
                written.elapsed() < BOUND,
                "{} stale after {:?}",
                key(i),
                written.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    eprintln!(
        "cluster: 30 writes seen on the other node within {:?}",
        started.elapsed()
    );
    let (mut keys, other) = (a.keys("k").await.unwrap(), b.keys("").await.unwrap());
    keys.sort();
    assert_eq!(keys.len(), 20, "{keys:?}");
    assert!(other.len() >= 20);
    // incr from both sums exactly; add has one winner.
    let adds = |cache: PersistentCache| async move {
        let mut wins = 0;
        for i in 0..100 {
            cache.incr(&format!("n{}", i % 7), 1, 0).await.unwrap();
            if cache
                .add(&format!("once{i}"), "x", persistent_cache::Expiry::Never)
                .await
                .unwrap()
            {
                wins += 1;
            }
        }
        wins
    };
    let (wins_a, wins_b) = tokio::join!(adds(a.clone()), adds(b.clone()));
    assert_eq!(wins_a + wins_b, 100);
    let mut sum = 0;
    for i in 0..7 {
        sum += a.get::<i64>(&format!("n{i}")).await.unwrap().unwrap();
    }
    assert_eq!(sum, 200);
    // A stampede of both computes once.
    let computed = Arc::new(AtomicU64::new(0));
    let flight = |cache: PersistentCache, computed: Arc<AtomicU64>| async move {
        cache
            .get_or_set_with("report", persistent_cache::Expiry::Never, || async {
                computed.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                7u32
            })
            .await
            .unwrap()
    };
    let (x, y) = tokio::join!(
        flight(a.clone(), computed.clone()),
        flight(b.clone(), computed.clone())
    );
    assert_eq!((x, y), (7, 7));
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    // delete_prefix across the masters.
    assert_eq!(a.delete_prefix("k").await.unwrap(), 20);
    assert!(b.keys("k").await.unwrap().is_empty());
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Several processes on one local directory (issue 12) with the Redis tier: each has its own
/// invalidation connection, and an overwrite on another machine reaches both — neither serves
/// the old copy from the shared directory once invalidated.
#[test]
fn two_processes_sharing_a_directory_both_apply_invalidations() {
    let Some(server) = RedisServer::start_or_skip("shared_directory_invalidations") else {
        return;
    };
    let dirs = tempfile::tempdir().unwrap();
    let shared = dirs.path().join("shared");
    let mut writer = Node::start(&dirs.path().join("writer"), &server.url(), "t");
    let mut first = Node::start(&shared, &server.url(), "t");
    let mut second = Node::start(&shared, &server.url(), "t");
    for version in 1..=5 {
        let value = format!("v{version}");
        assert_eq!(writer.ask(&format!("set page {value}")), "ok");
        // One process copies it into the shared directory; the other reads that copy.
        assert_eq!(
            first.ask(&format!("until page {value}")).split(' ').nth(3),
            Some("0")
        );
        assert_eq!(
            second.ask(&format!("until page {value}")).split(' ').nth(3),
            Some("0")
        );
    }
    assert_eq!(writer.ask("delete page"), "true");
    for node in [&mut first, &mut second] {
        assert_eq!(node.ask("until page (nil)").split(' ').nth(3), Some("0"));
        let status = node.ask("status");
        let invalidations: u64 = status.rsplit('=').next().unwrap().parse().unwrap();
        assert!(invalidations >= 5, "{status}");
    }
}
