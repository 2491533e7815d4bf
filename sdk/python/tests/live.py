"""Shared pieces of the tests that drive a real daemon (tests/sdk/with-daemon.sh).

They run when FORKD_URL and FORKD_TEST_TAG are set, and skip otherwise. Every test removes what
it spawns or tags (addCleanup / addClassCleanup).
"""

from __future__ import annotations

import itertools
import os
import sys
import unittest
from typing import Any, Callable, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import forkd  # noqa: E402
from forkd import Controller, Sandbox  # noqa: E402

TAG = os.environ.get("FORKD_TEST_TAG", "")
PY_TAG = os.environ.get("FORKD_TEST_PY_TAG", "")
SOCKET = os.environ.get("FORKD_TEST_SOCKET", "")

_names = itertools.count()

# make test runs the suite with FORKD_SDK_REQUIRE_LIVE=1: there a missing daemon is a failure,
# never a silent skip (and so are the socket and the python tag).
if os.environ.get("FORKD_SDK_REQUIRE_LIVE") == "1" and not (
    os.environ.get("FORKD_URL") and TAG and PY_TAG and SOCKET
):
    raise RuntimeError(
        "FORKD_SDK_REQUIRE_LIVE=1 but FORKD_URL, FORKD_TEST_TAG, FORKD_TEST_PY_TAG or "
        "FORKD_TEST_SOCKET is unset: run under tests/sdk/with-daemon.sh"
    )

requires_daemon = unittest.skipUnless(
    os.environ.get("FORKD_URL") and TAG,
    "needs a daemon with real VMs: run under tests/sdk/with-daemon.sh",
)


def unique(prefix: str) -> str:
    """A tag or name no other test uses (the daemon is shared by the whole run)."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def _quietly(fn: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        try:
            fn()
        except forkd.NotFoundError:
            pass  # already gone

    return run


class LiveTest(unittest.TestCase):
    """Base of live tests: a Controller and cleanups for what a test makes."""

    c: Controller

    @classmethod
    def setUpClass(cls) -> None:
        cls.c = Controller()

    def spawn(self, tag: Optional[str] = None, **kw: Any) -> Sandbox:
        """A sandbox from ``tag`` (default FORKD_TEST_TAG) killed when the test ends."""
        sbx = Sandbox.create(tag or TAG, controller=self.c, **kw)
        self.addCleanup(sbx.kill)
        return sbx

    def adopt(self, sbx: Sandbox) -> Sandbox:
        """Kill ``sbx`` when the test ends."""
        self.addCleanup(sbx.kill)
        return sbx

    def drop_tag_later(self, tag: str) -> None:
        """Delete ``tag`` (and anything branched from it) when the test ends."""
        self.addCleanup(_quietly(lambda: self.c.delete_snapshot(tag, cascade=True)))

    @classmethod
    def shared_sandbox(cls, tag: Optional[str] = None) -> Sandbox:
        """A sandbox for the whole class, killed after its last test."""
        sbx = Sandbox.create(tag or TAG, controller=cls.c)
        cls.addClassCleanup(sbx.kill)
        return sbx
