#!/usr/bin/env python3
"""bench/compare_qemu.py on the recorded run's raw files: the table's rows are read back from them,
new/old is computed, and a missing file makes it fail. Standard library only."""
import glob
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def run(d, *extra):
    return subprocess.run([sys.executable, os.path.join(HERE, "compare_qemu.py"), d, "7.2", "10.0",
                           *extra], capture_output=True, text=True)


def main():
    recorded = sorted(glob.glob(os.path.join(HERE, "results", "compare-qemu-*.json")))
    assert recorded, "no recorded compare-qemu result"
    with open(recorded[-1]) as f:
        rec = json.load(f)
    with tempfile.TemporaryDirectory() as d:
        for side, kinds in rec["raw"].items():
            for kind, data in kinds.items():
                with open(os.path.join(d, f"{kind}-{side}.json"), "w") as f:
                    json.dump(data, f)
        out = os.path.join(d, "out.json")
        r = run(d, "--out", out)
        assert r.returncode == 0, r.stderr
        with open(out) as f:
            got = json.load(f)
        assert [x["figure"] for x in got["rows"]] == [x["figure"] for x in rec["rows"]]
        for g, want in zip(got["rows"], rec["rows"]):
            assert g["old"] == want["old"] and g["new"] == want["new"], (g, want)
            if g["old"]:
                assert abs(g["new_over_old"] - g["new"] / g["old"]) < 1e-9, g
        assert "QEMU 7.2" in r.stdout and "spawn batch, all ready (ms)" in r.stdout, r.stdout
        os.remove(os.path.join(d, "spawn-new.json"))
        r = run(d)
        assert r.returncode == 1 and "no figure for" in r.stderr, (r.returncode, r.stderr)
    print("compare_qemu: ok")


if __name__ == "__main__":
    main()
