//! `pcache`: try the cache by hand (REPL) or script it (one-shot subcommands).
//!
//! Exit codes: 0 success; 1 a miss (`get`, `delete`, `pop`, `touch`) or an `add` of a key
//! that exists; 2 any error (bad flag, unusable directory,
//! invalid key, value too large, ...), in which case nothing in the cache changed.

mod bench;
mod command;
mod plugin;
mod repl;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use persistent_cache::{
    CacheOptions, CodeCache, PersistentCache, ENV_CONTENT_TTL, ENV_DIRECTORY, ENV_REDIS_URL,
    ENV_SEARCH_TTL, ENV_SIZE_LIMIT,
};

use command::{Op, Outcome};

/// A persistent, size-limited LRU cache with TTL, running as a sandboxed WebAssembly component.
#[derive(Parser, Debug)]
#[command(name = "pcache", version, propagate_version = true)]
struct Cli {
    /// Cache directory [default: $CACHE_DIRECTORY, else tmp/cache].
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Size limit in bytes or with a unit: 500MB, 1GiB [default: $CACHE_SIZE_LIMIT, else 500 MiB].
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size_arg)]
    size_limit: Option<u64>,
    /// Open the cache read-only: nothing is written, writes fail. Reads (get, keys, stats)
    /// of a directory you cannot write fall back to this by themselves.
    #[arg(long, global = true)]
    read_only: bool,
    /// Keep the directory to this process alone: another process opening it gets "open
    /// exclusively". By default any number of processes share a directory.
    #[arg(long, global = true)]
    exclusive: bool,
    /// Run this guest component (.wasm) instead of the embedded one.
    #[arg(long, global = true, value_name = "PATH")]
    component: Option<PathBuf>,
    /// Print structured output (stats, keys) as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Put a shared Redis tier behind the local cache: redis://host:port, redis+unix:///path,
    /// or the seed nodes of a cluster separated by commas [default: $CACHE_REDIS_URL from the
    /// environment; never from .env].
    #[arg(long, global = true, value_name = "URL")]
    redis: Option<String>,
    /// The Redis key prefix of this cache's entries [default: pcache].
    #[arg(long, global = true, value_name = "NAME")]
    redis_namespace: Option<String>,
    #[command(subcommand)]
    command: Option<CliCommand>,
}

#[derive(Subcommand, Debug)]
enum CliCommand {
    #[command(flatten)]
    Op(Op),
    /// Interactive shell (the default when no subcommand is given).
    Repl,
    /// Benchmark the component against the native engine and diskcache (see bench/README.md).
    Bench(bench::BenchArgs),
    /// Run a wasi:keyvalue plugin component with the cache serving its buckets.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// One benchmark workload in this process (used by `bench`).
    #[command(hide = true)]
    BenchRun(bench::RunArgs),
}

fn parse_size_arg(text: &str) -> Result<u64, String> {
    persistent_cache::parse_size(text)
}

fn main() -> ExitCode {
    // Warnings (an unusable code cache, a cache guest restarted after a trap) go to stderr.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help, --version
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            return fail(&anyhow::anyhow!(
                "{} (see pcache --help)",
                command::one_line(&err.to_string())
            ))
        }
    };
    match cli.command {
        Some(CliCommand::Bench(args)) => {
            // `--redis URL`: the two-tier workloads instead of the suite.
            let ran = match cli.redis.clone() {
                Some(url) => bench::two_tier::run(args, url),
                None => bench::run_suite(args),
            };
            return ran.map_or_else(|e| fail(&e), |()| ExitCode::SUCCESS);
        }
        Some(CliCommand::BenchRun(args)) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => return fail(&anyhow::anyhow!("cannot start the async runtime: {err}")),
            };
            return runtime
                .block_on(bench::run_one(args))
                .map_or_else(|e| fail(&e), |()| ExitCode::SUCCESS);
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&anyhow::anyhow!("cannot start the async runtime: {err}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => fail(&err),
    }
}

/// Writes `text` and a newline to stdout. A reader that went away (`pcache keys | head`) is not
/// an error: the output is simply no longer wanted.
pub(crate) fn emit(text: impl std::fmt::Display) -> std::io::Result<()> {
    write_out(format!("{text}\n").as_bytes())
}

/// Writes `bytes` to stdout as they are; a reader that went away is not an error (see [`emit`]).
fn write_out(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("pcache: {}", command::error_line(err));
    ExitCode::from(2)
}

/// The options: environment and `.env` first, flags over them. A variable whose flag is given
/// is not read at all, so a flag wins over a malformed variable too.
fn cache_options(cli: &Cli) -> anyhow::Result<CacheOptions> {
    let lookup = persistent_cache::env_lookup()?;
    let mut options = CacheOptions::default();
    for (variable, flag_given) in [
        (ENV_DIRECTORY, cli.dir.is_some()),
        (ENV_SIZE_LIMIT, cli.size_limit.is_some()),
        (ENV_CONTENT_TTL, false),
        (ENV_SEARCH_TTL, false),
        (ENV_REDIS_URL, cli.redis.is_some()),
    ] {
        if let (false, Some(value)) = (flag_given, lookup(variable)) {
            options = options.with_var(variable, &value)?;
        }
    }
    if let Some(dir) = &cli.dir {
        options = options.directory(dir.clone());
    }
    if let Some(size_limit) = cli.size_limit {
        options = options.size_limit(size_limit);
    }
    if cli.read_only {
        options = options.read_only(true);
    }
    if cli.exclusive {
        options = options.exclusive(true);
    }
    if let Some(url) = &cli.redis {
        options = options.redis(url.clone());
    }
    if let Some(namespace) = &cli.redis_namespace {
        options = options.redis_namespace(namespace.clone());
    }
    Ok(options
        .component(cli.component.clone())
        .code_cache(CodeCache::for_user()))
}

