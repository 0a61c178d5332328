#!/usr/bin/env python3
"""Plot the peer workloads of `pcache bench --json-out FILE` results as one PNG.

Usage:
    python bench/plot_peers.py A.json [B.json ...] OUT.png [--title "machine, date"]

One panel per value size found in the files (smallest on the left), each a
grouped bar chart: x = the peer workloads (disk-set, disk-get-uniform,
disk-get-zipf, get-hit-memory), one bar per implementation, y = ops/s (log
scale, shared by all panels). Above every bar whose `kept` is below `n` the
kept share is written, e.g. "19 % kept": for disk-set it is the entries read
back intact after close and reopen, for the get workloads the reads that
returned the value. Several runs of the same (impl, workload, value size) are
reduced to the median ops/s and the lowest kept share. Other workloads are
ignored. --title is printed under the figure heading (machine, date, memory
budget: the budget is not in the JSON).
Needs matplotlib (bench/setup-venv.sh installs it into bench/.venv).
"""

import argparse
import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")  # no display needed

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

# The same formatting as the main plot (this script sits next to it).
from plot import human_rate, human_size  # noqa: E402

WORKLOADS = ["disk-set", "disk-get-uniform", "disk-get-zipf", "get-hit-memory"]

# impl id -> (legend label, colour); the order is the bar and legend order.
IMPLS = {
    "persistent-cache": ("PersistentCache", "#1f77b4"),
    "native-engine": ("native engine", "#2ca02c"),
    "foyer": ("foyer", "#ff7f0e"),
    "cacache": ("cacache", "#9467bd"),
    "diskcache-wrapper": ("diskcache wrapper", "#d62728"),
}
OTHER_COLOURS = ["#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def human_pct(frac):
    """0.19 -> '19', 0.996 -> '99.6', 0.004 -> '0.4' (never rounds to 0 or 100)."""
    pct = 100 * frac
    if 1 <= pct < 99.5:
        return f"{pct:.0f}"
    return f"{pct:.1g}" if pct < 1 else f"{min(pct, 99.9):.1f}"


def load(path):
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, list):
        sys.exit(f"{path}: expected a JSON array of result objects")
    return data


def collect(rows):
    """{(value_size, workload, impl): (ops_per_sec, kept_fraction or None, n)}."""
    groups = {}
    for r in rows:
        if r.get("workload") not in WORKLOADS:
            continue
        try:
            key = (int(r["value_size"]), r["workload"], r["impl"])
            ops = float(r["ops_per_sec"])
            n = int(r["n"])
        except (KeyError, TypeError, ValueError):
            continue
        kept = r.get("kept")
        frac = int(kept) / n if isinstance(kept, (int, float)) and n > 0 else None
        groups.setdefault(key, []).append((ops, frac, n))
    out = {}
    for key, vals in groups.items():
        fracs = [f for _, f, _ in vals if f is not None]
        out[key] = (statistics.median(v for v, _, _ in vals),
                    min(fracs) if fracs else None, vals[-1][2])
    return out


def ordered_impls(impls):
    known = [i for i in IMPLS if i in impls]
    return known + sorted(i for i in impls if i not in IMPLS)


