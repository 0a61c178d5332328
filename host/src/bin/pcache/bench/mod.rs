//! `pcache bench`: whole-workload benchmarks of the component, the native engine and diskcache.
//!
//! Every measurement runs in a fresh child process (`pcache bench-run`, or the Python baseline)
//! on a fresh directory, so peak memory and start-up are each run's own. Figures are reported
//! as ratios against baselines measured in the same run on the same machine.
//!
//! This file is the driver (`pcache bench`); [`workload`] runs one measurement in a child,
//! [`diskcache`] runs the Python baseline, [`report`] prints the table.

mod diskcache;
mod report;
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

/// Which runs make up the suite.
fn plan(args: &BenchArgs) -> Vec<(Workload, u64, u64)> {
    let chosen: Vec<Workload> = if args.workloads.is_empty() {
        // Every workload, in the order they are declared.
        Workload::value_variants().to_vec()
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
    let baseline = if args.no_diskcache {
        None
    } else {
        Some(Baseline::new(&args.python)?)
    };
    let runs = plan(&args);
    let per_run = 2 + usize::from(baseline.is_some());
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
        if let Some(baseline) = &baseline {
            if workload != Workload::RawWrite {
                bar.set_message(format!("{} diskcache n={n} size={size}", workload.name()));
                let dir = scratch.join(format!("run{i}-diskcache"));
                let out = baseline.run(workload, n, size, &dir)?;
                results.push(parse_child(&out, workload.name())?);
                let _ = std::fs::remove_dir_all(&dir);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    report::print_table(&results);
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
