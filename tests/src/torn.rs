//! The torn-copies test's writer protocol and values, shared by `cache-child sessions` (which
//! writes them) and `tests/power_cut_copies.rs` (which copies the directory while it runs and
//! checks every copy).
//!
//! Protocol, one line each, flushed: `BEGIN V T` just before session V opens the cache (no
//! value of version V is written before T); `CHECKPOINT V T EVICTED` once session V has
//! overwritten every key with version V and `close` returned `Ok` (at T, taken after close
//! returned; EVICTED is the session's `stats().evicted`, which must stay 0 for every key to
//! be owed). T is `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the
//! machine, so the test can place the lines against the moments its copies started and ended
//! whenever the lines reach it.

// Each user of this shared file uses a different part of it.
#![allow(dead_code)]

/// Bytes of a value's fixed fields: key index (u32), version (u64), length (u32) in front,
/// checksum (u64) at the end.
const FIXED: usize = 4 + 8 + 4 + 8;
/// Shortest value.
pub const MIN_LEN: usize = 300;
/// Longest value.
pub const MAX_LEN: usize = 500;

/// The key with index `i`.
pub fn key(i: usize) -> String {
    format!("torn:{i:05}")
}

/// The index of a key made by [`key`].
pub fn key_index(key: &str) -> Option<usize> {
    key.strip_prefix("torn:")?.parse().ok()
}

/// `CLOCK_MONOTONIC` in nanoseconds (the same clock in every process of the machine).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A 64-bit mix of the key index and version (splitmix64).
fn mix(key: usize, version: u64) -> u64 {
    let mut z = ((key as u64) << 40) ^ version ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a 64 of `bytes`: the value's own checksum.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// The payload bytes of `key`'s version `version`.
fn payload(key: usize, version: u64, len: usize) -> impl Iterator<Item = u8> {
    let mut x = mix(key, version) | 1;
    (0..len).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    })
}

/// Version `version` of key `key`: self-describing (key index, version, length, a payload
/// determined by them, and a checksum of it all), MIN_LEN..=MAX_LEN bytes.
pub fn value(key: usize, version: u64) -> Vec<u8> {
    let len = MIN_LEN + (mix(key, version) % (MAX_LEN - MIN_LEN + 1) as u64) as usize;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&(key as u32).to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend(payload(key, version, len - FIXED));
    let sum = fnv1a(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// The (key index, version) a value says it is, if it is exactly what [`value`] writes for
/// them; otherwise what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<(usize, u64), String> {
    if bytes.len() < FIXED {
        return Err(format!("{} bytes, shorter than any value", bytes.len()));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    if fnv1a(body).to_le_bytes() != sum {
        return Err(format!("{} bytes failing their checksum", bytes.len()));
    }
    let key = u32::from_le_bytes(body[0..4].try_into().unwrap()) as usize;
    let version = u64::from_le_bytes(body[4..12].try_into().unwrap());
    if value(key, version) != bytes {
        return Err(format!(
            "{} bytes claiming key {key} version {version}, but not what was written for them",
            bytes.len()
        ));
    }
    Ok((key, version))
}
