//! `pcache bench`: whole-workload benchmarks of the component, the native engine and diskcache.
//!
//! Every measurement runs in a fresh child process (`pcache bench-run`, or the Python baseline)
//! on a fresh directory, so peak memory and start-up are each run's own. Figures are reported
//! as ratios against baselines measured in the same run on the same machine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use persistent_cache::{CacheOptions, Expiry, PersistentCache};
use persistent_cache_guest::storage::StdStorage;
use persistent_cache_guest::{Engine, EngineOptions, SystemClock};
use serde::{Deserialize, Serialize};

/// Options of `pcache bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Entries per workload (values of 64 KiB and more use fewer, at most 256 MiB of values).
    #[arg(long, default_value_t = 20_000)]
    pub n: u64,
    /// Workloads to run (default: all).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<Workload>,
    /// Value sizes in bytes for the size sweep.
    #[arg(long, value_delimiter = ',', default_value = "100,1024,65536,1048576")]
    pub sizes: Vec<u64>,
    /// Python with diskcache installed (bench/setup-venv.sh makes bench/.venv/bin/python).
    #[arg(long, default_value = "bench/.venv/bin/python")]
    pub python: PathBuf,
    /// Skip the diskcache baseline.
    #[arg(long)]
    pub no_diskcache: bool,
    /// Write all results as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Scratch directory for the caches (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
}

/// One measured workload.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Set,
    GetHit,
    GetMiss,
    MixedUniform,
    MixedZipf,
    ConcurrentMixed,
    Eviction,
    Reopen,
    Memory,
    RawWrite,
    Incr,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Set => "set",
            Workload::GetHit => "get-hit",
            Workload::GetMiss => "get-miss",
            Workload::MixedUniform => "mixed-uniform",
            Workload::MixedZipf => "mixed-zipf",
            Workload::ConcurrentMixed => "concurrent-mixed",
            Workload::Eviction => "eviction",
            Workload::Reopen => "reopen",
            Workload::Memory => "memory",
            Workload::RawWrite => "raw-write",
            Workload::Incr => "incr",
        }
    }
}

/// What is measured.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// PersistentCache: the component in wasmtime, through the async API.
    Wasm,
    /// The same engine compiled natively, called directly.
    Native,
}

/// Options of the hidden `pcache bench-run` (one workload, one target, this process).
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[arg(long)]
    target: Target,
    #[arg(long)]
    workload: Workload,
    #[arg(long)]
    n: u64,
    #[arg(long)]
    value_size: u64,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 524_288_000)]
    size_limit: u64,
    #[arg(long, default_value_t = 64)]
    tasks: u64,
}

/// One result line, the same shape the Python baseline prints.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Measurement {
    #[serde(rename = "impl")]
    pub implementation: String,
    pub workload: String,
    pub n: u64,
    pub value_size: u64,
    pub ops: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    #[serde(default)]
    pub peak_rss_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<u64>,
}

/// The cache under test, behind one async interface.
enum Subject {
    Wasm(PersistentCache),
    Native(Box<Mutex<Engine<StdStorage, SystemClock>>>),
}

impl Subject {
    async fn open(target: Target, dir: &Path, size_limit: u64) -> anyhow::Result<Subject> {
        Ok(match target {
            Target::Wasm => Subject::Wasm(
                PersistentCache::open(
                    CacheOptions::new(dir)
                        .size_limit(size_limit)
                        .code_cache(persistent_cache::CodeCache::for_user()),
                )
                .await?,
            ),
            Target::Native => Subject::Native(Box::new(Mutex::new(Engine::open(
                StdStorage::new(dir)?,
                SystemClock,
                EngineOptions {
                    size_limit,
                    sync_writes: false,
                },
            )?))),
        })
    }

    async fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        match self {
            Subject::Wasm(cache) => cache.set_raw(key, value, Expiry::Never).await?,
            Subject::Native(engine) => lock(engine).set(key, value, None)?,
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(match self {
            Subject::Wasm(cache) => cache.get_raw(key).await?,
            Subject::Native(engine) => lock(engine).get(key)?,
        })
    }

    async fn incr(&self, key: &str) -> anyhow::Result<i64> {
        Ok(match self {
            Subject::Wasm(cache) => cache.incr(key, 1, 0).await?,
            Subject::Native(engine) => lock(engine).incr(key, 1, 0, None)?,
        })
    }

