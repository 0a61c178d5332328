#!/usr/bin/env python3
"""Plot `pcache bench --json-out FILE` results as one PNG.

Usage:
    python bench/plot.py RESULTS.json OUT.png [--title "machine, date"]

Two side-by-side panels, "set" and "get-hit": ops/s against value size
(both log scale), one line per implementation. If the results hold a
raw-disk write run, the "set" panel also gets a marker at 1 MiB: the raw
sequential write bandwidth expressed as 1 MiB writes per second.
Needs matplotlib (bench/setup-venv.sh installs it into bench/.venv).
"""

import argparse
import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")  # no display needed

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

MIB = 1 << 20

PANELS = ["set", "get-hit"]

# impl id -> (legend label, colour, marker); the order is the legend order.
IMPLS = {
    "persistent-cache": ("PersistentCache", "#1f77b4", "o"),
    "native-engine": ("native engine", "#2ca02c", "s"),
    "diskcache-wrapper": ("diskcache wrapper", "#d62728", "^"),
}
OTHER_STYLES = [("#9467bd", "D"), ("#8c564b", "v"), ("#e377c2", "P")]

RAW_IMPL = "raw-disk"
RAW_WORKLOAD = "raw-write"


def human_size(n):
    """100 -> '100 B', 1024 -> '1 KiB', 65536 -> '64 KiB', 1048576 -> '1 MiB'."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1 << 10)):
        if n >= scale:
            v = n / scale
            return f"{v:g} {unit}" if v != int(v) else f"{int(v)} {unit}"
    return f"{int(n)} B"


def human_rate(v, _pos=None):
    for suffix, scale in (("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def load(path):
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, list):
        sys.exit(f"{path}: expected a JSON array of result objects")
    return data


def collect(rows, workload):
    """{impl: [(value_size, ops_per_sec, n), ...]} sorted by value size.

    Several runs of the same (impl, value size) are reduced to their median.
    """
    groups = {}
    for r in rows:
        if r.get("workload") != workload or r.get("impl") == RAW_IMPL:
            continue
        try:
            key = (r["impl"], int(r["value_size"]))
            groups.setdefault(key, []).append((float(r["ops_per_sec"]), int(r.get("n", 0))))
        except (KeyError, TypeError, ValueError):
            continue
    series = {}
    for (impl, size), vals in groups.items():
        ops = statistics.median(v for v, _ in vals)
        series.setdefault(impl, []).append((size, ops, vals[-1][1]))
    for pts in series.values():
        pts.sort()
    return series


def raw_disk_point(rows):
    """Raw sequential write bandwidth as 1 MiB writes/s, or None if absent."""
    rates = []
    for r in rows:
        if r.get("impl") != RAW_IMPL or r.get("workload") != RAW_WORKLOAD:
            continue
        try:
            bw = int(r["value_size"]) * float(r["ops"]) / float(r["seconds"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            continue
        rates.append(bw)
    if not rates:
        return None
    bw = statistics.median(rates)
    return bw / MIB, bw


def impl_style(impl, extra):
    if impl in IMPLS:
        return IMPLS[impl]
    colour, marker = OTHER_STYLES[extra % len(OTHER_STYLES)]
    return impl, colour, marker


def ordered_impls(series):
    known = [i for i in IMPLS if i in series]
    return known + sorted(i for i in series if i not in IMPLS)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="JSON file from `pcache bench --json-out`")
    ap.add_argument("out", help="PNG to write")
    ap.add_argument("--title", default="", help="footnote text, e.g. machine and date")
    args = ap.parse_args()

    rows = load(args.results)
    per_panel = {w: collect(rows, w) for w in PANELS}
    if not any(per_panel.values()):
        sys.exit(f"{args.results}: no 'set' or 'get-hit' results to plot")
    raw = raw_disk_point(rows)

    sizes = sorted({s for series in per_panel.values() for pts in series.values() for s, _, _ in pts})
    if raw is not None and MIB not in sizes:
        sizes.append(MIB)
        sizes.sort()

    # 12 x 5 in at 100 dpi = 1200 x 500 px.
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), dpi=100, sharey=True)
    for ax, workload in zip(axes, PANELS):
        series = per_panel[workload]
        extra = 0
        for impl in ordered_impls(series):
            label, colour, marker = impl_style(impl, extra)
            if impl not in IMPLS:
                extra += 1
            xs = [s for s, _, _ in series[impl]]
            ys = [v for _, v, _ in series[impl]]
            ax.plot(xs, ys, color=colour, marker=marker, markersize=7, linewidth=2, label=label)

        if workload == "set" and raw is not None:
            ops, bw = raw
            # Short dashed reference level around 1 MiB, and a hollow star on
            # it so a cache point at the same height stays visible.
            ax.plot([MIB / 3, MIB * 1.5], [ops, ops], linestyle="--", linewidth=1.2,
                    color="black", zorder=1)
            ax.plot([MIB], [ops], linestyle="none", marker="*", markersize=17,
                    markerfacecolor="none", markeredgecolor="black", markeredgewidth=1.5,
                    zorder=4, label=f"raw disk write ({bw / 1e6:,.0f} MB/s)")
            ax.annotate("raw disk write", (MIB, ops), xytext=(-80, -16),
                        textcoords="offset points", ha="center", va="center", fontsize=10,
                        bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.85),
                        arrowprops=dict(arrowstyle="->", color="black", lw=1))

        if not series:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes,
                    ha="center", va="center", fontsize=12, color="grey")

        ax.set_title(workload, fontsize=14, fontweight="bold")
        ax.set_xscale("log")
        ax.set_yscale("log")
        if sizes:
            ax.xaxis.set_major_locator(FixedLocator(sizes))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: human_size(v)))
            ax.set_xlim(sizes[0] / 2, sizes[-1] * 2)
        ax.yaxis.set_major_formatter(FuncFormatter(human_rate))
        ax.set_xlabel("value size", fontsize=11)
        ax.tick_params(labelsize=10)
        ax.grid(True, which="major", alpha=0.4)
        ax.grid(True, which="minor", axis="y", alpha=0.15)
    # Shared y range over both panels, set once all data is drawn; extra room
    # below for the raw-disk label.
    ys = [v for series in per_panel.values() for pts in series.values() for _, v, _ in pts]
    if raw is not None:
        ys.append(raw[0])
    if ys:
        axes[0].set_ylim(min(ys) / (3 if raw is not None else 1.6), max(ys) * 2)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=10, loc="best", framealpha=0.9)
    axes[0].set_ylabel("ops/s (log scale)", fontsize=11)
    axes[1].tick_params(labelleft=True)

    fig.suptitle("PersistentCache benchmark: throughput vs value size",
                 fontsize=14, fontweight="bold", y=0.98)

    # Footnote: the caller's text plus the op count used at each value size.
    ns = {}
    for series in per_panel.values():
        for pts in series.values():
            for s, _, n in pts:
                ns.setdefault(s, set()).add(n)
    n_note = ", ".join(
        f"{human_size(s)}: " + "/".join(str(n) for n in sorted(ns[s])) for s in sorted(ns)
    )
    foot = [t for t in (args.title, f"ops per run (n) \u2014 {n_note}" if n_note else "") if t]
    fig.text(0.01, 0.015, "\n".join(foot), ha="left", va="bottom", fontsize=9, color="#444444")

    # Fixed margins (not tight_layout) so the footnote never overlaps the axes.
    fig.subplots_adjust(left=0.07, right=0.99, top=0.87, bottom=0.16 + 0.03 * len(foot),
                        wspace=0.12)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
