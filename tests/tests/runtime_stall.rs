//! The async API never stalls the runtime: on a 2-worker runtime, a task that sleeps 1 ms in
//! a loop keeps waking on time while other tasks hammer the cache — with constant eviction and
//! compaction, with 1 MiB values, and with a sync per write. The bound (100 ms) is generous:
//! the bug it guards against (engine calls inline on the runtime threads) made the ticker
//! 122–358 ms late on these workloads; the tight figures are `pcache bench`'s (stall-*).

use persistent_cache::{CacheOptions, Expiry, PersistentCache};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most a 1 ms sleep may overshoot while the cache works.
const BOUND: Duration = Duration::from_millis(100);

/// Runs `work` on a fresh 2-worker runtime next to a 1 ms ticker; the ticker's worst lateness
/// and how many times it woke.
fn ticker_during<F, Fut>(work: F) -> (Duration, u64)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let work = work();
    runtime.block_on(async move {
        let done = Arc::new(AtomicBool::new(false));
        let ticker = tokio::spawn({
            let done = Arc::clone(&done);
            async move {
                let (mut worst, mut ticks) = (Duration::ZERO, 0u64);
                while !done.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let late = started.elapsed().saturating_sub(Duration::from_millis(1));
                    worst = worst.max(late);
                    ticks += 1;
                }
                (worst, ticks)
            }
        });
        // Let the ticker start before the load does.
        tokio::time::sleep(Duration::from_millis(5)).await;
        tokio::spawn(work).await.unwrap();
        done.store(true, Ordering::Relaxed);
        ticker.await.unwrap()
    })
}

async fn open(options: CacheOptions) -> Arc<PersistentCache> {
    Arc::new(PersistentCache::open(options).await.unwrap())
}

/// 64 tasks × 400 × (set 1 KiB + get) under an 8 MiB limit: eviction and compaction all the
/// time. Before: 358 ms late.
#[test]
fn many_small_writes_with_constant_eviction_do_not_stall_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (late, ticks) = ticker_during(move || async move {
        let cache = open(CacheOptions::new(&path).size_limit(8 << 20)).await;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..64u32 {
            let cache = Arc::clone(&cache);
            tasks.spawn(async move {
                let value = vec![t as u8; 1024];
                for i in 0..400u32 {
                    let key = format!("k{t}:{i}");
                    cache.set_raw(&key, &value, Expiry::Never).await.unwrap();
                    cache.get_raw(&key).await.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let stats = cache.stats().await.unwrap();
        assert!(stats.evicted > 0, "the workload must evict: {stats:?}");
        assert!(stats.volume <= 8 << 20, "the limit is hard: {stats:?}");
    });
    assert!(
        late < BOUND,
        "the 1 ms ticker was {late:?} late ({ticks} ticks)"
    );
}

/// 8 tasks × 24 sets of 1 MiB under a 64 MiB limit. Before: 122 ms late.
#[test]
fn big_values_do_not_stall_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (late, ticks) = ticker_during(move || async move {
        let cache = open(CacheOptions::new(&path).size_limit(64 << 20)).await;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..8u32 {
            let cache = Arc::clone(&cache);
            tasks.spawn(async move {
                let value = vec![t as u8; 1 << 20];
                for i in 0..24u32 {
                    let key = format!("big{t}:{i}");
                    cache.set_raw(&key, &value, Expiry::Never).await.unwrap();
                    if let Some(read) = cache.get_raw(&key).await.unwrap() {
                        assert_eq!(read.len(), 1 << 20);
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
    assert!(
        late < BOUND,
        "the 1 ms ticker was {late:?} late ({ticks} ticks)"
    );
}

/// 16 tasks × 50 sets with `sync(true)`: an fsync per write. Before: 154 ms late.
#[test]
fn synced_writes_do_not_stall_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (late, ticks) = ticker_during(move || async move {
        let cache = open(CacheOptions::new(&path).sync(true)).await;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..16u32 {
            let cache = Arc::clone(&cache);
            tasks.spawn(async move {
                for i in 0..50u32 {
                    let key = format!("s{t}:{i}");
                    cache.set_raw(&key, b"synced", Expiry::Never).await.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        assert_eq!(cache.stats().await.unwrap().entries, 16 * 50);
    });
    assert!(
        late < BOUND,
        "the 1 ms ticker was {late:?} late ({ticks} ticks)"
    );
}

/// A task that loops over cache calls that all succeed at once (hits) still lets other tasks
/// run, even on a single-threaded runtime: each call spends cooperative budget.
#[tokio::test(flavor = "current_thread")]
async fn a_loop_of_fast_calls_yields_to_other_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let cache = PersistentCache::open(CacheOptions::new(dir.path()))
        .await
        .unwrap();
    cache.set_raw("hot", b"v", Expiry::Never).await.unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let other = tokio::spawn({
        let ran = Arc::clone(&ran);
        async move { ran.store(true, Ordering::Relaxed) }
    });
    let mut calls_before_other_ran = None;
    for i in 0..20_000u32 {
        cache.get_raw("hot").await.unwrap();
        if ran.load(Ordering::Relaxed) {
            calls_before_other_ran = Some(i);
            break;
        }
    }
    other.await.unwrap();
    let calls = calls_before_other_ran.expect("the other task never ran during 20 000 calls");
    assert!(calls < 1_000, "the other task waited for {calls} calls");
}
