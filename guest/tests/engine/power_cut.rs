//! Power cuts at every storage mutation of seeded workloads, judged by an oracle.
//!
//! Each run drives `Engine<SimStorage, ManualTime>` through a seeded workload of about 500
//! operations (set, add, delete, pop, incr, delete_prefix, touch, get, time advances, flush,
//! close + reopen, rarely clear) over a pool of 60 keys and 4 counters, with a small size limit
//! (constant eviction and compaction) or a roomy one (nothing is ever evicted), with and
//! without `sync_writes`. Values encode their key and the step that wrote them, so every value
//! read back names its origin. The simulated disk takes crash images after every single
//! mutating call (2 per point, 8 at the points of one step in ten), each a different seeded
//! choice of what a power cut keeps (see `storage::sim`). Every image is opened with the same
//! options and clock; it must open, every key is read with `get` and judged by the oracle
//! below, and the recovered engine must take a write and a close + reopen. One image in eight
//! is also cut during its own recovery (after every mutation the open makes), and those images
//! are judged the same way.
//!
//! # The oracle
//!
//! After every step the engine's live key set is recorded (`keys`, which changes nothing).
//! C is the last successful flush or close before the step in flight at the cut (the empty
//! cache at the start), A the state before that step and P the state after it (the step
//! completes normally; the image was taken during it). Close + reopen is two steps: the close,
//! then the open.
//!
//! - Never a wrong value. Without `sync_writes`: a key read after the cut holds either its last
//!   value written before C (only if it was not deleted, popped, deleted by prefix or cleared
//!   after that write and before C) or a value written at or after C (the step in flight
//!   included). With `sync_writes`: its latest value before the step in flight (only if not
//!   deleted since) or the value the step in flight wrote.
//! - No lost entries. Without `sync_writes`: a key must be present if it was live at C and in
//!   every recorded state since (P included) and neither its expiry as of C nor one a write or
//!   touch set after C (the cut may leave that entry) has passed at the time of the cut. With
//!   `sync_writes`: a key must be present if it was live in A and in P.
//!
//! Eviction: an evicted key may come back with an allowed value (eviction writes no tombstone,
//! so the log may still hold it; a reopen whose snapshot did not fit replays it). A key that
//! came back that way (absent from a recorded state since its last write) is never required:
//! a power cut may restore its eviction. A cut in the middle of a write that evicts can leave
//! the image over the size limit (the record landed, the eviction had not): open then evicts,
//! by the recency it knows, which may pick other entries than the live engine did. So an image
//! may miss as many required keys as its open evicted (`stats().evicted` right after open, plus
//! what the interrupted open of the image it was cut from had evicted); those are counted
//! apart, not as lost. Under the roomy limit nothing is ever evicted (asserted), so there the
//! presence check is exact.
//!
//! An image that fails to open, or a recovered engine that fails a read, a write or a close +
//! reopen, counts as unusable. The test counts cuts and violations, prints the figures, and
//! fails with the first violation of each kind (run, step, mutation, image seed, key, allowed
//! values, got).
//!
//! `PCACHE_POWER_CUTS=N` runs seeds until N cuts in all (default 8 000, half per test);
//! `PCACHE_POWER_CUT_SEED=S` starts at seed S (`PCACHE_POWER_CUTS=1` then runs just that one).

use crate::common::{Rng, T0};
use persistent_cache_guest::format::parse_segment_file_name;
use persistent_cache_guest::storage::sim::{Captured, SimStorage};
use persistent_cache_guest::{counter, Engine, EngineOptions, ManualTime, TimeSource};
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::time::Instant;

