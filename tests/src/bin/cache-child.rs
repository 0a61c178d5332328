//! A second process for the end-to-end tests: opens a cache directory and runs one command.
//!
//! `cache-child DIR set KEY JSON` · `cache-child DIR get KEY` (prints JSON or `null`) ·
//! `cache-child DIR hold [exclusive]` (opens, exclusively if asked, prints `open`, waits for
//! stdin to close) ·
//! `cache-child DIR plugin MEMORY_BYTES TIME_MS ARGS...` (runs the probe plugin under those
//! limits, prints `outcome=`, `elapsed_ms=` and whether both caches work afterwards) ·
//! `cache-child DIR workload SEED SIZE_LIMIT SYNC(0|1) MAX_LEN` (runs the crash test's workload
//! until killed, reporting every operation; see `workload.rs`) ·
//! `cache-child DIR sessions SIZE_LIMIT KEYS GAP_MS SEED` (the torn-copies test's writer: until
//! stdin closes, opens the cache, overwrites every key with the next version, closes, reports
//! it and idles up to GAP_MS; see `torn.rs`) ·
//! `cache-child DIR race TASKS INCRS` (TASKS tasks each `incr` key `n` INCRS times and try
//! `add("winner")` and `pop("prize")` once; prints `wins=W pops=P`) ·
//! `cache-child DIR mixed ID SEED OPS SIZE_LIMIT` (another process's share of a mixed workload:
//! writes and deletes keys `ID:k` with increasing versions, reads the other writers' keys and
//! checks their versions never go back; prints `ack KEY VERSION` (`VERSION` -1: deleted) after
//! each acknowledged write, then `done`) ·
//! `cache-child SCRATCH diskfull tmpfs|fsize` (fills a cache until its writes fail — on a 1 MiB
//! tmpfs in a private mount namespace, or under `RLIMIT_FSIZE` — and prints what it observed).
//! Errors print `error: ...` on stderr and exit 2.

#[path = "../torn.rs"]
mod torn;
#[path = "../workload.rs"]
mod workload;

use persistent_cache::{CacheOptions, Error, Expiry, PersistentCache};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A mount namespace or a resource limit must be set up while the process has one thread,
    // before the async runtime (and the cache's threads) exist.
    let space = match args.as_slice() {
        [scratch, command, mode] if command == "diskfull" => {
            match disk_full::prepare(Path::new(scratch), mode) {
                Ok(space) => Some(space),
                Err(why) => {
                    println!("unavailable {why}");
                    return;
                }
            }
        }
        _ => None,
    };
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Into::into)
        .and_then(|runtime| {
            runtime.block_on(async {
                match space {
                    Some(space) => disk_full::run(space).await,
                    None => run(&args).await,
                }
            })
        });
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

async fn run(args: &[String]) -> AnyResult<()> {
    let [dir, command, rest @ ..] = args else {
        return Err("usage: cache-child DIR (set KEY JSON | get KEY | hold | workload ...)".into());
    };
    if command == "workload" {
        return run_workload(dir, rest).await;
    }
    if command == "sessions" {
        return run_sessions(dir, rest).await;
    }
    if command == "mixed" {
        return run_mixed(dir, rest).await;
    }
    let exclusive = command == "hold" && rest == ["exclusive"];
    let cache = PersistentCache::open(CacheOptions::new(dir).exclusive(exclusive)).await?;
    match (command.as_str(), rest) {
        ("set", [key, json]) => {
            let value: serde_json::Value = serde_json::from_str(json)?;
            cache.set(key, &value).await?;
        }
        ("get", [key]) => {
            let value: Option<serde_json::Value> = cache.get(key).await?;
            println!("{}", serde_json::to_string(&value)?);
        }
        ("plugin", [memory, time_ms, args @ ..]) => {
            run_probe(&cache, memory.parse()?, time_ms.parse()?, args).await?;
        }
        ("race", [tasks, incrs]) => {
            let (tasks, incrs): (usize, usize) = (tasks.parse()?, incrs.parse()?);
            let mut joined = Vec::new();
            for task in 0..tasks {
                let cache = cache.clone();
                joined.push(tokio::spawn(async move {
                    for _ in 0..incrs {
                        cache.incr("n", 1, 0).await?;
                    }
                    let won = cache
                        .add(
                            "winner",
                            &format!("{}:{task}", std::process::id()),
                            Expiry::Never,
                        )
                        .await?;
                    let popped = cache.pop_raw("prize").await?.is_some();
                    Ok::<_, Error>((won, popped))
                }));
            }
            let (mut wins, mut pops) = (0, 0);
            for task in joined {
                let (won, popped) = task.await??;
                wins += usize::from(won);
                pops += usize::from(popped);
            }
            println!("wins={wins} pops={pops}");
        }
        ("hold", [] | [_]) => {
            println!("open");
            let mut sink = Vec::new();
            std::io::stdin().read_to_end(&mut sink)?;
        }
        _ => return Err(format!("unknown command {command:?}").into()),
    }
    cache.close().await?;
    Ok(())
}

