"""Live: Sandbox lifecycle, eval, branch and fork on real VMs."""

from __future__ import annotations

import unittest

from live import PY_TAG, TAG, LiveTest, forkd, requires_daemon, unique

from forkd import Sandbox


@requires_daemon
class LifecycleTest(LiveTest):
    def test_create_connect_list_kill(self) -> None:
        sbx = self.spawn()
        self.assertTrue(sbx.sandbox_id.startswith("sb-"))
        self.assertEqual(sbx.id, sbx.sandbox_id)
        self.assertEqual(sbx.snapshot_tag, TAG)
        self.assertEqual(sbx.info["state"], "running")
        self.assertTrue(sbx.is_running())
        self.assertIn(sbx.sandbox_id, repr(sbx))
        again = Sandbox.connect(sbx.sandbox_id, controller=self.c)
        self.assertEqual(again, sbx)
        self.assertEqual(again.commands.run("echo hi").stdout, "hi\n")
        ids = [s["id"] for s in Sandbox.list(controller=self.c)]
        self.assertIn(sbx.sandbox_id, ids)
        self.assertIn(sbx.sandbox_id, [s["id"] for s in Sandbox.list(controller=self.c, tag=TAG)])
        self.assertTrue(sbx.kill())
        self.assertFalse(sbx.kill())
        self.assertFalse(sbx.is_running())
        with self.assertRaises(forkd.NotFoundError) as cm:
            Sandbox.connect(sbx.sandbox_id, controller=self.c)
        self.assertEqual(cm.exception.code, "not_found")
        self.assertEqual(cm.exception.status, 404)

    def test_context_manager_kills(self) -> None:
        with Sandbox.create(TAG, controller=self.c) as sbx:
            self.addCleanup(sbx.kill)  # in case the block fails before its end
            self.assertEqual(sbx.ping()["pong"], True)
            sid = sbx.sandbox_id
        self.assertNotIn(sid, [s["id"] for s in self.c.list_sandboxes()])

    def test_context_manager_kills_on_error(self) -> None:
        with self.assertRaises(ZeroDivisionError):
            with Sandbox.create(TAG, controller=self.c) as sbx:
                self.addCleanup(sbx.kill)
                sid = sbx.sandbox_id
                1 / 0
        self.assertNotIn(sid, [s["id"] for s in self.c.list_sandboxes()])

    def test_url_and_token_arguments(self) -> None:
        sbx = self.adopt(Sandbox.create(TAG, url=self.c.base_url, token=self.c.token))
        self.assertEqual(sbx.controller.base_url, self.c.base_url)
        with self.assertRaises(forkd.NotFoundError):
            Sandbox.connect("sb-doesnotexist", url=self.c.base_url, token=self.c.token)


@requires_daemon
@unittest.skipUnless(PY_TAG, "needs FORKD_TEST_PY_TAG (a python tag with numpy)")
class EvalTest(LiveTest):
    sbx: Sandbox

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.sbx = cls.shared_sandbox(PY_TAG)

    def test_numpy(self) -> None:
        self.assertEqual(self.sbx.eval("numpy.zeros(3).tolist()"), "[0.0, 0.0, 0.0]")
        self.assertEqual(self.sbx.eval("int(numpy.arange(5).sum())"), "10")
        self.assertIn("numpy_version", self.sbx.ping())

    def test_state_and_statements(self) -> None:
        self.assertIsNone(self.sbx.eval("sdk_x = 41"))
        self.assertEqual(self.sbx.eval("sdk_x + 1"), "42")
        self.assertEqual(self.sbx.eval("'a' * 3"), "'aaa'")

    def test_eval_error(self) -> None:
        with self.assertRaises(forkd.EvalError) as cm:
            self.sbx.eval("1/0")
        self.assertIn("ZeroDivisionError", cm.exception.error)
        # The worker goes on after an error.
        self.assertEqual(self.sbx.eval("2 + 2"), "4")

    def test_python_exec(self) -> None:
        r = self.sbx.commands.run(["python3", "-c", "import numpy; print(numpy.eye(2).sum())"])
        self.assertEqual(r.stdout.strip(), "2.0")


