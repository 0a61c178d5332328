//! The crash test's workload: operations, keys and values shared by `cache-child workload` (which
//! runs them and reports each on stdout) and `tests/crash.rs` (which kills it and checks).
//!
//! Protocol, one line each, flushed: `ready` once the cache is open; `B SEQ OP` before an
//! operation starts (OP is `set KEY_INDEX LEN TTL_MS|-`, `del KEY_INDEX` or `clear`); `A SEQ`
//! once it returned `Ok` (acknowledged). A line written before the kill reaches the parent even
//! though the process dies: the pipe keeps it.

// Each user of this shared file uses a different part of it.
#![allow(dead_code)]

use std::fmt;

/// Number of distinct keys: few enough that most sets are overwrites.
pub const KEYS: usize = 48;
/// TTL of "long" TTL sets: far beyond any test run, so they must survive.
pub const LONG_TTL_MS: u64 = 3_600_000;
/// Largest TTL of "short" TTL sets: these may expire before they are checked.
pub const SHORT_TTL_MAX_MS: u64 = 100;

/// The key with index `i`: plain, path-like and non-ASCII keys, none with whitespace.
pub fn key(i: usize) -> String {
    match i % 4 {
        0 => format!("k{i}"),
        1 => format!("../../etc/passwd{i}"),
        2 => format!("ключ-{i}"),
        _ => format!("/abs/path/{i}"),
    }
}

/// The value written by operation `seq` of the run seeded with `seed`: distinct per write.
pub fn value(seed: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut x = (seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The workload's generator: deterministic for a seed (`Rng::with_seed`), so a child process
/// and the test that checks it draw the same sequence.
pub use fastrand::Rng;

/// One write operation of the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `set_raw(key(key), value(seed, seq, len), ttl)`.
    Set {
        key: usize,
        len: usize,
        ttl_ms: Option<u64>,
    },
    /// `delete(key(key))`.
    Delete { key: usize },
    /// `clear()`.
    Clear,
}

impl Op {
    /// The next operation: mostly sets (overwrites), some TTL sets, deletes and rare clears.
    pub fn random(rng: &mut Rng, max_len: usize) -> Op {
        let key = rng.u64(..KEYS as u64) as usize;
        match rng.u64(..2000) {
            0 => Op::Clear,
            1..=399 => Op::Delete { key },
            roll => {
                let len = 1 + rng.u64(..max_len as u64) as usize;
                let ttl_ms = match roll % 8 {
                    0 => Some(LONG_TTL_MS),
                    1 => Some(1 + rng.u64(..SHORT_TTL_MAX_MS)),
                    _ => None,
                };
                Op::Set { key, len, ttl_ms }
            }
        }
    }

    /// Parses the OP part of a `B` line.
    pub fn parse(words: &[&str]) -> Option<Op> {
        match words {
            ["set", key, len, ttl] => Some(Op::Set {
                key: key.parse().ok()?,
                len: len.parse().ok()?,
                ttl_ms: match *ttl {
                    "-" => None,
                    ms => Some(ms.parse().ok()?),
                },
            }),
            ["del", key] => Some(Op::Delete {
                key: key.parse().ok()?,
            }),
            ["clear"] => Some(Op::Clear),
            _ => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Set {
                key,
                len,
                ttl_ms: Some(ms),
            } => write!(f, "set {key} {len} {ms}"),
            Op::Set {
                key,
                len,
                ttl_ms: None,
            } => write!(f, "set {key} {len} -"),
            Op::Delete { key } => write!(f, "del {key}"),
            Op::Clear => write!(f, "clear"),
        }
    }
}