    async fn volume(&self) -> anyhow::Result<u64> {
        Ok(match self {
            Subject::Wasm(cache) => cache.stats().await?.volume,
            Subject::Native(engine) => lock(engine).stats().volume,
        })
    }

    async fn close(self) -> anyhow::Result<()> {
        match self {
            Subject::Wasm(cache) => cache.close().await?,
            Subject::Native(engine) => engine
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .close()?,
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A small deterministic generator (splitmix64): no dependency, same sequence every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf(s = 1.0) over `0..n` by inverse CDF.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: u64) -> Zipf {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / k as f64;
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf(cdf)
    }
    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.0.partition_point(|c| *c < u) as u64
    }
}

/// How many counters the `incr` workload spreads its increments over.
const INCR_COUNTERS: u64 = 100;

fn key(i: u64) -> String {
    format!("key:{i}")
}

fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Runs one workload in this process and prints its measurement as one JSON line.
pub async fn run_one(args: RunArgs) -> anyhow::Result<()> {
    let value: Vec<u8> = {
        let mut rng = Rng(7);
        (0..args.value_size).map(|_| rng.next() as u8).collect()
    };
    let n = args.n;
    let dir = &args.dir;
    let mut rng = Rng(42);
    let mut volume = None;
    let (ops, elapsed) = match args.workload {
        Workload::RawWrite => {
            let mut file = std::fs::File::create(dir.join("raw.bin"))?;
            let started = Instant::now();
            for _ in 0..n {
                file.write_all(&value)?;
            }
            file.flush()?;
            (n, started.elapsed())
        }
        Workload::Reopen => {
            let subject = Subject::open(args.target, dir, args.size_limit).await?;
            prefill(&subject, n, &value).await?;
            subject.close().await?;
            let started = Instant::now();
            let subject = Subject::open(args.target, dir, args.size_limit).await?;
            let got = subject.get(&key(n / 2)).await?;
            let elapsed = started.elapsed();
            if got.is_none() {
                bail!("reopen lost key {}", key(n / 2));
            }
            (1, elapsed)
        }
        workload => {
            let size_limit = if workload == Workload::Eviction {
                args.size_limit.min(10 << 20)
            } else {
                args.size_limit
            };
            let subject = Arc::new(Subject::open(args.target, dir, size_limit).await?);
            if matches!(
                workload,
                Workload::GetHit
                    | Workload::GetMiss
                    | Workload::MixedUniform
                    | Workload::MixedZipf
                    | Workload::ConcurrentMixed
            ) {
                prefill(&subject, n, &value).await?;
            }
            let started = Instant::now();
            let ops = match workload {
                Workload::Set | Workload::Memory => {
                    prefill(&subject, n, &value).await?;
                    n
                }
                Workload::GetHit => {
                    let mut order: Vec<u64> = (0..n).collect();
                    for i in (1..order.len()).rev() {
                        order.swap(i, rng.below(i as u64 + 1) as usize);
                    }
                    let started = Instant::now();
                    for i in order {
                        if subject.get(&key(i)).await?.is_none() {
                            bail!("get-hit missed {}", key(i));
                        }
                    }
                    return finish(&args, n, started.elapsed(), None);
                }
                Workload::GetMiss => {
                    for i in 0..n {
                        subject.get(&key(n + i)).await?;
                    }
                    n
                }
                Workload::MixedUniform | Workload::MixedZipf => {
                    let zipf = (workload == Workload::MixedZipf).then(|| Zipf::new(n));
                    let picks: Vec<(u64, bool)> = (0..n)
                        .map(|_| {
                            let k = match &zipf {
                                Some(z) => z.sample(&mut rng),
                                None => rng.below(n),
                            };
                            (k, rng.below(10) == 0)
                        })
                        .collect();
                    let started = Instant::now();
                    for (k, write) in picks {
                        if write {
                            subject.set(&key(k), &value).await?;
                        } else {
                            subject.get(&key(k)).await?;
                        }
                    }
                    return finish(&args, n, started.elapsed(), None);
                }
                Workload::ConcurrentMixed => {
                    let per_task = n / args.tasks;
                    let value = Arc::new(value.clone());
                    let mut tasks = tokio::task::JoinSet::new();
                    for t in 0..args.tasks {
                        let subject = Arc::clone(&subject);
                        let value = Arc::clone(&value);
                        tasks.spawn(async move {
                            let mut rng = Rng(1000 + t);
                            for _ in 0..per_task {
                                let k = key(rng.below(n));
                                if rng.below(10) == 0 {
                                    subject.set(&k, &value).await?;
                                } else {
                                    subject.get(&k).await?;
                                }
                            }
                            anyhow::Ok(())
                        });
                    }
                    while let Some(done) = tasks.join_next().await {
                        done??;
                    }
                    per_task * args.tasks
                }
                Workload::Eviction => {
                    let count = (50u64 << 20) / args.value_size.max(1);
                    for i in 0..count {
                        subject.set(&key(i), &value).await?;
                    }
                    count
                }
                Workload::Incr => {
                    // n increments spread over INCR_COUNTERS counters (checked below).
                    for _ in 0..n {
                        let c = rng.below(INCR_COUNTERS);
                        subject.incr(&format!("counter:{c}")).await?;
                    }
                    n
                }
                Workload::Reopen | Workload::RawWrite => unreachable!("handled above"),
            };
            let elapsed = started.elapsed();
            if workload == Workload::Eviction {
                volume = Some(subject.volume().await?);
            }
            if workload == Workload::Incr {
                let mut total = 0;
                for c in 0..INCR_COUNTERS {
                    total += subject.incr(&format!("counter:{c}")).await? - 1;
                }
                if total != n as i64 {
                    bail!("incr: the counters add up to {total}, not {n}");
                }
            }
            match Arc::try_unwrap(subject) {
                Ok(subject) => subject.close().await?,
                Err(_) => bail!("a benchmark task kept the cache"),
            }
            (ops, elapsed)
        }
    };
    finish(&args, ops, elapsed, volume)
}

