//! The stall workloads of issue 14: many tasks call the cache on a 2-worker tokio runtime while
//! a ticker task sleeps 1 ms in a loop and records how late it wakes up. A cache call that
//! runs inline on a worker holds that worker for the whole call; the ticker's lateness and the
//! per-call latencies show what that does to everything else on the runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::workload::{key, measurement, Rng, RunArgs, Subject};
use super::{Latency, Ticker, Workload};

/// The ticker's period.
const TICK: Duration = Duration::from_millis(1);

/// Runs `args`' stall workload on a fresh 2-worker runtime and prints its measurement.
///
/// `args.n` is the total number of sets, spread over `args.tasks` tasks; stall-small follows
/// each set with a get of the same key.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(measure(args))
}

/// The latencies of one task's calls, in nanoseconds.
#[derive(Default)]
struct Calls {
    sets: Vec<u64>,
    gets: Vec<u64>,
}

async fn measure(args: &RunArgs) -> anyhow::Result<()> {
    let workload = args.workload;
    let subject = Arc::new(
        Subject::open_synced(
            args.target,
            &args.dir,
            args.size_limit,
            workload == Workload::StallSync,
            None,
        )
        .await?,
    );
    let value: Arc<Vec<u8>> = {
        let mut rng = Rng(7);
        Arc::new((0..args.value_size).map(|_| rng.next() as u8).collect())
    };
    let tasks = args.tasks.max(1);
    let per_task = (args.n / tasks).max(1);
    let with_get = workload == Workload::StallSmall;

    let stop = Arc::new(AtomicBool::new(false));
    let ticker = tokio::spawn(tick(Arc::clone(&stop)));
    // Let the ticker start before the load does.
    tokio::time::sleep(10 * TICK).await;

    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let subject = Arc::clone(&subject);
        let value = Arc::clone(&value);
        running.spawn(async move {
            let mut calls = Calls::default();
            for i in 0..per_task {
                let k = key(t * per_task + i);
                let call = Instant::now();
                subject.set(&k, &value).await?;
                calls.sets.push(nanos(call.elapsed()));
                if with_get {
                    let call = Instant::now();
                    subject.get(&k).await?;
                    calls.gets.push(nanos(call.elapsed()));
                }
            }
            anyhow::Ok(calls)
        });
    }
    let mut sets = Vec::new();
    let mut gets = Vec::new();
    while let Some(done) = running.join_next().await {
        let calls = done??;
        sets.extend(calls.sets);
        gets.extend(calls.gets);
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut late = ticker.await?;

    match Arc::try_unwrap(subject) {
        Ok(subject) => subject.close().await?,
        Err(_) => bail!("a benchmark task kept the cache"),
    }
    let mut all: Vec<u64> = sets.iter().chain(&gets).copied().collect();
    let m = super::Measurement {
        set_latency: latency(&mut sets),
        get_latency: latency(&mut gets),
        latency: latency(&mut all),
        ticker: Some(ticker_figures(&mut late)),
        ..measurement(args, all.len() as u64, elapsed)
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

/// Sleeps [`TICK`] until `stop`, recording how much longer than that each sleep took.
async fn tick(stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut late = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let slept = Instant::now();
        tokio::time::sleep(TICK).await;
        late.push(nanos(slept.elapsed().saturating_sub(TICK)));
    }
    late
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The nearest-rank `q` quantile of `sorted` (nanoseconds), in microseconds.
fn quantile_us(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e3
}

/// The distribution of `calls` (nanoseconds; sorted here), `None` if there are none.
pub(super) fn latency(calls: &mut [u64]) -> Option<Latency> {
    if calls.is_empty() {
        return None;
    }
    calls.sort_unstable();
    Some(Latency {
        count: calls.len() as u64,
        p50_us: quantile_us(calls, 0.5),
        p99_us: quantile_us(calls, 0.99),
        p999_us: quantile_us(calls, 0.999),
        max_us: quantile_us(calls, 1.0),
    })
}

fn ticker_figures(late: &mut [u64]) -> Ticker {
    late.sort_unstable();
    Ticker {
        ticks: late.len() as u64,
        late_p50_us: quantile_us(late, 0.5),
        late_p99_us: quantile_us(late, 0.99),
        late_max_us: quantile_us(late, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_of_the_sorted_values() {
        let mut calls: Vec<u64> = (1..=1000).rev().map(|us| us * 1000).collect();
        let l = latency(&mut calls).expect("some calls");
        assert_eq!(l.count, 1000);
        assert_eq!(l.p50_us, 500.0);
        assert_eq!(l.p99_us, 990.0);
        assert_eq!(l.p999_us, 999.0);
        assert_eq!(l.max_us, 1000.0);
        assert_eq!(latency(&mut []), None);
        assert_eq!(quantile_us(&[7000], 0.999), 7.0);
    }
}
