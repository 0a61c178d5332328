//! Model-based property test: random sequences of `wasi:keyvalue` calls (store, atomics, CAS,
//! batch; two buckets, a few keys) run by the real probe plugin (`probe script`) on a real
//! plugin cache, every result compared with an in-test model. A `Restart` op ends the plugin
//! run, so the plugin's cache is closed and recovered from its directory before the rest.
//!
//! `PROPTEST_CASES` raises the number of cases (default [`DEFAULT_CASES`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use persistent_cache::{CacheOptions, PersistentCache, Plugin, PluginOptions};
use persistent_cache_tests::PROBE_PLUGIN;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const DEFAULT_CASES: u32 = 24;

/// The keys every case uses (`a/b` checks that a `/` in a key stays inside its bucket).
const KEYS: [&str; 5] = ["k0", "k1", "k2", "a/b", "zz"];
/// Buckets per case.
const BUCKETS: usize = 2;
/// CAS slots per case.
const SLOTS: u8 = 3;

#[derive(Clone, Debug)]
enum Op {
    Get(usize, usize),
    Set(usize, usize, Vec<u8>),
    Delete(usize, usize),
    Exists(usize, usize),
    List(usize),
    Incr(usize, usize, i64),
    CasNew(usize, usize, u8),
    CasCurrent(u8),
    CasSwap(u8, Vec<u8>),
    CasDrop(u8),
    GetMany(usize, Vec<usize>),
    SetMany(usize, Vec<(usize, Vec<u8>)>),
    DeleteMany(usize, Vec<usize>),
    /// Ends this plugin run; the next op starts a new one (its cache reopened, no CAS handles).
    Restart,
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..6),
        (-20i64..20).prop_map(|n| n.to_string().into_bytes()),
        Just(i64::MAX.to_string().into_bytes()),
        Just(b"+3".to_vec()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let bucket = 0..BUCKETS;
    let key = 0..KEYS.len();
    let slot = 0..SLOTS;
    let delta = prop_oneof![-10i64..10, Just(i64::MAX), Just(i64::MIN)];
    let keys = prop::collection::vec(key.clone(), 0..5);
    prop_oneof![
        3 => (bucket.clone(), key.clone()).prop_map(|(b, k)| Op::Get(b, k)),
        4 => (bucket.clone(), key.clone(), value()).prop_map(|(b, k, v)| Op::Set(b, k, v)),
        2 => (bucket.clone(), key.clone()).prop_map(|(b, k)| Op::Delete(b, k)),
        1 => (bucket.clone(), key.clone()).prop_map(|(b, k)| Op::Exists(b, k)),
        1 => bucket.clone().prop_map(Op::List),
        3 => (bucket.clone(), key.clone(), delta).prop_map(|(b, k, d)| Op::Incr(b, k, d)),
        2 => (bucket.clone(), key.clone(), slot.clone()).prop_map(|(b, k, s)| Op::CasNew(b, k, s)),
        1 => slot.clone().prop_map(Op::CasCurrent),
        2 => (slot.clone(), value()).prop_map(|(s, v)| Op::CasSwap(s, v)),
        1 => slot.prop_map(Op::CasDrop),
        2 => (bucket.clone(), keys.clone()).prop_map(|(b, ks)| Op::GetMany(b, ks)),
        2 => (bucket.clone(), prop::collection::vec((key, value()), 0..4))
            .prop_map(|(b, kvs)| Op::SetMany(b, kvs)),
        1 => (bucket, keys).prop_map(|(b, ks)| Op::DeleteMany(b, ks)),
        1 => Just(Op::Restart),
    ]
}

fn hex(bytes: &[u8]) -> String {
    let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("x{digits}")
}

fn maybe(value: Option<&Vec<u8>>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| format!("some:{}", hex(v)))
}

