//! The blocking handle of a two-tier cache on a real Redis server: `BlockingCache::open` with a
//! Redis URL (its own runtime) and `PersistentCache::blocking()` of a two-tier cache both go
//! through the Redis tier, so what they write other machines read, and the other way round.
//!
//! Each test starts its own server and skips loudly without one (fails under `CI=true`).

use std::time::{Duration, Instant};

use persistent_cache::{BlockingCache, CacheOptions, Expiry, PersistentCache};
use persistent_cache_tests::redis_server::RedisServer;

/// The staleness bound the tests run with.
const BOUND: Duration = Duration::from_millis(300);

fn options(dir: &std::path::Path, server: &RedisServer) -> CacheOptions {
    CacheOptions::new(dir)
        .redis(server.url())
        .redis_namespace("b")
        .max_staleness(BOUND)
}

/// Polls `read` until it returns `wanted`, for at most a few bounds.
fn eventually<T: PartialEq + std::fmt::Debug>(wanted: T, mut read: impl FnMut() -> T) {
    let started = Instant::now();
    loop {
        let got = read();
        if got == wanted {
            return;
        }
        assert!(
            started.elapsed() < BOUND * 10,
            "still {got:?}, not {wanted:?}, {:?} after the write",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn blocking_two_tier_caches_share_values_and_counters_through_redis() {
    let Some(server) = RedisServer::start_or_skip("blocking_two_tier") else {
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = BlockingCache::open(options(dir_a.path(), &server)).unwrap();
    let b = BlockingCache::open(options(dir_b.path(), &server)).unwrap();

    a.set("k", "one").unwrap();
    assert_eq!(b.get::<String>("k").unwrap().as_deref(), Some("one"));
    b.set("k", "two").unwrap();
    eventually(Some("two".to_owned()), || a.get::<String>("k").unwrap());
    assert!(b.delete("k").unwrap());
    eventually(None, || a.get::<String>("k").unwrap());
    assert!(a.add("once", &1u8, Expiry::Default).unwrap());
    assert!(!b.add("once", &2u8, Expiry::Default).unwrap());

    // Counters from threads of both handles: every increment counted once.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                for _ in 0..50 {
                    cache.incr("hits", 1, 0).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(a.incr("hits", 0, 0).unwrap(), 200);
    assert_eq!(b.get::<i64>("hits").unwrap(), Some(200));
    assert_eq!(
        b.get_or_set_with("computed", Expiry::Default, || 7u32)
            .unwrap(),
        7
    );
    assert_eq!(
        a.get_or_set_with("computed", Expiry::Default, || 8u32)
            .unwrap(),
        7
    );
    a.close().unwrap();
    b.close().unwrap();

    // Reopened, the local tier of `a` was closed cleanly and Redis still has the values.
    let a = BlockingCache::open(options(dir_a.path(), &server)).unwrap();
    assert_eq!(a.get::<i64>("hits").unwrap(), Some(200));
    a.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_handle_of_an_async_two_tier_cache_writes_through_to_redis() {
    let Some(server) = RedisServer::start_or_skip("blocking_handle_of_two_tier") else {
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = PersistentCache::open(options(dir_a.path(), &server))
        .await
        .unwrap();
    let b = PersistentCache::open(options(dir_b.path(), &server))
        .await
        .unwrap();
    b.set("k", "from b").await.unwrap();

    let blocking = a.blocking();
    let read = tokio::task::spawn_blocking(move || {
        let read = blocking.get::<String>("k").unwrap();
        blocking.set("k2", "from a's blocking handle").unwrap();
        read
    })
    .await
    .unwrap();
    assert_eq!(read.as_deref(), Some("from b"));
    assert_eq!(
        b.get::<String>("k2").await.unwrap().as_deref(),
        Some("from a's blocking handle")
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[test]
fn a_blocking_two_tier_cache_dropped_without_close_shuts_down_cleanly() {
    let Some(server) = RedisServer::start_or_skip("blocking_two_tier_dropped") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u32 {
        let cache = BlockingCache::open(options(dir.path(), &server)).unwrap();
        if round > 0 {
            assert_eq!(cache.get::<u32>("round").unwrap(), Some(round - 1));
        }
        cache.set("round", &round).unwrap();
        let clone = cache.clone();
        drop(cache);
        // The clone still works after the first handle went; dropping it stops the runtime.
        assert_eq!(clone.get::<u32>("round").unwrap(), Some(round));
        drop(clone);
    }
}

/// The Python package's pattern: a blocking open, then only its async handle is kept. The
/// Redis tier's runtime lives on with that handle (its listeners keep local copies served),
/// and dropping the last handle on a runtime's worker thread does not panic.
#[test]
fn the_async_handle_of_a_blocking_two_tier_open_keeps_its_redis_tier_running() {
    let Some(server) = RedisServer::start_or_skip("async_handle_of_blocking_open") else {
        return;
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = BlockingCache::open(options(dir_a.path(), &server))
        .unwrap()
        .to_async();
    let b = BlockingCache::open(options(dir_b.path(), &server)).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        while !a.remote_status().unwrap().local_served {
            assert!(started.elapsed() < BOUND * 10, "the listeners stopped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        a.set("k", "one").await.unwrap();
        assert_eq!(a.get::<String>("k").await.unwrap().as_deref(), Some("one"));
    });
    assert_eq!(b.get::<String>("k").unwrap().as_deref(), Some("one"));
    b.set("k", "two").unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        while a.get::<String>("k").await.unwrap().as_deref() != Some("two") {
            assert!(
                started.elapsed() < BOUND * 10,
                "the invalidation never arrived"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(a.remote_status().unwrap().invalidations > 0);
        // The last handle of `a`'s open goes on a worker thread: its runtime stops without
        // waiting there.
        tokio::spawn(async move { drop(a) }).await.unwrap();
    });
    b.close().unwrap();
}
