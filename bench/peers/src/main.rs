//! `pcache-peers`: runs one benchmark workload against one Rust peer cache, foyer's
//! `HybridCache` (memory + disk) or cacache (disk only), and prints one JSON line on stdout.
//!
//! ```text
//! pcache-peers --peer foyer|cacache --workload W --n N --value-size BYTES \
//!     --memory-budget BYTES --dir DIR [--disk-capacity BYTES]
//! ```
//!
//! Workloads (`disk-set`, `disk-get-uniform`, `disk-get-zipf`, `get-hit-memory`) match the ones
//! of the same names in `bench/diskcache_bench.py`: the same keys (`key:{i}`), the same value
//! bytes (splitmix64 seeded 7) and the same key sequences (splitmix64 seeded 42; uniform or
//! Zipf(1.0) by inverse CDF). Every call is awaited in turn on one task and timed with `Instant`.
//! Progress goes to stderr.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCachePolicy, PsyncIoEngineConfig, RecoverMode,
};
use serde::Serialize;

const MIB: u64 = 1024 * 1024;

/// The cache under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Peer {
    Foyer,
    Cacache,
}

/// What the run measures; see the module documentation and bench/README.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    DiskSet,
    DiskGetUniform,
    DiskGetZipf,
    GetHitMemory,
}

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "Benchmark one workload on foyer or cacache; prints one JSON line")]
struct Args {
    #[arg(long, value_enum)]
    peer: Peer,
    #[arg(long, value_enum)]
    workload: Workload,
    /// Number of keys, and of timed operations.
    #[arg(long)]
    n: u64,
    /// Value size in bytes.
    #[arg(long)]
    value_size: usize,
    /// Capacity of foyer's memory tier in bytes (cacache has none).
    #[arg(long)]
    memory_budget: u64,
    /// Directory for the cache (created if missing; must be empty).
    #[arg(long)]
    dir: PathBuf,
    /// Capacity of foyer's disk tier in bytes
    /// (default: max(2 x n x value-size + 64 MiB, 256 MiB)).
    #[arg(long)]
    disk_capacity: Option<u64>,
}

/// Latency summary over every timed operation, in microseconds.
#[derive(Serialize)]
struct Latency {
    count: usize,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

/// The one JSON line printed on stdout.
#[derive(Serialize)]
struct Report {
    #[serde(rename = "impl")]
    impl_: &'static str,
    workload: String,
    n: u64,
    value_size: usize,
    ops: u64,
    seconds: f64,
    ops_per_sec: f64,
    peak_rss_bytes: u64,
    latency: Latency,
    kept: u64,
    config: String,
}

/// splitmix64, the generator shared with bench/diskcache_bench.py.
struct SplitMix64(u64);

impl SplitMix64 {
    /// Returns the next 64-bit output.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The key of entry `i`.
fn key(i: u64) -> String {
    format!("key:{i}")
}

/// The value written for every key: `size` bytes, each the low byte of splitmix64(7).
fn make_value(size: usize) -> Vec<u8> {
    let mut rng = SplitMix64(7);
    (0..size).map(|_| rng.next() as u8).collect()
}

/// `n` key indices drawn from splitmix64(42): uniform (`next() % n`) or Zipf(s = 1.0) over
/// 0..n by inverse CDF.
fn key_sequence(n: u64, zipf: bool) -> Vec<u64> {
    let mut rng = SplitMix64(42);
    if !zipf {
        return (0..n).map(|_| rng.next() % n).collect();
    }
    let mut cdf = Vec::with_capacity(n as usize);
    let mut total = 0.0f64;
    for j in 1..=n {
        total += 1.0 / j as f64;
        cdf.push(total);
    }
    for c in &mut cdf {
        *c /= total;
    }
    cdf[n as usize - 1] = 1.0;
    (0..n)
        .map(|_| {
            let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
            (cdf.partition_point(|&c| c < u) as u64).min(n - 1)
        })
        .collect()
}

/// Peak resident set size of this process: VmHWM from /proc/self/status, in bytes.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Nearest-rank percentiles (p50, p99, p99.9) and max of `samples`.
fn summarize(mut samples: Vec<Duration>) -> Latency {
    samples.sort_unstable();
    let count = samples.len();
    let us = |d: Duration| d.as_nanos() as f64 / 1000.0;
    // rank = ceil(count * permille / 1000), in integers so the Python driver gets the same rank.
    let pct = |permille: usize| {
        let rank = (count * permille).div_ceil(1000).max(1);
        samples.get(rank - 1).map_or(0.0, |&d| us(d))
    };
    Latency {
        count,
        p50_us: pct(500),
        p99_us: pct(990),
        p999_us: pct(999),
        max_us: samples.last().map_or(0.0, |&d| us(d)),
    }
}

/// Formats a byte count as MiB when it is a whole number of MiB.
fn human(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} B")
    }
}

