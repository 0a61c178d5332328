//! Building WebAssembly components with a nested cargo from a build script.
//!
//! Shared (through `#[path]`) by the build scripts of `persistent-cache`, which embeds the cache
//! component, and of `persistent-cache-tests`, which builds the test components and plugins.
//! Every nested build gets its own `--target-dir` under `OUT_DIR`, so it never waits for the
//! lock the outer cargo holds on its own target directory, and it gets its flags from here
//! alone: nothing the outer cargo passes to build scripts (its rustflags, target, output
//! directory, clippy wrapper) leaks into the component.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The components' target; its standard library ships `wasm-component-ld`, so a `cdylib` or
/// a binary built for it is already a component.
pub const TARGET: &str = "wasm32-wasip2";

/// The rustflags of every component build (`CARGO_ENCODED_RUSTFLAGS`, one flag per entry):
/// WebAssembly SIMD for the record checksums (xxh3). Set explicitly rather than taken from
/// `.cargo/config.toml`, which a packaged crate does not have.
const RUSTFLAGS: &[&str] = &["-Ctarget-feature=+simd128"];

/// The environment variable that selects [`Profile::Debug`].
pub const DEBUG_VAR: &str = "PCACHE_GUEST_DEBUG";

/// Variables a build script inherits from the outer cargo that would give the nested build
/// the outer build's flags, target, output directory or lint wrapper.
const INHERITED_VARS_TO_CLEAR: &[&str] = &[
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "RUSTC_WORKSPACE_WRAPPER",
    "CLIPPY_ARGS",
];

/// How the components are compiled: the release profile's code either way, with or without
/// DWARF. Defined here (with `--config`) rather than in a manifest, because a packaged guest
/// crate is built as its own workspace, where the workspace's profiles do not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// What ships: no DWARF (`strip = "debuginfo"` also drops the standard library's), but the
    /// `name` section stays, so traps and panics still name the guest's functions.
    Release,
    /// For development, with `PCACHE_GUEST_DEBUG=1`: full DWARF, so wasmtime's backtraces
    /// name guest source lines and a debugger can step through the guest. About 6 MB.
    Debug,
}

impl Profile {
    /// [`Profile::Debug`] if `PCACHE_GUEST_DEBUG` is set to anything but `""` or `0`; tells
    /// cargo to rerun the build script when it changes.
    pub fn from_env() -> Profile {
        println!("cargo:rerun-if-env-changed={DEBUG_VAR}");
        match env::var_os(DEBUG_VAR) {
            Some(value) if !value.is_empty() && value != "0" => Profile::Debug,
            _ => Profile::Release,
        }
    }

    /// The cargo profile's name, which is also the directory of its artifacts.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Release => "pcache-component",
            Profile::Debug => "pcache-component-debug",
        }
    }

    /// The `--config` arguments that define the profile.
    fn config(self) -> Vec<String> {
        let (debug, strip) = match self {
            Profile::Release => ("false", "\"debuginfo\""),
            Profile::Debug => ("true", "\"none\""),
        };
        let name = self.name();
        [
            ("inherits", "\"release\""),
            ("debug", debug),
            ("strip", strip),
        ]
        .iter()
        .flat_map(|(key, value)| {
            [
                "--config".to_owned(),
                format!("profile.{name}.{key}={value}"),
            ]
        })
        .collect()
    }
}

/// One nested `cargo build` for [`TARGET`].
pub struct Build<'a> {
    /// The directory cargo runs in (its configuration is looked up from there).
    pub current_dir: &'a Path,
    /// The manifest to build: a package, or a workspace whose members `args` select.
    pub manifest_path: &'a Path,
    /// Where the build's output goes; the artifacts are in `TARGET/<profile>/` below it.
    pub target_dir: &'a Path,
    /// Further arguments: `-p`, `--features`, `--locked`...
    pub args: &'a [&'a str],
    pub profile: Profile,
    /// What is built, for error messages.
    pub what: &'a str,
}

impl Build<'_> {
    /// Runs the build (installing the target with rustup if its standard library is missing)
    /// and returns the directory of its artifacts; panics with cargo's output if it failed.
    pub fn run(&self) -> PathBuf {
        let mut output = self.cargo();
        if !output.status.success() && target_missing(&output) {
            println!("cargo:warning=installing the {TARGET} target with rustup");
            match Command::new("rustup")
                .args(["target", "add", TARGET])
                .status()
            {
                Ok(status) if status.success() => output = self.cargo(),
                Ok(status) => {
                    println!("cargo:warning=`rustup target add {TARGET}` exited with {status}")
                }
                Err(err) => {
                    println!("cargo:warning=could not run `rustup target add {TARGET}`: {err}")
                }
            }
        }
        if !output.status.success() {
            panic!(
                "building {} ({TARGET}) failed with {}:\n{}",
                self.what,
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        self.target_dir.join(TARGET).join(self.profile.name())
    }

    fn cargo(&self) -> Output {
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .current_dir(self.current_dir)
            .args([
                "build",
                "--target",
                TARGET,
                "--profile",
                self.profile.name(),
            ])
            .args(self.profile.config())
            .arg("--manifest-path")
            .arg(self.manifest_path)
            .arg("--target-dir")
            .arg(self.target_dir)
            .args(self.args)
            .env("CARGO_ENCODED_RUSTFLAGS", RUSTFLAGS.join("\x1f"));
        for var in INHERITED_VARS_TO_CLEAR {
            command.env_remove(var);
        }
        match command.output() {
            Ok(output) => output,
            Err(err) => panic!("could not run cargo to build {}: {err}", self.what),
        }
    }
}

/// The path of `name` in `artifacts` (a directory [`Build::run`] returned); panics if absent.
pub fn artifact(artifacts: &Path, name: &str) -> PathBuf {
    let path = artifacts.join(name);
    if !path.is_file() {
        panic!(
            "the component build succeeded but {} does not exist",
            path.display()
        );
    }
    path
}

/// Tells cargo to rerun the build script when `path` changes. For a symlink (the `wit`
/// directories link to the workspace's), the target is watched too.
pub fn watch(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
    if let Ok(real) = path.canonicalize() {
        if real != path {
            println!("cargo:rerun-if-changed={}", real.display());
        }
    }
}

/// The value of an environment variable cargo sets for build scripts.
pub fn required_var(name: &str) -> String {
    env::var(name).unwrap_or_else(|err| panic!("cargo did not set {name}: {err}"))
}

/// True when cargo's error output says the standard library for the target is absent.
fn target_missing(output: &Output) -> bool {
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr.contains(TARGET)
        && (stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `core`")
            || stderr.contains("can't find crate for `std`"))
}
