//! Compiles the cache component (the `persistent-cache-guest` package, for `wasm32-wasip2`)
//! that this crate embeds, and computes its SHA-256.
//!
//! The guest's sources are found through its `links` metadata (`DEP_PCACHE_GUEST_DIR`, set by
//! `guest/build.rs`): in the workspace that is `guest/`, for a packaged crate the guest's own
//! package (registry, vendor directory or `cargo package`'s), so the same script works in both.
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
    let guest_dir = PathBuf::from(required_var("DEP_PCACHE_GUEST_DIR"));
    let out_dir = PathBuf::from(required_var("OUT_DIR"));
    for watched in ["src", "wit", "build.rs", "Cargo.toml"] {
        watch(&guest_dir.join(watched));
    }
    // The root of the guest's workspace (the package itself once packaged): its lock file and
    // its manifest's profiles also shape the component.
    if let Some(root) = guest_dir
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
    {
        watch(&root.join("Cargo.lock"));
        if root != guest_dir {
            watch(&root.join("Cargo.toml"));
        }
    }

    // A packaged guest (it has the `Cargo.toml.orig` that `cargo package` writes) is built from
    // a copy in OUT_DIR as a workspace of its own, with its own Cargo.lock: a registry's
    // sources are not to be written to, and one unpacked under another workspace's directory
    // (`cargo package` verifies in `target/package/`) would otherwise be taken for a stray
    // member of that workspace.
    let (source_dir, locked) = if guest_dir.join("Cargo.toml.orig").is_file() {
        let copy = out_dir.join("guest-src");
        copy_package(&guest_dir, &copy);
        (copy, &["--locked"][..])
    } else {
        (guest_dir, &[][..])
    };

    let profile = Profile::from_env();
    let artifacts = Build {
        current_dir: &source_dir,
        manifest_path: &source_dir.join("Cargo.toml"),
        target_dir: &out_dir.join("guest-target"),
        args: locked,
        profile,
        what: "the cache component",
    }
    .run();
    println!("cargo:rustc-env=PCACHE_GUEST_PROFILE={}", profile.name());

    let guest = artifact(&artifacts, GUEST_ARTIFACT);
    let built =
        fs::read(&guest).unwrap_or_else(|err| panic!("cannot read {}: {err}", guest.display()));
    // What ships leaves out the component-level `component-name` section (about 8 KB of names
    // for printing the component's types); traps still name functions through the core
    // module's `name` section, which stays. The debug build keeps everything.
    let bytes = match profile {
        Profile::Release => without_custom_section(&built, "component-name"),
        Profile::Debug => built,
    };
    let embedded = out_dir.join("persistent_cache_guest.wasm");
    fs::write(&embedded, &bytes)
        .unwrap_or_else(|err| panic!("cannot write {}: {err}", embedded.display()));
    println!("cargo:rustc-env=PCACHE_GUEST_WASM={}", embedded.display());
    // The embedded component's SHA-256, so that start-up need not hash it each time (the code
    // cache names and authenticates compiled code by it).
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=PCACHE_GUEST_SHA256={digest}");
}

/// Copies the packaged guest crate at `from` to `to` (replacing an older copy) and makes it a
/// workspace root.
fn copy_package(from: &Path, to: &Path) {
    if to.exists() {
        fs::remove_dir_all(to)
            .unwrap_or_else(|err| panic!("cannot remove {}: {err}", to.display()));
    }
    copy_dir(from, to);
    let manifest = to.join("Cargo.toml");
    let mut text = fs::read_to_string(&manifest)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", manifest.display()));
    text.push_str("\n[workspace]\n");
    fs::write(&manifest, text)
        .unwrap_or_else(|err| panic!("cannot write {}: {err}", manifest.display()));
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|err| panic!("cannot create {}: {err}", to.display()));
    let entries =
        fs::read_dir(from).unwrap_or_else(|err| panic!("cannot list {}: {err}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|err| panic!("cannot list {}: {err}", from.display()));
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if source.is_dir() {
            copy_dir(&source, &target);
        } else {
            fs::copy(&source, &target).unwrap_or_else(|err| {
                panic!(
                    "cannot copy {} to {}: {err}",
                    source.display(),
                    target.display()
                )
            });
        }
    }
}

/// `wasm` (a component or module) without its top-level custom sections named `name`.
///
/// Written by hand rather than with `wasmparser`: it only reads the section framing (an id byte
/// and a LEB128 size, plus the name of a custom section), and a build dependency on
/// `wasmparser` would compile a second copy of it for the build script.
fn without_custom_section(wasm: &[u8], name: &str) -> Vec<u8> {
    fn leb128(bytes: &[u8], at: &mut usize) -> usize {
        let (mut value, mut shift) = (0usize, 0);
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }
    let mut out = wasm[..8].to_vec();
    let mut at = 8;
    while at < wasm.len() {
        let start = at;
        let id = wasm[at];
        at += 1;
        let size = leb128(wasm, &mut at);
        let body = at;
        at += size;
        if id == 0 {
            let mut name_at = body;
            let len = leb128(wasm, &mut name_at);
            if &wasm[name_at..name_at + len] == name.as_bytes() {
                continue;
            }
        }
        out.extend_from_slice(&wasm[start..at]);
    }
    out
}
