//! Crash safety: a child process runs a mixed workload on the real host and is killed with
//! SIGKILL at random moments; after each kill every acknowledged write must be there.
//!
//! `PCACHE_CRASH_KILLS=N` sets the number of kills (default 25, the smoke mode `cargo test`
//! runs; the long mode is 1000).

mod common;
#[path = "../src/workload.rs"]
mod workload;

use persistent_cache::{CacheOptions, PersistentCache};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use workload::{key, value, Op, Rng, KEYS, LONG_TTL_MS};

/// What a key may read as after a crash.
#[derive(Clone, Debug, Default)]
struct Allowed {
    /// Values it may hold: the last acknowledged one, plus an unacknowledged one in flight.
    values: HashSet<Vec<u8>>,
    /// It may be missing (deleted, cleared, expired, or, in the evicting series, evicted).
    absent: bool,
    /// A short TTL was set since the last acknowledged write: it may expire at any time.
    may_expire: bool,
}

impl Allowed {
    fn gone() -> Self {
        Allowed {
            values: HashSet::new(),
            absent: true,
            may_expire: false,
        }
    }
}

/// One directory that a series of children crash in, and what it must contain.
struct Series {
    name: &'static str,
    dir: tempfile::TempDir,
    size_limit: u64,
    max_len: usize,
    /// With a small limit entries are evicted (no tombstone), so any key may be missing.
    evicting: bool,
    model: Vec<Allowed>,
    /// Per key, what happened to it (for failure messages).
    history: Vec<Vec<String>>,
    round: usize,
}

impl Series {
    fn new(name: &'static str, size_limit: u64, max_len: usize, evicting: bool) -> Self {
        Series {
            name,
            dir: tempfile::tempdir().unwrap(),
            size_limit,
            max_len,
            evicting,
            model: vec![Allowed::gone(); KEYS],
            history: vec![Vec::new(); KEYS],
            round: 0,
        }
    }

    /// Applies the child's report: acknowledged operations exactly, the one in flight (if
    /// any) as a possibility.
    fn apply(&mut self, seed: u64, lines: &[String]) -> Option<Op> {
        let mut pending: Option<(u64, Op)> = None;
        for line in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["ready"] => {}
                ["B", seq, op @ ..] => {
                    assert!(pending.is_none(), "two operations in flight: {line}");
                    let op = Op::parse(op).unwrap_or_else(|| panic!("bad line {line:?}"));
                    pending = Some((seq.parse().unwrap(), op));
                }
                ["A", seq] => {
                    let (begun, op) = pending.take().expect("ack without begin");
                    assert_eq!(seq.parse::<u64>().unwrap(), begun, "{line}");
                    self.record(seed, begun, op, "acknowledged");
                    self.acknowledge(seed, begun, op);
                }
                _ => panic!("unexpected line from the child: {line:?}"),
            }
        }
        let (seq, op) = pending?;
        self.record(seed, seq, op, "in flight at the kill");
        match op {
            Op::Set { key, len, ttl_ms } => {
                let allowed = &mut self.model[key];
                allowed.values.insert(value(seed, seq, len));
                if ttl_ms.is_some_and(|ms| ms < LONG_TTL_MS) {
                    // It may have landed and expired since.
                    allowed.may_expire = true;
                    allowed.absent = true;
                }
            }
            Op::Delete { key } => self.model[key].absent = true,
            Op::Clear => self.model.iter_mut().for_each(|a| a.absent = true),
        }
        Some(op)
    }

    fn record(&mut self, seed: u64, seq: u64, op: Op, how: &str) {
        let event = |what: String| format!("round {} seq {seq}: {what} {how}", self.round);
        match op {
            Op::Set { key, len, ttl_ms } => {
                let digest = digest(&value(seed, seq, len));
                self.history[key]
                    .push(event(format!("set {len} bytes #{digest:x} ttl {ttl_ms:?}")));
            }
            Op::Delete { key } => self.history[key].push(event("delete".into())),
            Op::Clear => {
                let e = event("clear".into());
                self.history.iter_mut().for_each(|h| h.push(e.clone()));
            }
        }
    }

    fn acknowledge(&mut self, seed: u64, seq: u64, op: Op) {
        match op {
            Op::Set { key, len, ttl_ms } => {
                let short_ttl = ttl_ms.is_some_and(|ms| ms < LONG_TTL_MS);
                self.model[key] = Allowed {
                    values: HashSet::from([value(seed, seq, len)]),
                    absent: self.evicting || short_ttl,
                    may_expire: short_ttl,
                };
            }
            Op::Delete { key } => self.model[key] = Allowed::gone(),
            Op::Clear => self.model.fill(Allowed::gone()),
        }
    }

    /// Opens the directory in this process and checks every key against the model, then
    /// narrows the model to what was read (what recovery kept is now what the log says).
    async fn verify(&mut self, round: usize) {
        let options = CacheOptions::new(self.dir.path()).size_limit(self.size_limit);
        let cache = PersistentCache::open(options).await.unwrap_or_else(|e| {
            panic!(
                "{} round {round}: reopening after the kill failed: {e}",
                self.name
            )
        });
        for (i, allowed) in self.model.iter_mut().enumerate() {
            let got = cache.get_raw(&key(i)).await.unwrap();
            match &got {
                None => assert!(
                    allowed.absent,
                    "{} round {round}: acknowledged key {:?} is missing; its history:\n{}",
                    self.name,
                    key(i),
                    self.history[i].join("\n")
                ),
                Some(v) => assert!(
                    allowed.values.contains(v),
                    "{} round {round}: key {:?} holds {} bytes #{:x} that are not its last \
                     acknowledged (or in-flight) value; its history:\n{}",
                    self.name,
                    key(i),
                    v.len(),
                    digest(v),
                    self.history[i].join("\n")
                ),
            }
            self.history[i].push(format!(
                "round {round}: read {}",
                got.as_ref()
                    .map_or("nothing".into(), |v| format!("#{:x}", digest(v)))
            ));
            if let Some(v) = got {
                // Eviction writes no tombstone, so an evicted key's value may come back:
                // it stays allowed to be absent in the evicting series.
                allowed.values = HashSet::from([v]);
                allowed.absent = self.evicting || allowed.may_expire;
            } else if !self.evicting {
                allowed.values.clear();
            }
        }
        cache.close().await.unwrap();
    }
}