/// Runs the probe plugin with `args` under the given limits, its stdout this process's (so its
/// lines show even when it is stopped); prints `outcome=exit:N|MemoryLimit|TimeLimit|Trap:..|error:..`, `elapsed_ms=N`, then
/// `after_app=` and `after_plugin=` (`ok` if the app's cache and the plugin's still work).
async fn run_probe(
    cache: &PersistentCache,
    memory: u64,
    time_ms: u64,
    args: &[String],
) -> AnyResult<()> {
    use persistent_cache::{Plugin, PluginFailure, PluginOptions};
    let bytes = std::fs::read(persistent_cache_tests::PROBE_PLUGIN)?;
    let plugin = Plugin::from_bytes("hostile", bytes, None).await?;
    let options = PluginOptions::new()
        .args(args.iter().cloned())
        .inherit_stdio(true)
        .memory_limit(memory)
        .time_limit(Duration::from_millis(time_ms));
    let started = std::time::Instant::now();
    let ran = cache.run_plugin(&plugin, options).await;
    let elapsed = started.elapsed();
    let outcome = match ran {
        Ok(exit) => format!("exit:{}", exit.code),
        Err(Error::Plugin { failure, .. }) => match failure {
            PluginFailure::MemoryLimit(_) => "MemoryLimit".to_owned(),
            PluginFailure::TimeLimit(_) => "TimeLimit".to_owned(),
            other => format!("{other:?}"),
        },
        Err(other) => format!("error:{other}"),
    };
    println!("outcome={outcome}");
    println!("elapsed_ms={}", elapsed.as_millis());
    cache.set_raw("after", b"app", Expiry::Never).await?;
    let app = cache.get_raw("after").await?;
    println!(
        "after_app={}",
        if app.as_deref() == Some(b"app") {
            "ok".to_owned()
        } else {
            format!("{app:?}")
        }
    );
    let probe = |args: &'static [&'static str]| {
        cache.run_plugin(&plugin, PluginOptions::new().args(args.iter().copied()))
    };
    let put = probe(&["put", "after", "k", "plugin"]).await?;
    let got = probe(&["get", "after", "k"]).await?;
    let got = String::from_utf8_lossy(&got.stdout).into_owned();
    let put = String::from_utf8_lossy(&put.stdout).into_owned();
    let plugin_ok = put.trim() == "put=ok" && got.trim() == "get=plugin";
    println!(
        "after_plugin={}",
        if plugin_ok {
            "ok".to_owned()
        } else {
            format!("{put:?} {got:?}")
        }
    );
    Ok(())
}