/// Ordinary keys: six prefix groups of ten ("a/0" .. "f/9").
const POOL: usize = 60;
/// Counter keys ("n/0" .. "n/3"), written only by `incr`.
const COUNTERS: usize = 4;
/// Every key the workload uses (pool first, then counters); a set of keys is a bit mask.
const KEYS: usize = POOL + COUNTERS;
/// Operations per run (a close + reopen is two steps).
const OPS: usize = 500;
/// The size limit of even seeds: constant eviction and compaction.
const SMALL_LIMIT: u64 = 48 << 10;
/// The size limit of odd seeds: a run writes more than this, so compaction runs, but live data
/// stays far below it, so nothing is ever evicted (asserted).
const ROOMY_LIMIT: u64 = 128 << 10;
/// Cuts both tests make together unless `PCACHE_POWER_CUTS` says otherwise (enough for two
/// seeds each, so both size limits).
const DEFAULT_CUTS: u64 = 8_000;

/// The engine under test.
type SimEngine = Engine<SimStorage, ManualTime>;

#[test]
fn power_cuts_without_sync_writes() {
    power_cuts(false);
}

#[test]
fn power_cuts_with_sync_writes() {
    power_cuts(true);
}

/// Runs seeds until this test's share of the cuts is done, then reports and asserts.
fn power_cuts(sync: bool) {
    let target = env_u64("PCACHE_POWER_CUTS")
        .unwrap_or(DEFAULT_CUTS)
        .div_ceil(2);
    let first_seed = env_u64("PCACHE_POWER_CUT_SEED").unwrap_or(0);
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut seed = first_seed;
    while tally.cuts < target {
        Run::new(seed, sync).execute(&mut tally);
        seed += 1;
    }
    let summary = format!(
        "power cuts, sync_writes {sync}: seeds {first_seed}..{seed}, {} steps, {} cuts in {:.1} s: \
         {} wrong values, {} lost entries, {} unusable images ({} evictions under the roomy limit, \
         {} required keys evicted by a recovery over the limit)",
        tally.steps,
        tally.cuts,
        started.elapsed().as_secs_f64(),
        tally.wrong,
        tally.lost,
        tally.unusable,
        tally.roomy_evictions,
        tally.evicted_at_open,
    );
    println!("{summary}");
    let firsts: Vec<String> = tally.first.values().cloned().collect();
    assert!(firsts.is_empty(), "{summary}\n{}", firsts.join("\n"));
    assert_eq!(tally.roomy_evictions, 0, "the roomy limit must never evict");
}

/// The value of environment variable `name`, if set.
fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// The name of key number `k`.
fn key_name(k: usize) -> String {
    if k < POOL {
        format!("{}/{}", (b'a' + (k / 10) as u8) as char, k % 10)
    } else {
        format!("n/{}", k - POOL)
    }
}

/// A self-identifying value for `key` written at `step`: "key@step:" padded to `len` bytes.
fn value_for(key: &str, step: usize, len: usize) -> Vec<u8> {
    let mut value = format!("{key}@{step}:").into_bytes();
    let header = value.len();
    value.extend((header..len).map(|i| b'a' + ((i + step) % 26) as u8));
    value
}

/// A short description of a value: its "key@step" header and length, or the counter's number.
fn describe(value: &[u8]) -> String {
    if let Some(n) = counter::decode(value) {
        return format!("counter {n}");
    }
    let header = value.iter().position(|b| *b == b':').unwrap_or(value.len());
    format!(
        "{} ({} B)",
        String::from_utf8_lossy(&value[..header.min(16)]),
        value.len()
    )
}

/// When an entry written at `now` with `ttl_ms` expires (0 = never), as the engine computes it.
fn expires_at(now: u64, ttl_ms: Option<u64>) -> u64 {
    ttl_ms.map_or(0, |ms| (now + ms).max(1))
}

/// One step of a workload.
#[derive(Clone, Debug)]
enum Op {
    Open,
    Set {
        k: usize,
        len: usize,
        ttl: Option<u64>,
    },
    Add {
        k: usize,
        len: usize,
        ttl: Option<u64>,
    },
    Delete(usize),
    Pop(usize),
    Incr {
        k: usize,
        delta: i64,
        ttl: Option<u64>,
    },
    DeletePrefix(char),
    Touch {
        k: usize,
        ttl: Option<u64>,
    },
    Get(usize),
    Advance(u64),
    Flush,
    Close,
    Clear,
    /// Background maintenance: this many steps (compaction ahead of the limit in steps of
    /// 1 KiB here, checkpoints). With `sync`, a step that waits for the log to be durable
    /// gets it as from the host (every segment file synced, then the directory); without,
    /// it is told only the last position synced before, which a deferred deletion or
    /// checkpoint must not take for more.
    Maintain {
        steps: u32,
        sync: bool,
    },
}

