#!/usr/bin/env python3
"""How much of each live branch's pause the host's hypervisor took: series of
`forkd bench branch` under the kernel's scheduler trace (tracefs), each branch's window read back.

From the moment the switch-over gate opens until the source runs again, forkd runs the source's
migration thread (`mig/src/main`) at SCHED_FIFO priority 1 (base/rt_window.h); the trace shows it
at prio 98 then. Over each such window this sums, for every stretch the thread was on a core, the
wall time minus the run time the kernel charged it (`sched_stat_runtime`). The kernel charges run
time from its task clock, which leaves out the time the hypervisor ran something else on this
machine's virtual CPU (steal, CONFIG_PARAVIRT_TIME_ACCOUNTING) and, where
CONFIG_IRQ_TIME_ACCOUNTING is on, interrupt time: the difference is what the thread lost while
the guest believed it was running. Windows map to the bench's branches in order. A window
opens at the gate, a little before the pause, and a stretch is counted whole if it ends in the
window: a pause less the time lost in its window is a lower bound of what it would have been.

    pause_steal.py run [--series N] [--out DIR] [-- BENCH ARGS...]   (root; tracefs)
    pause_steal.py analyze TRACE BENCH_JSON   (a missed series' trace-N.txt and bench-N.json)

Standard library only."""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

from tables import series_met  # the target's criterion, as the README's tables judge it

TRACEFS = "/sys/kernel/tracing"
EVENTS = ["sched:sched_switch", "sched:sched_stat_runtime"]
THREAD = "mig/src/main"  # QEMU 10's migration thread (-name debug-threads=on)
WINDOW_PRIO = 98  # the kernel's prio for SCHED_FIFO priority 1
DEFAULT_BENCH = ["branch", "--memory", "1024", "--dirty-mibps", "20", "--runs", "10", "--modes",
                 "live", "--baseline-runs", "1", "--chain-spawns", "1", "--json"]

LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+(\w+):\s+(.*)$")
SWITCH = re.compile(r"prev_comm=(.*) prev_pid=(\d+) prev_prio=(\d+) prev_state=(\S+) ==> "
                    r"next_comm=(.*) next_pid=(\d+) next_prio=(\d+)")
RUNTIME = re.compile(r"pid=(\d+) runtime=(\d+)")


def parse(lines):
    """The switches and run-time charges of the trace, decoded once, in time order (the file's
    order where two share a timestamp): (seconds, cpu, "switch", (prev comm, tid, prio),
    (next comm, tid, prio)) and (seconds, cpu, "runtime", tid, ms). Other lines are skipped."""
    out = []
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        t, cpu, name, rest = float(m.group(4)), int(m.group(3)), m.group(5), m.group(6)
        if name == "sched_switch":
            sw = SWITCH.match(rest)
            if sw:
                out.append((t, cpu, "switch", (sw.group(1), int(sw.group(2)), int(sw.group(3))),
                            (sw.group(5), int(sw.group(6)), int(sw.group(7)))))
        elif name == "sched_stat_runtime":
            rt = RUNTIME.search(rest)
            if rt:
                out.append((t, cpu, "runtime", int(rt.group(1)), int(rt.group(2)) / 1e6))
    out.sort(key=lambda e: e[0])
    return out


def windows(events, thread=THREAD, prio=WINDOW_PRIO):
    """[(tid, first, last)]: the span in which each thread named `thread` showed at `prio` in a
    switch, in order of their start."""
    open_, done = {}, []
    for t, _, kind, prev, next_ in events:
        if kind != "switch":
            continue
        for comm, tid, p in (prev, next_):
            if comm != thread:
                continue
            if p == prio:
                open_.setdefault(tid, [t, t])[1] = t
            elif tid in open_:
                done.append((tid, *open_.pop(tid)))
    done += [(tid, *span) for tid, span in open_.items()]
    return sorted(done, key=lambda w: w[1])


