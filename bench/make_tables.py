#!/usr/bin/env python3
"""Writes the figures tables of the READMEs from the recorded results (bench/results/*.json).

A table sits between two marker comments in a README:

    <!-- figures:begin NAME -->
    (generated: rewritten on every run)
    <!-- figures:end NAME -->

NAME is one of the blocks of bench/tables.py (summary, boot, spawn, api, branch, branch-series,
chain, pack, sdk). Everything outside the markers is left as it is.

Result files are named SERIES-YYYY-MM-DD.json, SERIES being the kind and the variant
(boot-python, spawn-minimal-100-warmpool, branch-1024-dirty20, api, ...); a name without a date
counts as older than any dated one. Each table uses the latest file of each series.

  make_tables.py [--results DIR] [--check] [README ...]   rewrite (or --check) the READMEs
  make_tables.py --latest KIND [--results DIR]            latest file of each series of KIND

Without README arguments: bench/results/README.md and the top-level README.md. --check writes
nothing and exits 1 (with a diff) when a README is not what its results give.
Python 3 standard library only.
"""
import argparse
import difflib
import json
import os
import re
import sys

import tables

HERE = os.path.dirname(os.path.abspath(__file__))
NAME_RE = re.compile(r"^(?P<series>.+)-(?P<date>\d{4}-\d\d-\d\d)\.json$")
BLOCK_RE = re.compile(r"<!-- figures:begin (?P<name>[a-z-]+) -->\n(?P<body>.*?)"
                      r"<!-- figures:end (?P=name) -->", re.S)


class Result:
    """One result file: its name, series, date, kind and JSON (ValueError when it is no JSON
    object)."""

    def __init__(self, series, date, path):
        self.series, self.date, self.file = series, date, os.path.basename(path)
        try:
            with open(path, encoding="utf-8") as f:
                self.data = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        if not isinstance(self.data, dict):
            raise ValueError(f"{path}: not a JSON object")
        self.kind = series.split("-")[0]

    def __getitem__(self, key):
        return self.data[key]

    def get(self, key, default=None):
        return self.data.get(key, default)


def load_results(results_dir):
    """The latest Result of each series in results_dir."""
    latest = {}
    for name in sorted(os.listdir(results_dir)):
        if not name.endswith(".json"):
            continue
        m = NAME_RE.match(name)
        series, date = (m["series"], m["date"]) if m else (name[:-5], "")
        if series not in latest or date > latest[series].date:
            latest[series] = Result(series, date, os.path.join(results_dir, name))
    return latest


def render(text, results, where):
    """text with every figures block rewritten; ValueError on an unknown or unclosed block."""
    begins = re.findall(r"<!-- figures:begin ([a-z-]+) -->", text)
    found = [m["name"] for m in BLOCK_RE.finditer(text)]
    if begins != found:
        raise ValueError(f"{where}: a figures:begin without its figures:end "
                         f"(begins {begins}, closed {found})")
    for name in found:
        if name not in tables.BLOCKS:
            raise ValueError(f"{where}: unknown figures block {name!r}")

    def sub(m):
        lines = tables.BLOCKS[m["name"]](results) or ["(no results recorded)"]
        return (f"<!-- figures:begin {m['name']} -->\n" + "\n".join(lines) +
                f"\n<!-- figures:end {m['name']} -->")
    return BLOCK_RE.sub(sub, text)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("readmes", nargs="*")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--latest", metavar="KIND")
    a = ap.parse_args(argv)
    try:
        results = load_results(a.results)
    except ValueError as e:
        print(f"make_tables: {e}", file=sys.stderr)
        return 2
    if a.latest:
        for r in tables.of_kind(results, a.latest):
            print(os.path.join(a.results, r.file))
        return 0
    readmes = a.readmes or [os.path.join(HERE, "results", "README.md"),
                            os.path.join(HERE, "..", "README.md")]
    stale = 0
    for path in readmes:
        with open(path, encoding="utf-8") as f:
            old = f.read()
        try:
            new = render(old, results, path)
        except ValueError as e:
            print(f"make_tables: {e}", file=sys.stderr)
            return 2
        if new == old:
            continue
        if a.check:
            stale += 1
            sys.stderr.writelines(difflib.unified_diff(
                old.splitlines(True), new.splitlines(True), path, path + " (from results)"))
            continue
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(new)
        os.replace(path + ".tmp", path)
        print(f"make_tables: wrote {os.path.relpath(path)}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