impl Op {
    /// True for the steps after which everything written so far must survive (C).
    fn is_durability_point(&self) -> bool {
        matches!(self, Op::Flush | Op::Close)
    }
}

/// What the workload wrote and what the engine held, as the oracle needs it.
struct Oracle {
    sync: bool,
    /// Per key: the value it holds unless a crash intervenes (`None` once deleted).
    latest: Vec<Option<Rc<[u8]>>>,
    /// Per key: `latest` before the step in flight.
    before_step: Vec<Option<Rc<[u8]>>>,
    /// The key the step in flight wrote, and the value.
    written_in_step: Option<(usize, Rc<[u8]>)>,
    /// Per key: its value at C (unless deleted before C), then every value written since.
    since_c: Vec<Vec<Rc<[u8]>>>,
    /// Per key: when its entry expires (0 = never), as far as the last write or touch said.
    expiry: Vec<u64>,
    /// `expiry` at C.
    expiry_at_c: Vec<u64>,
    /// Per key: the soonest expiry (0 = none) a write or touch set at or after C. A cut may
    /// leave the key with that entry (its later writes lost), and it may have expired since.
    soonest_expiry_since_c: Vec<u64>,
    /// Live keys before the step in flight (A).
    live_before: u64,
    /// Live keys after the step in flight (P).
    live_after: u64,
    /// Keys live at C and in every recorded state since.
    live_since_c: u64,
    /// Keys absent from some recorded state since their last write: one that is live again
    /// came back by replay after an eviction, and a power cut may restore the eviction.
    absent_since_write: u64,
}

impl Oracle {
    /// The oracle of an empty cache.
    fn new(sync: bool) -> Self {
        Self {
            sync,
            latest: vec![None; KEYS],
            before_step: vec![None; KEYS],
            written_in_step: None,
            since_c: vec![Vec::new(); KEYS],
            expiry: vec![0; KEYS],
            expiry_at_c: vec![0; KEYS],
            soonest_expiry_since_c: vec![0; KEYS],
            live_before: 0,
            live_after: 0,
            live_since_c: 0,
            absent_since_write: 0,
        }
    }

    /// A step starts: what holds now is A.
    fn begin_step(&mut self) {
        self.before_step.clone_from(&self.latest);
        self.written_in_step = None;
        self.live_before = self.live_after;
    }

    /// The step in flight wrote `value` under key `k`, expiring at `expiry`.
    fn wrote(&mut self, k: usize, value: Vec<u8>, expiry: u64) {
        let value: Rc<[u8]> = value.into();
        self.latest[k] = Some(Rc::clone(&value));
        self.since_c[k].push(Rc::clone(&value));
        self.written_in_step = Some((k, value));
        self.set_expiry(k, expiry);
        self.absent_since_write &= !(1 << k);
    }

    /// A write or touch of the step in flight made key `k`'s entry expire at `expiry`.
    fn set_expiry(&mut self, k: usize, expiry: u64) {
        self.expiry[k] = expiry;
        let soonest = &mut self.soonest_expiry_since_c[k];
        if expiry != 0 && (*soonest == 0 || expiry < *soonest) {
            *soonest = expiry;
        }
    }

    /// The step in flight deleted key `k`.
    fn deleted(&mut self, k: usize) {
        self.latest[k] = None;
    }

    /// The step in flight ended with `live` as the live key set (P).
    fn end_step(&mut self, live: u64) {
        self.live_after = live;
        self.live_since_c &= live;
        self.absent_since_write |= !live;
    }

