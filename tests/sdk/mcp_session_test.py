"""An MCP session with `forkd mcp` over stdio, against a real daemon and real VMs.

Run under tests/sdk/with-daemon.sh (FORKD_BIN, FORKD_URL, FORKD_TOKEN, FORKD_TEST_TAG,
FORKD_TEST_PY_TAG): python3 tests/sdk/mcp_session_test.py
"""
import json
import os
import subprocess
import threading
import unittest


class McpClient:
    """JSON-RPC 2.0 over the server's stdin/stdout, one message per line."""

    def __init__(self, env=None):
        self.proc = subprocess.Popen(
            [os.environ["FORKD_BIN"], "mcp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or os.environ.copy(),
        )
        self.next_id = 1
        self.stderr = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace"))

    def send(self, msg):
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()

    def request(self, method, params=None, timeout=120):
        msg_id = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return self.read(timeout)

    def read(self, timeout=120):
        result = {}

        def reader():
            result["line"] = self.proc.stdout.readline()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(timeout)
        if "line" not in result:
            raise AssertionError("no answer from forkd mcp within %s s" % timeout)
        if not result["line"]:
            raise AssertionError("forkd mcp closed stdout: " + "".join(self.stderr))
        return json.loads(result["line"])

    def call(self, name, **arguments):
        reply = self.request("tools/call", {"name": name, "arguments": arguments})
        assert "result" in reply, reply
        res = reply["result"]
        text = "".join(c["text"] for c in res["content"] if c["type"] == "text")
        return text, res["isError"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


class McpSessionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mcp = McpClient()
        init = cls.mcp.request(
            "initialize",
            {"protocolVersion": "2025-06-18", "capabilities": {},
             "clientInfo": {"name": "forkd-test", "version": "1"}})
        cls.init = init
        cls.mcp.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        cls.sandboxes = []
        cls.tags = []

    @classmethod
    def tearDownClass(cls):
        for sid in cls.sandboxes:
            cls.mcp.call("kill_sandbox", sandbox_id=sid)
        for tag in cls.tags:
            cls.mcp.call("delete_snapshot", tag=tag)
        cls.mcp.close()

    def spawn(self, tag):
        text, err = self.mcp.call("spawn_sandboxes", snapshot_tag=tag, n=1)
        self.assertFalse(err, text)
        sid = json.loads(text)[0]["id"]
        self.sandboxes.append(sid)
        return sid

    def test_initialize_and_tools_list(self):
        res = self.init["result"]
        self.assertEqual(res["serverInfo"]["name"], "forkd")
        self.assertIn("tools", res["capabilities"])
        listed = self.mcp.request("tools/list")["result"]["tools"]
        names = {t["name"] for t in listed}
        for want in ["list_snapshots", "create_snapshot", "spawn_sandboxes", "fork_sandbox",
                     "exec_command", "eval_code", "read_file", "write_file", "branch_sandbox",
                     "kill_sandbox", "list_sandboxes"]:
            self.assertIn(want, names)
        for t in listed:
            self.assertEqual(t["inputSchema"]["type"], "object")

    def test_protocol_errors(self):
        self.assertEqual(self.mcp.request("no/such/method")["error"]["code"], -32601)
        self.mcp.send({"jsonrpc": "2.0", "method": "notifications/cancelled"})  # no answer
        self.mcp.proc.stdin.write(b"{not json\n")
        self.mcp.proc.stdin.flush()
        self.assertEqual(self.mcp.read()["error"]["code"], -32700)
        text, err = self.mcp.call("no_such_tool")
        self.assertTrue(err)
        self.assertIn("unknown tool", text)
        self.assertEqual(self.mcp.request("ping")["result"], {})
        # a line over 16 MiB is refused and skipped; the session goes on
        self.mcp.proc.stdin.write(b"x" * ((16 << 20) + 10) + b"\n")
        self.mcp.proc.stdin.flush()
        self.assertEqual(self.mcp.read()["error"]["code"], -32600)
        for bad in (1e300, 2.5, -1, "3"):
            text, err = self.mcp.call("spawn_sandboxes", snapshot_tag="x", n=bad)
            self.assertTrue(err, bad)
            self.assertIn("integer 1..1000", text)
        self.assertEqual(self.mcp.request("ping")["result"], {})

    def test_exec_and_errors_reach_the_model(self):
        sid = self.spawn(os.environ["FORKD_TEST_TAG"])
        text, err = self.mcp.call("exec_command", sandbox_id=sid,
                                  args=["sh", "-c", "echo out; echo err >&2; exit 3"])
        self.assertFalse(err, text)
        self.assertIn("exit_code: 3", text)
        self.assertIn("out", text)
        self.assertIn("err", text)
        text, err = self.mcp.call("exec_command", sandbox_id=sid, shell="sleep 5",
                                  timeout_secs=1)
        self.assertIn("timed out", text)
        text, err = self.mcp.call("exec_command", sandbox_id=sid, args=["cat"], stdin="fed in")
        self.assertIn("fed in", text)
        text, err = self.mcp.call("exec_command", sandbox_id="sb-nope-0000", args=["true"])
        self.assertTrue(err)
        self.assertIn("no sandbox", text)
        text, err = self.mcp.call("exec_command", sandbox_id="../../v1/snapshots", args=["true"])
        self.assertTrue(err)

    def test_files_are_arguments_not_shell(self):
        sid = self.spawn(os.environ["FORKD_TEST_TAG"])
        name = "a b;touch PWNED;$(touch PWNED2)`touch PWNED3`'q\"x"
        path = "/tmp/" + name
        text, err = self.mcp.call("write_file", sandbox_id=sid, path=path, content="héllo\nworld")
        self.assertFalse(err, text)
        text, err = self.mcp.call("read_file", sandbox_id=sid, path=path)
        self.assertFalse(err, text)
        self.assertEqual(text, "héllo\nworld")
        text, err = self.mcp.call("list_files", sandbox_id=sid, path="/tmp")
        self.assertFalse(err, text)
        self.assertIn(name, text)
        text, _ = self.mcp.call("exec_command", sandbox_id=sid, shell="ls -a / /tmp /root")
        self.assertIn("exit_code: 0", text)
        self.assertNotIn("PWNED", text.replace(name, ""))
        text, err = self.mcp.call("read_file", sandbox_id=sid, path="/no/such/file")
        self.assertTrue(err)
        self.assertIn("/no/such/file", text)
        text, err = self.mcp.call("read_file", sandbox_id=sid, path="relative/path")
        self.assertTrue(err)
        self.assertIn("absolute", text)

    def test_eval_branch_fork(self):
        sid = self.spawn(os.environ["FORKD_TEST_PY_TAG"])
        text, err = self.mcp.call("eval_code", sandbox_id=sid, code="import numpy; x = 41")
        self.assertFalse(err, text)
        text, err = self.mcp.call("eval_code", sandbox_id=sid, code="x + 1")
        self.assertFalse(err, text)
        self.assertIn("42", text)
        text, err = self.mcp.call("eval_code", sandbox_id=sid, code="1/0")
        self.assertTrue(err)
        self.assertIn("ZeroDivisionError", text)
        text, err = self.mcp.call("fork_sandbox", sandbox_id=sid, n=2)
        self.assertFalse(err, text)
        forked = json.loads(text)
        self.tags.append(forked["tag"])
        children = [c["id"] for c in forked["children"]]
        self.sandboxes[:0] = children  # killed before the tags go
        self.assertEqual(len(children), 2)
        for child in children:
            text, err = self.mcp.call("eval_code", sandbox_id=child, code="x + 1")
            self.assertFalse(err, text)
            self.assertIn("42", text)
        text, err = self.mcp.call("branch_sandbox", sandbox_id=sid, tag="mcp-branch-%d" % os.getpid())
        self.assertFalse(err, text)
        self.tags.insert(0, json.loads(text)["tag"])
        text, err = self.mcp.call("list_snapshots")
        self.assertIn("mcp-branch-%d" % os.getpid(), text)
        text, err = self.mcp.call("list_sandboxes")
        self.assertIn(sid, text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
