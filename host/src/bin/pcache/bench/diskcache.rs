//! The diskcache baseline: `bench/diskcache_bench.py` run by the Python that `--python` names.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context};

use super::Workload;

/// The script, relative to the repository root (where `pcache bench` runs).
const SCRIPT: &str = "bench/diskcache_bench.py";

/// A Python with diskcache installed.
pub struct Baseline {
    python: PathBuf,
}

impl Baseline {
    /// The baseline run by `python`.
    ///
    /// Edge cases: `python` does not exist → an error naming bench/setup-venv.sh.
    pub fn new(python: &Path) -> anyhow::Result<Baseline> {
        if !python.exists() {
            bail!(
                "{} not found: run bench/setup-venv.sh first, or pass --no-diskcache",
                python.display()
            );
        }
        Ok(Baseline {
            python: python.to_path_buf(),
        })
    }

    /// Runs `workload` with `n` entries of `size` bytes on `dir`; the script prints one
    /// [`Measurement`](super::Measurement) line.
    pub fn run(&self, workload: Workload, n: u64, size: u64, dir: &Path) -> anyhow::Result<Output> {
        Command::new(&self.python)
            .arg(SCRIPT)
            .args(["--workload", workload.name()])
            .args(["--n", &n.to_string(), "--value-size", &size.to_string()])
            .arg("--dir")
            .arg(dir)
            .output()
            .context("running the diskcache baseline")
    }
}
