//! The tables of a suite's results: throughput as ratios against the baselines of the same run,
//! then the stall workloads' latencies and the recovery times.

use super::Measurement;

/// Prints one row per measurement of the component (and raw disk), with the native engine's
/// and diskcache's figures and the ratios.
pub fn print_table(results: &[Measurement]) {
    let rows: Vec<&Measurement> = results
        .iter()
        .filter(|r| {
            (r.implementation == "persistent-cache" || r.implementation == "raw-disk")
                && r.ticker.is_none()
                && r.workload != "reopen-crash"
        })
        .collect();
    if rows.is_empty() {
        return;
    }
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
    for m in rows {
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

/// Prints one row per stall workload and implementation: throughput, every call's latency and
/// the ticker's lateness (all times in milliseconds). Nothing if there are none.
pub fn print_stall_table(results: &[Measurement]) {
    let stalls: Vec<&Measurement> = results.iter().filter(|r| r.ticker.is_some()).collect();
    if stalls.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<12} {:<17} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>9}",
        "workload", "impl", "ops/s", "p50", "p99", "p99.9", "max", "ticks", "late p99", "late max"
    );
    let ms = |us: f64| format!("{:.3}", us / 1e3);
    for r in stalls {
        let (Some(l), Some(t)) = (r.latency, r.ticker) else {
            continue;
        };
        println!(
            "{:<12} {:<17} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>9}",
            r.workload,
            r.implementation,
            r.ops_per_sec,
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us),
            t.ticks,
            ms(t.late_p99_us),
            ms(t.late_max_us),
        );
    }
    println!("(latency of every cache call and ticker lateness in ms; 2 worker threads)");
}

/// Prints open → first get after a crash next to a clean reopen of the same size, per
/// implementation. Nothing if there was no reopen-crash run.
pub fn print_recovery_table(results: &[Measurement]) {
    let crashes: Vec<&Measurement> = results
        .iter()
        .filter(|r| r.workload == "reopen-crash")
        .collect();
    if crashes.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<17} {:>8} {:>6} {:>12} {:>12} {:>9}",
        "impl", "n", "value", "clean s", "crash s", "crash/cl."
    );
    for crash in crashes {
        let clean = results.iter().find(|r| {
            r.workload == "reopen"
                && r.implementation == crash.implementation
                && r.n == crash.n
                && r.value_size == crash.value_size
        });
        println!(
            "{:<17} {:>8} {:>6} {:>12} {:>12.4} {:>9}",
            crash.implementation,
            crash.n,
            crash.value_size,
            clean.map_or("-".into(), |c| format!("{:.4}", c.seconds)),
            crash.seconds,
            clean.map_or("-".into(), |c| format!(
                "{:.2}x",
                crash.seconds / c.seconds.max(1e-9)
            )),
        );
    }
    println!("(open -> first get of an entry, in seconds: after close, and after exit without it)");
}

/// Prints the peer workloads (and the raw-read floor): per workload and value size, one row per
/// implementation with its throughput, how many times faster PersistentCache is, its latency
/// percentiles and what it kept. Nothing if there are none.
pub fn print_peer_table(results: &[Measurement]) {
    const PEER_WORKLOADS: [&str; 5] = [
        "disk-set",
        "disk-get-uniform",
        "disk-get-zipf",
        "get-hit-memory",
        "raw-read",
    ];
    let rows: Vec<&Measurement> = results
        .iter()
        .filter(|r| PEER_WORKLOADS.contains(&r.workload.as_str()))
        .collect();
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<17} {:>7} {:>7} {:<19} {:>10} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "workload", "n", "value", "impl", "ops/s", "pcache x", "p50 us", "p99 us", "kept", "RSS MB"
    );
    let pcache = |m: &Measurement| {
        results.iter().find(|r| {
            r.implementation == "persistent-cache"
                && r.workload == m.workload
                && r.value_size == m.value_size
        })
    };
    for m in rows {
        let times = pcache(m).map_or("-".into(), |p| {
            format!("{:.2}x", p.ops_per_sec / m.ops_per_sec.max(1e-9))
        });
        let (p50, p99) = m.latency.map_or(("-".into(), "-".into()), |l| {
            (format!("{:.1}", l.p50_us), format!("{:.1}", l.p99_us))
        });
        println!(
            "{:<17} {:>7} {:>7} {:<19} {:>10.0} {:>9} {:>9} {:>9} {:>8} {:>8.0}",
            m.workload,
            m.n,
            m.value_size,
            m.implementation,
            m.ops_per_sec,
            times,
            p50,
            p99,
            m.kept.map_or("-".into(), |k| k.to_string()),
            m.peak_rss_bytes as f64 / 1e6,
        );
    }
    println!(
        "(pcache x: PersistentCache's ops/s over the row's; kept: sets read back after a \
         reopen, or gets that returned the value; the raw-read row has no cache around it)"
    );
}
