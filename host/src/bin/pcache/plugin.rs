//! `pcache plugin run`: runs a wasi:keyvalue plugin component against the cache.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use persistent_cache::{CodeCache, PersistentCache, Plugin, PluginOptions};

/// Plugin commands.
#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Run PLUGIN (a wasi:cli command component importing wasi:keyvalue) with ARGS; its buckets
    /// live in DIR/plugins/NAME. Exits with the plugin's exit code (0 or 1), or 2 if it is
    /// stopped (trap, time or memory limit) or cannot be loaded.
    Run(RunArgs),
}

/// What `pcache plugin run` runs and grants.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The plugin component (.wasm); its file name (without .wasm) names its namespace.
    plugin: PathBuf,
    /// Arguments passed to the plugin (after PLUGIN; use -- before ones that start with -).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
    /// The plugin's name, which names its namespace [default: PLUGIN's file name without .wasm].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Grant the plugin an environment variable (repeatable); it sees no others.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Grant read-only access to a host directory, seen by the plugin as GUEST (default: the
    /// same path); repeatable. The plugin sees no other files.
    #[arg(long = "read-dir", value_name = "HOST[::GUEST]")]
    read_dirs: Vec<String>,
    /// Stop the plugin past this much linear memory.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = crate::parse_size_arg)]
    memory_limit: u64,
    /// Stop the plugin after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    time_limit: f64,
    /// Size limit of the plugin's own cache.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = crate::parse_size_arg)]
    store_size_limit: u64,
    /// Serve the plugin's buckets from Redis (redis://host:port, redis+unix:///path, or a
    /// cluster's seed nodes separated by commas) instead of DIR/plugins/NAME: every host
    /// running the plugin against the same Redis shares its buckets.
    #[arg(long, value_name = "URL")]
    keyvalue: Option<String>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

/// Runs the plugin with this process's stdin, stdout and stderr.
pub async fn run(
    cache: &PersistentCache,
    command: PluginCommand,
    code_cache: Option<CodeCache>,
) -> anyhow::Result<ExitCode> {
    let PluginCommand::Run(args) = command;
    if !(args.time_limit.is_finite() && args.time_limit > 0.0) {
        anyhow::bail!("--time-limit must be a positive number of seconds");
    }
    let plugin = match args.name {
        None => Plugin::load(&args.plugin, code_cache).await?,
        Some(name) => Plugin::load_as(name, &args.plugin, code_cache).await?,
    };
    let mut options = PluginOptions::new()
        .args(args.args)
        .inherit_stdio(true)
        .memory_limit(args.memory_limit)
        .time_limit(Duration::from_secs_f64(args.time_limit))
        .store_size_limit(args.store_size_limit);
    if let Some(url) = args.keyvalue {
        options = options.keyvalue_redis(url);
    }
    for (name, value) in args.env {
        options = options.env(name, value);
    }
    for grant in args.read_dirs {
        let (host, guest) = grant.split_once("::").unwrap_or((&grant, &grant));
        options = options.read_only_dir(host, guest);
    }
    let exit = cache.run_plugin(&plugin, options).await?;
    Ok(ExitCode::from(u8::try_from(exit.code).unwrap_or(1)))
}
