"""Live: commands.run (env, cwd, user, stdin, timeout, exit codes), streaming, background."""

from __future__ import annotations

import threading
import time
import unittest
from typing import List, Tuple

from live import LiveTest, forkd, requires_daemon

from forkd import Sandbox


@requires_daemon
class RunTest(LiveTest):
    sbx: Sandbox

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.sbx = cls.shared_sandbox()

    def test_shell_string_and_argv(self) -> None:
        r = self.sbx.commands.run("echo one; echo two >&2")
        self.assertEqual((r.stdout, r.stderr, r.exit_code), ("one\n", "two\n", 0))
        self.assertFalse(r.timed_out)
        self.assertIsInstance(r.duration_ms, int)
        r = self.sbx.commands.run(["echo", "a b", "$HOME"])
        self.assertEqual(r.stdout, "a b $HOME\n")  # no shell: nothing expanded

    def test_env_cwd(self) -> None:
        r = self.sbx.commands.run(
            "echo $GREETING-$OTHER; pwd",
            env={"GREETING": "hi", "OTHER": "x y"},
            cwd="/tmp",
        )
        self.assertEqual(r.stdout, "hi-x y\n/tmp\n")
        r = self.sbx.commands.run(["sh", "-c", "echo $E2B_NAME"], envs={"E2B_NAME": "alias"})
        self.assertEqual(r.stdout, "alias\n")

    def test_user(self) -> None:
        self.assertEqual(self.sbx.commands.run("id -u", user="root").stdout, "0\n")
        self.assertEqual(self.sbx.commands.run("id -u; echo $HOME", user="0").stdout, "0\n/root\n")
        with self.assertRaises(forkd.InvalidRequestError) as cm:
            self.sbx.commands.run("id -u", user="no-such-user-here")
        self.assertEqual(cm.exception.status, 400)

    def test_stdin(self) -> None:
        self.assertEqual(self.sbx.commands.run("cat", stdin="from stdin\n").stdout, "from stdin\n")
        r = self.sbx.commands.run("wc -c", stdin=bytes(range(256)) * 4)
        self.assertEqual(r.stdout.strip(), "1024")
        r = self.sbx.commands.run("od -An -tx1 | tr -d ' \\n'", stdin=b"\x00\x01\xfe\xff")
        self.assertEqual(r.stdout, "0001feff")
        # Without stdin the command reads /dev/null, and does not hang.
        self.assertEqual(self.sbx.commands.run("cat | wc -c", timeout=10).stdout.strip(), "0")

    def test_exit_codes(self) -> None:
        with self.assertRaises(forkd.CommandExitError) as cm:
            self.sbx.commands.run("echo out; echo err >&2; exit 3")
        e = cm.exception
        self.assertEqual((e.exit_code, e.stdout, e.stderr), (3, "out\n", "err\n"))
        self.assertIn("3", str(e))
        r = self.sbx.commands.run("exit 7", check=False)
        self.assertEqual(r.exit_code, 7)
        self.assertFalse(r.ok)
        r = self.sbx.commands.run(["no-such-binary-xyz"], check=False)
        self.assertEqual(r.exit_code, 127)

    def test_timeout(self) -> None:
        t0 = time.monotonic()
        with self.assertRaises(forkd.CommandExitError) as cm:
            self.sbx.commands.run("echo started; sleep 30", timeout=1)
        self.assertLess(time.monotonic() - t0, 15)
        self.assertTrue(cm.exception.result.timed_out)
        r = self.sbx.commands.run("sleep 30", timeout=1, check=False)
        self.assertTrue(r.timed_out)
        self.assertFalse(r.ok)

    def test_controller_exec_command(self) -> None:
        out = self.c.exec_command(
            self.sbx.sandbox_id, ["sh", "-c", "echo $0", "x"], timeout_secs=10
        )
        self.assertEqual((out["stdout"], out["exit_code"]), ("x\n", 0))
        out = self.c.exec_command(self.sbx.sandbox_id, None, shell="echo shell", env={"A": "b"})
        self.assertEqual(out["stdout"], "shell\n")