impl Op {
    /// The op as a `probe script` line, with this case's bucket names.
    fn line(&self, buckets: &[String]) -> String {
        let keys = |ks: &[usize]| {
            ks.iter()
                .map(|&k| format!(" {}", KEYS[k]))
                .collect::<String>()
        };
        match self {
            Op::Get(b, k) => format!("get {} {}", buckets[*b], KEYS[*k]),
            Op::Set(b, k, v) => format!("set {} {} {}", buckets[*b], KEYS[*k], hex(v)),
            Op::Delete(b, k) => format!("delete {} {}", buckets[*b], KEYS[*k]),
            Op::Exists(b, k) => format!("exists {} {}", buckets[*b], KEYS[*k]),
            Op::List(b) => format!("list {}", buckets[*b]),
            Op::Incr(b, k, d) => format!("incr {} {} {d}", buckets[*b], KEYS[*k]),
            Op::CasNew(b, k, s) => format!("cas-new {} {} s{s}", buckets[*b], KEYS[*k]),
            Op::CasCurrent(s) => format!("cas-current s{s}"),
            Op::CasSwap(s, v) => format!("cas-swap s{s} {}", hex(v)),
            Op::CasDrop(s) => format!("cas-drop s{s}"),
            Op::GetMany(b, ks) => format!("get-many {}{}", buckets[*b], keys(ks)),
            Op::SetMany(b, kvs) => {
                let pairs: String = kvs
                    .iter()
                    .map(|(k, v)| format!(" {}={}", KEYS[*k], hex(v)))
                    .collect();
                format!("set-many {}{pairs}", buckets[*b])
            }
            Op::DeleteMany(b, ks) => format!("delete-many {}{}", buckets[*b], keys(ks)),
            Op::Restart => unreachable!("a restart is not a script line"),
        }
    }
}

/// What the plugin's buckets and CAS handles should hold.
#[derive(Default)]
struct Model {
    buckets: [BTreeMap<String, Vec<u8>>; BUCKETS],
    /// Slot → (bucket, key, the value the handle saw when it was made).
    slots: HashMap<u8, (usize, usize, Option<Vec<u8>>)>,
    /// Redis serves the buckets: `increment` is `INCRBY`, which takes only the canonical decimal
    /// form (no `+`, no leading zeros), where the local store takes what `i64::from_str` does.
    redis: bool,
}

impl Model {
    fn current(&self, b: usize, k: usize) -> Option<Vec<u8>> {
        self.buckets[b].get(KEYS[k]).cloned()
    }

    fn set(&mut self, b: usize, k: usize, v: &[u8]) {
        self.buckets[b].insert(KEYS[k].to_owned(), v.to_vec());
    }

    /// The result line `op` should print (errors as plain `err`).
    fn apply(&mut self, op: &Op) -> String {
        match op {
            Op::Get(b, k) => maybe(self.buckets[*b].get(KEYS[*k])),
            Op::Set(b, k, v) => {
                self.set(*b, *k, v);
                "ok".into()
            }
            Op::Delete(b, k) => {
                self.buckets[*b].remove(KEYS[*k]);
                "ok".into()
            }
            Op::Exists(b, k) => self.buckets[*b].contains_key(KEYS[*k]).to_string(),
            Op::List(b) => {
                let keys: Vec<&str> = self.buckets[*b].keys().map(String::as_str).collect();
                format!("keys:{}", keys.join(","))
            }
            Op::Incr(b, k, d) => {
                // Counters are decimal text; an absent key counts from 0.
                let base = match self.buckets[*b].get(KEYS[*k]) {
                    None => Some(0),
                    Some(bytes) => std::str::from_utf8(bytes).ok().and_then(|t| {
                        t.parse::<i64>()
                            .ok()
                            .filter(|n| !self.redis || n.to_string() == t)
                    }),
                };
                match base.and_then(|n| n.checked_add(*d)) {
                    Some(n) => {
                        self.set(*b, *k, n.to_string().as_bytes());
                        format!("n:{n}")
                    }
                    None => "err".into(),
                }
            }
            Op::CasNew(b, k, s) => {
                let seen = self.current(*b, *k);
                self.slots.insert(*s, (*b, *k, seen));
                "ok".into()
            }
            Op::CasCurrent(s) => match self.slots.get(s) {
                Some((_, _, seen)) => maybe(seen.as_ref()),
                None => "noslot".into(),
            },
            Op::CasSwap(s, v) => match self.slots.remove(s) {
                // Succeeds iff the value is what the handle saw; else a fresh handle.
                Some((b, k, seen)) if self.current(b, k) == seen => {
                    self.set(b, k, v);
                    "ok".into()
                }
                Some((b, k, _)) => {
                    let now = self.current(b, k);
                    self.slots.insert(*s, (b, k, now));
                    "failed".into()
                }
                None => "noslot".into(),
            },
            Op::CasDrop(s) => {
                self.slots.remove(s);
                "ok".into()
            }
            Op::GetMany(b, ks) => {
                let got: Vec<String> = ks
                    .iter()
                    .map(|k| maybe(self.buckets[*b].get(KEYS[*k])))
                    .collect();
                format!("many:{}", got.join(","))
            }
            Op::SetMany(b, kvs) => {
                for (k, v) in kvs {
                    self.set(*b, *k, v);
                }
                "ok".into()
            }
            Op::DeleteMany(b, ks) => {
                for k in ks {
                    self.buckets[*b].remove(KEYS[*k]);
                }
                "ok".into()
            }
            Op::Restart => {
                self.slots.clear();
                String::new()
            }
        }
    }
}

