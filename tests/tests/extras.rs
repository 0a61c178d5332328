//! End-to-end: add, touch, pop, incr, delete_prefix, expire and the expired/evicted counters,
//! through the real component in the real host, including atomicity under concurrent tasks.

mod common;

use persistent_cache::{CacheOptions, Error, Expiry, ManualClock, PersistentCache};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{open, open_with_clock};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incr_from_64_tasks_sums_exactly_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for _ in 0..1000 {
                    cache.incr("counter", 1, 0).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(cache.get::<i64>("counter").await.unwrap(), Some(64_000));
    cache.close().await.unwrap();
    let cache = open(dir.path()).await;
    assert_eq!(cache.incr("counter", -64_000, 0).await.unwrap(), 0);
    // A counter started with set is an integer like any other.
    cache.set("from-set", &41_i64).await.unwrap();
    assert_eq!(cache.incr("from-set", 1, 0).await.unwrap(), 42);
    assert_eq!(cache.incr("fresh", 5, 100).await.unwrap(), 105);
}

#[tokio::test]
async fn incr_refuses_values_that_are_not_integers_and_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    cache.set("name", "John").await.unwrap();
    assert!(matches!(
        cache.incr("name", 1, 0).await,
        Err(Error::NotACounter(_))
    ));
    assert_eq!(
        cache.get::<String>("name").await.unwrap().as_deref(),
        Some("John")
    );
    cache.set("max", &i64::MAX).await.unwrap();
    assert!(matches!(
        cache.incr("max", 1, 0).await,
        Err(Error::CounterOverflow(_))
    ));
    assert_eq!(cache.get::<i64>("max").await.unwrap(), Some(i64::MAX));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_and_pop_have_exactly_one_winner_among_64_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    for round in 0..20 {
        let key = format!("lock:{round}");
        let adds: Vec<_> = (0..64)
            .map(|task| {
                let (cache, key) = (cache.clone(), key.clone());
                tokio::spawn(async move { cache.add(&key, &task, Expiry::Default).await.unwrap() })
            })
            .collect();
        let mut winners = 0;
        for add in adds {
            winners += usize::from(add.await.unwrap());
        }
        assert_eq!(winners, 1, "round {round}: add must succeed exactly once");

        let pops: Vec<_> = (0..64)
            .map(|_| {
                let (cache, key) = (cache.clone(), key.clone());
                tokio::spawn(async move { cache.pop::<i32>(&key).await.unwrap() })
            })
            .collect();
        let mut popped = Vec::new();
        for pop in pops {
            popped.extend(pop.await.unwrap());
        }
        assert_eq!(
            popped.len(),
            1,
            "round {round}: pop must return the value once"
        );
        assert_eq!(cache.get::<i32>(&key).await.unwrap(), None);
    }
    assert_eq!(cache.stats().await.unwrap().entries, 0);
}

#[tokio::test]
async fn incr_with_ttl_opens_a_window_that_later_calls_do_not_extend() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    ));
    let minute = Duration::from_secs(60);
    let cache = open_with_clock(dir.path(), &clock).await;
    assert_eq!(cache.incr_with_ttl("rate", 1, 0, minute).await.unwrap(), 1);
    clock.advance(Duration::from_secs(30));
    assert_eq!(cache.incr_with_ttl("rate", 1, 0, minute).await.unwrap(), 2);
    // Plain incr on the same counter keeps its expiry too.
    assert_eq!(cache.incr("rate", 1, 0).await.unwrap(), 3);
    clock.advance(Duration::from_secs(30));
    assert!(
        !cache.contains("rate").await.unwrap(),
        "expired 60 s after it was created, not after the last call"
    );
    // A new window starts from the default again, and its expiry survives a restart.
    assert_eq!(
        cache.incr_with_ttl("rate", 1, 10, minute).await.unwrap(),
        11
    );
    cache.close().await.unwrap();
    let cache = open_with_clock(dir.path(), &clock).await;
    clock.advance(Duration::from_secs(59));
    assert_eq!(cache.get::<i64>("rate").await.unwrap(), Some(11));
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.get::<i64>("rate").await.unwrap(), None);

    // Without a TTL of its own, a new counter gets the cache's default TTL.
    let options = CacheOptions::new(dir.path())
        .clock(clock.clone())
        .default_ttl(Some(Duration::from_secs(5)));
    cache.close().await.unwrap();
    let cache = PersistentCache::open(options).await.unwrap();
    assert_eq!(cache.incr("plain", 1, 0).await.unwrap(), 1);
    clock.advance(Duration::from_secs(5));
    assert_eq!(cache.incr("plain", 1, 0).await.unwrap(), 1);
}

#[tokio::test]
async fn add_keeps_the_old_value_and_respects_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    ));
    let cache = open_with_clock(dir.path(), &clock).await;
    assert!(!cache.contains("k").await.unwrap());
    assert!(cache
        .add("k", "first", Duration::from_secs(10))
        .await
        .unwrap());
    assert!(cache.contains("k").await.unwrap());
    assert!(!cache.add("k", "second", Expiry::Default).await.unwrap());
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("first")
    );
    clock.advance(Duration::from_secs(10));
    assert!(
        cache.add("k", "third", Expiry::Default).await.unwrap(),
        "expired counts as absent"
    );
    assert_eq!(
        cache.get::<String>("k").await.unwrap().as_deref(),
        Some("third")
    );
}

