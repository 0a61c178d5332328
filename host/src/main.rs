//! `pcache`: command-line access to a PersistentCache directory (placeholder until the CLI lands).

fn main() -> anyhow::Result<()> {
    let options = persistent_cache::CacheOptions::default();
    println!(
        "pcache {}: the command-line interface is not implemented yet.\n\
         usage: pcache <get|set|delete|clear|stats> ...  (default directory: {})",
        env!("CARGO_PKG_VERSION"),
        options.directory.display()
    );
    Ok(())
}
