//! The table of a suite's results, as ratios against the baselines of the same run.

use super::Measurement;

/// Prints one row per measurement of the component (and raw disk), with the native engine's
/// and diskcache's figures and the ratios.
pub fn print_table(results: &[Measurement]) {
    println!(
        "{:<18} {:>8} {:>9} {:>14} {:>14} {:>14} {:>9} {:>9}",
        "workload", "n", "value", "pcache ops/s", "native ops/s", "diskcache", "vs disk", "vs nat."
    );
    let find = |imp: &str, m: &Measurement| {
        results
            .iter()
            .find(|r| {
                r.implementation == imp
                    && r.workload == m.workload
                    && r.value_size == m.value_size
                    && r.n == m.n
            })
            .cloned()
    };
    for m in results
        .iter()
        .filter(|r| r.implementation == "persistent-cache" || r.implementation == "raw-disk")
    {
        let native = find("native-engine", m);
        let disk = find("diskcache-wrapper", m);
        let metric = |r: &Measurement| match r.workload.as_str() {
            "reopen" => 1.0 / r.seconds.max(1e-9),
            "memory" => r.peak_rss_bytes as f64,
            _ => r.ops_per_sec,
        };
        let fmt = |r: &Option<Measurement>| {
            r.as_ref()
                .map_or("-".into(), |r| format!("{:.0}", metric(r)))
        };
        let ratio = |other: &Option<Measurement>| {
            other.as_ref().map_or("-".into(), |o| {
                let (a, b) = (metric(m), metric(o));
                // For memory, smaller is better: show how many times smaller.
                if m.workload == "memory" {
                    format!("{:.2}x", b / a.max(1.0))
                } else {
                    format!("{:.2}x", a / b.max(1e-9))
                }
            })
        };
        println!(
            "{:<18} {:>8} {:>9} {:>14} {:>14} {:>14} {:>9} {:>9}",
            m.workload,
            m.n,
            m.value_size,
            format!("{:.0}", metric(m)),
            fmt(&native),
            fmt(&disk),
            ratio(&disk),
            ratio(&native),
        );
    }
    println!("(reopen: opens/s, i.e. 1/seconds; memory: peak RSS bytes, ratios = times smaller)");
}
