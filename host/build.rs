//! Compiles the guest component (`persistent-cache-guest`) to `wasm32-wasip2` so the host can embed it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const GUEST_PACKAGE: &str = "persistent-cache-guest";
const GUEST_TARGET: &str = "wasm32-wasip2";
const GUEST_ARTIFACT: &str = "persistent_cache_guest.wasm";

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
    let guest_target_dir = PathBuf::from(required_var("OUT_DIR")).join("guest-target");

    for watched in [
        "guest/src",
        "guest/Cargo.toml",
        "wit",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace_root.join(watched).display()
        );
    }

    let mut output = build_guest(&workspace_root, &guest_target_dir);
    if !output.status.success() && target_missing(&output) {
        println!("cargo:warning=installing the {GUEST_TARGET} target with rustup");
        let installed = Command::new("rustup")
            .args(["target", "add", GUEST_TARGET])
            .status();
        match installed {
            Ok(status) if status.success() => {
                output = build_guest(&workspace_root, &guest_target_dir);
            }
            Ok(status) => {
                println!("cargo:warning=`rustup target add {GUEST_TARGET}` exited with {status}")
            }
            Err(err) => {
                println!("cargo:warning=could not run `rustup target add {GUEST_TARGET}`: {err}")
            }
        }
    }
    if !output.status.success() {
        panic!(
            "building the guest component ({GUEST_PACKAGE}, {GUEST_TARGET}) failed with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let artifact = guest_target_dir
        .join(GUEST_TARGET)
        .join("release")
        .join(GUEST_ARTIFACT);
    if !artifact.is_file() {
        panic!(
            "the guest build succeeded but {} does not exist",
            artifact.display()
        );
    }
    println!("cargo:rustc-env=PCACHE_GUEST_WASM={}", artifact.display());
}

/// Runs `cargo build --release --target wasm32-wasip2 -p persistent-cache-guest` in the workspace.
fn build_guest(workspace_root: &Path, target_dir: &Path) -> Output {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root)
        .args([
            "build",
            "--release",
            "--target",
            GUEST_TARGET,
            "-p",
            GUEST_PACKAGE,
        ])
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