fn spawn(series: &Series, seed: u64, sync: bool) -> Child {
    common::child()
        .arg(series.dir.path())
        .args([
            "workload",
            &seed.to_string(),
            &series.size_limit.to_string(),
        ])
        .arg(if sync { "1" } else { "0" })
        .arg(series.max_len.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the child's stdout on a thread: lines go to the channel as they arrive.
fn read_lines(child: &mut Child) -> (mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (rx, reader)
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut text);
    }
    text
}

#[derive(Default)]
struct Figures {
    kills: usize,
    acknowledged: usize,
    in_flight: usize,
    before_ready: usize,
}

/// Runs one child until it is killed; returns every line it wrote.
fn crash_once(
    series: &Series,
    seed: u64,
    sync: bool,
    rng: &mut Rng,
    figures: &mut Figures,
) -> Vec<String> {
    let mut child = spawn(series, seed, sync);
    let (lines, reader) = read_lines(&mut child);
    let mut seen = Vec::new();
    let early = rng.u64(..10) == 0;
    if early {
        // Kill at a random moment from start-up on: often while opening and recovering.
        std::thread::sleep(Duration::from_micros(rng.u64(..400_000)));
    } else {
        // Kill after a random number of acknowledgements, a random moment into the next write.
        // Fewer with sync: every write then waits for the disk.
        let target = rng.u64(..if sync { 200 } else { 2_000 }) as usize;
        let mut acks = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while acks <= target {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    acks += usize::from(line.starts_with('A'));
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{}: the child stopped reporting (exit {:?}): {}",
                        series.name,
                        child.try_wait().ok().flatten(),
                        stderr_of(&mut child)
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_micros(rng.u64(..2_000)));
    }
    if let Ok(Some(status)) = child.try_wait() {
        panic!(
            "{}: the child exited on its own ({status}): {}",
            series.name,
            stderr_of(&mut child)
        );
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap();
    seen.extend(lines.try_iter());
    if !seen.iter().any(|l| l == "ready") {
        figures.before_ready += 1;
    }
    let stderr = stderr_of(&mut child);
    assert!(
        !stderr.contains("error") && !stderr.contains("panicked"),
        "{}: the child failed: {stderr}",
        series.name
    );
    seen
}

#[test]
fn acknowledged_writes_survive_sigkill_at_random_moments() {
    let kills: usize = std::env::var("PCACHE_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // 256 KiB limit, at most 48 × 2 KiB live: nothing is ever evicted (eviction starts only
    // when live data passes 90% of the limit), but overwrites and deletes fill the log, so
    // segments roll every 32 KiB and compaction runs every few dozen writes. Every
    // acknowledged write must be there.
    let mut compacting = Series::new("compacting", 256 * 1024, 2_000, false);
    // 64 KiB limit with values up to 6 KiB: constant eviction and compaction. A key may be
    // missing, but never hold a value other than its last acknowledged or in-flight one.
    let mut evicting = Series::new("evicting", 64 * 1024, 6_000, true);
    let mut rng = Rng::with_seed(0xC0FF_EE00 ^ kills as u64);
    let mut figures = Figures::default();
    let started = Instant::now();
    for round in 0..kills {
        let series = if round % 3 == 2 {
            &mut evicting
        } else {
            &mut compacting
        };
        let seed = rng.u64(..);
        let sync = round % 5 == 4;
        series.round = round;
        let lines = crash_once(series, seed, sync, &mut rng, &mut figures);
        figures.kills += 1;
        figures.acknowledged += lines.iter().filter(|l| l.starts_with('A')).count();
        if series.apply(seed, &lines).is_some() {
            figures.in_flight += 1;
        }
        runtime.block_on(series.verify(round));
        series.round = round + 1;
    }
    println!(
        "crash test: {} kills ({} during start-up, {} with a write in flight), \
         {} acknowledged writes checked, {:.1} s",
        figures.kills,
        figures.before_ready,
        figures.in_flight,
        figures.acknowledged,
        started.elapsed().as_secs_f64()
    );
    // The runs must have done real work, or the test proves nothing.
    assert!(
        figures.acknowledged > kills * 100,
        "too few writes acknowledged"
    );
    // Segments are only deleted by compaction (or a clear): the first ones must be gone.
    assert!(
        segment_ids(compacting.dir.path()).min() > Some(8),
        "the log was never compacted"
    );
}

/// A short fingerprint of a value, for failure messages.
fn digest(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Ids of the segment files in the cache directory `dir` (they live in its `data/`).
fn segment_ids(dir: &Path) -> impl Iterator<Item = u32> {
    std::fs::read_dir(dir.join(persistent_cache::DATA_DIRECTORY))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".seg")?.parse().ok())
        .collect::<Vec<_>>()
        .into_iter()
}
