"""Live: Controller with forkd's method names and the rest of the routes; errors; transports."""

from __future__ import annotations

import os
import unittest
from unittest import mock

from live import PY_TAG, SOCKET, TAG, LiveTest, forkd, requires_daemon, unique

from forkd import Controller


@requires_daemon
class ForkdNamesTest(LiveTest):
    def test_spawn_list_get_ping_exec_kill(self) -> None:
        c = self.c
        self.assertIn(TAG, [s["tag"] for s in c.list_snapshots()])
        children = c.spawn_sandboxes(TAG, n=2)
        for child in children:
            self.addCleanup(_kill_quietly, c, child["id"])
        self.assertEqual(len(children), 2)
        self.assertEqual({ch["snapshot_tag"] for ch in children}, {TAG})
        ids = {s["id"] for s in c.list_sandboxes()}
        self.assertTrue({ch["id"] for ch in children} <= ids)
        sid = children[0]["id"]
        info = c.get_sandbox(sid)
        self.assertEqual((info["id"], info["state"]), (sid, "running"))
        self.assertTrue(c.ping_sandbox(sid)["pong"])
        out = c.exec_command(sid, ["echo", "hello"], timeout_secs=10)
        self.assertEqual((out["stdout"], out["stderr"], out["exit_code"]), ("hello\n", "", 0))
        c.kill_sandbox(sid)
        with self.assertRaises(forkd.NotFoundError):
            c.get_sandbox(sid)

    def test_spawn_refuses_unknown_field_and_prewarm(self) -> None:
        with self.assertRaises(forkd.InvalidRequestError):
            self.c.spawn_sandboxes(TAG, n=1, no_such_field=True)
        with self.assertRaises(forkd.InvalidRequestError):
            self.c.spawn_sandboxes(TAG, n=1, prewarm=True)
        with self.assertRaises(forkd.NotFoundError):
            self.c.spawn_sandboxes("sdk-no-such-tag", n=1)

    def test_branch_sandbox_and_delete_snapshot(self) -> None:
        sid = self.spawn().sandbox_id
        tag = unique("sdk-cbranch")
        self.drop_tag_later(tag)
        snap = self.c.branch_sandbox(sid, tag=tag, mode="live")
        self.assertEqual((snap["tag"], snap["branched_from"]), (tag, sid))
        self.assertIn(tag, [s["tag"] for s in self.c.list_snapshots()])
        with self.assertRaises(forkd.ConflictError):
            self.c.branch_sandbox(sid, tag=tag)  # the tag exists
        self.c.delete_snapshot(tag)
        self.assertNotIn(tag, [s["tag"] for s in self.c.list_snapshots()])

    def test_eval_code(self) -> None:
        if not PY_TAG:
            self.skipTest("needs FORKD_TEST_PY_TAG")
        sid = self.spawn(PY_TAG).sandbox_id
        out = self.c.eval_code(sid, "numpy.ones(2).tolist()")
        self.assertEqual((out["result"], out["error"], out["exit_code"]), ("[1.0, 1.0]", None, 0))
        out = self.c.eval_code(sid, "print('p')")  # an expression: its value is None
        self.assertEqual((out["result"], out["stdout"]), ("None", "p\n"))
        out = self.c.eval_code(sid, "sdk_v = 1")  # a statement: no value
        self.assertIsNone(out["result"])


@requires_daemon
class MetaTest(LiveTest):
    def test_version_healthz_metrics_info(self) -> None:
        self.assertEqual(self.c.healthz(), {"ok": True})
        v = self.c.version()
        self.assertEqual(v["api"], "v1")
        self.assertIn("version", v)
        self.assertIn("forkd_sandboxes_active", self.c.metrics())
        info = self.c.snapshot_info(TAG)
        self.assertEqual((info["tag"], info["chain_depth"]), (TAG, 0))


