//! `pcache bench`: whole-workload benchmarks of the component, the native engine and diskcache.
//!
//! Every measurement runs in a fresh child process (`pcache bench-run`, or the Python baseline)
//! on a fresh directory, so peak memory and start-up are each run's own. Figures are reported
//! as ratios against baselines measured in the same run on the same machine.
//!
//! This file is the driver (`pcache bench`); [`workload`] runs one measurement in a child,
//! [`stall`] the latency workloads of issue 14, [`diskcache`] runs the Python baseline,
//! [`peers`] the Rust peers (foyer, cacache), [`report`] prints the tables; [`two_tier`] is
//! `pcache bench --redis URL`, the Redis tier's workloads.

mod diskcache;
mod peers;
mod report;
mod stall;
pub mod two_tier;
mod workload;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use diskcache::Baseline;
use workload::Target;
pub use workload::{run_one, RunArgs};

/// Options of `pcache bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Entries per workload [default: 20000] (values of 64 KiB and more use fewer, at most
    /// 256 MiB of values). The stall workloads default to issue 14's sizes (set counts 25600,
    /// 192 and 800) and reopen-crash (with its clean reopen) to 1000000 entries; `--n` sets
    /// those too.
    #[arg(long)]
    pub n: Option<u64>,
    /// Workloads to run (default: all).
    #[arg(long, visible_alias = "workload", value_delimiter = ',')]
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
    /// Also run every component workload with `exclusive(true)` (no cross-process protocol),
    /// next to the default shared mode.
    #[arg(long)]
    pub exclusive: bool,
    /// Skip the native engine.
    #[arg(long)]
    pub no_native: bool,
    /// The memory budget (hot value cache) every implementation gets in the peer workloads
    /// (disk-set, disk-get-uniform, disk-get-zipf, get-hit-memory), in bytes.
    #[arg(long, default_value_t = 32 << 20)]
    pub memory_budget: u64,
    /// How many times the memory budget the data set of the disk workloads is (`--n` sets
    /// their entries instead).
    #[arg(long, default_value_t = 4)]
    pub data_factor: u64,
    /// Value sizes of the peer workloads.
    #[arg(long, value_delimiter = ',', default_value = "1024,4096")]
    pub peer_sizes: Vec<u64>,
    /// The Rust peers' runner (`bench/peers`, built with `cargo build --release
    /// --manifest-path bench/peers/Cargo.toml --target-dir target`) [default: pcache-peers next
    /// to this executable; skipped with a note if absent].
    #[arg(long, value_name = "PATH")]
    pub peers: Option<PathBuf>,
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
    StallSmall,
    StallBig,
    StallSync,
    ReopenCrash,
    /// 4 processes x a quarter of the tasks each, concurrent-mixed on one directory.
    MultiProcessMixed,
    /// get-hit with an idle `pcache repl` open on the same directory.
    GetHitBesideIdle,
    /// get-hit-beside-idle's baseline: the same gets, filled and reopened, alone.
    GetHitReopened,
    /// open → first get while another process writes to the directory.
    OpenBesideWriter,
    /// Peer workloads (issue 16): n sets of data `--data-factor` times the memory budget,
    /// then a reopen counts what was kept.
    DiskSet,
    /// n gets, keys drawn uniformly, of data `--data-factor` times the memory budget.
    DiskGetUniform,
    /// n gets, keys drawn Zipf(1.0), of data `--data-factor` times the memory budget.
    DiskGetZipf,
    /// n uniform gets of data half the memory budget (every hit from memory).
    GetHitMemory,
    /// The floor of a read from disk: a positioned read of the value and its hash check,
    /// natively, with no cache around it (the baseline of 1 MiB get-hit).
    RawRead,
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
            Workload::StallSmall => "stall-small",
            Workload::StallBig => "stall-big",
            Workload::StallSync => "stall-sync",
            Workload::ReopenCrash => "reopen-crash",
            Workload::MultiProcessMixed => "multi-process-mixed",
            Workload::GetHitBesideIdle => "get-hit-beside-idle",
            Workload::GetHitReopened => "get-hit-reopened",
            Workload::OpenBesideWriter => "open-beside-writer",
            Workload::DiskSet => "disk-set",
            Workload::DiskGetUniform => "disk-get-uniform",
            Workload::DiskGetZipf => "disk-get-zipf",
            Workload::GetHitMemory => "get-hit-memory",
            Workload::RawRead => "raw-read",
        }
    }

    /// A workload run side by side with the Rust peers, with the memory budget set.
    fn peer(self) -> bool {
        matches!(
            self,
            Workload::DiskSet
                | Workload::DiskGetUniform
                | Workload::DiskGetZipf
                | Workload::GetHitMemory
        )
    }

    /// The shape of a stall workload (issue 14), `None` for the others.
    fn stall(self) -> Option<StallShape> {
        let kib = 1 << 10;
        let mib = 1 << 20;
        let shape = |tasks, sets, value_size, size_limit| StallShape {
            tasks,
            sets,
            value_size,
            size_limit,
        };
        match self {
            // 64 tasks x 400 x (set + get): eviction and compaction all the time.
            Workload::StallSmall => Some(shape(64, 64 * 400, kib, 8 * mib)),
            Workload::StallBig => Some(shape(8, 8 * 24, mib, 64 * mib)),
            // Every set synced (`CacheOptions::sync`).
            Workload::StallSync => Some(shape(16, 16 * 50, kib, 500 * mib)),
            _ => None,
        }
    }
}