/// Runs random writes (and some reads) forever, printing `B` before and `A` after each write.
async fn run_workload(dir: &str, args: &[String]) -> AnyResult<()> {
    use workload::{key, value, Op, Rng, KEYS};
    let [seed, size_limit, sync, max_len] = args else {
        return Err("usage: cache-child DIR workload SEED SIZE_LIMIT SYNC MAX_LEN".into());
    };
    let seed: u64 = seed.parse()?;
    let max_len: usize = max_len.parse()?;
    let options = CacheOptions::new(dir)
        .size_limit(size_limit.parse()?)
        .sync(sync == "1");
    let cache = PersistentCache::open(options).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut rng = Rng::with_seed(seed);
    for seq in 0u64.. {
        if rng.u64(..10) == 0 {
            // Reads move entries in the LRU order and make the index snapshot stale.
            cache.get_raw(&key(rng.u64(..KEYS as u64) as usize)).await?;
        }
        let op = Op::random(&mut rng, max_len);
        writeln!(out, "B {seq} {op}")?;
        out.flush()?;
        match op {
            Op::Set {
                key: k,
                len,
                ttl_ms,
            } => {
                let ttl =
                    ttl_ms.map_or(Expiry::Never, |ms| Expiry::After(Duration::from_millis(ms)));
                cache.set_raw(&key(k), &value(seed, seq, len), ttl).await?;
            }
            Op::Delete { key: k } => {
                cache.delete(&key(k)).await?;
            }
            Op::Clear => cache.clear().await?,
        }
        writeln!(out, "A {seq}")?;
        out.flush()?;
    }
    Ok(())
}

/// Runs short sessions on the cache until stdin closes: each opens it, overwrites every key
/// (in a shuffled order) with the next version, closes it, and reports `BEGIN` before and
/// `CHECKPOINT` after; then the writer idles a random while.
async fn run_sessions(dir: &str, args: &[String]) -> AnyResult<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let [size_limit, keys, gap_ms, seed] = args else {
        return Err("usage: cache-child DIR sessions SIZE_LIMIT KEYS GAP_MS SEED".into());
    };
    let options = CacheOptions::new(dir).size_limit(size_limit.parse()?);
    let keys: usize = keys.parse()?;
    let gap_ms: u64 = gap_ms.parse()?;
    let mut rng = workload::Rng::with_seed(seed.parse()?);
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::spawn({
        let stop = stop.clone();
        move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop.store(true, Ordering::Relaxed);
        }
    });
    let mut order: Vec<usize> = (0..keys).collect();
    let mut out = std::io::stdout().lock();
    for version in 1.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        writeln!(out, "BEGIN {version} {}", torn::monotonic_ns())?;
        out.flush()?;
        let cache = PersistentCache::open(options.clone()).await?;
        rng.shuffle(&mut order);
        for &k in &order {
            cache
                .set_raw(&torn::key(k), &torn::value(k, version), Expiry::Never)
                .await?;
        }
        let evicted = cache.stats().await?.evicted;
        cache.close().await?;
        writeln!(
            out,
            "CHECKPOINT {version} {} {evicted}",
            torn::monotonic_ns()
        )?;
        out.flush()?;
        // Idle between sessions, as a program that opens the cache now and then does.
        tokio::time::sleep(Duration::from_millis(rng.u64(..=gap_ms))).await;
    }
    Ok(())
}

mod disk_full {
    //! Fills a cache until the file system refuses its writes, then frees space again.

    use super::*;

    /// How the space runs out, and how it is given back.
    pub enum Space {
        /// A 1 MiB tmpfs holding the cache and a filler file that is deleted to free space.
        Tmpfs { cache: PathBuf, filler: PathBuf },
        /// `RLIMIT_FSIZE` caps every file at `FSIZE_LIMIT` bytes until the limit is raised.
        FileSize { cache: PathBuf },
    }

    const FSIZE_LIMIT: u64 = 256 * 1024;
    const VALUE_LEN: usize = 8 * 1024;