/// Runs `ops` against the plugin (one plugin run per stretch between restarts) and the model.
async fn check(
    cache: &PersistentCache,
    plugin: &Plugin,
    redis: Option<&str>,
    case: usize,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let buckets: Vec<String> = (0..BUCKETS).map(|b| format!("case{case}b{b}")).collect();
    let mut model = Model {
        redis: redis.is_some(),
        ..Model::default()
    };
    let mut done = 0;
    for run in ops.split(|op| matches!(op, Op::Restart)) {
        let script: String = run.iter().map(|op| op.line(&buckets) + "\n").collect();
        let mut options = PluginOptions::new().args(["script"]).stdin(script);
        if let Some(url) = redis {
            options = options.keyvalue_redis(url);
        }
        let exit = cache
            .run_plugin(plugin, options)
            .await
            .map_err(|err| TestCaseError::fail(format!("the plugin failed: {err}")))?;
        let stdout = String::from_utf8_lossy(&exit.stdout).into_owned();
        prop_assert!(exit.success(), "{exit:?}");
        let lines: Vec<&str> = stdout.lines().collect();
        prop_assert_eq!(lines.len(), run.len(), "one line per op:\n{}", stdout);
        for (op, actual) in run.iter().zip(lines) {
            let expected = model.apply(op);
            // On Redis, list-keys pages come in SCAN order (each page sorted): compare sets.
            let sorted;
            let seen = if actual.starts_with("err:") {
                "err"
            } else if let (true, Some(keys)) = (redis.is_some(), actual.strip_prefix("keys:")) {
                let mut keys: Vec<&str> = keys.split(',').filter(|k| !k.is_empty()).collect();
                keys.sort_unstable();
                sorted = format!("keys:{}", keys.join(","));
                &sorted
            } else {
                actual
            };
            prop_assert_eq!(
                seen,
                expected.as_str(),
                "op {} ({:?}) printed {:?}",
                done,
                op,
                actual
            );
            done += 1;
        }
        model.apply(&Op::Restart);
        done += 1;
    }
    Ok(())
}

#[test]
fn keyvalue_calls_match_the_model() {
    run_model(None);
}

/// The same sequences with the buckets in Redis (`PluginOptions::keyvalue_redis`): the same
/// plugin binary sees the same behaviour.
#[test]
fn keyvalue_calls_on_redis_match_the_model() {
    let Some(server) =
        persistent_cache_tests::redis_server::RedisServer::start_or_skip("keyvalue_on_redis_model")
    else {
        return;
    };
    run_model(Some(&server.url()));
}

fn run_model(redis: Option<&str>) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cache, plugin) = runtime.block_on(async {
        let cache = PersistentCache::open(CacheOptions::new(dir.path()))
            .await
            .unwrap();
        let bytes = std::fs::read(PROBE_PLUGIN).unwrap();
        let plugin = Plugin::from_bytes("model", bytes, None).await.unwrap();
        (cache, plugin)
    });
    let next_case = AtomicUsize::new(0);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&prop::collection::vec(op(), 1..40), |ops| {
        // A fresh pair of buckets per case (shrinking included): nothing left from before.
        let case = next_case.fetch_add(1, Ordering::Relaxed);
        runtime.block_on(check(&cache, &plugin, redis, case, &ops))
    });
    if let Err(err) = outcome {
        panic!("{err}");
    }
    eprintln!(
        "{cases} cases passed ({} sequences run)",
        next_case.load(Ordering::Relaxed)
    );
}
