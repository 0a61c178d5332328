//! The Rust peers (foyer, cacache): run by `pcache-peers` (`bench/peers`, a crate of its own so
//! that their dependencies stay out of the workspace's build), one child per measurement.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Context;

use super::Workload;

/// The peers' runner, if it was built.
pub struct Peers(Option<PathBuf>);

impl Peers {
    /// `path`, else `pcache-peers` next to this executable. When `wanted` and it is missing,
    /// says so on stderr (the peer workloads then run without the peers).
    pub fn find(path: Option<&Path>, wanted: bool) -> Peers {
        let path = match path {
            Some(path) => path.to_path_buf(),
            None => match std::env::current_exe() {
                Ok(exe) => exe.with_file_name("pcache-peers"),
                Err(_) => return Peers(None),
            },
        };
        if path.is_file() {
            return Peers(Some(path));
        }
        if wanted {
            eprintln!(
                "note: {} not found: the peer workloads run without foyer and cacache (build \
                 it with `cargo build --release --manifest-path bench/peers/Cargo.toml \
                 --target-dir target`, or pass --peers PATH)",
                path.display()
            );
        }
        Peers(None)
    }

    /// The peers measured: none without the runner.
    pub fn names(&self) -> &'static [&'static str] {
        if self.0.is_some() {
            &["foyer", "cacache"]
        } else {
            &[]
        }
    }

    /// How many peers each peer workload runs on.
    pub fn count(&self) -> usize {
        self.names().len()
    }

    /// Runs `workload` on `peer` with `n` values of `size` bytes and `memory_budget`, in a fresh
    /// `dir`; the runner prints one [`Measurement`](super::Measurement) line.
    pub fn run(
        &self,
        peer: &str,
        workload: Workload,
        n: u64,
        size: u64,
        memory_budget: u64,
        dir: &Path,
    ) -> anyhow::Result<Output> {
        let runner = self.0.as_ref().context("no peers' runner")?;
        Command::new(runner)
            .args(["--peer", peer, "--workload", workload.name()])
            .args(["--n", &n.to_string(), "--value-size", &size.to_string()])
            .args(["--memory-budget", &memory_budget.to_string()])
            .arg("--dir")
            .arg(dir)
            .output()
            .with_context(|| format!("running {}", runner.display()))
    }
}