@requires_daemon
class StreamTest(LiveTest):
    sbx: Sandbox

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.sbx = cls.shared_sandbox()

    def test_first_chunk_arrives_while_running(self) -> None:
        chunks: List[Tuple[float, str]] = []
        t0 = time.monotonic()
        r = self.sbx.commands.run(
            ["sh", "-c", "echo first; sleep 2; echo second"],
            on_stdout=lambda s: chunks.append((time.monotonic(), s)),
        )
        done = time.monotonic()
        self.assertEqual(r.stdout, "first\nsecond\n")
        self.assertEqual("".join(s for _, s in chunks), "first\nsecond\n")
        first_at = next(t for t, s in chunks if "first" in s)
        self.assertGreaterEqual(
            done - first_at,
            1.5,
            f"first chunk {first_at - t0:.2f} s after start, "
            f"run() returned after {done - t0:.2f} s",
        )
        self.assertTrue(r.command_id and r.command_id.startswith("cmd-"))

    def test_stderr_exit_code_and_stdin(self) -> None:
        err: List[str] = []
        r = self.sbx.commands.run(
            "cat; echo oops >&2; exit 2",
            on_stderr=err.append,
            stdin="in\n",
            check=False,
        )
        self.assertEqual((r.stdout, "".join(err), r.exit_code), ("in\n", "oops\n", 2))
        with self.assertRaises(forkd.CommandExitError):
            self.sbx.commands.run("exit 1", on_stdout=lambda s: None)

    def test_controller_exec_stream(self) -> None:
        with self.c.exec_stream(self.sbx.sandbox_id, "echo a; echo b >&2") as events:
            kinds = [e["type"] for e in events]
        self.assertEqual(kinds[0], "start")
        self.assertEqual(kinds[-1], "exit")
        self.assertIn("stdout", kinds)
        self.assertIn("stderr", kinds)

    def test_callback_error_stops_command(self) -> None:
        class Stop(Exception):
            pass

        def boom(_: str) -> None:
            raise Stop()

        t0 = time.monotonic()
        with self.assertRaises(Stop):
            self.sbx.commands.run("echo go; sleep 20", on_stdout=boom)
        self.assertLess(time.monotonic() - t0, 10)


@requires_daemon
class BackgroundTest(LiveTest):
    sbx: Sandbox

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.sbx = cls.shared_sandbox()

    def start(self, cmd: str, **kw: object) -> forkd.CommandHandle:
        h = self.sbx.commands.run(cmd, background=True, **kw)  # type: ignore[call-overload]
        self.addCleanup(lambda: _forget(h))
        return h

    def test_output_then_wait(self) -> None:
        h = self.start("echo a; sleep 1; echo b >&2; echo c", timeout=None)
        self.assertTrue(h.command_id.startswith("cmd-"))
        deadline = time.monotonic() + 10
        while "a" not in h.stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(h.stdout, "a\n")
        self.assertTrue(h.is_running())
        self.assertIn(h.command_id, [c["command_id"] for c in self.sbx.commands.list()])
        r = h.wait()
        self.assertEqual((r.stdout, r.stderr, r.exit_code), ("a\nc\n", "b\n", 0))
        self.assertEqual(h.info()["status"], "exited")
        self.assertEqual(h.exit_code, 0)

    def test_wait_streams_with_callbacks(self) -> None:
        seen: List[str] = []
        h = self.start("echo one; sleep 1; echo two", on_stdout=seen.append)
        r = h.wait()
        self.assertEqual("".join(seen), "one\ntwo\n")
        self.assertEqual(r.exit_code, 0)

    def test_stream_iterator_and_connect(self) -> None:
        h = self.start("for i in 1 2 3; do echo $i; sleep 0.3; done")
        same = self.sbx.commands.connect(h.command_id)
        got = "".join(data for kind, data in same.stream() if kind == "stdout")
        self.assertEqual(got, "1\n2\n3\n")

    def test_kill_sleep(self) -> None:
        h = self.start("sleep 1000", timeout=None)
        self.assertTrue(h.is_running())
        t0 = time.monotonic()
        self.assertTrue(h.kill())
        r = h.wait(timeout=20, check=False)
        self.assertLess(time.monotonic() - t0, 20)
        self.assertNotEqual(r.exit_code, 0)
        self.assertTrue(r.killed)
        self.assertFalse(h.is_running())
        with self.assertRaises(forkd.CommandExitError):
            h.wait()

    def test_kill_by_id_and_wait_timeout(self) -> None:
        h = self.start("sleep 1000", timeout=None)
        with self.assertRaises(forkd.ClientTimeoutError):
            h.wait(timeout=1)
        self.assertTrue(self.sbx.commands.kill(h.command_id, signal="TERM"))
        r = h.wait(timeout=20, check=False)
        self.assertNotEqual(r.exit_code, 0)

    def test_background_timeout(self) -> None:
        h = self.start("sleep 1000", timeout=1)
        r = h.wait(timeout=20, check=False)
        self.assertTrue(r.timed_out)

    def test_unknown_command(self) -> None:
        with self.assertRaises(forkd.NotFoundError):
            self.sbx.commands.connect("cmd-0000000000000000")

    def test_parallel_runs(self) -> None:
        results: List[str] = []
        lock = threading.Lock()

        def run(i: int) -> None:
            out = self.sbx.commands.run(f"sleep 0.5; echo {i}").stdout
            with lock:
                results.append(out)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sorted(results), ["0\n", "1\n", "2\n"])


def _forget(h: forkd.CommandHandle) -> None:
    try:
        h.delete()
    except forkd.NotFoundError:
        pass


if __name__ == "__main__":
    unittest.main()
