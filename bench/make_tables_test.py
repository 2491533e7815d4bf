#!/usr/bin/env python3
"""Unit test of bench/make_tables.py (and bench/run-suite.sh's plan), run by ctest as
bench.make_tables: on a copy of the recorded results and READMEs, the tables are deterministic,
have the expected rows, match the READMEs as committed, and leave the prose alone."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOOL = os.path.join(HERE, "make_tables.py")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


class MakeTablesTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="make-tables-test.")
        self.results = os.path.join(self.tmp, "results")
        os.mkdir(self.results)
        for path in glob.glob(os.path.join(HERE, "results", "*.json")):
            shutil.copy(path, self.results)
        self.readme = os.path.join(self.tmp, "results-README.md")
        self.top = os.path.join(self.tmp, "README.md")
        shutil.copy(os.path.join(HERE, "results", "README.md"), self.readme)
        shutil.copy(os.path.join(ROOT, "README.md"), self.top)

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def run_tool(self, *args, check=True):
        p = subprocess.run([sys.executable, TOOL, "--results", self.results, *args],
                           capture_output=True, text=True)
        if check:
            self.assertEqual(p.returncode, 0, p.stderr)
        return p

    def generate(self):
        self.run_tool(self.readme, self.top)
        return read(self.readme), read(self.top)

    def test_deterministic_and_as_committed(self):
        # Blank the generated parts first, so that the committed text is made anew.
        for path in (self.readme, self.top):
            blanked = re.sub(r"(<!-- figures:begin ([a-z-]+) -->\n).*?(<!-- figures:end \2 -->)",
                             r"\1\3", read(path), flags=re.S)
            self.assertNotIn("| figure |", blanked)
            with open(path, "w", encoding="utf-8") as f:
                f.write(blanked)
        first = self.generate()
        second = self.generate()
        self.assertEqual(first, second)
        self.assertEqual(first[0], read(os.path.join(HERE, "results", "README.md")),
                         "bench/results/README.md differs from its results: run make_tables.py")
        self.assertEqual(first[1], read(os.path.join(ROOT, "README.md")),
                         "README.md differs from the results: run bench/make_tables.py")
        self.assertEqual(self.run_tool("--check", self.readme, self.top).returncode, 0)

    def test_expected_rows(self):
        readme, top = self.generate()
        for row in [
            "| minimal (busybox initramfs) | 1320 ms | 1906 ms | 7.9 ms |",
            "| python (bookworm + numpy, ext4 root) | 4065 ms | 4559 ms | 14 ms |",
            "| 100 children all ready | 4.1 s | 13.4 s | 0.90 s | 4.1 s | 13.2 s | 1.21 s |",
            "| one child alone from a pool of one, p50 (target with a warm pool ≤ 30 ms) | – | – "
            "| 4.1 ms | – | – | 5.1 ms |",
            "| per child in the batch, p50 / p99 | 119 / 199 ms | 385 / 756 ms | 21 / 119 ms"
            " | 120 / 234 ms | 383 / 710 ms | 4.9 / 1012 ms |",
            "| fork speed-up vs cold boot + warm-up | 13x batch, 27x alone | – | 70x |"
            " 30x batch, 63x alone | – | 749x |",
            "| USS / PSS per idle child | 11.2 / 11.3 MiB | 12.5 / 12.8 MiB | 20.9 / 21.0 MiB |"
            " 11.4 / 11.6 MiB | 12.8 / 13.2 MiB | 22.6 / 22.8 MiB |",
            "| KSM: saved on the host; ksmd's CPU in the idle window (scan rate) | – | 170 MiB;"
            " 24.1 % of a core (1000 pages / 20 ms) | – | – | 204 MiB; 23.0 % of a core"
            " (1000 pages / 20 ms) | – |",
            "| CPU per idle child, median (all children, % of a core) | 0.03 % (3.1 %) over 60 s"
            " | 0.07 % (7.3 %) over 60 s | \u2013 | 0.03 % (2.7 %) over 60 s"
            " | 0.07 % (6.4 %) over 60 s | \u2013 |",
            "| REST minus direct | 0.62 ms | -0.06 ms | 0.82 ms |",
            "| live: pause p50 / p90 / max | 0.31 / 0.35 / 0.35 ms | 0.35 / 0.52 / 0.52 ms |",
            "| live: whole call p50 (copy p50) | 202 ms (116 ms) | 917 ms (551 ms) |",
            "| full pause p50 / plain save p50 | 53 % | 56 % |",
            "| tax per link, (depth d \u2212 depth 0) / d | 9.9, 1.6, 0.4 | \u22123.5, \u22125.0, \u22121.0 |",
            "| forkd pack / unpack | 76.9 MB | 11.9x | 866 MB/s | 637 MB/s |",
            "| exec `true`, p50 / p90 | 13.33 / 17.78 ms |",
            "| later eval `1 + 1` | 2.0 ms | 2.7 ms | 7.2 ms | \u2264 10 ms |",
        ]:
            self.assertIn(row, readme)
        self.assertIn("| memory per idle child, USS (minimal / python) | 11.2 / 11.4 MiB |", top)
        self.assertIn("| memory per idle child with FORKD_KSM=1, USS (minimal / python) |"
                      " 12.5 / 12.8 MiB |", top)
        self.assertIn("| CPU per idle child, median, 100 children idle (minimal / python) |"
                      " 0.03 / 0.03 % of a core |", top)

    def test_pause_series_verdict(self):
        # A newer 1 GiB file with a given series: met by the median + 1 ms arm alone, then missed
        # by both arms.
        src = sorted(glob.glob(os.path.join(self.results, "branch-1024-dirty20-*.json")))[-1]
        with open(src, encoding="utf-8") as f:
            newer = json.load(f)
        live = next(m for m in newer["modes"] if m["mode"] == "live")

        def verdict_for(series):
            live["pause_series_ms"] = series
            live["series_max_over_median"] = max(series) / sorted(series)[len(series) // 2]
            with open(os.path.join(self.results, "branch-1024-dirty20-2099-01-01.json"), "w",
                      encoding="utf-8") as f:
                json.dump(newer, f)
            readme, _ = self.generate()
            return " ".join(readme.split())

        self.assertIn("max / median = **1.90**, max \u2212 median = **0.90 ms** (target \u2264 1.5"
                      " or \u2264 1 ms: met)", verdict_for([1.0] * 9 + [1.9]))
        self.assertIn("max / median = **3.50**, max \u2212 median = **2.50 ms** (target \u2264 1.5"
                      " or \u2264 1 ms: missed)", verdict_for([1.0] * 9 + [3.5]))

    def test_prose_outside_markers_is_kept(self):
        with open(self.readme, "w", encoding="utf-8") as f:
            f.write("# Title\nprose before\n<!-- figures:begin api -->\nstale table\n"
                    "<!-- figures:end api -->\nprose after\n")
        readme, _ = self.generate()
        self.assertTrue(readme.startswith("# Title\nprose before\n<!-- figures:begin api -->\n"))
        self.assertTrue(readme.endswith("<!-- figures:end api -->\nprose after\n"))
        self.assertNotIn("stale table", readme)
        self.assertIn("| exec `true`, through REST | 11.23 ms | 13.98 ms | 11.02 ms |", readme)
        self.assertEqual(self.run_tool("--check", self.readme).returncode, 0)

    def test_latest_file_of_a_series_wins(self):
        src = sorted(glob.glob(os.path.join(self.results, "boot-minimal-*.json")))[-1]
        with open(src, encoding="utf-8") as f:
            newer = json.load(f)
        newer["results"][0]["boot_to_ping_ms"]["median"] = 777.0
        path = os.path.join(self.results, "boot-minimal-2099-01-01.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(newer, f)
        readme, _ = self.generate()
        self.assertIn("| minimal (busybox initramfs) | 777 ms | 1906 ms | 7.9 ms |", readme)
        self.assertIn("`boot-minimal-2099-01-01.json`", readme)
        latest = self.run_tool("--latest", "boot").stdout.split()
        self.assertEqual([os.path.basename(p) for p in latest],
                         ["boot-minimal-2099-01-01.json", "boot-python-2026-12-03.json"])
        self.assertEqual(self.run_tool("--check", os.path.join(HERE, "results", "README.md"),
                                       check=False).returncode, 1)

    def test_a_file_that_is_no_json_is_refused(self):
        with open(os.path.join(self.results, "api-2099-01-01.json"), "w") as f:
            f.write("{ truncated")
        p = self.run_tool(self.readme, check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("api-2099-01-01.json", p.stderr)

    def test_broken_markers_are_refused(self):
        for text in ("<!-- figures:begin api -->\nno end\n",
                     "<!-- figures:begin nope -->\n<!-- figures:end nope -->\n"):
            with open(self.readme, "w", encoding="utf-8") as f:
                f.write(text)
            p = self.run_tool(self.readme, check=False)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertEqual(read(self.readme), text)


class SuitePlanTest(unittest.TestCase):
    def plan(self, *args):
        return subprocess.run(["bash", os.path.join(HERE, "run-suite.sh"), "--list", *args],
                              capture_output=True, text=True)

    def test_whole_suite_and_subsets(self):
        lines = self.plan().stdout.splitlines()
        self.assertEqual(len(lines), 14)
        self.assertTrue(lines[0].startswith("[1/14] boot-minimal: "))
        self.assertIn("sdk_figures.py --json", lines[-1])
        subset = self.plan("--only", "spawn,branch-256").stdout.splitlines()
        self.assertEqual([line.split(":")[0] for line in subset],
                         ["[1/7] spawn-minimal-100", "[2/7] spawn-minimal-100-warmpool",
                          "[3/7] spawn-minimal-100-ksm", "[4/7] spawn-python-100",
                          "[5/7] spawn-python-100-warmpool", "[6/7] spawn-python-100-ksm",
                          "[7/7] branch-256"])
        self.assertIn("--pool 100 --warm", subset[1])
        self.assertIn("--ksm --ksm-pages 1000", subset[2])
        self.assertEqual(self.plan("--only", "nope").returncode, 2)


if __name__ == "__main__":
    unittest.main()
