#!/usr/bin/env python3
"""The Python package against the seed's diskcache wrapper, on diskcache_bench.py's workloads.

    PY=$(bench/setup-venv.sh)              # diskcache 5.6.3
    $PY -m pip install target/wheels/persistent_cache-*.whl   # built with maturin --release
    $PY bench/python_compare.py --n 20000 --value-size 1024 --runs 3

Runs each workload (set, get-hit, mixed-uniform, concurrent-mixed with 64 asyncio tasks) for
both implementations in fresh processes, `--runs` times, and prints the median ops/s of each
and the speed-up, then one JSON object with every run. Both go through the same driver, the
same `asyncio.run`, the same keys and values; only the PersistentCache class differs.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ("set", "get-hit", "mixed-uniform", "concurrent-mixed")
IMPLS = ("diskcache-wrapper", "persistent-cache")


def run_one(impl, workload, n, value_size, directory):
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "diskcache_bench.py"), "--impl", impl,
         "--workload", workload, "--n", str(n), "--value-size", str(value_size),
         "--dir", directory],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--value-size", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="pcache-py-bench-") as directory:
        for workload in args.workloads:
            medians = {}
            for impl in IMPLS:
                runs = [run_one(impl, workload, args.n, args.value_size, directory)
                        for _ in range(args.runs)]
                results.extend(runs)
                medians[impl] = statistics.median(r["ops_per_sec"] for r in runs)
            base, ours = medians["diskcache-wrapper"], medians["persistent-cache"]
            print(f"{workload:18} diskcache-wrapper {base:>10,.0f} ops/s   "
                  f"persistent-cache {ours:>10,.0f} ops/s   {ours / base:5.1f}x", flush=True)
    print(json.dumps({"n": args.n, "value_size": args.value_size, "runs": results}))


if __name__ == "__main__":
    main()