@requires_daemon
class ErrorsTest(LiveTest):
    def test_not_found(self) -> None:
        with self.assertRaises(forkd.NotFoundError) as cm:
            self.c.get_sandbox("sb-doesnotexist")
        e = cm.exception
        self.assertEqual((e.status, e.code), (404, "not_found"))
        self.assertIn("sb-doesnotexist", e.url)
        self.assertIsInstance(e, forkd.ControllerError)
        with self.assertRaises(forkd.NotFoundError):
            self.c.snapshot_info("sdk-no-such-tag")

    def test_bad_token(self) -> None:
        bad = Controller(self.c.base_url, token="0" * 64)
        with self.assertRaises(forkd.AuthenticationError) as cm:
            bad.list_sandboxes()
        self.assertEqual(cm.exception.status, 401)
        self.assertEqual(bad.healthz(), {"ok": True})  # /healthz needs no token

    def test_invalid_request(self) -> None:
        with self.assertRaises(forkd.InvalidRequestError) as cm:
            self.c.create_snapshot("bad tag with spaces")
        self.assertEqual(cm.exception.code, "invalid_argument")

    def test_daemon_down(self) -> None:
        from fakes import free_port

        with self.assertRaises(forkd.ForkdConnectionError):
            Controller(f"http://127.0.0.1:{free_port()}", token="x").list_sandboxes()


@requires_daemon
@unittest.skipUnless(SOCKET, "needs FORKD_TEST_SOCKET")
class UnixSocketTest(LiveTest):
    def test_list_over_unix_socket(self) -> None:
        c = Controller(base_url="unix://" + SOCKET)
        self.assertIsInstance(c.list_sandboxes(), list)
        sbx = self.spawn()
        self.assertIn(sbx.sandbox_id, [s["id"] for s in c.list_sandboxes()])
        same = forkd.Sandbox.connect(sbx.sandbox_id, controller=c)
        self.assertEqual(same.commands.run("echo unix").stdout, "unix\n")
        with mock.patch.dict(os.environ, {"FORKD_URL": "unix://" + SOCKET}):
            self.assertEqual(Controller().base_url, "unix://" + SOCKET)


@requires_daemon
class SnapshotAndWorkspaceTest(LiveTest):
    def test_create_snapshot_with_warmup(self) -> None:
        tag = unique("sdk-snap")
        self.drop_tag_later(tag)
        made = self.c.create_snapshot(tag, image="minimal", exec=["echo warm > /root/warm.txt"])
        self.assertEqual(made["tag"], tag)
        with self.assertRaises(forkd.InvalidRequestError):  # the contract's 400 "exists"
            self.c.create_snapshot(tag)
        sbx = self.spawn(tag)
        self.assertEqual(sbx.files.read("/root/warm.txt"), "warm\n")

    def test_workspace_lifecycle(self) -> None:
        name = unique("sdkws")
        c = self.c

        def drop() -> None:
            try:
                c.delete_workspace(name)
            except forkd.NotFoundError:
                pass

        self.addCleanup(drop)
        ws = c.create_workspace(name, TAG)
        self.assertEqual((ws["name"], ws["status"]), (name, "running"))
        self.assertIn(name, [w["name"] for w in c.list_workspaces()])
        c.exec_command(ws["sandbox_id"], "echo kept > /root/ws.txt")
        ws = c.suspend_workspace(name)
        self.assertEqual(ws["status"], "suspended")
        ws = c.resume_workspace(name)
        self.assertEqual(ws["status"], "running")
        self.assertEqual(c.get_workspace(name)["sandbox_id"], ws["sandbox_id"])
        out = c.exec_command(ws["sandbox_id"], ["cat", "/root/ws.txt"])
        self.assertEqual(out["stdout"], "kept\n")
        c.delete_workspace(name)
        with self.assertRaises(forkd.NotFoundError):
            c.get_workspace(name)


def _kill_quietly(c: Controller, sid: str) -> None:
    try:
        c.kill_sandbox(sid)
    except forkd.NotFoundError:
        pass


if __name__ == "__main__":
    unittest.main()
