//! Compiles the guest component to `wasm32-wasip2` (released, and a test build with fault
//! injection) and the plugins.
//!
//! The released component (embedded by the host) and the plugins (the example under
//! `examples/`, the test probe) are built together; the test component,
//! `persistent-cache-guest` with its `fault-injection` feature, is built by a second cargo run
//! into its own target directory, so that feature unification cannot put the hook into the
//! released build and neither build overwrites the other's artifact.
//!
//! The components are built without DWARF (about 300 KB instead of 3.7 MB);
//! `PCACHE_GUEST_DEBUG=1` builds them with DWARF instead (see `build/nested_cargo.rs`).

#[path = "build/nested_cargo.rs"]
mod nested_cargo;

use nested_cargo::{artifact, required_var, watch, Build, Profile};
use sha2::Digest;
use std::path::{Path, PathBuf};

const GUEST_PACKAGE: &str = "persistent-cache-guest";
const GUEST_ARTIFACT: &str = "persistent_cache_guest.wasm";
/// The guest's test-only feature, enabled in the test component alone.
const FAULT_FEATURE: &str = "persistent-cache-guest/fault-injection";

/// Plugin components built with the guest: (package, artifact, env var naming its path).
const PLUGINS: &[(&str, &str, &str)] = &[
    (
        "pcache-example-wordfreq",
        "wordfreq.wasm",
        "PCACHE_WORDFREQ_PLUGIN_WASM",
    ),
    (
        "pcache-probe-plugin",
        "probe.wasm",
        "PCACHE_PROBE_PLUGIN_WASM",
    ),
];

fn main() {
    let manifest_dir = PathBuf::from(required_var("CARGO_MANIFEST_DIR"));
    let workspace_root = manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| {
            panic!(
                "host crate {} has no parent directory",
                manifest_dir.display()
            )
        });
    let out_dir = PathBuf::from(required_var("OUT_DIR"));
    for watched in [
        "guest/src",
        "guest/Cargo.toml",
        "examples/wordfreq",
        "tests/probe-plugin",
        "wit",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        watch(&workspace_root.join(watched));
    }

    let profile = Profile::from_env();
    let release_build: Vec<&str> = ["-p", GUEST_PACKAGE]
        .into_iter()
        .chain(PLUGINS.iter().flat_map(|(package, _, _)| ["-p", *package]))
        .collect();
    let manifest_path = workspace_root.join("Cargo.toml");
    let artifacts = Build {
        current_dir: &workspace_root,
        manifest_path: &manifest_path,
        target_dir: &out_dir.join("guest-target"),
        args: &release_build,
        profile,
        what: "the guest component and plugins",
    }
    .run();
    let fault_artifacts = Build {
        current_dir: &workspace_root,
        manifest_path: &manifest_path,
        target_dir: &out_dir.join("guest-fault-target"),
        args: &["-p", GUEST_PACKAGE, "--features", FAULT_FEATURE],
        profile,
        what: "the fault-injection test component",
    }
    .run();

    let guest = artifact(&artifacts, GUEST_ARTIFACT);
    println!("cargo:rustc-env=PCACHE_GUEST_PROFILE={}", profile.name());
    println!("cargo:rustc-env=PCACHE_GUEST_WASM={}", guest.display());
    // The embedded component's SHA-256, so that start-up need not hash it each time (the code
    // cache names and authenticates compiled code by it).
    let bytes = std::fs::read(&guest)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", guest.display()));
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=PCACHE_GUEST_SHA256={digest}");
    println!(
        "cargo:rustc-env=PCACHE_FAULT_INJECTION_GUEST_WASM={}",
        artifact(&fault_artifacts, GUEST_ARTIFACT).display()
    );
    for (_, name, var) in PLUGINS {
        println!(
            "cargo:rustc-env={var}={}",
            artifact(&artifacts, name).display()
        );
    }
}