#[tokio::test]
async fn touch_sets_and_clears_the_ttl_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    ));
    let cache = open_with_clock(dir.path(), &clock).await;
    cache
        .set_with_ttl("session", "alice", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!cache.touch("missing", Expiry::Never).await.unwrap());
    clock.advance(Duration::from_secs(50));
    // Sliding expiration: another 60 s from now.
    assert!(cache
        .touch("session", Duration::from_secs(60))
        .await
        .unwrap());
    clock.advance(Duration::from_secs(50));
    assert!(cache.get::<String>("session").await.unwrap().is_some());
    cache.close().await.unwrap();

    let cache = open_with_clock(dir.path(), &clock).await;
    clock.advance(Duration::from_secs(9));
    assert!(cache.get::<String>("session").await.unwrap().is_some());
    assert!(
        cache.touch("session", Expiry::Never).await.unwrap(),
        "clear the TTL"
    );
    clock.advance(Duration::from_secs(365 * 24 * 3600));
    assert_eq!(
        cache.get::<String>("session").await.unwrap().as_deref(),
        Some("alice")
    );
    // One TTL rule: a zero TTL is refused (and changes nothing), not "expire at once".
    assert!(matches!(
        cache.touch("session", Duration::ZERO).await,
        Err(Error::InvalidTtl(_))
    ));
    assert!(cache.get::<String>("session").await.unwrap().is_some());
    assert!(cache
        .touch("session", Duration::from_millis(1))
        .await
        .unwrap());
    clock.advance(Duration::from_millis(1));
    assert_eq!(cache.get::<String>("session").await.unwrap(), None);
}

#[tokio::test]
async fn delete_prefix_removes_one_group_of_the_seed_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    for i in 0..300 {
        cache.set(&format!("user:{i}"), &i).await.unwrap();
        cache.set(&format!("file:{i}"), &i).await.unwrap();
    }
    cache.set("api:weather", "sunny").await.unwrap();
    assert_eq!(cache.keys("user:").await.unwrap().len(), 300);
    assert_eq!(cache.delete_prefix("user:").await.unwrap(), 300);
    assert!(cache.keys("user:").await.unwrap().is_empty());
    assert_eq!(cache.keys("file:").await.unwrap().len(), 300);
    assert!(matches!(
        cache.delete_prefix(&"x".repeat(5000)).await,
        Err(Error::InvalidKey(_))
    ));
    cache.close().await.unwrap();
    let cache = open(dir.path()).await;
    assert_eq!(cache.get::<i32>("user:7").await.unwrap(), None);
    assert_eq!(cache.get::<i32>("file:7").await.unwrap(), Some(7));
    assert_eq!(cache.delete_prefix("").await.unwrap(), 301);
    assert_eq!(cache.stats().await.unwrap().entries, 0);
}

#[tokio::test]
async fn expire_and_eviction_are_counted_in_stats() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    ));
    let options = CacheOptions::new(dir.path())
        .clock(clock.clone())
        .size_limit(256 * 1024);
    let cache = PersistentCache::open(options).await.unwrap();
    for i in 0..20 {
        cache
            .set_with_ttl(&format!("short:{i}"), &i, Duration::from_secs(5))
            .await
            .unwrap();
    }
    assert_eq!(cache.expire().await.unwrap(), 0);
    clock.advance(Duration::from_secs(5));
    assert_eq!(cache.get::<i32>("short:0").await.unwrap(), None);
    assert_eq!(cache.expire().await.unwrap(), 19);
    let stats = cache.stats().await.unwrap();
    assert_eq!((stats.expired, stats.evicted, stats.entries), (20, 0, 0));

    let value = vec![7u8; 4096];
    for i in 0..200 {
        cache.set(&format!("big:{i}"), &value).await.unwrap();
    }
    let stats = cache.stats().await.unwrap();
    assert!(stats.evicted > 0, "{stats:?}");
    assert_eq!(stats.entries + stats.evicted, 200, "{stats:?}");
    assert!(stats.volume <= 256 * 1024);
}

/// Listing many keys is many engine calls; on a one-thread runtime the other tasks still get
/// to run between its pages.
#[tokio::test(flavor = "current_thread")]
async fn listing_many_keys_lets_other_tasks_run_between_pages() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    for i in 0..5_000 {
        cache
            .set_raw(&format!("k{i:05}"), b"", Expiry::Never)
            .await
            .unwrap();
    }
    let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticker = {
        let ticks = Arc::clone(&ticks);
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    tokio::task::yield_now().await;
    let before = ticks.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(cache.keys("").await.unwrap().len(), 5_000);
    let during = ticks.load(std::sync::atomic::Ordering::Relaxed) - before;
    ticker.abort();
    // Five pages: the ticker ran between them.
    assert!(
        during >= 4,
        "the other task ran {during} times during the listing"
    );
}
