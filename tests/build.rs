//! Builds the test artifacts for `wasm32-wasip2`: the test build of the cache component (the
//! guest's `fault-injection` feature), the example plugin (`examples/wordfreq`) and the probe
//! plugin (`tests/probe-plugin`). `src/lib.rs` exposes their paths.
//!
//! They are built by one nested cargo into this package's OUT_DIR, apart from the released
//! component that `persistent-cache` builds and embeds: the fault-injection feature cannot
//! reach the released build through feature unification, and neither build overwrites the
//! other's artifact. Same profile as the released component (`PCACHE_GUEST_DEBUG=1` gives
//! both DWARF).

#[path = "../host/build/nested_cargo.rs"]
mod nested_cargo;

use nested_cargo::{artifact, required_var, watch, Build, Profile};
use std::path::{Path, PathBuf};

/// What is built: (artifact, environment variable naming its path for `src/lib.rs`).
const ARTIFACTS: &[(&str, &str)] = &[
    (
        "persistent_cache_guest.wasm",
        "PCACHE_FAULT_INJECTION_GUEST_WASM",
    ),
    ("wordfreq.wasm", "PCACHE_WORDFREQ_PLUGIN_WASM"),
    ("probe.wasm", "PCACHE_PROBE_PLUGIN_WASM"),
];

fn main() {
    let manifest_dir = PathBuf::from(required_var("CARGO_MANIFEST_DIR"));
    let workspace_root = manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .expect("the tests package is in the workspace root");
    let out_dir = PathBuf::from(required_var("OUT_DIR"));
    for watched in [
        "guest/src",
        "guest/build.rs",
        "guest/Cargo.toml",
        "examples/wordfreq",
        "tests/probe-plugin",
        "wit",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        watch(&workspace_root.join(watched));
    }

    let artifacts = Build {
        current_dir: &workspace_root,
        manifest_path: &workspace_root.join("Cargo.toml"),
        target_dir: &out_dir.join("wasm-target"),
        args: &[
            "-p",
            "persistent-cache-guest",
            "--features",
            "persistent-cache-guest/fault-injection",
            "-p",
            "pcache-example-wordfreq",
            "-p",
            "pcache-probe-plugin",
        ],
        profile: Profile::from_env(),
        what: "the test component and plugins",
    }
    .run();
    for (name, var) in ARTIFACTS {
        println!(
            "cargo:rustc-env={var}={}",
            artifact(&artifacts, name).display()
        );
    }
}