def lost_ms(events, tid, start, end):
    """(total, largest) ms that thread tid was on a core but not charged run time, over the
    stretches on a core that end within [start, end]."""
    on = {}  # cpu -> (since, charged ms)
    total = largest = 0.0
    for t, cpu, kind, a, b in events:
        if t > end:
            break
        if kind == "runtime":
            if a == tid and cpu in on:
                since, charged = on[cpu]
                on[cpu] = (since, charged + b)
            continue
        if a[1] == tid and cpu in on:
            since, charged = on.pop(cpu)
            if t >= start:
                gap = max(0.0, (t - since) * 1e3 - charged)
                total += gap
                largest = max(largest, gap)
        if b[1] == tid:
            on[cpu] = (t, 0.0)
    return total, largest


def analyze(trace_lines, bench):
    """The bench's live branches, each with the time its migration thread lost in its window."""
    mode = next((m for m in bench.get("modes", []) if m.get("mode") == "live"), None)
    if not mode or not mode.get("pause_series_ms"):
        raise SystemExit("the bench's JSON has no live branches (forkd bench branch --modes live)")
    pauses = mode["pause_series_ms"]
    events = parse(trace_lines)
    wins = windows(events)
    if len(wins) < len(pauses):
        raise SystemExit(f"{len(wins)} windows in the trace for {len(pauses)} branches "
                         "(was the window open? QEMU 10 and root are needed)")
    runs = []
    for pause, (tid, start, end) in zip(pauses, wins):
        total, largest = lost_ms(events, tid, start, end)
        runs.append({"pause_ms": pause, "window_ms": (end - start) * 1e3, "lost_ms": total,
                     "largest_lost_ms": largest})
    without = [max(0.0, r["pause_ms"] - min(r["lost_ms"], r["pause_ms"])) for r in runs]
    return {"runs": runs, "median_ms": statistics.median(pauses), "max_ms": max(pauses),
            "met": series_met(pauses), "met_without_lost": series_met(without)}


def line(i, s):
    worst = max(s["runs"], key=lambda r: r["pause_ms"])
    return (f"series {i}: pause median {s['median_ms']:.2f} ms, max {s['max_ms']:.2f} ms "
            f"({'met' if s['met'] else 'MISSED'}); the longest pause's window lost "
            f"{worst['lost_ms']:.2f} ms (largest stretch {worst['largest_lost_ms']:.2f}); "
            f"without it: {'met' if s['met_without_lost'] else 'missed'}")


class Tracing:
    """tracefs set for the scheduler events, and put back as it was."""

    def __init__(self, root=TRACEFS, buffer_kb=131072):
        self.root, self.buffer_kb, self.saved = root, buffer_kb, {}

    def path(self, name):
        return os.path.join(self.root, name)

    def read(self, name):
        with open(self.path(name)) as f:
            return f.read()

    def write(self, name, value):
        with open(self.path(name), "w") as f:
            f.write(value)

    def __enter__(self):
        clock = re.search(r"\[(\w+)\]", self.read("trace_clock"))
        # "7 (expanded: 1408)": not allocated yet, and 1408 once used; 1408 is the size to keep.
        size = re.search(r"(\d+)(?:\s*\(expanded:\s*(\d+)\))?", self.read("buffer_size_kb"))
        self.saved = {"tracing_on": self.read("tracing_on").strip(),
                      "set_event": self.read("set_event"),
                      "trace_clock": clock.group(1) if clock else "local",
                      "buffer_size_kb": (size.group(2) or size.group(1)) if size else "1408"}
        self.write("tracing_on", "0")
        self.write("set_event", "\n".join(EVENTS) + "\n")
        self.write("trace_clock", "local")
        self.write("buffer_size_kb", str(self.buffer_kb))
        return self

    def __exit__(self, *exc):
        self.write("tracing_on", "0")
        self.write("set_event", self.saved["set_event"])
        self.write("trace_clock", self.saved["trace_clock"])
        self.write("buffer_size_kb", self.saved["buffer_size_kb"])
        self.write("tracing_on", self.saved["tracing_on"])

    def capture(self, argv):
        self.write("trace", "")
        self.write("tracing_on", "1")
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
        finally:
            self.write("tracing_on", "0")
        return r, self.read("trace").splitlines()