/// An open peer cache.
enum Store {
    Foyer(HybridCache<String, Vec<u8>>),
    Cacache(PathBuf),
}

impl Store {
    /// Opens (or reopens) the peer's cache on `dir` with the configuration `config` describes.
    async fn open(args: &Args, disk_capacity: u64) -> Result<Store> {
        match args.peer {
            Peer::Foyer => {
                let device = FsDeviceBuilder::new(&args.dir)
                    .with_capacity(disk_capacity as usize)
                    .with_direct(false)
                    .build()?;
                let cache = HybridCacheBuilder::new()
                    .with_name("pcache-peers")
                    .with_policy(HybridCachePolicy::WriteOnEviction)
                    .with_flush_on_close(true)
                    .memory(args.memory_budget as usize)
                    .with_weighter(|k: &String, v: &Vec<u8>| k.len() + v.len())
                    .storage()
                    .with_io_engine_config(PsyncIoEngineConfig::new())
                    .with_engine_config(BlockEngineConfig::new(device))
                    .with_recover_mode(RecoverMode::Quiet)
                    .build()
                    .await?;
                Ok(Store::Foyer(cache))
            }
            Peer::Cacache => Ok(Store::Cacache(args.dir.clone())),
        }
    }

    /// What ran, for the `config` field.
    fn describe(args: &Args, disk_capacity: u64) -> String {
        let dir = args.dir.display();
        match args.peer {
            Peer::Foyer => format!(
                "foyer 0.22.6 HybridCache<String, Vec<u8>>: memory {} (LRU, 8 shards, \
                 weighted by key+value bytes); policy WriteOnEviction (the default: insert() is \
                 synchronous and memory-only, an entry goes to disk when evicted or when close() \
                 flushes memory, flush_on_close); disk: block engine defaults (16 MiB blocks, 1 \
                 flusher, 16 MiB flush buffer, 16 MiB submit-queue threshold; entries are \
                 4 KiB-page aligned, and those that find the queue or buffer full are dropped, at \
                 close too) on an FsDevice in {dir}, capacity {}; psync I/O, no direct I/O, no \
                 fsync; RecoverMode::Quiet; multi-thread tokio runtime",
                human(args.memory_budget),
                human(disk_capacity),
            ),
            Peer::Cacache => format!(
                "cacache 13.1.0 (tokio-runtime): cacache::write / cacache::read on {dir}; \
                 SHA-256 content-addressed (every key here has the same value, so all keys share \
                 one content file), one index bucket file per key hash; no memory tier, no \
                 eviction or size limit, no fsync; reopen is a no-op (stateless); multi-thread \
                 tokio runtime"
            ),
        }
    }

    /// Stores `value` under `key`.
    async fn set(&self, key: String, value: &[u8]) -> Result<()> {
        match self {
            Store::Foyer(cache) => {
                cache.insert(key, value.to_vec());
            }
            Store::Cacache(dir) => {
                cacache::write(dir, &key, value).await?;
            }
        }
        Ok(())
    }