    /// The step just ended was a successful flush or close: it is C from now on.
    fn durability_point(&mut self) {
        self.live_since_c = self.live_after;
        self.expiry_at_c.clone_from(&self.expiry);
        self.soonest_expiry_since_c.fill(0);
        for (since, latest) in self.since_c.iter_mut().zip(&self.latest) {
            *since = latest.iter().cloned().collect();
        }
    }

    /// The values key `k` may hold after a cut during the step just ended.
    fn allowed(&self, k: usize) -> Vec<&[u8]> {
        if !self.sync {
            return self.since_c[k].iter().map(|v| &v[..]).collect();
        }
        let in_step = self.written_in_step.iter().filter(|(key, _)| *key == k);
        self.before_step[k]
            .iter()
            .chain(in_step.map(|(_, v)| v))
            .map(|v| &v[..])
            .collect()
    }

    /// The keys that must be present after a cut at time `now` during the step just ended.
    fn required(&self, now: u64) -> u64 {
        if self.sync {
            return self.live_before & self.live_after & !self.absent_since_write;
        }
        let unexpired = |e: u64| e == 0 || now < e;
        let unexpired = (0..KEYS)
            .filter(|&k| {
                unexpired(self.expiry_at_c[k]) && unexpired(self.soonest_expiry_since_c[k])
            })
            .fold(0, |mask, k| mask | 1 << k);
        self.live_since_c & unexpired & !self.absent_since_write
    }

    /// What is wrong with key `k` reading `got` after a cut at `now`, if anything.
    fn judge(&self, k: usize, got: Option<&[u8]>, now: u64) -> Option<(Kind, String)> {
        let allowed = self.allowed(k);
        let listed = || {
            let list: Vec<String> = allowed.iter().map(|v| describe(v)).collect();
            format!("{{{}}}", list.join(", "))
        };
        match got {
            Some(value) if !allowed.contains(&value) => Some((
                Kind::Wrong,
                format!("got {}, allowed {}", describe(value), listed()),
            )),
            None if self.required(now) & 1 << k != 0 => Some((
                Kind::Lost,
                format!("got nothing, must be present: one of {}", listed()),
            )),
            _ => None,
        }
    }
}

/// A kind of violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Wrong,
    Lost,
    Unusable,
}

/// What the cuts found.
#[derive(Default)]
struct Tally {
    steps: u64,
    cuts: u64,
    wrong: u64,
    lost: u64,
    unusable: u64,
    roomy_evictions: u64,
    /// Required keys missing from an image because its open (or the recovery it interrupted)
    /// evicted them (see the oracle).
    evicted_at_open: u64,
    /// The first violation of each kind, described in full.
    first: BTreeMap<Kind, String>,
}

impl Tally {
    /// Counts a violation of `kind`, keeping the description of the first one.
    fn record(&mut self, kind: Kind, describe: impl FnOnce() -> String) {
        match kind {
            Kind::Wrong => self.wrong += 1,
            Kind::Lost => self.lost += 1,
            Kind::Unusable => self.unusable += 1,
        }
        self.first
            .entry(kind)
            .or_insert_with(|| format!("first {kind:?}: {}", describe()));
    }
}

/// Where an image was cut: enough to find it again.
struct Cut<'a> {
    run: &'a str,
    step: usize,
    op: &'a Op,
    mutation: u64,
    image_seed: u64,
    /// The cut during the recovery of this image, if it is one: (mutation, image seed).
    in_recovery: Option<(u64, u64)>,
}

impl fmt::Display for Cut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, step {} ({:?}), mutation {}, image seed {:#x}",
            self.run, self.step, self.op, self.mutation, self.image_seed
        )?;
        if let Some((mutation, seed)) = self.in_recovery {
            write!(
                f,
                ", cut again during its recovery at mutation {mutation}, seed {seed:#x}"
            )?;
        }
        Ok(())
    }
}

