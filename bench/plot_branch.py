#!/usr/bin/python3
"""Charts from `forkd bench branch --json` results: the pause of each consecutive branch per
mode against QEMU's plain stop + save (log scale), and chain spawn time by depth.
Usage: plot_branch.py OUT.png RESULT.json [RESULT.json ...]"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(r):
    writer = f", writer {r['writer']['dirty_mibps_idle']:.0f} MiB/s" if r.get("writer") else ""
    return f"{r['memory_mib']} MiB{writer}"


def main():
    out, files = sys.argv[1], sys.argv[2:]
    results = [json.load(open(f)) for f in files]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))

    for r in results:
        for m in r["modes"]:
            series = m["pause_series_ms"]
            ax1.plot(range(1, len(series) + 1), series, marker="o",
                     label=f"{m['mode']} ({label(r)})")
        base = r["plain_save"]["pause_ms"]["median"]
        ax1.axhline(base, linestyle="--", color="grey")
        ax1.annotate(f"plain stop + save p50, {r['memory_mib']} MiB", (1, base),
                     textcoords="offset points", xytext=(0, 4), fontsize=8, color="grey")
    ax1.set_yscale("log")
    ax1.set_xlabel("consecutive branch of one sandbox")
    ax1.set_ylabel("source paused (ms, log)")
    ax1.set_title("BRANCH pause, 10 in a row")
    ax1.legend(fontsize=8)

    for r in results:
        depths = [d["depth"] for d in r["chain"]["depths"]]
        p50 = [d["later_spawn_ms"]["median"] for d in r["chain"]["depths"]]
        ax2.plot(depths, p50, marker="o", label=label(r))
    ax2.set_xticks([0, 1, 2, 3])
    ax2.set_xlabel("chain depth (0 = base tag)")
    ax2.set_ylabel("spawn, fork of 1 until ready (ms, p50)")
    ax2.set_ylim(bottom=0)
    ax2.set_title("Spawn from a chain link, after its first spawn")
    ax2.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
