//! Compiles the cache component (the `persistent-cache-guest` package, for `wasm32-wasip2`)
//! that this crate embeds, and computes its SHA-256.
//!
//! The component is built without DWARF (about 300 KB instead of 3.7 MB);
//! `PCACHE_GUEST_DEBUG=1` builds it with DWARF instead (see `build/nested_cargo.rs`).
//! The test components and plugins are not built here but by `tests/build.rs`.

#[path = "build/nested_cargo.rs"]
mod nested_cargo;

use nested_cargo::{artifact, required_var, watch, Build, Profile};
use sha2::Digest;
use std::fs;
use std::path::{Path, PathBuf};

const GUEST_ARTIFACT: &str = "persistent_cache_guest.wasm";

fn main() {
    let manifest_dir = PathBuf::from(required_var("CARGO_MANIFEST_DIR"));
    let workspace_root = manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .expect("the host package is in the workspace root");
    let guest_dir = workspace_root.join("guest");
    let out_dir = PathBuf::from(required_var("OUT_DIR"));
    for watched in ["src", "build.rs", "Cargo.toml"] {
        watch(&guest_dir.join(watched));
    }
    for watched in ["wit", "Cargo.toml", "Cargo.lock"] {
        watch(&workspace_root.join(watched));
    }

    let profile = Profile::from_env();
    let artifacts = Build {
        current_dir: &guest_dir,
        manifest_path: &guest_dir.join("Cargo.toml"),
        target_dir: &out_dir.join("guest-target"),
        args: &[],
        profile,
        what: "the cache component",
    }
    .run();
    println!("cargo:rustc-env=PCACHE_GUEST_PROFILE={}", profile.name());

    let guest = artifact(&artifacts, GUEST_ARTIFACT);
    println!("cargo:rustc-env=PCACHE_GUEST_WASM={}", guest.display());
    // The embedded component's SHA-256, so that start-up need not hash it each time (the code
    // cache names and authenticates compiled code by it).
    let bytes =
        fs::read(&guest).unwrap_or_else(|err| panic!("cannot read {}: {err}", guest.display()));
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=PCACHE_GUEST_SHA256={digest}");
}
