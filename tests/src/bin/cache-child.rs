//! A second process for the end-to-end tests: opens a cache directory and runs one command.
//!
//! `cache-child DIR set KEY JSON` · `cache-child DIR get KEY` (prints JSON or `null`) ·
//! `cache-child DIR hold` (opens, prints `open`, waits for stdin to close).
//! Errors print `error: ...` on stderr and exit 2.

use persistent_cache::{CacheOptions, PersistentCache};
use std::io::Read;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args).await {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

async fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [dir, command, rest @ ..] = args else {
        return Err("usage: cache-child DIR (set KEY JSON | get KEY | hold)".into());
    };
    let cache = PersistentCache::open(CacheOptions::new(dir)).await?;
    match (command.as_str(), rest) {
        ("set", [key, json]) => {
            let value: serde_json::Value = serde_json::from_str(json)?;
            cache.set(key, &value).await?;
        }
        ("get", [key]) => {
            let value: Option<serde_json::Value> = cache.get(key).await?;
            println!("{}", serde_json::to_string(&value)?);
        }
        ("hold", []) => {
            println!("open");
            let mut sink = Vec::new();
            std::io::stdin().read_to_end(&mut sink)?;
        }
        _ => return Err(format!("unknown command {command:?}").into()),
    }
    cache.close().await?;
    Ok(())
}