/// Tasks, default total sets, value size and size limit of a stall workload.
#[derive(Clone, Copy, Debug)]
struct StallShape {
    tasks: u64,
    sets: u64,
    value_size: u64,
    size_limit: u64,
}

/// Per-operation latency of a stall workload, in microseconds (nearest-rank percentiles).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// How late a task sleeping 1 ms in a loop woke up while a stall workload ran.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Ticker {
    pub ticks: u64,
    pub late_p50_us: f64,
    pub late_p99_us: f64,
    pub late_max_us: f64,
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
    /// Stall workloads: every cache call's latency; `set_latency` and `get_latency` split it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_latency: Option<Latency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub get_latency: Option<Latency>,
    /// Stall workloads: the ticker's lateness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticker: Option<Ticker>,
    /// Peer workloads: sets read back after a reopen (disk-set), or gets that returned the
    /// value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<u64>,
    /// Peer workloads: how the implementation was configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// Which runs make up the suite.
fn plan(args: &BenchArgs) -> Vec<(Workload, u64, u64)> {
    let chosen: Vec<Workload> = if args.workloads.is_empty() {
        // Every workload, in the order they are declared.
        Workload::value_variants().to_vec()
    } else {
        args.workloads.clone()
    };
    let n = args.n.unwrap_or(20_000);
    let scaled = |size: u64| n.min((256u64 << 20) / size.max(1)).max(1);
    let mut runs = Vec::new();
    for w in chosen {
        if let Some(shape) = w.stall() {
            runs.push((w, args.n.unwrap_or(shape.sets).max(1), shape.value_size));
            continue;
        }
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
            // Next to get-hit's biggest values.
            Workload::RawRead => {
                let size = args.sizes.iter().copied().max().unwrap_or(1 << 20);
                runs.push((w, scaled(size), size));
            }
            w if w.peer() => {
                for &size in &args.peer_sizes {
                    let data = if w == Workload::GetHitMemory {
                        args.memory_budget / 2
                    } else {
                        args.memory_budget * args.data_factor
                    };
                    let n = args.n.unwrap_or(data / size.max(1));
                    runs.push((w, n.max(1), size));
                }
            }
            Workload::OpenBesideWriter => runs.push((w, args.n.unwrap_or(1_000_000), 100)),
            Workload::GetHitBesideIdle | Workload::GetHitReopened => runs.push((w, n, 100)),
            // Recovery after a crash, next to a clean reopen of the same size.
            Workload::ReopenCrash => {
                let n = args.n.unwrap_or(1_000_000);
                if !runs.contains(&(Workload::Reopen, n, 100)) {
                    runs.push((Workload::Reopen, n, 100));
                }
                runs.push((w, n, 100));
            }
            _ => runs.push((w, n, 1024)),
        }
    }
    runs
}

