"""Figures of the SDK routes, measured through the Python SDK against a real daemon:

  tests/sdk/with-daemon.sh build/forkd -- python3 bench/sdk_figures.py [--runs N] [--mib M] [--json]

exec round trip (plain, streamed, background start+wait) on the minimal tag, the first streamed
chunk of `echo first; sleep 2; echo second` against the command's end, file upload and download
throughput (M MiB, checked by SHA-256), and eval on the python tag when there is one.
"""
import argparse
import hashlib
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "sdk", "python"))
from forkd import Sandbox  # noqa: E402


def ms_stats(samples):
    samples = sorted(samples)
    return {"p50_ms": round(statistics.median(samples) * 1000, 2),
            "p90_ms": round(samples[int(len(samples) * 0.9) - 1] * 1000, 2),
            "runs": len(samples)}


def timed(fn, runs):
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    fig = {}
    with Sandbox.create(os.environ["FORKD_TEST_TAG"]) as sbx:
        sbx.commands.run("true")  # warm the path once
        fig["exec"] = ms_stats(timed(lambda: sbx.commands.run("true"), a.runs))
        fig["exec_streamed"] = ms_stats(
            timed(lambda: sbx.commands.run("true", on_stdout=lambda s: None), a.runs))
        def background():
            h = sbx.commands.run("true", background=True)
            h.wait()
            h.delete()  # a sandbox keeps at most 16 commands

        fig["background_start_wait"] = ms_stats(timed(background, a.runs))
        t0 = time.perf_counter()
        first = []
        sbx.commands.run("echo first; sleep 2; echo second",
                         on_stdout=lambda s: first.append(time.perf_counter() - t0))
        end = time.perf_counter() - t0
        fig["stream_first_chunk"] = {"first_ms": round(first[0] * 1000, 1),
                                     "end_ms": round(end * 1000, 1)}
        data = os.urandom(a.mib << 20)
        t0 = time.perf_counter()
        sbx.files.write("/tmp/bench.bin", data)
        up = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = sbx.files.read("/tmp/bench.bin", format="bytes")
        down = time.perf_counter() - t0
        assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
        fig["files"] = {"mib": a.mib, "upload_mib_s": round(a.mib / up, 1),
                        "download_mib_s": round(a.mib / down, 1)}
    if os.environ.get("FORKD_TEST_PY_TAG"):
        with Sandbox.create(os.environ["FORKD_TEST_PY_TAG"]) as sbx:
            sbx.eval("1")
            fig["eval"] = ms_stats(timed(lambda: sbx.eval("1 + 1"), a.runs))
    if a.json:
        print(json.dumps(fig, indent=2))
        return
    for name, f in fig.items():
        print("%-22s %s" % (name, "  ".join("%s=%s" % kv for kv in f.items())))


if __name__ == "__main__":
    main()