    /// Mounts a private tmpfs (`tmpfs`) or lowers `RLIMIT_FSIZE` (`fsize`); `Err` says why the
    /// mode is unavailable here.
    pub fn prepare(scratch: &Path, mode: &str) -> Result<Space, String> {
        match mode {
            "tmpfs" => mount_tmpfs(scratch),
            "fsize" => {
                // SAFETY: plain libc calls on this process with valid arguments; ignoring
                // SIGXFSZ makes an oversized write fail with EFBIG instead of killing us.
                unsafe {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let mut limit = std::mem::zeroed::<libc::rlimit>();
                    if libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) != 0 {
                        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
                    }
                    limit.rlim_cur = FSIZE_LIMIT as libc::rlim_t;
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
                    }
                }
                Ok(Space::FileSize {
                    cache: scratch.join("cache"),
                })
            }
            other => Err(format!("unknown mode {other:?}")),
        }
    }

    fn mount_tmpfs(scratch: &Path) -> Result<Space, String> {
        use std::ffi::CString;
        let os_err = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
        let mount_point = scratch.join("tmpfs");
        std::fs::create_dir_all(&mount_point).map_err(|e| format!("mkdir: {e}"))?;
        let c = |s: &str| CString::new(s).map_err(|e| e.to_string());
        let target = c(mount_point.to_str().ok_or("non-UTF-8 path")?)?;
        let (tmpfs, root, data) = (c("tmpfs")?, c("/")?, c("size=1m")?);
        // SAFETY: libc calls with valid NUL-terminated strings. The mount lives in this
        // process's own mount namespace (private propagation), so it vanishes when it exits.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(os_err("unshare(CLONE_NEWNS)"));
            }
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                private,
                std::ptr::null(),
            ) != 0
            {
                return Err(os_err("make / private"));
            }
            if libc::mount(
                tmpfs.as_ptr(),
                target.as_ptr(),
                tmpfs.as_ptr(),
                0,
                data.as_ptr().cast(),
            ) != 0
            {
                return Err(os_err("mount tmpfs"));
            }
        }
        let filler = mount_point.join("filler");
        std::fs::write(&filler, vec![0xAB; 256 * 1024]).map_err(|e| format!("filler: {e}"))?;
        Ok(Space::Tmpfs {
            cache: mount_point.join("cache"),
            filler,
        })
    }

    fn entry(i: usize) -> Vec<u8> {
        let mut v = vec![(i % 251) as u8; VALUE_LEN];
        v[..8].copy_from_slice(&(i as u64).to_le_bytes());
        v
    }

    /// Prints `mode`, `acked N`, `full-error KIND MESSAGE` and one `CHECK ok|FAIL why` line per
    /// check; the parent asserts on them.
    pub async fn run(space: Space) -> AnyResult<()> {
        let (mode, dir) = match &space {
            Space::Tmpfs { cache, .. } => ("tmpfs", cache.clone()),
            Space::FileSize { cache } => ("fsize", cache.clone()),
        };
        println!("mode {mode}");
        // A large size limit: nothing is evicted or compacted, only the disk runs out.
        let options = CacheOptions::new(&dir).size_limit(64 << 20);
        let cache = PersistentCache::open(options.clone()).await?;
        let mut acked = 0;
        let mut error = None;
        for i in 0..2048 {
            match cache
                .set_raw(&format!("k{i}"), &entry(i), Expiry::Never)
                .await
            {
                Ok(()) => acked += 1,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        println!("acked {acked}");
        match &error {
            Some(Error::Io(message)) => println!("full-error io {message}"),
            Some(other) => println!("full-error other {other:?}"),
            None => println!("full-error none"),
        }
        check("readable-while-full", all_readable(&cache, acked).await);
        let refused = cache
            .set_raw("k0", &vec![7u8; 64 * 1024], Expiry::Never)
            .await;
        let kept = cache.get_raw("k0").await?;
        check(
            "overwrite-refused-old-kept",
            match refused {
                Err(Error::Io(_)) if kept == Some(entry(0)) => Ok(()),
                other => Err(format!(
                    "set gave {other:?}, k0 is now {:?} bytes",
                    kept.map(|v| v.len())
                )),
            },
        );

        match &space {
            Space::Tmpfs { filler, .. } => std::fs::remove_file(filler)?,
            // SAFETY: raising the soft limit back to the hard limit of this process.
            Space::FileSize { .. } => unsafe {
                let mut limit = std::mem::zeroed::<libc::rlimit>();
                libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit);
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            },
        }
        let again = async {
            cache.set_raw("after", &entry(9999), Expiry::Never).await?;
            cache
                .set_raw("k0", &vec![7u8; 64 * 1024], Expiry::Never)
                .await?;
            Ok::<_, Error>((cache.get_raw("after").await?, cache.get_raw("k0").await?))
        };
        check(
            "works-again",
            match again.await {
                Ok((Some(after), Some(k0)))
                    if after == entry(9999) && k0 == vec![7u8; 64 * 1024] =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            },
        );
        cache.close().await?;

        let cache = PersistentCache::open(options).await?;
        check("reopen-intact", reopen_intact(&cache, acked).await);
        cache.close().await?;
        Ok(())
    }

    async fn reopen_intact(cache: &PersistentCache, acked: usize) -> Result<(), String> {
        let read =
            |key: String| async move { cache.get_raw(&key).await.map_err(|e| e.to_string()) };
        if read("after".into()).await? != Some(entry(9999)) {
            return Err("`after` lost".to_owned());
        }
        if read("k0".into()).await? != Some(vec![7u8; 64 * 1024]) {
            return Err("k0's new value lost".to_owned());
        }
        // k0 was overwritten; every other acknowledged entry must be intact.
        for i in 1..acked {
            if read(format!("k{i}")).await? != Some(entry(i)) {
                return Err(format!("k{i} lost or wrong"));
            }
        }
        Ok(())
    }

    async fn all_readable(cache: &PersistentCache, acked: usize) -> Result<(), String> {
        for i in 0..acked {
            match cache.get_raw(&format!("k{i}")).await {
                Ok(Some(v)) if v == entry(i) => {}
                other => return Err(format!("k{i}: {:?}", other.map(|v| v.map(|v| v.len())))),
            }
        }
        Ok(())
    }

    fn check(name: &str, outcome: Result<(), impl std::fmt::Display>) {
        match outcome {
            Ok(()) => println!("{name} ok"),
            Err(why) => println!("{name} FAIL {why}"),
        }
    }
}

