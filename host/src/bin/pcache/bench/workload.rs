//! `pcache bench-run`: one workload on one implementation in this process, printed as one JSON line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, ValueEnum};
use persistent_cache::{CacheOptions, Expiry, PersistentCache};
use persistent_cache_guest::storage::StdStorage;
use persistent_cache_guest::{Engine, EngineOptions, WallClock};
use serde::{Deserialize, Serialize};

use super::{Measurement, Workload};

/// What is measured.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// PersistentCache: the component in wasmtime, through the async API.
    Wasm,
    /// The same engine compiled natively, called directly.
    Native,
    /// PersistentCache opened with `exclusive(true)`: no cross-process protocol.
    Exclusive,
}

/// Options of the hidden `pcache bench-run` (one workload, one target, this process).
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[arg(long)]
    pub(super) target: Target,
    #[arg(long)]
    pub(super) workload: Workload,
    #[arg(long)]
    pub(super) n: u64,
    #[arg(long)]
    pub(super) value_size: u64,
    #[arg(long)]
    pub(super) dir: PathBuf,
    #[arg(long, default_value_t = 524_288_000)]
    pub(super) size_limit: u64,
    #[arg(long, default_value_t = 64)]
    pub(super) tasks: u64,
    /// reopen-crash's first phase: fill the cache, then exit without closing it.
    #[arg(long, hide = true)]
    crash_fill: bool,
    /// multi-process-mixed's children: the cache is filled already; run concurrent-mixed.
    #[arg(long, hide = true)]
    filled: bool,
    /// open-beside-writer's writer: overwrite `n` keys in a loop until killed.
    #[arg(long, hide = true)]
    write_forever: bool,
    /// The hot value cache's size (`CacheOptions::memory_budget`); default: the cache's own.
    #[arg(long)]
    pub(super) memory_budget: Option<u64>,
}

/// The cache under test, behind one async interface.
pub(super) enum Subject {
    Wasm(PersistentCache),
    Native(Box<Mutex<Engine<StdStorage, WallClock>>>),
}

impl Subject {
    async fn open(target: Target, dir: &Path, size_limit: u64) -> anyhow::Result<Subject> {
        Subject::open_synced(target, dir, size_limit, false, None).await
    }

    /// Opens the cache; `sync`: every write is synced to stable storage before it returns;
    /// `memory_budget`: the hot value cache's size (`None`: the default).
    pub(super) async fn open_synced(
        target: Target,
        dir: &Path,
        size_limit: u64,
        sync: bool,
        memory_budget: Option<u64>,
    ) -> anyhow::Result<Subject> {
        Ok(match target {
            Target::Wasm | Target::Exclusive => Subject::Wasm({
                let mut options = CacheOptions::new(dir)
                    .size_limit(size_limit)
                    .sync(sync)
                    .exclusive(target == Target::Exclusive)
                    .code_cache(persistent_cache::CodeCache::for_user());
                if let Some(bytes) = memory_budget {
                    options = options.memory_budget(bytes);
                }
                PersistentCache::open(options).await?
            }),
            Target::Native => Subject::Native(Box::new(Mutex::new(Engine::open(
                StdStorage::new(dir)?,
                WallClock,
                EngineOptions {
                    size_limit,
                    sync_writes: sync,
                    memory_budget,
                    ..EngineOptions::default()
                },
            )?))),
        })
    }

    pub(super) async fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        match self {
            Subject::Wasm(cache) => cache.set_raw(key, value, Expiry::Never).await?,
            Subject::Native(engine) => engine.lock().set(key, value, None)?,
        }
        Ok(())
    }

    pub(super) async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(match self {
            Subject::Wasm(cache) => cache.get_raw(key).await?,
            Subject::Native(engine) => engine.lock().get(key)?,
        })
    }

    async fn incr(&self, key: &str) -> anyhow::Result<i64> {
        Ok(match self {
            Subject::Wasm(cache) => cache.incr(key, 1, 0).await?,
            Subject::Native(engine) => engine.lock().incr(key, 1, 0, None)?,
        })
    }

    async fn volume(&self) -> anyhow::Result<u64> {
        Ok(match self {
            Subject::Wasm(cache) => cache.stats().await?.volume,
            Subject::Native(engine) => engine.lock().stats().volume,
        })
    }

    pub(super) async fn close(self) -> anyhow::Result<()> {
        match self {
            Subject::Wasm(cache) => cache.close().await?,
            Subject::Native(engine) => engine.into_inner().close()?,
        }
        Ok(())
    }
}

/// A small deterministic generator (splitmix64): no dependency, same sequence every run.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
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