/// One seeded workload and the engine it drives.
struct Run {
    name: String,
    seed: u64,
    options: EngineOptions,
    clock: ManualTime,
    disk: SimStorage,
    engine: Option<SimEngine>,
    rng: Rng,
    oracle: Oracle,
    step: usize,
    keys: Vec<String>,
    /// Entries the engine evicted (summed at every close).
    evicted: u64,
    /// The last log position this open's segments were synced through from outside (0: none).
    synced_through: u64,
}

impl Run {
    /// The run of `seed`: small limit for even seeds, roomy for odd ones.
    fn new(seed: u64, sync: bool) -> Self {
        let size_limit = if seed.is_multiple_of(2) {
            SMALL_LIMIT
        } else {
            ROOMY_LIMIT
        };
        Self {
            name: format!(
                "seed {seed} (sync_writes {sync}, limit {} KiB)",
                size_limit >> 10
            ),
            seed,
            options: EngineOptions {
                size_limit,
                sync_writes: sync,
                ..EngineOptions::default()
            },
            clock: ManualTime::at(T0),
            disk: SimStorage::new(),
            engine: None,
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            oracle: Oracle::new(sync),
            synced_through: 0,
            step: 0,
            keys: (0..KEYS).map(key_name).collect(),
            evicted: 0,
        }
    }

    /// Runs the whole workload, judging every crash image on the way.
    fn execute(mut self, tally: &mut Tally) {
        self.step(Op::Open, tally);
        for _ in 0..OPS {
            match self.next_op() {
                None => {
                    self.step(Op::Close, tally);
                    self.step(Op::Open, tally);
                }
                Some(op) => self.step(op, tally),
            }
        }
        self.step(Op::Close, tally);
        if self.options.size_limit == ROOMY_LIMIT {
            tally.roomy_evictions += self.evicted;
        }
    }

    /// A random operation; `None` for a close + reopen.
    fn next_op(&mut self) -> Option<Op> {
        let rng = &mut self.rng;
        let key = |rng: &mut Rng| rng.below(KEYS as u64) as usize;
        let pool_key = |rng: &mut Rng| rng.below(POOL as u64) as usize;
        let ttl =
            |rng: &mut Rng, one_in: u64| (rng.below(one_in) == 0).then(|| 1 + rng.below(20_000));
        let len = |rng: &mut Rng| rng.below(2048) as usize;
        Some(match rng.below(1000) {
            0..280 => Op::Set {
                k: pool_key(rng),
                len: len(rng),
                ttl: ttl(rng, 4),
            },
            280..330 => Op::Add {
                k: pool_key(rng),
                len: len(rng),
                ttl: ttl(rng, 4),
            },
            330..390 => Op::Delete(key(rng)),
            390..430 => Op::Pop(key(rng)),
            430..500 => Op::Incr {
                k: POOL + rng.below(COUNTERS as u64) as usize,
                delta: rng.below(21) as i64 - 10,
                ttl: ttl(rng, 5),
            },
            500..520 => Op::DeletePrefix((b'a' + rng.below(6) as u8) as char),
            520..590 => Op::Touch {
                k: key(rng),
                ttl: ttl(rng, 2),
            },
            590..650 => Op::Advance(1 + rng.below(5_000)),
            650..690 => Op::Flush,
            690..720 => return None,
            720..723 => Op::Clear,
            723..800 => Op::Maintain {
                steps: 1 + rng.below(4) as u32,
                sync: rng.below(3) > 0,
            },
            _ => Op::Get(key(rng)),
        })
    }

    /// Performs one step, records it in the oracle, and judges the images taken during it.
    fn step(&mut self, op: Op, tally: &mut Tally) {
        let images = if self.rng.below(10) == 0 { 8 } else { 2 };
        self.disk.capture_every(1, images, self.seed);
        self.oracle.begin_step();
        self.apply(&op);
        let live = self.live_keys();
        self.oracle.end_step(live);
        for image in self.disk.take_captured() {
            let cut = Cut {
                run: &self.name,
                step: self.step,
                op: &op,
                mutation: image.mutation,
                image_seed: image.seed,
                in_recovery: None,
            };
            self.judge_image(image, &cut, 0, tally);
        }
        if op.is_durability_point() {
            self.oracle.durability_point();
        }
        tally.steps += 1;
        self.step += 1;
    }

