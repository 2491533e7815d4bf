#!/usr/bin/env python3
"""bench/pause_steal.py on a scheduler trace written here in tracefs's format: the migration
thread's windows, the time it lost on a core, the series criterion, and tracefs put back as it
was. No VM, no root. Standard library only."""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pause_steal as ps  # noqa: E402


def switch(t, cpu, prev, next_, state="S"):
    """A sched_switch line; prev and next are (comm, tid, prio)."""
    return (f"{prev[0]:>16}-{prev[1]:<6} [{cpu:03d}] d..2. {t:.6f}: sched_switch: "
            f"prev_comm={prev[0]} prev_pid={prev[1]} prev_prio={prev[2]} prev_state={state} ==> "
            f"next_comm={next_[0]} next_pid={next_[1]} next_prio={next_[2]}")


def runtime(t, cpu, who, ns):
    return (f"{who[0]:>16}-{who[1]:<6} [{cpu:03d}] d..2. {t:.6f}: sched_stat_runtime: "
            f"comm={who[0]} pid={who[1]} runtime={ns} [ns]")


VCPU = ("CPU 0/TCG", 50, 120)  # a name with a space and a slash, as QEMU's are
IDLE = ("swapper/1", 0, 120)


def mig(tid, prio=98):
    return ("mig/src/main", tid, prio)


def trace():
    lines = [
        # Thread 100 before its window (normal priority): not counted.
        switch(0.900000, 0, VCPU, mig(100, 120)),
        runtime(0.950000, 0, mig(100, 120), 10_000),
        switch(0.950000, 0, mig(100, 120), VCPU),
        # Its window: on the core 2 ms, charged 0.5 ms (two updates), so 1.5 ms lost.
        switch(1.000000, 0, VCPU, mig(100)),
        runtime(1.001000, 0, mig(100), 200_000),
        runtime(1.002000, 0, mig(100), 300_000),
        switch(1.002000, 0, mig(100), VCPU, "X"),
        # Thread 200's window on the other core: 0.3 ms on it, all of it charged.
        switch(2.000000, 1, IDLE, mig(200)),
        runtime(2.000300, 1, mig(200), 300_000),
        switch(2.000300, 1, mig(200), IDLE, "X"),
        # Thread 300's window: two stretches, 0.1 ms lost in the second.
        switch(3.000000, 0, VCPU, mig(300)),
        runtime(3.000200, 0, mig(300), 200_000),
        switch(3.000200, 0, mig(300), VCPU),
        switch(3.001000, 0, VCPU, mig(300)),
        runtime(3.001400, 0, mig(300), 300_000),
        switch(3.001400, 0, mig(300), VCPU, "X"),
    ]
    # tracefs merges its per-core buffers in time order, and an event's line comes before the
    # switch it leads to at the same microsecond; the header's comment lines are skipped.
    return ["# tracer: nop", "#"] + lines


def bench(pauses):
    return {"modes": [{"mode": "live", "pause_series_ms": pauses}]}


def test_windows_and_lost_time():
    events = ps.parse(trace())
    wins = ps.windows(events)
    assert [w[0] for w in wins] == [100, 200, 300], wins
    assert abs(wins[0][1] - 1.0) < 1e-9 and abs(wins[0][2] - 1.002) < 1e-9, wins
    total, largest = ps.lost_ms(events, *wins[0])
    assert abs(total - 1.5) < 1e-6 and abs(largest - 1.5) < 1e-6, (total, largest)
    assert max(ps.lost_ms(events, *wins[1])) < 1e-6
    total, largest = ps.lost_ms(events, *wins[2])
    assert abs(total - 0.1) < 1e-6 and abs(largest - 0.1) < 1e-6, (total, largest)


def test_series_criterion():
    assert ps.series_met([1.0, 1.0, 1.5])  # max / median 1.5
    assert ps.series_met([0.3, 0.3, 1.3])  # median + 1 ms
    assert not ps.series_met([0.3, 0.3, 1.31])
    assert not ps.series_met([2.0, 2.0, 3.01])


def test_a_miss_the_host_explains():
    s = ps.analyze(trace(), bench([2.0, 0.4, 0.45]))
    assert not s["met"] and s["met_without_lost"], s
    assert [round(r["lost_ms"], 3) for r in s["runs"]] == [1.5, 0.0, 0.1], s
    # Missed with or without: the long pause's window lost nothing.
    s = ps.analyze(trace(), bench([0.4, 2.0, 0.45]))
    assert not s["met"] and not s["met_without_lost"], s
    assert "MISSED" in ps.line(1, s)


def test_fewer_windows_than_branches_is_an_error():
    try:
        ps.analyze(trace(), bench([0.4] * 4))
    except SystemExit as e:
        assert "3 windows in the trace for 4 branches" in str(e), e
    else:
        raise AssertionError("no error")


def test_a_bench_without_live_branches_is_an_error():
    try:
        ps.analyze(trace(), {"modes": [{"mode": "full", "pause_series_ms": [1.0]}]})
    except SystemExit as e:
        assert "no live branches" in str(e), e
    else:
        raise AssertionError("no error")


