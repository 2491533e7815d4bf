#!/usr/bin/python3
"""Charts from `forkd bench spawn --out` results: per-child latency against the baselines, and
where a child's time goes. Usage: plot_spawn.py OUT.png RESULT.json [RESULT.json ...]"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def label(r):
    pool = f", warm pool {r['pool']}" if r.get("pool") and r.get("pool_warm") else (
        f", pool {r['pool']}" if r.get("pool") else "")
    ksm = ", KSM" if r.get("ksm", {}).get("enabled") else ""
    return f"{r['image']} x{r['n']}{pool}{ksm}"


def main():
    out, files = sys.argv[1], sys.argv[2:]
    results = [json.load(open(f)) for f in files]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))

    names, values, colors = [], [], []
    for r in results:
        names.append(label(r) + "\nfork p50")
        values.append(r["child_latency_ms"]["median"])
        colors.append("tab:green")
        if "cold_boot_ms" in r:
            names.append(r["image"] + "\ncold boot + warm-up")
            values.append(r["cold_boot_ms"]["total"])
            colors.append("tab:red")
            names.append(r["image"] + "\nplain QEMU restore")
            values.append(r["plain_restore_ms"]["total"])
            colors.append("tab:orange")
    ax1.barh(range(len(values)), values, color=colors)
    ax1.set_yticks(range(len(values)), names, fontsize=7)
    ax1.set_xscale("log")
    ax1.set_xlabel("ms per sandbox (log scale)")
    ax1.set_title("Time until a sandbox answers, TCG, 2 cores")
    for i, v in enumerate(values):
        ax1.text(v, i, f" {v:.0f}", va="center", fontsize=7)

    parts = ["qemu_launch", "device_state_load", "identity"]
    bottom = [0.0] * len(results)
    for part, color in zip(parts, ["tab:blue", "tab:purple", "tab:cyan"]):
        vals = [r["breakdown_ms"][part]["median"] for r in results]
        ax2.bar(range(len(results)), vals, bottom=bottom, color=color, label=part)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax2.set_xticks(range(len(results)), [label(r) for r in results], fontsize=7, rotation=15)
    ax2.set_ylabel("ms (p50 of each part)")
    ax2.set_title("Where a child's fork time goes")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
