//! `script`: runs `wasi:keyvalue` operations read from stdin, one per line, and prints one
//! result line per operation, for a model-based test to compare with its own predictions.
//!
//! Values are written `x` + lowercase hex (`x` alone is empty). Operations and results:
//! `get B K` → `some:xHEX`|`none` · `set B K xHEX` → `ok` · `delete B K` → `ok` ·
//! `exists B K` → `true`|`false` · `list B` → `keys:K1,K2,...` (every page) ·
//! `incr B K DELTA` → `n:N` · `cas-new B K SLOT` → `ok` · `cas-current SLOT` →
//! `some:xHEX`|`none` · `cas-swap SLOT xHEX` → `ok`|`failed` (the slot then holds the fresh
//! handle) · `cas-drop SLOT` → `ok` · `get-many B K...` → `many:R,R,...` with each R
//! `some:xHEX`|`none` · `set-many B K=xHEX...` → `ok` · `delete-many B K...` → `ok`.
//! Any error prints `err:<Debug>`; an empty CAS slot prints `noslot`; a line that is not an
//! operation prints `bad:<line>`.

use std::collections::HashMap;
use std::io::BufRead;

use super::wasi::keyvalue::{atomics, batch, store};
use super::{all_keys, flush};

/// The buckets opened so far and the CAS handles held, by slot.
#[derive(Default)]
struct Session {
    buckets: HashMap<String, store::Bucket>,
    slots: HashMap<String, atomics::Cas>,
}

pub fn run() {
    let mut session = Session::default();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else {
            println!("bad:unreadable stdin");
            break;
        };
        let words: Vec<&str> = line.split(' ').collect();
        let result = session
            .execute(&words)
            .unwrap_or_else(|| format!("bad:{line}"));
        println!("{result}");
    }
    flush();
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(1 + 2 * bytes.len());
    out.push('x');
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits = text.strip_prefix('x')?;
    if digits.len() % 2 != 0 {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok())
        .collect()
}

fn maybe(value: Option<Vec<u8>>) -> String {
    match value {
        Some(v) => format!("some:{}", hex(&v)),
        None => "none".to_owned(),
    }
}

fn line<T>(result: Result<T, impl std::fmt::Debug>, ok: impl FnOnce(T) -> String) -> String {
    match result {
        Ok(value) => ok(value),
        Err(err) => format!("err:{err:?}"),
    }
}

/// The bucket `name`, opened on first use.
fn open_bucket<'a>(
    buckets: &'a mut HashMap<String, store::Bucket>,
    name: &str,
) -> Result<&'a store::Bucket, store::Error> {
    if !buckets.contains_key(name) {
        let bucket = store::open(name)?;
        buckets.insert(name.to_owned(), bucket);
    }
    Ok(&buckets[name])
}

impl Session {
    /// The result line of one operation; `None` for a malformed line.
    fn execute(&mut self, words: &[&str]) -> Option<String> {
        Some(match *words {
            ["cas-current", slot] => match self.slots.get(slot) {
                Some(cas) => line(cas.current(), maybe),
                None => "noslot".to_owned(),
            },
            ["cas-swap", slot, value] => {
                let value = unhex(value)?;
                match self.slots.remove(slot) {
                    Some(cas) => match atomics::swap(cas, &value) {
                        Ok(()) => "ok".to_owned(),
                        Err(atomics::CasError::CasFailed(fresh)) => {
                            self.slots.insert(slot.to_owned(), fresh);
                            "failed".to_owned()
                        }
                        Err(atomics::CasError::StoreError(err)) => format!("err:{err:?}"),
                    },
                    None => "noslot".to_owned(),
                }
            }
            ["cas-drop", slot] => {
                self.slots.remove(slot);
                "ok".to_owned()
            }
            [op, bucket, ref rest @ ..] => {
                let bucket = match open_bucket(&mut self.buckets, bucket) {
                    Ok(bucket) => bucket,
                    Err(err) => return Some(format!("err:{err:?}")),
                };
                match (op, rest) {
                    ("get", [key]) => line(bucket.get(key), maybe),
                    ("set", [key, value]) => {
                        line(bucket.set(key, &unhex(value)?), |()| "ok".into())
                    }
                    ("delete", [key]) => line(bucket.delete(key), |()| "ok".into()),
                    ("exists", [key]) => line(bucket.exists(key), |found| found.to_string()),
                    ("list", []) => {
                        line(all_keys(bucket), |keys| format!("keys:{}", keys.join(",")))
                    }
                    ("incr", [key, delta]) => {
                        let delta: i64 = delta.parse().ok()?;
                        line(atomics::increment(bucket, key, delta), |n| format!("n:{n}"))
                    }
                    ("cas-new", [key, slot]) => {
                        let made = atomics::Cas::new(bucket, key);
                        line(made, |cas| {
                            self.slots.insert((*slot).to_owned(), cas);
                            "ok".into()
                        })
                    }
                    ("get-many", keys) => {
                        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
                        line(batch::get_many(bucket, &keys), |got| {
                            if got.len() != keys.len() {
                                return format!("wronglen:{}", got.len());
                            }
                            let results: Vec<String> = got
                                .into_iter()
                                .zip(&keys)
                                .map(|(kv, wanted)| match kv {
                                    Some((key, value)) if &key == wanted => maybe(Some(value)),
                                    Some((key, _)) => format!("wrongkey:{key}"),
                                    None => "none".to_owned(),
                                })
                                .collect();
                            format!("many:{}", results.join(","))
                        })
                    }
                    ("set-many", pairs) => {
                        let pairs: Option<Vec<(String, Vec<u8>)>> = pairs
                            .iter()
                            .map(|pair| {
                                let (key, value) = pair.split_once('=')?;
                                Some((key.to_owned(), unhex(value)?))
                            })
                            .collect();
                        line(batch::set_many(bucket, &pairs?), |()| "ok".into())
                    }
                    ("delete-many", keys) => {
                        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
                        line(batch::delete_many(bucket, &keys), |()| "ok".into())
                    }
                    _ => return None,
                }
            }
            _ => return None,
        })
    }
}
