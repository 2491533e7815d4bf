#!/usr/bin/env python3
"""The table of bench/compare-qemu.sh: reads DIR/{boot,snapshot,spawn,exec,branch}-{old,new}.json
and prints each figure for both QEMUs with new/old; --out also writes it all as JSON."""
import argparse
import json
import os
import sys


def median(d, *path):
    """d[path...]['median'] (a stats summary), or the number itself; None when missing/empty."""
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    if isinstance(d, dict):
        return d.get("median") if d.get("n", 1) else None
    return d


def mode(branch, name):
    return next((m for m in branch.get("modes", []) if m.get("mode") == name), {})


# (label, unit, file kind, how to read the figure from that file's JSON)
ROWS = [
    ("cold boot to first ping, p50", "ms", "boot",
     lambda d: median(d["results"][0], "boot_to_ping_ms")),
    ("exec round trip, p50", "ms", "boot", lambda d: median(d["results"][0], "exec_rtt_ms")),
    ("snapshot (boot, exec, save; CLI)", "ms", "snapshot", lambda d: d.get("snapshot_ms")),
    ("spawn batch, all ready", "ms", "spawn", lambda d: d.get("wall_ms")),
    ("  per child, p50", "ms", "spawn", lambda d: median(d, "child_latency_ms")),
    ("  QEMU launch, p50", "ms", "spawn", lambda d: median(d, "breakdown_ms", "qemu_launch")),
    ("  device state load, p50", "ms", "spawn",
     lambda d: median(d, "breakdown_ms", "device_state_load")),
    ("  identity, p50", "ms", "spawn", lambda d: median(d, "breakdown_ms", "identity")),
    ("one child alone, p50", "ms", "spawn", lambda d: median(d, "single_child_ms")),
    ("CPU per idle child, p50", "%", "spawn", lambda d: median(d, "idle_cpu_pct")),
    ("USS per idle child, p50", "MiB", "spawn", lambda d: median(d, "uss_mib")),
    ("python child: first exec after the fork, p50", "ms", "exec",
     lambda d: median(d, "exec_first_ms")),
    ("python child: later exec, p50", "ms", "exec", lambda d: median(d, "exec_ms")),
    ("python child: first eval after the fork, p50", "ms", "exec",
     lambda d: median(d, "eval_first_ms")),
    ("python child: later eval, p50", "ms", "exec", lambda d: median(d, "eval_ms")),
    ("live BRANCH pause, p50", "ms", "branch", lambda d: median(mode(d, "live"), "pause_ms")),
    ("live BRANCH until the tag is ready, p50", "ms", "branch",
     lambda d: median(mode(d, "live"), "total_ms")),
    ("live BRANCH series max/median", "", "branch",
     lambda d: mode(d, "live").get("series_max_over_median")),
    ("full BRANCH pause, p50", "ms", "branch", lambda d: median(mode(d, "full"), "pause_ms")),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("old_version")
    ap.add_argument("new_version")
    ap.add_argument("--out")
    a = ap.parse_args()
    data = {}
    for side in ("old", "new"):
        data[side] = {}
        for kind in ("boot", "snapshot", "spawn", "exec", "branch"):
            path = os.path.join(a.dir, f"{kind}-{side}.json")
            try:
                with open(path) as f:
                    data[side][kind] = json.load(f)
            except (OSError, ValueError) as e:
                print(f"compare-qemu: {path}: {e}", file=sys.stderr)
                data[side][kind] = {}
    rows = []
    for label, unit, kind, get in ROWS:
        vals = []
        for side in ("old", "new"):
            try:
                v = get(data[side][kind])
            except (KeyError, IndexError, TypeError):
                v = None
            vals.append(v)
        ratio = vals[1] / vals[0] if None not in vals and vals[0] else None
        rows.append({"figure": label.strip(), "unit": unit, "old": vals[0], "new": vals[1],
                     "new_over_old": ratio})
    head = f"QEMU {a.old_version}", f"QEMU {a.new_version}"
    w = max(len(label) for label, *_ in ROWS) + 7
    print(f"{'':{w}} {head[0]:>12} {head[1]:>12} {'new/old':>8}")
    fmt = lambda v: "-" if v is None else f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"
    for (label, unit, *_), r in zip(ROWS, rows):
        name = f"{label} ({unit})" if unit else label
        ratio = "-" if r["new_over_old"] is None else f"{r['new_over_old']:.2f}"
        print(f"{name:{w}} {fmt(r['old']):>12} {fmt(r['new']):>12} {ratio:>8}")
    if a.out:
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"bench": "compare-qemu", "old_version": a.old_version,
                       "new_version": a.new_version, "rows": rows, "raw": data}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, a.out)
    missing = [r["figure"] for r in rows if r["old"] is None or r["new"] is None]
    if missing:
        print(f"compare-qemu: no figure for: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