pub(super) fn key(i: u64) -> String {
    format!("key:{i}")
}

pub(super) fn peak_rss_bytes() -> u64 {
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
    if args.workload.stall().is_some() {
        // On a runtime of its own with exactly 2 workers (this one has one per CPU); building
        // and running it needs a thread outside this runtime's workers.
        return tokio::task::spawn_blocking(move || super::stall::run(&args)).await?;
    }
    let value: Vec<u8> = {
        let mut rng = Rng(7);
        (0..args.value_size).map(|_| rng.next() as u8).collect()
    };
    let n = args.n;
    let dir = &args.dir;
    let mut rng = Rng(42);
    let mut volume = None;
    if args.write_forever {
        let subject = Subject::open(args.target, dir, args.size_limit).await?;
        println!("writing");
        loop {
            prefill(&subject, n, &value).await?;
        }
    }
    let (ops, elapsed) = match args.workload {
        Workload::MultiProcessMixed => {
            // Filled here once, then 4 processes x tasks/4 run concurrent-mixed at once.
            let subject = Subject::open(args.target, dir, args.size_limit).await?;
            prefill(&subject, n, &value).await?;
            subject.close().await?;
            let children = 4;
            let mut spawned: Vec<std::process::Child> = (0..children)
                .map(|_| {
                    std::process::Command::new(std::env::current_exe()?)
                        .arg("bench-run")
                        .args(["--target", &format!("{:?}", args.target).to_lowercase()])
                        .args(["--workload", "concurrent-mixed", "--filled"])
                        .args(["--n", &n.to_string(), "--value-size"])
                        .arg(args.value_size.to_string())
                        .args(["--tasks", &(args.tasks / children).to_string()])
                        .args(["--size-limit", &args.size_limit.to_string()])
                        .arg("--dir")
                        .arg(dir)
                        .stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::piped())
                        .spawn()
                })
                .collect::<std::io::Result<_>>()?;
            // Timed from when all have the cache open (each says `ready` and waits for `go`).
            let mut outputs = Vec::new();
            for child in &mut spawned {
                use std::io::BufRead;
                let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
                let mut line = String::new();
                stdout.read_line(&mut line)?;
                if line.trim() != "ready" {
                    bail!("multi-process-mixed: a child said {line:?}");
                }
                outputs.push(stdout);
            }
            let started = Instant::now();
            for child in &mut spawned {
                child.stdin.take().expect("piped").write_all(b"go\n")?;
            }
            let mut ops = 0;
            for (child, mut stdout) in spawned.into_iter().zip(outputs) {
                let mut rest = Vec::new();
                std::io::Read::read_to_end(&mut stdout, &mut rest)?;
                let mut out = child.wait_with_output()?;
                out.stdout = rest;
                let m = super::parse_child(&out, "multi-process-mixed child")?;
                ops += m.ops;
            }
            (ops, started.elapsed())
        }
        Workload::GetHitBesideIdle | Workload::GetHitReopened | Workload::OpenBesideWriter => {
            let subject = Subject::open(args.target, dir, args.size_limit).await?;
            prefill(&subject, n, &value).await?;
            subject.close().await?;
            // The other process: an idle REPL, or a writer overwriting the first 10 000 keys.
            let mut other = if args.workload == Workload::GetHitReopened {
                None
            } else if args.workload == Workload::GetHitBesideIdle {
                std::process::Command::new(std::env::current_exe()?)
                    .arg("--dir")
                    .arg(dir)
                    .arg("repl")
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .map(Some)?
            } else {
                std::process::Command::new(std::env::current_exe()?)
                    .arg("bench-run")
                    .args(["--target", &format!("{:?}", args.target).to_lowercase()])
                    .args(["--workload", "set", "--write-forever"])
                    .args(["--n", &n.min(10_000).to_string(), "--value-size"])
                    .arg(args.value_size.to_string())
                    .args(["--size-limit", &args.size_limit.to_string()])
                    .arg("--dir")
                    .arg(dir)
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .map(Some)?
            };
            // Wait until it has the cache open: the REPL answers a command, the writer says so.
            let _keep_stdin_open =
                other
                    .as_mut()
                    .and_then(|other| other.stdin.take())
                    .map(|mut stdin| {
                        let _ = stdin.write_all(b"stats\n");
                        stdin
                    });
            if let Some(stdout) = other.as_mut().and_then(|other| other.stdout.take()) {
                use std::io::BufRead;
                let mut line = String::new();
                std::io::BufReader::new(stdout).read_line(&mut line)?;
            }
            let measured = if args.workload != Workload::OpenBesideWriter {
                let subject = Subject::open(args.target, dir, args.size_limit).await?;
                let mut order: Vec<u64> = (0..n).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.below(i as u64 + 1) as usize);
                }
                let started = Instant::now();
                for &i in &order {
                    if subject.get(&key(i)).await?.is_none() {
                        bail!("get-hit-beside-idle missed {}", key(i));
                    }
                }
                let elapsed = started.elapsed();
                subject.close().await?;
                (n, elapsed)
            } else {
                // As in `reopen`, the component is already compiled when the timed open starts.
                Subject::open(args.target, &dir.join("warm-up"), args.size_limit)
                    .await?
                    .close()
                    .await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let started = Instant::now();
                let subject = Subject::open(args.target, dir, args.size_limit).await?;
                let got = subject.get(&key(n - 1)).await?;
                let elapsed = started.elapsed();
                if got.is_none() {
                    bail!("open-beside-writer lost {}", key(n - 1));
                }
                subject.close().await?;
                (1, elapsed)
            };
            if let Some(mut other) = other {
                let _ = other.kill();
                let _ = other.wait();
            }
            measured
        }
        Workload::DiskSet
        | Workload::DiskGetUniform
        | Workload::DiskGetZipf
        | Workload::GetHitMemory => return peer_workload(&args, &value).await,
        Workload::RawRead => return raw_read(&args, &value),
        Workload::RawWrite => {
            let mut file = std::fs::File::create(dir.join("raw.bin"))?;
            let started = Instant::now();
            for _ in 0..n {
                file.write_all(&value)?;
            }
            file.flush()?;
            (n, started.elapsed())
        }
        Workload::ReopenCrash if args.crash_fill => {
            let subject = Subject::open(args.target, dir, args.size_limit).await?;
            prefill(&subject, n, &value).await?;
            // Time for a background checkpoint, should the cache run one; then end as a
            // kill -9 would: the cache is never closed (its writes are in the OS already).
            tokio::time::sleep(Duration::from_millis(500)).await;
            std::process::exit(0);
        }
        Workload::ReopenCrash => {
            // The fill runs in a child that exits without closing the cache.
            let cache_dir = dir.join("cache");
            let status = std::process::Command::new(std::env::current_exe()?)
                .arg("bench-run")
                .args(["--target", &format!("{:?}", args.target).to_lowercase()])
                .args(["--workload", args.workload.name(), "--crash-fill"])
                .args([
                    "--n",
                    &n.to_string(),
                    "--value-size",
                    &args.value_size.to_string(),
                ])
                .args(["--size-limit", &args.size_limit.to_string()])
                .arg("--dir")
                .arg(&cache_dir)
                .status()?;
            if !status.success() {
                bail!("reopen-crash: the filling child failed ({status})");
            }
            // As in `reopen`, the component is already compiled when the timed open starts.
            Subject::open(args.target, &dir.join("warm-up"), args.size_limit)
                .await?
                .close()
                .await?;
            let started = Instant::now();
            let subject = Subject::open(args.target, &cache_dir, args.size_limit).await?;
            let got = subject.get(&key(n / 2)).await?;
            let elapsed = started.elapsed();
            if got.is_none() || subject.get(&key(n - 1)).await?.is_none() {
                bail!("reopen-crash lost {} or {}", key(n / 2), key(n - 1));
            }
            subject.close().await?;
            (1, elapsed)
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
            if args.filled {
                // multi-process-mixed: start when the parent says, with the others.
                println!("ready");
                let mut go = String::new();
                std::io::stdin().read_line(&mut go)?;
            }
            if !args.filled
                && matches!(
                    workload,
                    Workload::GetHit
                        | Workload::GetMiss
                        | Workload::MixedUniform
                        | Workload::MixedZipf
                        | Workload::ConcurrentMixed
                )
            {
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
                Workload::Reopen
                | Workload::RawWrite
                | Workload::ReopenCrash
                | Workload::StallSmall
                | Workload::StallBig
                | Workload::StallSync
                | Workload::MultiProcessMixed
                | Workload::GetHitBesideIdle
                | Workload::GetHitReopened
                | Workload::OpenBesideWriter
                | Workload::DiskSet
                | Workload::DiskGetUniform
                | Workload::DiskGetZipf
                | Workload::GetHitMemory
                | Workload::RawRead => unreachable!("handled above"),
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
    let m = Measurement {
        volume,
        ..measurement(args, ops, elapsed)
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

/// The measurement of `ops` operations in `elapsed`, without the optional figures.
pub(super) fn measurement(args: &RunArgs, ops: u64, elapsed: Duration) -> Measurement {
    let seconds = elapsed.as_secs_f64();
    Measurement {
        implementation: match (args.workload, args.target) {
            (Workload::RawWrite, _) => "raw-disk".into(),
            (Workload::RawRead, _) => "pread+checksum".into(),
            (_, Target::Wasm) => "persistent-cache".into(),
            (_, Target::Exclusive) => "persistent-cache-exclusive".into(),
            (_, Target::Native) => "native-engine".into(),
        },
        workload: args.workload.name().into(),
        n: args.n,
        value_size: args.value_size,
        ops,
        seconds,
        ops_per_sec: ops as f64 / seconds.max(1e-9),
        peak_rss_bytes: peak_rss_bytes(),
        volume: None,
        latency: None,
        set_latency: None,
        get_latency: None,
        ticker: None,
        kept: None,
        config: None,
    }
}

/// A peer workload (see [`Workload::peer`](super::Workload)): the same keys, values and key
/// choices as `bench/peers` and the diskcache script, every call timed.
async fn peer_workload(args: &RunArgs, value: &[u8]) -> anyhow::Result<()> {
    let n = args.n;
    let open = || {
        Subject::open_synced(
            args.target,
            &args.dir,
            args.size_limit,
            false,
            args.memory_budget,
        )
    };
    let subject = open().await?;
    let mut calls = Vec::with_capacity(n as usize);
    let kept;
    let started;
    let elapsed;
    if args.workload == Workload::DiskSet {
        started = Instant::now();
        for i in 0..n {
            let call = Instant::now();
            subject.set(&key(i), value).await?;
            calls.push(call.elapsed());
        }
        elapsed = started.elapsed();
        subject.close().await?;
        let subject = open().await?;
        let mut found = 0;
        for i in 0..n {
            if subject.get(&key(i)).await?.as_deref() == Some(value) {
                found += 1;
            }
        }
        subject.close().await?;
        kept = found;
    } else {
        prefill(&subject, n, value).await?;
        let mut rng = Rng(42);
        let zipf = (args.workload == Workload::DiskGetZipf).then(|| Zipf::new(n));
        let picks: Vec<u64> = (0..n)
            .map(|_| match &zipf {
                Some(z) => z.sample(&mut rng),
                None => rng.below(n),
            })
            .collect();
        let mut found = 0;
        started = Instant::now();
        for k in picks {
            let call = Instant::now();
            let got = subject.get(&key(k)).await?;
            calls.push(call.elapsed());
            if got.as_deref() == Some(value) {
                found += 1;
            }
        }
        elapsed = started.elapsed();
        subject.close().await?;
        kept = found;
    }
    let mut nanos: Vec<u64> = calls.iter().map(|d| d.as_nanos() as u64).collect();
    let budget = args
        .memory_budget
        .map_or("the default".into(), |b| format!("{b} bytes"));
    let m = Measurement {
        latency: super::stall::latency(&mut nanos),
        kept: Some(kept),
        config: Some(match args.target {
            Target::Native => format!(
                "native engine, hot value cache {budget}, size limit {}",
                args.size_limit
            ),
            _ => format!(
                "PersistentCache (component, shared mode), memory budget {budget}, size limit {}",
                args.size_limit
            ),
        }),
        ..measurement(args, n, elapsed)
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

/// `raw-read`: n values back to back in one file, then n positioned reads of a random one into
/// a new buffer, each checked with the engine's body hash: what a get from disk cannot beat.
fn raw_read(args: &RunArgs, value: &[u8]) -> anyhow::Result<()> {
    use persistent_cache_guest::format::body_matches;
    use std::os::unix::fs::FileExt;
    let n = args.n;
    let path = args.dir.join("raw.bin");
    let mut file = std::fs::File::create(&path)?;
    for _ in 0..n {
        file.write_all(value)?;
    }
    drop(file);
    let file = std::fs::File::open(&path)?;
    let hash = persistent_cache_guest::format::body_hash(&[b"key:0".as_slice(), value].concat());
    let mut rng = Rng(42);
    let picks: Vec<u64> = (0..n).map(|_| rng.below(n)).collect();
    let mut calls = Vec::with_capacity(n as usize);
    let started = Instant::now();
    for i in picks {
        let call = Instant::now();
        let mut bytes = vec![0; value.len()];
        file.read_exact_at(&mut bytes, i * value.len() as u64)?;
        if !body_matches(b"key:0", &bytes, hash) {
            bail!("raw-read: the bytes read back differ");
        }
        calls.push(call.elapsed().as_nanos() as u64);
    }
    let elapsed = started.elapsed();
    let m = Measurement {
        latency: super::stall::latency(&mut calls),
        ..measurement(args, n, elapsed)
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}