def impl_style(impl, impls):
    if impl in IMPLS:
        return IMPLS[impl]
    extra = [i for i in impls if i not in IMPLS].index(impl)
    return impl, OTHER_COLOURS[extra % len(OTHER_COLOURS)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", metavar="FILE",
                    help="JSON files from `pcache bench --json-out`, then the PNG to write")
    ap.add_argument("--title", default="", help="subtitle, e.g. machine, date, memory budget")
    args = ap.parse_args()
    if len(args.files) < 2:
        ap.error("need at least one JSON file and the output PNG")
    *inputs, out = args.files
    if not out.lower().endswith(".png"):
        ap.error(f"the last argument is the PNG to write, got {out!r}")

    rows = [r for path in inputs for r in load(path)]
    data = collect(rows)
    if not data:
        sys.exit("no peer-workload results (" + ", ".join(WORKLOADS) + ") to plot")
    sizes = sorted({s for s, _, _ in data})
    impls = ordered_impls({i for _, _, i in data})

    # 6.5 x 5.6 in per panel at 100 dpi, at least 10 in wide for legend and footnote.
    fig, axes = plt.subplots(1, len(sizes), figsize=(max(6.5 * len(sizes), 10), 5.6),
                             dpi=100, sharey=True, squeeze=False)
    axes = axes[0]
    width = 0.84 / len(impls)
    handles = {}
    for ax, size in zip(axes, sizes):
        for j, impl in enumerate(impls):
            label, colour = impl_style(impl, impls)
            offset = (j - (len(impls) - 1) / 2) * width
            for x, wl in enumerate(WORKLOADS):
                if (size, wl, impl) not in data:
                    continue
                ops, frac, _n = data[(size, wl, impl)]
                bars = ax.bar(x + offset, ops, width * 0.92, color=colour, label=label,
                              zorder=3)
                handles.setdefault(label, bars)
                if frac is not None and frac < 1:
                    ax.annotate(f"{human_pct(frac)} % kept", (x + offset, ops),
                                xytext=(0, 3), textcoords="offset points", rotation=90,
                                ha="center", va="bottom", fontsize=8.5,
                                fontweight="bold", color="#333333", zorder=4)
        ax.set_title(f"{human_size(size)} values", fontsize=13, fontweight="bold")
        ax.set_xticks(range(len(WORKLOADS)))
        ax.set_xticklabels(WORKLOADS, fontsize=10)
        ax.set_xlim(-0.5, len(WORKLOADS) - 0.5)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10))
        ax.yaxis.set_major_formatter(FuncFormatter(human_rate))
        ax.tick_params(axis="y", labelsize=10)
        ax.tick_params(axis="x", length=0)
        ax.grid(True, which="major", axis="y", alpha=0.4, zorder=0)
        ax.grid(True, which="minor", axis="y", alpha=0.12, zorder=0)
        for x in range(1, len(WORKLOADS)):
            ax.axvline(x - 0.5, color="#cccccc", linewidth=0.8, zorder=1)
    # Shared y range, set once all bars are drawn: room above the tallest bar
    # for a rotated "NN % kept" label.
    ys = [v for v, _, _ in data.values() if v > 0]
    axes[0].set_ylim(min(ys) / 2.5, max(ys) * 10)
    axes[0].set_ylabel("ops/s (log scale)", fontsize=11)
    for ax in axes[1:]:
        ax.tick_params(labelleft=True)

    heading = "PersistentCache vs peers: ops/s per workload"
    fig.suptitle(heading, fontsize=14, fontweight="bold", y=0.985)
    if args.title:
        fig.text(0.5, 0.925, args.title, ha="center", va="center", fontsize=10.5,
                 color="#333333")
    fig.legend(list(handles.values()), list(handles.keys()), loc="upper center",
               bbox_to_anchor=(0.5, 0.905), ncol=min(len(handles), 6), fontsize=10,
               frameon=False, handlelength=1.2, columnspacing=1.6)

    # Footnote: op counts per workload (n) and what "kept" means.
    ns = {}
    for (_s, wl, _i), (_v, _f, n) in data.items():
        ns.setdefault(wl, set()).add(n)
    n_note = ", ".join(f"{wl} " + "/".join(str(n) for n in sorted(ns[wl]))
                       for wl in WORKLOADS if wl in ns)
    foot = [f"ops per run (n) \u2014 {n_note}",
            "% kept (shown where below 100 %): disk-set = entries read back intact "
            "after close and reopen; gets = reads that returned the value"]
    fig.text(0.01, 0.012, "\n".join(foot), ha="left", va="bottom", fontsize=9,
             color="#444444")

    # Fixed margins (not tight_layout) so heading, legend and footnote never
    # overlap the axes.
    fig.subplots_adjust(left=0.85 / fig.get_figwidth(), right=0.99, top=0.79, bottom=0.145,
                        wspace=0.13)
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