    /// Performs `op` on the engine and tells the oracle what it wrote and deleted.
    fn apply(&mut self, op: &Op) {
        let now = self.clock.now_ms();
        let step = self.step;
        let must = |what: &str, e: persistent_cache_guest::Error| -> ! {
            panic!(
                "seed {}, step {step} ({op:?}): {what} failed: {e}",
                self.seed
            )
        };
        if let Op::Open = op {
            let opened = Engine::open(self.disk.clone(), self.clock.clone(), self.options);
            let mut engine = opened.unwrap_or_else(|e| must("open", e));
            // Small steps, so that compactions span several `Maintain` steps and writes.
            engine.set_compaction_step(1024);
            // And checkpoints every few KiB.
            engine.set_checkpoint_interval(4096);
            self.engine = Some(engine);
            self.synced_through = 0;
            return;
        }
        let mut engine = self.engine.take().expect("an open engine");
        let key = |k: usize| self.keys[k].as_str();
        let oracle = &mut self.oracle;
        match *op {
            Op::Open => unreachable!("handled above"),
            Op::Close => {
                self.evicted += engine.stats().evicted;
                return engine.close().unwrap_or_else(|e| must("close", e));
            }
            Op::Set { k, len, ttl } => {
                let value = value_for(key(k), step, len);
                engine
                    .set(key(k), &value, ttl)
                    .unwrap_or_else(|e| must("set", e));
                oracle.wrote(k, value, expires_at(now, ttl));
            }
            Op::Add { k, len, ttl } => {
                let value = value_for(key(k), step, len);
                if engine
                    .add(key(k), &value, ttl)
                    .unwrap_or_else(|e| must("add", e))
                {
                    oracle.wrote(k, value, expires_at(now, ttl));
                }
            }
            Op::Delete(k) => {
                engine.delete(key(k)).unwrap_or_else(|e| must("delete", e));
                oracle.deleted(k);
            }
            Op::Pop(k) => {
                engine.pop(key(k)).unwrap_or_else(|e| must("pop", e));
                oracle.deleted(k);
            }
            Op::Incr { k, delta, ttl } => {
                let n = engine
                    .incr(key(k), delta, 0, ttl)
                    .unwrap_or_else(|e| must("incr", e));
                // An existing counter keeps its expiry; a new one gets `ttl`.
                let expiry = if oracle.live_before & 1 << k != 0 {
                    oracle.expiry[k]
                } else {
                    expires_at(now, ttl)
                };
                oracle.wrote(k, counter::encode(n), expiry);
            }
            Op::DeletePrefix(group) => {
                let prefix = format!("{group}/");
                engine
                    .delete_prefix(&prefix)
                    .unwrap_or_else(|e| must("delete_prefix", e));
                (0..KEYS)
                    .filter(|&k| key(k).starts_with(&prefix))
                    .for_each(|k| oracle.deleted(k));
            }
            Op::Touch { k, ttl } => {
                if engine
                    .touch(key(k), ttl)
                    .unwrap_or_else(|e| must("touch", e))
                {
                    oracle.set_expiry(k, expires_at(now, ttl));
                }
            }
            Op::Get(k) => {
                engine.get(key(k)).unwrap_or_else(|e| must("get", e));
            }
            Op::Advance(ms) => self.clock.advance(ms),
            Op::Flush => engine.flush().unwrap_or_else(|e| must("flush", e)),
            Op::Maintain { steps, sync } => {
                for _ in 0..steps {
                    let left = engine.maintenance();
                    if !left.pending {
                        break;
                    }
                    if let (Some(position), true) = (left.sync_through, sync) {
                        self.disk
                            .sync_files_then_dir(|name| parse_segment_file_name(name).is_some());
                        self.synced_through = position;
                    }
                    engine
                        .maintain(self.synced_through)
                        .unwrap_or_else(|e| must("maintain", e));
                }
            }
            Op::Clear => {
                engine.clear().unwrap_or_else(|e| must("clear", e));
                (0..KEYS).for_each(|k| oracle.deleted(k));
            }
        }
        self.engine = Some(engine);
    }

