//! `pcache bench --redis URL`: the two-tier workloads, side by side with the local-only cache
//! and with plain Redis `GET`/`SET` through the same client (`redis` crate, RESP3).
//!
//! One task issues every call in turn (latency-bound, as an application's request handler
//! does), `--n` keys of 1 KiB values (`--sizes`' first size otherwise):
//! - `local-only get-hit`: the cache without Redis;
//! - `two-tier get-hit (local)`: every key's copy is in the local tier (target ≥ 0.9× local-only);
//! - `two-tier get-hit (remote)`: another node's first read of each key (GET + PTTL, then a
//!   local copy);
//! - `redis GET`, `redis SET`: the same client with nothing around it;
//! - `two-tier set`, `local-only set`.

use std::time::{Duration, Instant};

use persistent_cache::{CacheOptions, PersistentCache};

use super::BenchArgs;

/// One row: what, operations per second, median latency.
struct Row {
    name: &'static str,
    ops_per_sec: f64,
    p50_us: f64,
}

/// Times `n` runs of `op(i)`, one after the other.
async fn timed<F, Fut>(name: &'static str, n: u64, mut op: F) -> anyhow::Result<Row>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut latencies = Vec::with_capacity(n as usize);
    let started = Instant::now();
    for i in 0..n {
        let call = Instant::now();
        op(i).await?;
        latencies.push(call.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Row {
        name,
        ops_per_sec: n as f64 / elapsed.as_secs_f64(),
        p50_us: latencies[latencies.len() / 2].as_secs_f64() * 1e6,
    })
}

/// Runs the two-tier workloads against the Redis at `url` and prints the table.
pub fn run(args: BenchArgs, url: String) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args, url))
}

async fn run_async(args: BenchArgs, url: String) -> anyhow::Result<()> {
    let n = args.n.unwrap_or(20_000).max(1);
    let size = args.sizes.first().copied().unwrap_or(1024) as usize;
    let scratch = tempfile::tempdir()?;
    let namespace = format!("bench{}", std::process::id());
    let value = vec![7u8; size];
    let key = |i: u64| format!("key{i}");
    let two_tier = |dir: &str| {
        CacheOptions::new(scratch.path().join(dir))
            .redis(url.clone())
            .redis_namespace(namespace.clone())
    };

    let local = PersistentCache::open(CacheOptions::new(scratch.path().join("local"))).await?;
    let a = PersistentCache::open(two_tier("a")).await?;
    let b = PersistentCache::open(two_tier("b")).await?;
    for cache in [&a, &b] {
        let started = Instant::now();
        while !cache.remote_status().is_some_and(|s| s.local_served) {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "the Redis tier never confirmed a heartbeat"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let client = redis::Client::open(format!(
        "{url}{}protocol=resp3",
        if url.contains('?') { "&" } else { "?" }
    ))?;
    let mut plain = client.get_multiplexed_async_connection().await?;

    let mut rows = Vec::new();
    rows.push(
        timed("local-only set", n, |i| {
            let (local, value) = (&local, &value);
            async move {
                Ok(local
                    .set_raw(&key(i), value, persistent_cache::Expiry::Never)
                    .await?)
            }
        })
        .await?,
    );
    rows.push(
        timed("two-tier set", n, |i| {
            let (a, value) = (&a, &value);
            async move {
                Ok(a.set_raw(&key(i), value, persistent_cache::Expiry::Never)
                    .await?)
            }
        })
        .await?,
    );
    rows.push(
        timed("redis SET (same client)", n, |i| {
            let (mut plain, value) = (plain.clone(), &value);
            async move {
                redis::cmd("SET")
                    .arg(format!("plain{i}"))
                    .arg(value)
                    .exec_async(&mut plain)
                    .await?;
                Ok(())
            }
        })
        .await?,
    );
    rows.push(
        timed("local-only get-hit", n, |i| {
            let local = &local;
            async move {
                anyhow::ensure!(local.get_raw(&key(i)).await?.is_some(), "a miss");
                Ok(())
            }
        })
        .await?,
    );
    // B's first read of each key: a remote hit, copied into B's local tier.
    rows.push(
        timed("two-tier get-hit (remote)", n, |i| {
            let b = &b;
            async move {
                anyhow::ensure!(b.get_raw(&key(i)).await?.is_some(), "a miss");
                Ok(())
            }
        })
        .await?,
    );
    // Every key is now in B's local tier.
    let invalidations = b.remote_status().map_or(0, |s| s.invalidations);
    rows.push(
        timed("two-tier get-hit (local)", n, |i| {
            let b = &b;
            async move {
                anyhow::ensure!(b.get_raw(&key(i)).await?.is_some(), "a miss");
                Ok(())
            }
        })
        .await?,
    );
    let invalidated = b.remote_status().map_or(0, |s| s.invalidations) - invalidations;
    rows.push(
        timed("redis GET (same client)", n, |i| {
            let mut plain = plain.clone();
            async move {
                let got: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(format!("plain{i}"))
                    .query_async(&mut plain)
                    .await?;
                anyhow::ensure!(got.is_some(), "a miss");
                Ok(())
            }
        })
        .await?,
    );
    a.delete_prefix("").await?;
    let mut cleanup = redis::cmd("DEL");
    for i in 0..n {
        cleanup.arg(format!("plain{i}"));
    }
    let _: i64 = cleanup.query_async(&mut plain).await?;

    let local_hit = rows
        .iter()
        .find(|r| r.name == "local-only get-hit")
        .map_or(1.0, |r| r.ops_per_sec);
    println!(
        "two-tier cache on {} — n={n}, {size}-byte values, one task",
        redacted(&url)
    );
    println!(
        "{:<28} {:>12} {:>10} {:>14}",
        "workload", "ops/s", "p50 µs", "vs local get"
    );
    for row in &rows {
        println!(
            "{:<28} {:>12.0} {:>10.1} {:>13.2}×",
            row.name,
            row.ops_per_sec,
            row.p50_us,
            row.ops_per_sec / local_hit
        );
    }
    println!("(invalidations during the local-hit pass: {invalidated})");
    for cache in [local, a, b] {
        cache.close().await?;
    }
    Ok(())
}

/// `url` without a password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
