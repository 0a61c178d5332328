//! Issue 14's stall workloads on a 2-worker tokio runtime, through `PersistentCache`'s async API,
//! with a ticker task that sleeps 1 ms in a loop and records how late it wakes up. Prints one
//! JSON line.
//!
//! Usage: stall-bench stall-small|stall-big|stall-sync DIR
//!
//! This duplicates `pcache bench-run`'s stall workloads (host/src/bin/pcache/bench/stall.rs):
//! commits before them have no such workload, and this program must build against those too,
//! so it uses nothing but the public API that every commit since has.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use persistent_cache::{CacheOptions, Expiry, PersistentCache};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(workload), Some(dir)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: stall-bench stall-small|stall-big|stall-sync DIR");
        std::process::exit(2);
    };
    // (tasks, sets per task, value bytes, size limit, sync, get after each set)
    let shape = match workload.as_str() {
        "stall-small" => (64, 400, 1 << 10, 8 << 20, false, true),
        "stall-big" => (8, 24, 1 << 20, 64 << 20, false, false),
        "stall-sync" => (16, 50, 1 << 10, 500 << 20, true, false),
        other => {
            eprintln!("unknown workload {other}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(workload, dir, shape));
}

async fn run(workload: &str, dir: &str, shape: (u64, u64, usize, u64, bool, bool)) {
    let (tasks, per_task, value_size, size_limit, sync, with_get) = shape;
    let options = CacheOptions::new(dir).size_limit(size_limit).sync(sync);
    let cache = PersistentCache::open(options).await.expect("open");
    let value: Arc<Vec<u8>> = Arc::new((0..value_size).map(|i| (i * 31 % 251) as u8).collect());

    let stop = Arc::new(AtomicBool::new(false));
    let ticker = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let mut late = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let slept = Instant::now();
                tokio::time::sleep(Duration::from_millis(1)).await;
                late.push(
                    slept
                        .elapsed()
                        .saturating_sub(Duration::from_millis(1))
                        .as_nanos() as u64,
                );
            }
            late
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;

    let started = Instant::now();
    let mut running = Vec::new();
    for t in 0..tasks {
        let (cache, value) = (cache.clone(), Arc::clone(&value));
        running.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            for i in 0..per_task {
                let key = format!("key:{}", t * per_task + i);
                let call = Instant::now();
                cache
                    .set_raw(&key, &value, Expiry::Never)
                    .await
                    .expect("set");
                calls.push(call.elapsed().as_nanos() as u64);
                if with_get {
                    let call = Instant::now();
                    cache.get_raw(&key).await.expect("get");
                    calls.push(call.elapsed().as_nanos() as u64);
                }
            }
            calls
        }));
    }
    let mut calls = Vec::new();
    for task in running {
        calls.extend(task.await.expect("task"));
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut late = ticker.await.expect("ticker");
    cache.close().await.expect("close");

    calls.sort_unstable();
    late.sort_unstable();
    // Nearest-rank quantile, in microseconds.
    let q = |sorted: &[u64], q: f64| {
        let rank = (q * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e3
    };
    println!(
        "{{\"workload\":\"{workload}\",\"ops\":{},\"seconds\":{seconds:.6},\"ops_per_sec\":{:.1},\
         \"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\
         \"ticks\":{},\"late_p99_us\":{:.1},\"late_max_us\":{:.1}}}",
        calls.len(),
        calls.len() as f64 / seconds,
        q(&calls, 0.5),
        q(&calls, 0.99),
        q(&calls, 0.999),
        q(&calls, 1.0),
        late.len(),
        q(&late, 0.99),
        q(&late, 1.0),
    );
}
