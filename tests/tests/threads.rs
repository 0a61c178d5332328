//! Threads the host starts (the epoch ticker, each cache's maintenance thread) end when the
//! caches that needed them close (a library that opens and closes caches keeps no thread
//! behind). Its own test binary: it counts the process's threads, which other tests' open
//! caches would disturb.

use persistent_cache::{CacheOptions, CodeCache, PersistentCache};
use std::time::{Duration, Instant};

/// Names of this process's threads called `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// Waits up to `within` for `name` threads to number `want`.
fn settles_to(name: &str, want: usize, within: Duration) -> usize {
    let started = Instant::now();
    loop {
        let now = threads_named(name);
        if now == want || started.elapsed() > within {
            return now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_ticker_threads_end_when_the_caches_close() {
    let scratch = tempfile::tempdir().unwrap();
    // Three different runtimes (no code cache, and two code caches): today's engines each
    // need ticks, but one thread serves them all.
    let code_caches = [
        None,
        Some(CodeCache::new(
            scratch.path().join("a"),
            scratch.path().join("a.key"),
        )),
        Some(CodeCache::new(
            scratch.path().join("b"),
            scratch.path().join("b.key"),
        )),
    ];
    for round in 0..2 {
        let mut caches = Vec::new();
        for (i, code_cache) in code_caches.iter().enumerate() {
            let dir = scratch.path().join(format!("cache-{round}-{i}"));
            let options = CacheOptions::new(dir).code_cache(code_cache.clone());
            let cache = PersistentCache::open(options).await.unwrap();
            cache.set("k", &i).await.unwrap();
            caches.push(cache);
        }
        assert_eq!(
            threads_named("pcache-epoch"),
            1,
            "one ticker for every engine"
        );
        // A thread names itself once it runs: wait for that.
        assert_eq!(
            settles_to("pcache-maintain", 3, Duration::from_secs(2)),
            3,
            "round {round}: one maintenance thread per open cache"
        );
        for cache in caches {
            cache.close().await.unwrap();
        }
        let left = settles_to("pcache-epoch", 0, Duration::from_secs(2));
        assert_eq!(
            left, 0,
            "round {round}: ticker threads left after every cache closed"
        );
        let left = settles_to("pcache-maintain", 0, Duration::from_secs(2));
        assert_eq!(
            left, 0,
            "round {round}: maintenance threads left after every cache closed"
        );
    }
}