    /// Reads `key`; true if it is present with exactly the bytes `expected`.
    async fn get_matches(&self, key: &str, expected: &[u8]) -> Result<bool> {
        match self {
            Store::Foyer(cache) => {
                let entry = cache.get(key).await?;
                Ok(entry.is_some_and(|e| e.value().as_slice() == expected))
            }
            Store::Cacache(dir) => match cacache::read(dir, key).await {
                Ok(v) => Ok(v == expected),
                Err(cacache::Error::EntryNotFound(..)) => Ok(false),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Closes the cache the way the library documents (foyer: `close().await`).
    async fn close(self) -> Result<()> {
        match self {
            Store::Foyer(cache) => Ok(cache.close().await?),
            Store::Cacache(_) => Ok(()),
        }
    }
}

/// Runs the workload; returns (ops, timed seconds, per-op latencies, kept).
async fn run(args: &Args, disk_capacity: u64) -> Result<(u64, f64, Vec<Duration>, u64)> {
    let n = args.n;
    let value = make_value(args.value_size);
    let mut lat = Vec::with_capacity(n as usize);
    let store = Store::open(args, disk_capacity).await?;

    if args.workload == Workload::DiskSet {
        let t0 = Instant::now();
        for i in 0..n {
            let k = key(i);
            let t = Instant::now();
            store.set(k, &value).await?;
            lat.push(t.elapsed());
        }
        let seconds = t0.elapsed().as_secs_f64();
        eprintln!("disk-set: {n} sets in {seconds:.3}s; closing and reopening");
        let t_close = Instant::now();
        store.close().await?;
        eprintln!("close took {:.3}s", t_close.elapsed().as_secs_f64());
        let store = Store::open(args, disk_capacity).await?;
        let mut kept = 0;
        for i in 0..n {
            kept += u64::from(store.get_matches(&key(i), &value).await?);
        }
        store.close().await?;
        return Ok((n, seconds, lat, kept));
    }

    eprintln!("{:?}: prefilling {n} keys", args.workload);
    for i in 0..n {
        store.set(key(i), &value).await?;
    }
    let keys: Vec<String> = key_sequence(n, args.workload == Workload::DiskGetZipf)
        .into_iter()
        .map(key)
        .collect();
    eprintln!("{:?}: {n} timed gets", args.workload);
    let mut kept = 0;
    let t0 = Instant::now();
    for k in &keys {
        let t = Instant::now();
        let ok = store.get_matches(k, &value).await?;
        lat.push(t.elapsed());
        kept += u64::from(ok);
    }
    let seconds = t0.elapsed().as_secs_f64();
    store.close().await?;
    Ok((n, seconds, lat, kept))
}

/// Makes `dir` exist and checks that it is empty (each run needs a fresh directory).
fn prepare_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} is not empty; each run needs a fresh directory",
            dir.display()
        );
    }
    Ok(())
}

/// Parses the options, runs the workload and prints the JSON line.
#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.n < 1 || args.value_size < 1 {
        bail!("--n and --value-size must be >= 1");
    }
    prepare_dir(&args.dir)?;
    let disk_capacity = args
        .disk_capacity
        .unwrap_or((2 * args.n * args.value_size as u64 + 64 * MIB).max(256 * MIB));
    let (ops, seconds, lat, kept) = run(&args, disk_capacity).await?;
    let report = Report {
        impl_: match args.peer {
            Peer::Foyer => "foyer",
            Peer::Cacache => "cacache",
        },
        workload: args
            .workload
            .to_possible_value()
            .unwrap()
            .get_name()
            .to_owned(),
        n: args.n,
        value_size: args.value_size,
        ops,
        seconds,
        ops_per_sec: ops as f64 / seconds,
        peak_rss_bytes: peak_rss_bytes(),
        latency: summarize(lat),
        kept,
        config: Store::describe(&args, disk_capacity),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value bytes and key sequences match bench/diskcache_bench.py's (figures from it).
    #[test]
    fn sequences_match_the_python_driver() {
        assert_eq!(make_value(8), [215, 28, 2, 203, 218, 17, 246, 254]);
        let u = key_sequence(20000, false);
        assert_eq!(u[..6], [15413, 12291, 3858, 15764, 3250, 9062]);
        assert_eq!(u.iter().sum::<u64>(), 202163436);
        let z = key_sequence(20000, true);
        assert_eq!(z[..10], [1332, 2, 9, 20, 0, 5025, 5, 2474, 19, 366]);
        assert_eq!(z.iter().sum::<u64>(), 37876592);
    }

    /// Nearest-rank percentiles over 1..=20000 µs.
    #[test]
    fn percentiles_are_nearest_rank() {
        let l = summarize((1..=20000).map(Duration::from_micros).collect());
        assert_eq!(
            (l.p50_us, l.p99_us, l.p999_us, l.max_us),
            (10000.0, 19800.0, 19980.0, 20000.0)
        );
    }
}