    /// The live keys of the engine now, as a mask (the last ones recorded while it is closed).
    fn live_keys(&mut self) -> u64 {
        let Some(engine) = self.engine.as_mut() else {
            return self.oracle.live_after;
        };
        engine
            .keys("", None, usize::MAX)
            .iter()
            .map(|name| {
                self.keys
                    .iter()
                    .position(|k| k == name)
                    .expect("a pool key")
            })
            .fold(0, |mask, k| mask | 1 << k)
    }

    /// Opens a crash image and judges it; one image in eight is also cut during its
    /// recovery, and those images are judged next.
    /// `evicted_before`: entries an interrupted open of the image this one was cut from had
    /// evicted (its compaction may have made that durable).
    fn judge_image(&self, image: Captured, cut: &Cut, evicted_before: u64, tally: &mut Tally) {
        tally.cuts += 1;
        let recut = cut.in_recovery.is_none() && image.seed.is_multiple_of(8);
        if recut {
            image.disk.capture_every(1, 1, image.seed);
        }
        let opened = Engine::open(image.disk.clone(), self.clock.clone(), self.options);
        image.disk.capture_every(0, 0, 0);
        let recovery_images = image.disk.take_captured();
        let evicted_here = opened.as_ref().map_or(0, |e| e.stats().evicted);
        match opened {
            Ok(engine) => self.judge_recovered(engine, image.disk, cut, evicted_before, tally),
            Err(e) => tally.record(Kind::Unusable, || format!("{cut}: open failed: {e}")),
        }
        for inner in recovery_images {
            let inner_cut = Cut {
                in_recovery: Some((inner.mutation, inner.seed)),
                ..*cut
            };
            self.judge_image(inner, &inner_cut, evicted_before + evicted_here, tally);
        }
    }

    /// Judges every key a recovered engine holds (as many missing keys as it and the recovery
    /// it interrupted evicted are excused), then checks that it takes a write.
    fn judge_recovered(
        &self,
        mut engine: SimEngine,
        disk: SimStorage,
        cut: &Cut,
        evicted_before: u64,
        tally: &mut Tally,
    ) {
        let now = self.clock.now_ms();
        let evicted = evicted_before + engine.stats().evicted;
        let mut excused = evicted;
        for (k, name) in self.keys.iter().enumerate() {
            match engine.get(name) {
                Ok(got) => match self.oracle.judge(k, got.as_deref(), now) {
                    Some((Kind::Lost, _)) if excused > 0 => {
                        excused -= 1;
                        tally.evicted_at_open += 1;
                    }
                    Some((kind, what)) => tally.record(kind, || {
                        format!("{cut}: key {name}: {what} (recovery evicted {evicted})")
                    }),
                    None => {}
                },
                Err(e) => {
                    return tally.record(Kind::Unusable, || format!("{cut}: get {name}: {e}"))
                }
            }
        }
        if let Err(e) = self.takes_writes(engine, disk) {
            tally.record(Kind::Unusable, || format!("{cut}: after recovery, {e}"));
        }
    }

    /// Checks that a recovered engine takes a write that survives a close + reopen.
    fn takes_writes(&self, mut engine: SimEngine, disk: SimStorage) -> Result<(), String> {
        const PROBE: &[u8] = b"written after the cut";
        engine
            .set("probe", PROBE, None)
            .map_err(|e| format!("set failed: {e}"))?;
        engine.close().map_err(|e| format!("close failed: {e}"))?;
        let mut engine = Engine::open(disk, self.clock.clone(), self.options)
            .map_err(|e| format!("reopen failed: {e}"))?;
        match engine.get("probe") {
            Ok(Some(value)) if value == PROBE => Ok(()),
            other => Err(format!("the probe reads {other:?} after close + reopen")),
        }
    }
}