def host_steal_ms(stat="/proc/stat"):
    """The steal time of all this machine's CPUs so far (ms; /proc/stat counts it in ticks)."""
    with open(stat) as f:
        fields = f.readline().split()
    ticks = int(fields[8]) if fields and fields[0] == "cpu" and len(fields) > 8 else 0
    return ticks * 1000.0 / os.sysconf("SC_CLK_TCK")


def run(args):
    if not os.access(os.path.join(args.tracefs, "set_event"), os.W_OK):
        raise SystemExit(f"pause_steal: needs root and tracefs at {args.tracefs}")
    here = os.path.dirname(os.path.abspath(__file__))
    forkd = args.forkd or os.path.join(here, "..", "build", "forkd")
    if not os.access(forkd, os.X_OK):
        raise SystemExit(f"pause_steal: no forkd binary at {forkd} (build it, or give --forkd)")
    argv = [forkd, "bench", *(args.bench or DEFAULT_BENCH)]
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    else:
        args.out = tempfile.mkdtemp(prefix="pause-steal-")
    print(f"pause_steal: traces of missed series and pause-steal.json go to {args.out}",
          flush=True)
    summary = []
    with Tracing(root=args.tracefs) as tr:
        for i in range(1, args.series + 1):
            steal0 = host_steal_ms()
            r, trace = tr.capture(argv)
            steal = host_steal_ms() - steal0
            if r.returncode != 0:
                raise SystemExit(f"pause_steal: {' '.join(argv)} exited {r.returncode}")
            try:
                bench = json.loads(r.stdout)
            except ValueError as e:
                raise SystemExit(f"pause_steal: {' '.join(argv)} printed no JSON ({e})")
            s = analyze(trace, bench)
            s["host_steal_ms"] = steal
            print(f"{line(i, s)}; the host's steal over the series {steal:.0f} ms", flush=True)
            if not s["met"]:  # what `analyze` reads again
                with open(os.path.join(args.out, f"trace-{i}.txt"), "w") as f:
                    f.write("\n".join(trace) + "\n")
                with open(os.path.join(args.out, f"bench-{i}.json"), "w") as f:
                    f.write(r.stdout)
            summary.append(s)
            with open(os.path.join(args.out, "pause-steal.json"), "w") as f:  # so far
                json.dump({"command": ["forkd", *argv[1:]], "series": summary}, f, indent=1)
    missed = [s for s in summary if not s["met"]]
    explained = [s for s in missed if s["met_without_lost"]]
    print(f"{len(summary) - len(missed)} of {len(summary)} series met; of the {len(missed)} "
          f"missed, {len(explained)} meet without the time their thread lost to the host")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="series under the trace (root)")
    r.add_argument("--series", type=int, default=10, help="series of the bench (default 10)")
    r.add_argument("--out", help="directory for the results (default: a new temporary one)")
    r.add_argument("--forkd", help="the forkd binary (default: build/forkd)")
    r.add_argument("--tracefs", default=TRACEFS, help=f"where tracefs is (default {TRACEFS})")
    r.add_argument("bench", nargs="*", help="forkd bench's arguments (after --)")
    a = sub.add_parser("analyze", help="a saved trace and the bench's JSON")
    a.add_argument("trace")
    a.add_argument("bench_json")
    args = p.parse_args()
    if args.cmd == "run":
        run(args)
        return
    try:
        with open(args.trace) as f, open(args.bench_json) as g:
            trace, bench = f.read().splitlines(), json.load(g)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SystemExit(f"pause_steal: cannot read the trace or the bench's JSON: {e}")
    if not isinstance(bench, dict):
        raise SystemExit(f"pause_steal: {args.bench_json} is not forkd bench's JSON object")
    s = analyze(trace, bench)
    print(line(1, s))
    for r in s["runs"]:
        print(f"  pause {r['pause_ms']:.3f} ms, window {r['window_ms']:.3f} ms, lost "
              f"{r['lost_ms']:.3f} ms (largest {r['largest_lost_ms']:.3f})")


if __name__ == "__main__":
    sys.exit(main())