def test_tracefs_is_put_back():
    with tempfile.TemporaryDirectory() as d:
        files = {"tracing_on": "1\n", "set_event": "irq:irq_handler_entry\n",
                 "trace_clock": "[global] local counter\n",
                 "buffer_size_kb": "7 (expanded: 1408)\n"}  # as before the first trace
        for name, text in files.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        with ps.Tracing(root=d, buffer_kb=1024) as tr:
            with open(os.path.join(d, "set_event")) as f:
                assert f.read() == "\n".join(ps.EVENTS) + "\n"
            r, lines = tr.capture([sys.executable, "-c", "print(1)"])
            assert r.returncode == 0 and r.stdout == "1\n" and lines == []
            with open(os.path.join(d, "tracing_on")) as f:
                assert f.read() == "0"
        want = {"tracing_on": "1", "set_event": "irq:irq_handler_entry\n",
                "trace_clock": "global", "buffer_size_kb": "1408"}
        for name, text in want.items():
            with open(os.path.join(d, name)) as f:
                assert f.read() == text, (name, text)


def test_host_steal():
    with tempfile.TemporaryDirectory() as d:
        stat = os.path.join(d, "stat")
        with open(stat, "w") as f:
            f.write("cpu  5306549 39502 1434225 6216146 363459 0 18062 9442 0 0\ncpu0 1 2 3\n")
        assert abs(ps.host_steal_ms(stat) - 9442 * 1000.0 / os.sysconf("SC_CLK_TCK")) < 1e-9
    assert ps.host_steal_ms() >= 0


def fake_tracefs(d):
    files = {"tracing_on": "1\n", "set_event": "", "trace_clock": "[local] global\n",
             "buffer_size_kb": "1408\n", "trace": ""}
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)


def test_run_keeps_what_a_missed_series_needs():
    """run() end to end with a fake forkd that writes the trace and prints its JSON: series 1
    meets, series 2 misses; the second's trace and JSON are kept, the summary has both."""
    with tempfile.TemporaryDirectory() as d:
        tfs, out = os.path.join(d, "tracefs"), os.path.join(d, "out")
        os.mkdir(tfs)
        fake_tracefs(tfs)
        with open(os.path.join(d, "trace.txt"), "w") as f:
            f.write("\n".join(trace()) + "\n")
        forkd = os.path.join(d, "forkd")
        with open(forkd, "w") as f:
            f.write(f"""#!/bin/sh
n=$(cat {d}/n 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {d}/n
cp {d}/trace.txt {tfs}/trace
[ "$(cat {tfs}/tracing_on)" = 1 ] || exit 3
if [ $n = 1 ]; then p='[0.4, 0.45, 0.5]'; else p='[2.0, 0.4, 0.45]'; fi
echo '{{"modes": [{{"mode": "live", "pause_series_ms": '"$p"'}}]}}'
""")
        os.chmod(forkd, 0o755)
        sys.argv = ["pause_steal.py", "run", "--series", "2", "--out", out, "--forkd", forkd,
                    "--tracefs", tfs]
        ps.main()
        assert sorted(os.listdir(out)) == ["bench-2.json", "pause-steal.json", "trace-2.txt"]
        with open(os.path.join(out, "pause-steal.json")) as f:
            got = json.load(f)
        assert got["command"][:3] == ["forkd", "bench", "branch"], got["command"]
        assert [s["met"] for s in got["series"]] == [True, False], got
        assert got["series"][1]["met_without_lost"], got
        with open(os.path.join(tfs, "tracing_on")) as f:
            assert f.read() == "1"
        with open(os.path.join(tfs, "set_event")) as f:
            assert f.read() == ""
        with open(os.path.join(tfs, "buffer_size_kb")) as f:
            assert f.read() == "1408"
        sys.argv = ["pause_steal.py", "analyze", os.path.join(out, "trace-2.txt"),
                    os.path.join(out, "bench-2.json")]
        ps.main()


def test_analyze_names_what_it_cannot_read():
    """A missing file, or a bench file that is not JSON, ends with a message and exit 1, not a
    traceback."""
    with tempfile.TemporaryDirectory() as d:
        trace_path, not_json = os.path.join(d, "trace.txt"), os.path.join(d, "bench.json")
        with open(trace_path, "w") as f:
            f.write("\n".join(trace()) + "\n")
        with open(not_json, "w") as f:
            f.write("not json")
        for argv in ([os.path.join(d, "missing.txt"), not_json], [trace_path, not_json]):
            r = subprocess.run([sys.executable, os.path.join(HERE, "pause_steal.py"), "analyze",
                                *argv], capture_output=True, text=True)
            assert r.returncode == 1, r
            assert r.stderr.startswith("pause_steal: cannot read"), r
            assert "Traceback" not in r.stderr, r
        with open(not_json, "w") as f:
            f.write("[1, 2]")
        r = subprocess.run([sys.executable, os.path.join(HERE, "pause_steal.py"), "analyze",
                            trace_path, not_json], capture_output=True, text=True)
        assert r.returncode == 1 and "is not forkd bench's JSON object" in r.stderr, r


def main():
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    for t in tests:
        t()
    print(f"pause_steal_test: {len(tests)} passed")


if __name__ == "__main__":
    main()
