//! Set throughput of the engine before (292a391) and after issue 13's sync points, natively on
//! the real disk, default options (500 MiB limit, no sync_writes), rounds alternating.
use std::time::Instant;

macro_rules! run {
    ($krate:ident, $dir:expr, $n:expr, $len:expr) => {{
        let storage = $krate::storage::StdStorage::new($dir).unwrap();
        let mut e =
            $krate::Engine::open(storage, $krate::WallClock, $krate::EngineOptions::default())
                .unwrap();
        let value = vec![7u8; $len];
        let started = Instant::now();
        for i in 0..$n {
            e.set(&format!("key:{}", i % 200_000), &value, None)
                .unwrap();
        }
        let sets = started.elapsed().as_secs_f64();
        e.close().unwrap();
        let _ = sets;
        if std::env::var("WITH_CLOSE").is_ok() {
            $n as f64 / started.elapsed().as_secs_f64()
        } else {
            $n as f64 / sets
        }
    }};
}

fn main() {
    let base = std::env::args().nth(1).unwrap_or_else(|| "/work".into());
    for (n, len) in [(400_000usize, 100usize), (200_000, 4096)] {
        let (mut old, mut new) = (Vec::new(), Vec::new());
        for round in 0..10 {
            let d = tempfile::tempdir_in(&base).unwrap();
            if round % 2 == 0 {
                old.push(run!(old, d.path(), n, len));
            } else {
                new.push(run!(new, d.path(), n, len));
            }
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        let (o, w) = (med(&mut old), med(&mut new));
        println!("{n} sets of {len} B: before {o:.0}/s, after {w:.0}/s, ratio {:.3} (rounds: before {old:.0?}, after {new:.0?})", w / o);
    }
}
