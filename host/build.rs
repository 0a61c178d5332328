//! Compiles the guest component to `wasm32-wasip2` (released, and a test build with fault injection) and the plugins.
//!
//! The released component (embedded by the host) and the plugins (the example under `examples/`,
//! the test probe) are built together; the test component, `persistent-cache-guest` with its
//! `fault-injection` feature, is built by a second cargo run into its own target directory, so
//! that feature unification cannot put the hook into the released build and neither build
//! overwrites the other's artifact.

use sha2::Digest;
use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const GUEST_PACKAGE: &str = "persistent-cache-guest";
const GUEST_TARGET: &str = "wasm32-wasip2";
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

/// Variables a build script inherits from the outer cargo that would make the nested
/// guest build use the host's flags, target, output directory or lint wrapper.
const INHERITED_VARS_TO_CLEAR: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
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
    let guest_target_dir = out_dir.join("guest-target");
    let fault_target_dir = out_dir.join("guest-fault-target");

    for watched in [
        "guest/src",
        "guest/Cargo.toml",
        "examples/wordfreq",
        "tests/probe-plugin",
        "wit",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace_root.join(watched).display()
        );
    }

    let release_build: Vec<&str> = ["-p", GUEST_PACKAGE]
        .into_iter()
        .chain(PLUGINS.iter().flat_map(|(package, _, _)| ["-p", *package]))
        .collect();
    let mut output = cargo_build(&workspace_root, &guest_target_dir, &release_build);
    if !output.status.success() && target_missing(&output) {
        println!("cargo:warning=installing the {GUEST_TARGET} target with rustup");
        let installed = Command::new("rustup")
            .args(["target", "add", GUEST_TARGET])
            .status();
        match installed {
            Ok(status) if status.success() => {
                output = cargo_build(&workspace_root, &guest_target_dir, &release_build);
            }
            Ok(status) => {
                println!("cargo:warning=`rustup target add {GUEST_TARGET}` exited with {status}")
            }
            Err(err) => {
                println!("cargo:warning=could not run `rustup target add {GUEST_TARGET}`: {err}")
            }
        }
    }
    require_success(&output, "the guest component and plugins");
    let fault_build = ["-p", GUEST_PACKAGE, "--features", FAULT_FEATURE];
    let output = cargo_build(&workspace_root, &fault_target_dir, &fault_build);
    require_success(&output, "the fault-injection test component");

    let guest = built(&guest_target_dir, GUEST_ARTIFACT);
    println!("cargo:rustc-env=PCACHE_GUEST_WASM={}", guest.display());
    // The embedded component's SHA-256, so that start-up need not hash its 4 MB each time
    // (the code cache names and authenticates compiled code by it).
    let bytes = std::fs::read(&guest)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", guest.display()));
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=PCACHE_GUEST_SHA256={digest}");
    println!(
        "cargo:rustc-env=PCACHE_FAULT_INJECTION_GUEST_WASM={}",
        built(&fault_target_dir, GUEST_ARTIFACT).display()
    );
    for (_, artifact, var) in PLUGINS {
        println!(
            "cargo:rustc-env={var}={}",
            built(&guest_target_dir, artifact).display()
        );
    }
}

/// Panics with cargo's error output unless the build of `what` succeeded.
fn require_success(output: &Output, what: &str) {
    if !output.status.success() {
        panic!(
            "building {what} ({GUEST_TARGET}) failed with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The path of `name`, built in release mode for the guest target under `target_dir`.
fn built(target_dir: &Path, name: &str) -> PathBuf {
    let artifact = target_dir.join(GUEST_TARGET).join("release").join(name);
    if !artifact.is_file() {
        panic!(
            "the guest build succeeded but {} does not exist",
            artifact.display()
        );
    }
    artifact
}

/// Runs `cargo build --release --target wasm32-wasip2 ARGS --target-dir TARGET_DIR` in the
/// workspace, without the outer cargo's flags.
fn cargo_build(workspace_root: &Path, target_dir: &Path, args: &[&str]) -> Output {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root)
        .args(["build", "--release", "--target", GUEST_TARGET])
        .args(args)
        .arg("--target-dir")
        .arg(target_dir);
    for var in INHERITED_VARS_TO_CLEAR {
        command.env_remove(var);
    }
    match command.output() {
        Ok(output) => output,
        Err(err) => panic!("could not run cargo to build the guest component: {err}"),
    }
}

/// True when cargo's error output says the standard library for the guest target is absent.
fn target_missing(output: &Output) -> bool {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr.contains(GUEST_TARGET)
        && (stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `core`")
            || stderr.contains("can't find crate for `std`"))
}

fn required_var(name: &str) -> String {
    env::var(name).unwrap_or_else(|err| panic!("cargo did not set {name}: {err}"))
}