/// Opens the cache. A command that only reads opens it read-only, so it writes nothing at all
/// (no repairs, no snapshot, no sync at close), unless that open fails (no cache there yet, a
/// directory to migrate); it then opens as usual, and falls back to read-only again when the
/// directory cannot be written (permission denied, read-only filesystem, full disk).
async fn open_cache(cli: &Cli, options: CacheOptions) -> anyhow::Result<PersistentCache> {
    // A two-tier cache copies what it reads into its local tier: never read-only.
    let reads_only = options.redis_url().is_none()
        && matches!(
            cli.command,
            Some(CliCommand::Op(Op::Get { .. } | Op::Keys { .. } | Op::Stats))
        );
    if reads_only && !cli.read_only {
        if let Ok(cache) = PersistentCache::open(options.clone().read_only(true)).await {
            return Ok(cache);
        }
    }
    match PersistentCache::open(options.clone()).await {
        Err(err) if reads_only && !cli.read_only && cannot_write(&err) => {
            Ok(PersistentCache::open(options.read_only(true)).await?)
        }
        opened => Ok(opened?),
    }
}

/// True if `err` says the cache directory cannot be written.
fn cannot_write(err: &persistent_cache::Error) -> bool {
    use std::io::ErrorKind::{PermissionDenied, ReadOnlyFilesystem, StorageFull};
    match err {
        persistent_cache::Error::Directory { source, .. } => {
            matches!(
                source.kind(),
                PermissionDenied | ReadOnlyFilesystem | StorageFull
            )
        }
        persistent_cache::Error::Io(source) => {
            matches!(source.kind(), PermissionDenied | StorageFull)
        }
        _ => false,
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let options = cache_options(&cli)?;
    let cache = open_cache(&cli, options).await?;
    let code = match cli.command {
        None | Some(CliCommand::Repl) => repl::run(&cache).await.map(|()| ExitCode::SUCCESS),
        Some(CliCommand::Op(op)) => match op.execute(&cache).await {
            Ok(outcome) => print_one_shot(&op, outcome, cli.json),
            Err(err) => Err(err),
        },
        Some(CliCommand::Plugin(command)) => {
            plugin::run(&cache, command, CodeCache::for_user()).await
        }
        Some(CliCommand::Bench(_) | CliCommand::BenchRun(_)) => unreachable!("handled in main"),
    };
    // Closed on every path, a failed command's too: a cache only dropped shuts down on a
    // thread of its own, which the process's exit could cut short halfway through.
    // The command's outcome stands: closing only syncs what it already stored (and rewrites
    // the index snapshot), so a failure here is reported without turning a stored `set` or a
    // printed `get` into an error.
    if let Err(err) = cache.close().await {
        eprintln!("warning: closing the cache: {err}");
    }
    code
}

/// Prints a one-shot command's outcome; the exit code says hit or miss.
fn print_one_shot(op: &Op, outcome: Outcome, json: bool) -> anyhow::Result<ExitCode> {
    Ok(match outcome {
        Outcome::Value(Some(value)) => {
            emit(value)?;
            ExitCode::SUCCESS
        }
        Outcome::Raw(Some(bytes)) => {
            write_out(&bytes)?;
            ExitCode::SUCCESS
        }
        Outcome::Value(None) | Outcome::Raw(None) => {
            eprintln!("not found: {}", op.key().unwrap_or_default());
            ExitCode::from(1)
        }
        Outcome::Deleted(true) | Outcome::Done => ExitCode::SUCCESS,
        Outcome::Deleted(false) => {
            eprintln!("not found: {}", op.key().unwrap_or_default());
            ExitCode::from(1)
        }
        Outcome::Stats(stats) => {
            if json {
                emit(serde_json::to_string(&stats)?)?;
            } else {
                emit(command::human_stats(&stats))?;
            }
            ExitCode::SUCCESS
        }
        Outcome::Keys { keys, null } => {
            let format = command::KeysFormat::new(json, null);
            write_out(command::format_keys(&keys, format).as_bytes())?;
            ExitCode::SUCCESS
        }
        Outcome::Added(true) | Outcome::Touched(true) => ExitCode::SUCCESS,
        Outcome::Added(false) => {
            eprintln!("exists: {}", op.key().unwrap_or_default());
            ExitCode::from(1)
        }
        Outcome::Touched(false) => {
            eprintln!("not found: {}", op.key().unwrap_or_default());
            ExitCode::from(1)
        }
        Outcome::Number(n) => {
            emit(n)?;
            ExitCode::SUCCESS
        }
    })
}