async fn prefill(subject: &Subject, n: u64, value: &[u8]) -> anyhow::Result<()> {
    for i in 0..n {
        subject.set(&key(i), value).await?;
    }
    Ok(())
}

fn finish(args: &RunArgs, ops: u64, elapsed: Duration, volume: Option<u64>) -> anyhow::Result<()> {
    let seconds = elapsed.as_secs_f64();
    let m = Measurement {
        implementation: match (args.workload, args.target) {
            (Workload::RawWrite, _) => "raw-disk".into(),
            (_, Target::Wasm) => "persistent-cache".into(),
            (_, Target::Native) => "native-engine".into(),
        },
        workload: args.workload.name().into(),
        n: args.n,
        value_size: args.value_size,
        ops,
        seconds,
        ops_per_sec: ops as f64 / seconds.max(1e-9),
        peak_rss_bytes: peak_rss_bytes(),
        volume,
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

/// Which runs make up the suite.
fn plan(args: &BenchArgs) -> Vec<(Workload, u64, u64)> {
    let all = [
        Workload::Set,
        Workload::GetHit,
        Workload::GetMiss,
        Workload::MixedUniform,
        Workload::MixedZipf,
        Workload::ConcurrentMixed,
        Workload::Eviction,
        Workload::Reopen,
        Workload::Memory,
        Workload::RawWrite,
        Workload::Incr,
    ];
    let chosen: Vec<Workload> = if args.workloads.is_empty() {
        all.to_vec()
    } else {
        args.workloads.clone()
    };
    let scaled = |size: u64| args.n.min((256u64 << 20) / size.max(1)).max(1);
    let mut runs = Vec::new();
    for w in chosen {
        match w {
            // The value-size sweep.
            Workload::Set | Workload::GetHit => {
                for &size in &args.sizes {
                    runs.push((w, scaled(size), size));
                }
            }
            Workload::RawWrite => {
                let mib = 1 << 20;
                runs.push((w, scaled(mib), mib));
            }
            _ => runs.push((w, args.n, 1024)),
        }
    }
    runs
}

/// Runs the suite: every planned run for each implementation, then the table of ratios.
pub fn run_suite(args: BenchArgs) -> anyhow::Result<()> {
    let scratch_holder;
    let scratch = match &args.scratch {
        Some(dir) => dir.clone(),
        None => {
            scratch_holder = tempfile::tempdir()?;
            scratch_holder.path().to_path_buf()
        }
    };
    let python = (!args.no_diskcache).then(|| args.python.clone());
    if let Some(python) = &python {
        if !python.exists() {
            bail!(
                "{} not found: run bench/setup-venv.sh first, or pass --no-diskcache",
                python.display()
            );
        }
    }
    let runs = plan(&args);
    let per_run = 2 + usize::from(python.is_some());
    let bar = indicatif::ProgressBar::new((runs.len() * per_run) as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let exe = std::env::current_exe()?;
    let mut results: Vec<Measurement> = Vec::new();
    for (i, (workload, n, size)) in runs.iter().copied().enumerate() {
        let targets: &[Target] = if workload == Workload::RawWrite {
            &[Target::Native]
        } else {
            &[Target::Wasm, Target::Native]
        };
        for &target in targets {
            bar.set_message(format!(
                "{} {:?} n={n} size={size}",
                workload.name(),
                target
            ));
            let dir = scratch.join(format!("run{i}-{target:?}"));
            std::fs::create_dir_all(&dir)?;
            // Reopen and memory measure n live entries: make room for all of them.
            let size_limit = match workload {
                Workload::Reopen | Workload::Memory => (2 * n * (size + 64)).max(524_288_000),
                _ => 524_288_000,
            };
            let out = Command::new(&exe)
                .arg("bench-run")
                .args(["--size-limit", &size_limit.to_string()])
                .args(["--target", &format!("{target:?}").to_lowercase()])
                .args(["--workload", workload.name()])
                .args(["--n", &n.to_string(), "--value-size", &size.to_string()])
                .arg("--dir")
                .arg(&dir)
                .output()?;
            results.push(parse_child(&out, workload.name())?);
            let _ = std::fs::remove_dir_all(&dir);
            bar.inc(1);
        }
        if let Some(python) = &python {
            if workload != Workload::RawWrite {
                bar.set_message(format!("{} diskcache n={n} size={size}", workload.name()));
                let dir = scratch.join(format!("run{i}-diskcache"));
                let out = Command::new(python)
                    .arg("bench/diskcache_bench.py")
                    .args(["--workload", workload.name()])
                    .args(["--n", &n.to_string(), "--value-size", &size.to_string()])
                    .arg("--dir")
                    .arg(&dir)
                    .output()
                    .context("running the diskcache baseline")?;
                results.push(parse_child(&out, workload.name())?);
                let _ = std::fs::remove_dir_all(&dir);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    print_table(&results);
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

fn parse_child(out: &std::process::Output, workload: &str) -> anyhow::Result<Measurement> {
    if !out.status.success() {
        bail!(
            "{workload} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{workload} printed no result"))?;
    Ok(serde_json::from_str(line)?)
}

fn print_table(results: &[Measurement]) {
    println!(
        "{:<18} {:>8} {:>9} {:>14} {:>14} {:>14} {:>9} {:>9}",
        "workload", "n", "value", "pcache ops/s", "native ops/s", "diskcache", "vs disk", "vs nat."
    );
    let find = |imp: &str, m: &Measurement| {
        results
            .iter()
            .find(|r| {
                r.implementation == imp
                    && r.workload == m.workload
                    && r.value_size == m.value_size
                    && r.n == m.n
            })
            .cloned()
    };
    for m in results
        .iter()
        .filter(|r| r.implementation == "persistent-cache" || r.implementation == "raw-disk")
    {
        let native = find("native-engine", m);
        let disk = find("diskcache-wrapper", m);
        let metric = |r: &Measurement| match r.workload.as_str() {
            "reopen" => 1.0 / r.seconds.max(1e-9),
            "memory" => r.peak_rss_bytes as f64,
            _ => r.ops_per_sec,
        };
        let fmt = |r: &Option<Measurement>| {
            r.as_ref()
                .map_or("-".into(), |r| format!("{:.0}", metric(r)))
        };
        let ratio = |other: &Option<Measurement>| {
            other.as_ref().map_or("-".into(), |o| {
                let (a, b) = (metric(m), metric(o));
                // For memory, smaller is better: show how many times smaller.
                if m.workload == "memory" {
                    format!("{:.2}x", b / a.max(1.0))
                } else {
                    format!("{:.2}x", a / b.max(1e-9))
                }
            })
        };
        println!(
            "{:<18} {:>8} {:>9} {:>14} {:>14} {:>14} {:>9} {:>9}",
            m.workload,
            m.n,
            m.value_size,
            format!("{:.0}", metric(m)),
            fmt(&native),
            fmt(&disk),
            ratio(&disk),
            ratio(&native),
        );
    }
    println!("(reopen: opens/s, i.e. 1/seconds; memory: peak RSS bytes, ratios = times smaller)");
}