/// `mixed ID SEED OPS SIZE_LIMIT`: see the module docs. Keys of writer `w` are `w:0` to
/// `w:49`, their values `"w:k:version"`; a version seen for another writer's key must never be
/// older than one seen before (a deleted key may reappear with a newer version).
async fn run_mixed(dir: &str, args: &[String]) -> AnyResult<()> {
    let [id, seed, ops, size_limit] = args else {
        return Err("usage: mixed ID SEED OPS SIZE_LIMIT".into());
    };
    let (id, mut seed, ops): (u64, u64, u64) = (id.parse()?, seed.parse()?, ops.parse()?);
    let cache =
        PersistentCache::open(CacheOptions::new(dir).size_limit(size_limit.parse()?)).await?;
    let mut next = || {
        // SplitMix64: a deterministic sequence for the test (no dependency needed).
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = std::io::stdout().lock();
    let mut version = 0u64;
    let mut seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for _ in 0..ops {
        let roll = next() % 10;
        if roll < 5 {
            let key = format!("{id}:{}", next() % 50);
            version += 1;
            let value = format!("{key}:{version}:{}", "x".repeat((next() % 2000) as usize));
            cache.set_raw(&key, value.as_bytes(), Expiry::Never).await?;
            writeln!(out, "ack {key} {version}")?;
        } else if roll < 6 {
            let key = format!("{id}:{}", next() % 50);
            cache.delete(&key).await?;
            writeln!(out, "ack {key} -1")?;
        } else {
            let writer = next() % 4;
            let key = format!("{writer}:{}", next() % 50);
            if let Some(bytes) = cache.get_raw(&key).await? {
                let text = String::from_utf8(bytes)?;
                let mut parts = text.splitn(4, ':');
                let (w, k, v) = (parts.next(), parts.next(), parts.next());
                if Some(format!("{}:{}", w.unwrap_or(""), k.unwrap_or(""))) != Some(key.clone()) {
                    return Err(format!("{key} holds a value of another key: {text:.40}").into());
                }
                let v: u64 = v.ok_or("no version")?.parse()?;
                let before = seen.insert(key.clone(), v).unwrap_or(0);
                if v < before {
                    return Err(format!("{key} went back from version {before} to {v}").into());
                }
            }
        }
        out.flush()?;
    }
    writeln!(out, "done")?;
    out.flush()?;
    cache.close().await?;
    Ok(())
}
