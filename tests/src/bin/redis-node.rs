//! One node of a two-tier cache for the multi-process Redis tests: opens `DIR` with the Redis
//! tier at `URL` (namespace `NS`, `max_staleness` `BOUND_MS`), prints `ready`, then runs one
//! command per line of stdin and prints one line per command:
//!
//! `set K V` → `ok` · `get K` → the string or `(nil)` · `delete K` → `true`/`false` ·
//! `add K V` → `true`/`false` · `incr K N TIMES` (`TIMES` increments of `N`) → the last value ·
//! `gos K MS` (`get_or_set_with`, computing `"PID"` after sleeping `MS`) → `computed V` or
//! `got V` · `until K V` (reads until `K` is `V`, then 200 times more) → `after US stale N`
//! (microseconds until it was `V`; how many later reads returned anything else) · `status` →
//! `served=BOOL invalidations=N` · `quit`.
//!
//! Errors print `error: ...` and the node goes on.

use std::io::BufRead;
use std::time::{Duration, Instant};

use persistent_cache::{CacheOptions, Expiry, PersistentCache};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, url, namespace, bound] = args.as_slice() else {
        eprintln!("usage: redis-node DIR URL NAMESPACE MAX_STALENESS_MS");
        std::process::exit(2);
    };
    let bound = Duration::from_millis(bound.parse().expect("MAX_STALENESS_MS"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = CacheOptions::new(dir)
            .redis(url.clone())
            .redis_namespace(namespace.clone())
            .max_staleness(bound);
        let cache = match PersistentCache::open(options).await {
            Ok(cache) => cache,
            Err(err) => {
                println!("error: {err}");
                return;
            }
        };
        // Local copies are served once the first heartbeat is answered.
        let started = Instant::now();
        while !cache.remote_status().unwrap().local_served && started.elapsed() < bound * 20 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        println!("ready");
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = lines.recv().await {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first() == Some(&"quit") {
                break;
            }
            match run(&cache, &words).await {
                Ok(reply) => println!("{reply}"),
                Err(err) => println!("error: {err}"),
            }
        }
        let _ = cache.close().await;
    });
}

async fn run(cache: &PersistentCache, words: &[&str]) -> persistent_cache::Result<String> {
    Ok(match words {
        ["set", key, value] => {
            cache.set(key, value).await?;
            "ok".to_owned()
        }
        ["get", key] => cache
            .get::<String>(key)
            .await?
            .unwrap_or_else(|| "(nil)".to_owned()),
        ["delete", key] => cache.delete(key).await?.to_string(),
        ["add", key, value] => cache.add(key, value, Expiry::Default).await?.to_string(),
        ["incr", key, delta, times] => {
            let (delta, times): (i64, u32) = (delta.parse().unwrap(), times.parse().unwrap());
            let mut last = 0;
            for _ in 0..times {
                last = cache.incr(key, delta, 0).await?;
            }
            last.to_string()
        }
        ["gos", key, ms] => {
            let ms: u64 = ms.parse().unwrap();
            let computed = std::sync::atomic::AtomicBool::new(false);
            let value: String = cache
                .get_or_set_with(key, Expiry::Never, || async {
                    computed.store(true, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    std::process::id().to_string()
                })
                .await?;
            if computed.load(std::sync::atomic::Ordering::SeqCst) {
                format!("computed {value}")
            } else {
                format!("got {value}")
            }
        }
        ["until", key, value] => {
            // `(nil)`: until it is gone.
            let value = (*value != "(nil)").then_some(*value);
            let started = Instant::now();
            loop {
                if cache.get::<String>(key).await?.as_deref() == value {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{key} never became {value:?}"
                );
                tokio::task::yield_now().await;
            }
            let after = started.elapsed().as_micros();
            let mut stale = 0;
            for _ in 0..200 {
                if cache.get::<String>(key).await?.as_deref() != value {
                    stale += 1;
                }
            }
            format!("after {after} stale {stale}")
        }
        ["status"] => {
            let status = cache.remote_status().unwrap();
            format!(
                "served={} invalidations={}",
                status.local_served, status.invalidations
            )
        }
        _ => format!("error: unknown command {words:?}"),
    })
}
