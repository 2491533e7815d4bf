#!/usr/bin/env python3
"""Agent fan-out with forkd: prepare once, fork 8 ways, keep the best, go on from it.

An agent has a task with one free parameter. Instead of trying the variants one after another in
one sandbox (each undoing the last one's changes), it prepares the sandbox once, forks it into 8
copy-on-write children, tries one variant in each at the same time, keeps the best child and
continues from a snapshot of it.

The task here fits a line to noisy data with busybox tools only (sh, seq, awk): each child tries
one slope, computes the intercept and the mean squared error, and writes its answer to a file.

Run it against a daemon (FORKD_URL / FORKD_TOKEN), e.g. from the repository root:
    tests/sdk/with-daemon.sh build/forkd -- python3 examples/python/fanout.py
Environment:
    FORKD_EXAMPLE_TAG    an existing tag to start from (else one is built and removed after)
    FORKD_EXAMPLE_IMAGE  the image of the tag it builds (default "minimal")
Exits non-zero when something fails; removes every sandbox and tag it made.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

try:
    import forkd
except ImportError:  # not installed: use the SDK from this repository
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "..", "sdk", "python"))
    import forkd

from forkd import Controller, Sandbox

VARIANTS = 8
TRUE_SLOPE = 3  # what the data was made with: the winner should find it

# Data: y = 3x + 7 plus a deterministic wobble in -5..5, for x = 1..200.
MAKE_DATA = "seq 1 200 | awk '{ print $1, 3*$1 + 7 + ($1*37 % 11) - 5 }' > /root/task/data.txt"
# One variant: fit the intercept for slope K, report the mean squared error, keep the answer.
TRY_SLOPE = (
    'awk -v k="$K" \'{ r = $2 - k*$1; s += r; ss += r*r; n++ } '
    'END { b = s/n; printf "slope=%d intercept=%.2f mse=%.3f\\n", k, b, ss/n - b*b }\' '
    "/root/task/data.txt | tee /root/task/answer.txt"
)

_t0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - _t0:6.2f}s] {msg}", flush=True)


def try_variant(child: Sandbox, slope: int) -> Tuple[Sandbox, int, float, str]:
    """Run one variant in one child; returns (child, slope, score, answer line)."""
    out = child.commands.run(TRY_SLOPE, env={"K": str(slope)}, timeout=30).stdout.strip()
    mse = float(out.rsplit("mse=", 1)[1])
    return child, slope, mse, out


def main() -> int:
    c = Controller()
    tags: List[str] = []  # tags this run made, removed at the end (newest first)
    sandboxes: List[Sandbox] = []  # sandboxes still to kill
    status = 1
    try:
        status = fan_out(c, tags, sandboxes)
    except (forkd.ForkdError, RuntimeError, ValueError) as e:
        say(f"FAILED: {type(e).__name__}: {e}")
    finally:
        if not cleanup(c, sandboxes, tags):
            status = 1
    return status


def fan_out(c: Controller, tags: List[str], sandboxes: List[Sandbox]) -> int:
    """The walk-through; records what it makes in ``tags`` and ``sandboxes``."""
    pid = os.getpid()
    say(f"daemon {c.base_url}: forkd {c.version().get('version', '?')}")
    base: Optional[str] = os.environ.get("FORKD_EXAMPLE_TAG")
    if base:
        c.snapshot_info(base)  # NotFoundError if it does not exist
        say(f"starting from the existing tag {base}")
    else:
        base = f"fanout-base-{pid}"
        image = os.environ.get("FORKD_EXAMPLE_IMAGE", "minimal")
        say(f"warming a tag {base} from the {image} image ...")
        c.create_snapshot(base, image=image)
        tags.append(base)
        say(f"tag {base} is ready")

    root = Sandbox.create(base, controller=c)
    sandboxes.append(root)
    say(f"started {root.sandbox_id}; preparing the task (data and notes)")
    root.files.make_dir("/root/task")
    root.commands.run(MAKE_DATA)
    root.files.write("/root/task/NOTES", "fit y = k*x + b to data.txt; one k per child\n")
    lines = root.commands.run("wc -l < /root/task/data.txt").stdout.strip()
    say(f"prepared /root/task/data.txt ({lines} points)")

    fork_tag = f"fanout-fork-{pid}"
    say(f"forking {root.sandbox_id} into {VARIANTS} children (branch into {fork_tag}) ...")
    tags.append(fork_tag)
    children = root.fork(VARIANTS, tag=fork_tag)
    sandboxes.extend(children)
    say("children: " + ", ".join(ch.sandbox_id for ch in children))

    say(f"trying slopes 1..{VARIANTS}, one per child, in parallel")
    with ThreadPoolExecutor(max_workers=VARIANTS) as pool:
        results = list(pool.map(try_variant, children, range(1, VARIANTS + 1)))
    for child, slope, mse, answer in sorted(results, key=lambda r: r[1]):
        say(f"  {child.sandbox_id}: {answer}")
    winner, best_slope, best_mse, best_answer = min(results, key=lambda r: r[2])
    say(f"best: slope {best_slope} (mse {best_mse:.3f}) in {winner.sandbox_id}")
    if best_slope != TRUE_SLOPE:
        raise RuntimeError(f"expected slope {TRUE_SLOPE} to win, got {best_slope}")

    for child in children:
        if child is not winner:
            child.kill()
    sandboxes[:] = [s for s in sandboxes if s is winner or s is root]
    say(f"killed the other {VARIANTS - 1} children")

    win_tag = f"fanout-winner-{pid}"
    tags.append(win_tag)
    snap = winner.branch(tag=win_tag)
    say(f"branched the winner into {win_tag} (source paused {snap.get('pause_ms', '?')} ms)")

    fresh = Sandbox.create(win_tag, controller=c)
    sandboxes.append(fresh)
    answer = fresh.files.read("/root/task/answer.txt").strip()
    say(f"continuing in {fresh.sandbox_id} from {win_tag}: answer.txt says {answer!r}")
    if answer != best_answer:
        raise RuntimeError(f"the winner's answer is not in the new sandbox: {answer!r}")
    fresh.commands.run(
        'echo "next step builds on: $(cat /root/task/answer.txt)"',
        on_stdout=lambda s: say("  (streamed) " + s.rstrip()),
    )
    say("done")
    return 0


def cleanup(c: Controller, sandboxes: List[Sandbox], tags: List[str]) -> bool:
    """Kill the sandboxes, then delete the tags newest first; False if something is left."""
    ok = True
    for sbx in sandboxes:
        try:
            sbx.kill()  # False (not an error) when it is already gone
        except forkd.ForkdError as e:
            say(f"cleanup: kill {sbx.sandbox_id}: {e}")
            ok = False
    for tag in reversed(tags):
        try:
            c.delete_snapshot(tag, cascade=True)
        except forkd.NotFoundError:
            pass
        except forkd.ForkdError as e:
            say(f"cleanup: delete tag {tag}: {e}")
            ok = False
    say(
        f"cleaned up {len(sandboxes)} sandboxes and {len(tags)} tags"
        + ("" if ok else " (with errors)")
    )
    return ok


if __name__ == "__main__":
    sys.exit(main())
