//! Hostile commands: each tries to make the host hold far more memory, or run far longer in
//! host code, than the plugin's limits allow. Each prints `NAME=start` (flushed) before the
//! dangerous call and `NAME=<what it got>` if the host lets it finish.

use std::mem::ManuallyDrop;

use super::wasi::keyvalue::{atomics, batch, store};
use super::{flush, open_or_report, report, usage};

const MIB: usize = 1 << 20;

/// Puts one value of `size_mib` MiB, then asks `get-many` for it `copies` times: a host that
/// builds every copy before lowering holds `size_mib × copies` MiB.
pub fn get_many_bomb(size_mib: usize, copies: usize) {
    let name = "get-many-bomb";
    let Some(bucket) = open_or_report(name, "bomb") else {
        return;
    };
    if let Err(err) = bucket.set("big", &vec![7u8; size_mib * MIB]) {
        return report(name, format!("err:{err:?}"));
    }
    let keys = vec!["big".to_owned(); copies];
    report(name, "start");
    flush();
    match batch::get_many(&bucket, &keys) {
        Ok(got) => report(name, got.iter().flatten().count()),
        Err(err) => report(name, format!("err:{err:?}")),
    }
}

/// Puts one value of `size_kib` KiB, then makes `handles` CAS handles on it and keeps them all:
/// a host that keeps a copy of the value per handle holds `size_kib × handles` KiB.
pub fn cas_hoard(size_kib: usize, handles: usize) {
    let name = "cas-hoard";
    let Some(bucket) = open_or_report(name, "hoard") else {
        return;
    };
    if let Err(err) = bucket.set("big", &vec![7u8; size_kib << 10]) {
        return report(name, format!("err:{err:?}"));
    }
    report(name, "start");
    flush();
    let mut kept = Vec::with_capacity(handles);
    for _ in 0..handles {
        match atomics::Cas::new(&bucket, "big") {
            Ok(cas) => kept.push(cas),
            Err(err) => return report(name, format!("err:{err:?} after {}", kept.len())),
        }
    }
    report(name, kept.len());
}

/// Opens `n` bucket handles and keeps them all.
pub fn bucket_hoard(n: usize) {
    let name = "bucket-hoard";
    report(name, "start");
    flush();
    let mut kept = Vec::with_capacity(n);
    for _ in 0..n {
        match store::open("hoard") {
            Ok(bucket) => kept.push(bucket),
            Err(err) => return report(name, format!("err:{err:?} after {}", kept.len())),
        }
    }
    report(name, kept.len());
}

/// One `set-many`, `get-many` or `delete-many` call over `n` entries, all the same small key
/// (aliased, so the plugin builds the list in moments): the host's loop alone takes far
/// longer than a short time limit.
pub fn batch_spin(op: &str, n: usize) {
    let name = "batch-spin";
    if let Some(bucket) = open_or_report(name, "spin") {
        batch_call(name, &bucket, op, aliases("k", n), b"1");
    }
}

/// A batch call whose list elements all point at the same `size_mib` MiB of the plugin's
/// memory, `copies` times (the canonical ABI passes each as a pointer and a length, and nothing
/// stops them from overlapping): `get`/`delete` alias one huge key, `set` gives `copies`
/// small keys the same huge value. A host that copies every element before the call holds
/// `size_mib × copies` MiB while the plugin holds `size_mib`.
pub fn alias_bomb(op: &str, size_mib: usize, copies: usize) {
    let name = "alias-bomb";
    let Some(bucket) = open_or_report(name, "alias") else {
        return;
    };
    let huge = "k".repeat(size_mib * MIB);
    let keys = match op {
        "set" => ManuallyDrop::new((0..copies).map(|i| format!("k{i}")).collect()),
        _ => aliases(&huge, copies),
    };
    batch_call(name, &bucket, op, keys, huge.as_bytes());
}

/// `copies` strings that are all `text`, its very bytes: never to be dropped (each would free
/// the same buffer) nor written to.
fn aliases(text: &str, copies: usize) -> ManuallyDrop<Vec<String>> {
    let alias = || {
        // SAFETY: `text` is valid UTF-8 and outlives every use of the alias (the batch call);
        // the alias is only read and never dropped (`ManuallyDrop` around the list).
        unsafe { String::from_raw_parts(text.as_ptr().cast_mut(), text.len(), text.len()) }
    };
    ManuallyDrop::new((0..copies).map(|_| alias()).collect())
}

/// Prints `NAME=start`, then runs `op` (`set`, `get` or `delete`) on `keys` (`set` gives each
/// the bytes of `value`, aliased), and prints `NAME=<count>` or `NAME=err:..`.
fn batch_call(
    name: &str,
    bucket: &store::Bucket,
    op: &str,
    keys: ManuallyDrop<Vec<String>>,
    value: &[u8],
) {
    let outcome = match op {
        "set" => {
            let alias = || {
                // SAFETY: as in `aliases`: `value` outlives the call; the alias is only read
                // and never dropped.
                unsafe { Vec::from_raw_parts(value.as_ptr().cast_mut(), value.len(), value.len()) }
            };
            let n = keys.len();
            let pairs: ManuallyDrop<Vec<(String, Vec<u8>)>> = ManuallyDrop::new(
                ManuallyDrop::into_inner(keys)
                    .into_iter()
                    .map(|key| (key, alias()))
                    .collect(),
            );
            report(name, "start");
            flush();
            batch::set_many(bucket, &pairs).map(|()| n)
        }
        "get" => {
            report(name, "start");
            flush();
            batch::get_many(bucket, &keys).map(|got| got.len())
        }
        "delete" => {
            report(name, "start");
            flush();
            batch::delete_many(bucket, &keys).map(|()| keys.len())
        }
        _ => usage(&format!("{name}: unknown operation {op:?}")),
    };
    match outcome {
        Ok(n) => report(name, n),
        Err(err) => report(name, format!("err:{err:?}")),
    }
}