@requires_daemon
class NoPythonTest(LiveTest):
    def test_eval_in_minimal_image(self) -> None:
        sbx = self.spawn()
        with self.assertRaises(forkd.ConflictError) as cm:
            sbx.eval("1 + 1")
        self.assertEqual(cm.exception.code, "no_python")
        self.assertIsInstance(cm.exception, forkd.NoPythonError)


@requires_daemon
class BranchForkTest(LiveTest):
    def test_fork_three_children(self) -> None:
        parent = self.spawn()
        parent.files.write("/root/state.txt", "before the fork\n")
        tag = unique("sdk-fork")
        self.drop_tag_later(tag)
        children = parent.fork(3, tag=tag)
        for child in children:
            self.adopt(child)
        self.assertEqual(len(children), 3)
        ids = {c.sandbox_id for c in children}
        self.assertEqual(len(ids), 3)
        self.assertNotIn(parent.sandbox_id, ids)
        for child in children:
            self.assertEqual(child.snapshot_tag, tag)
            self.assertEqual(child.files.read("/root/state.txt"), "before the fork\n")
        # Copy-on-write: a child's write is its own.
        children[0].files.write("/root/state.txt", "child 0\n")
        self.assertEqual(children[1].files.read("/root/state.txt"), "before the fork\n")
        self.assertEqual(parent.files.read("/root/state.txt"), "before the fork\n")
        # The parent goes on after the branch.
        self.assertEqual(parent.commands.run("echo alive").stdout, "alive\n")

    def test_fork_keeps_shell_state_of_running_process(self) -> None:
        parent = self.spawn()
        # Each count is written beside the file and renamed over it: a fork that lands between
        # a truncation and its write would otherwise show the child an empty file until the
        # loop writes again, and a child is ready fast enough to read it then.
        h = parent.commands.run(
            "sh -c 'n=0; while :; do n=$((n+1)); echo $n > /tmp/n.new; mv /tmp/n.new /tmp/n;"
            " sleep 0.1; done'",
            background=True,
            timeout=None,
        )
        self.addCleanup(lambda: h.kill())
        parent.commands.run("sleep 0.5")
        tag = unique("sdk-forkrun")
        self.drop_tag_later(tag)
        (child,) = parent.fork(1, tag=tag)
        self.adopt(child)
        first = int(child.files.read("/tmp/n").strip())
        child.commands.run("sleep 0.5")
        later = int(child.files.read("/tmp/n").strip())
        self.assertGreater(later, first)  # the loop was forked with the VM and runs on

    def test_branch_then_spawn_and_compact(self) -> None:
        sbx = self.spawn()
        sbx.commands.run("echo branched > /root/b.txt")
        tag = unique("sdk-branch")
        self.drop_tag_later(tag)
        snap = sbx.branch(tag=tag)
        self.assertEqual(snap["tag"], tag)
        self.assertEqual(snap["branched_from"], sbx.sandbox_id)
        self.assertEqual(snap["status"], "ready")
        child = self.spawn(tag)
        self.assertEqual(child.files.read("/root/b.txt"), "branched\n")
        info = self.c.snapshot_info(tag)
        self.assertEqual(info["tag"], tag)
        self.assertGreaterEqual(info["chain_depth"], 1)
        flat = unique("sdk-compact")
        self.drop_tag_later(flat)
        made = self.c.compact_snapshot(tag, flat)
        self.assertEqual(made["tag"], flat)
        self.assertEqual(made["branched_from"], "compact:" + tag)
        self.c.delete_snapshot(flat)
        with self.assertRaises(forkd.NotFoundError):
            self.c.snapshot_info(flat)


if __name__ == "__main__":
    unittest.main()