/// Whether diskcache has a counterpart of `workload` (the Python script knows it).
fn has_diskcache(workload: Workload) -> bool {
    workload != Workload::RawWrite
        && workload != Workload::RawRead
        && workload != Workload::ReopenCrash
        && !workload.multi_process()
        && workload.stall().is_none()
}

impl Workload {
    /// Runs with other processes on the directory (the component only).
    fn multi_process(self) -> bool {
        matches!(
            self,
            Workload::MultiProcessMixed
                | Workload::GetHitBesideIdle
                | Workload::GetHitReopened
                | Workload::OpenBesideWriter
        )
    }
}

/// The implementations `workload` runs on.
fn targets(args: &BenchArgs, workload: Workload) -> Vec<Target> {
    if workload == Workload::RawWrite || workload == Workload::RawRead {
        return vec![Target::Native];
    }
    let mut targets = vec![Target::Wasm];
    if args.exclusive && !workload.multi_process() {
        targets.push(Target::Exclusive);
    }
    if !args.no_native && !workload.multi_process() {
        targets.push(Target::Native);
    }
    targets
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
    let baseline = if args.no_diskcache {
        None
    } else {
        Some(Baseline::new(&args.python)?)
    };
    let runs = plan(&args);
    let peers = peers::Peers::find(args.peers.as_deref(), runs.iter().any(|(w, _, _)| w.peer()));
    let steps: usize = runs
        .iter()
        .map(|(w, _, _)| {
            targets(&args, *w).len()
                + usize::from(baseline.is_some() && has_diskcache(*w))
                + if w.peer() { peers.count() } else { 0 }
        })
        .sum();
    let bar = indicatif::ProgressBar::new(steps as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let exe = std::env::current_exe()?;
    let mut results: Vec<Measurement> = Vec::new();
    for (i, (workload, n, size)) in runs.iter().copied().enumerate() {
        for target in targets(&args, workload) {
            bar.set_message(format!(
                "{} {:?} n={n} size={size}",
                workload.name(),
                target
            ));
            let dir = scratch.join(format!("run{i}-{target:?}"));
            std::fs::create_dir_all(&dir)?;
            // Reopen and memory measure n live entries: make room for all of them.
            let size_limit = match workload {
                Workload::Reopen
                | Workload::Memory
                | Workload::ReopenCrash
                | Workload::OpenBesideWriter => (2 * n * (size + 64)).max(524_288_000),
                w => w.stall().map_or(524_288_000, |shape| shape.size_limit),
            };
            let tasks = workload.stall().map_or(64, |shape| shape.tasks);
            let mut command = Command::new(&exe);
            command.arg("bench-run");
            if workload.peer() {
                command.args(["--memory-budget", &args.memory_budget.to_string()]);
            }
            let out = command
                .args(["--size-limit", &size_limit.to_string()])
                .args(["--tasks", &tasks.to_string()])
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
        if workload.peer() {
            for peer in peers.names() {
                bar.set_message(format!("{} {peer} n={n} size={size}", workload.name()));
                let dir = scratch.join(format!("run{i}-{peer}"));
                let out = peers.run(peer, workload, n, size, args.memory_budget, &dir)?;
                results.push(parse_child(&out, workload.name())?);
                let _ = std::fs::remove_dir_all(&dir);
                bar.inc(1);
            }
        }
        if let Some(baseline) = &baseline {
            if has_diskcache(workload) {
                bar.set_message(format!("{} diskcache n={n} size={size}", workload.name()));
                let dir = scratch.join(format!("run{i}-diskcache"));
                let out = baseline.run(workload, n, size, &dir)?;
                results.push(parse_child(&out, workload.name())?);
                let _ = std::fs::remove_dir_all(&dir);
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    report::print_table(&results);
    report::print_stall_table(&results);
    report::print_recovery_table(&results);
    report::print_peer_table(&results);
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

pub(super) fn parse_child(
    out: &std::process::Output,
    workload: &str,
) -> anyhow::Result<Measurement> {
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
