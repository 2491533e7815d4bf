"""Unit tests without a daemon: URLs, error mapping, headers, bodies, streams, TLS, unix sockets."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from typing import Any, Dict, List, Tuple
from unittest import mock

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import forkd  # noqa: E402
from forkd import Controller  # noqa: E402
from forkd._http import parse_base_url  # noqa: E402
from forkd.errors import error_from_response, error_from_stream_event  # noqa: E402

from fakes import FakeDaemon, Request, free_port  # noqa: E402


class UrlTest(unittest.TestCase):
    def test_http_https_unix(self) -> None:
        e = parse_base_url("http://127.0.0.1:8889")
        self.assertEqual((e.scheme, e.host, e.port, e.prefix), ("http", "127.0.0.1", 8889, ""))
        e = parse_base_url("https://forkd.example/")
        self.assertEqual((e.scheme, e.port, e.url), ("https", 443, "https://forkd.example:443"))
        e = parse_base_url("http://[::1]:9/api/")
        self.assertEqual((e.host, e.port, e.prefix), ("::1", 9, "/api"))
        self.assertEqual(e.url, "http://[::1]:9/api")
        e = parse_base_url("unix:///run/forkd.sock")
        self.assertEqual(
            (e.scheme, e.socket_path, e.host), ("unix", "/run/forkd.sock", "localhost")
        )
        self.assertEqual(parse_base_url("unix:/run/f.sock").socket_path, "/run/f.sock")

    def test_bad_urls(self) -> None:
        for bad in [
            "",
            "ftp://x",
            "127.0.0.1:8889",
            "unix://relative.sock",
            "unix:///",
            "http://",
            "http://h:99999",
            "http://h:8/?q=1",
        ]:
            with self.subTest(url=bad), self.assertRaises(ValueError):
                parse_base_url(bad)

    def test_controller_defaults_from_environment(self) -> None:
        env = {"FORKD_URL": "unix:///tmp/x.sock", "FORKD_TOKEN": "t0k"}
        with mock.patch.dict(os.environ, env, clear=False):
            os.environ.pop("FORKD_CA_CERT", None)
            c = Controller()
            self.assertEqual(c.base_url, "unix:///tmp/x.sock")
            self.assertEqual(c.token, "t0k")
            self.assertIsNone(c.ca_file)
        with mock.patch.dict(os.environ, {}, clear=True):
            c = Controller()
            self.assertEqual(c.base_url, "http://127.0.0.1:8889")
            self.assertIsNone(c.token)
        with mock.patch.dict(os.environ, {"FORKD_URL": "http://a:1"}, clear=True):
            self.assertEqual(Controller("http://b:2", token="x").base_url, "http://b:2")

    def test_missing_ca_file(self) -> None:
        with self.assertRaises(FileNotFoundError):
            Controller("https://127.0.0.1:1", ca_file="/nonexistent/ca.pem")


class ErrorMappingTest(unittest.TestCase):
    def err(self, status: int, body: Dict[str, Any], retry: str = "") -> forkd.ControllerError:
        return error_from_response(status, json.dumps(body).encode(), "http://h/x", "GET", retry)

    def test_classes(self) -> None:
        cases = [
            (400, "invalid_argument", forkd.InvalidRequestError),
            (401, "unauthorized", forkd.AuthenticationError),
            (404, "not_found", forkd.NotFoundError),
            (404, "http_error", forkd.NotFoundError),
            (409, "already_exists", forkd.ConflictError),
            (409, "no_python", forkd.NoPythonError),
            (413, "body_too_large", forkd.PayloadTooLargeError),
            (429, "too_many_requests", forkd.RateLimitError),
            (500, "internal", forkd.ServerError),
            (502, "agent_error", forkd.AgentError),
            (502, "agent_protocol", forkd.AgentError),
            (503, "busy", forkd.UnavailableError),
            (504, "agent_timeout", forkd.SandboxTimeoutError),
            (504, "timeout", forkd.SandboxTimeoutError),
            (507, "no_space", forkd.ServerError),
            (418, "teapot", forkd.ControllerError),
        ]
        for status, code, cls in cases:
            with self.subTest(status=status, code=code):
                e = self.err(status, {"error": "boom", "code": code})
                self.assertIs(type(e), cls)
                self.assertIsInstance(e, forkd.ControllerError)
                self.assertEqual(
                    (e.status, e.code, e.message, e.url),
                    (status, code, "boom", "http://h/x"),
                )
                self.assertIn(str(status), str(e))
                self.assertIn("boom", str(e))

    def test_retry_after_and_text_body(self) -> None:
        e = self.err(503, {"error": "busy", "code": "busy"}, "1")
        self.assertEqual(e.retry_after, 1.0)
        e = error_from_response(500, b"<html>oops</html>", "http://h/x")
        self.assertIsInstance(e, forkd.ServerError)
        self.assertIsNone(e.code)
        self.assertEqual(e.body, "<html>oops</html>")
        self.assertIn("oops", str(e))

    def test_stream_error(self) -> None:
        e = error_from_stream_event(
            {"type": "error", "error": "slow", "code": "agent_timeout"}, "u"
        )
        self.assertIsInstance(e, forkd.SandboxTimeoutError)
        e = error_from_stream_event({"type": "error", "error": "x", "code": "agent_error"}, "u")
        self.assertIsInstance(e, forkd.AgentError)
        e = error_from_stream_event({"type": "error", "error": "x", "code": "weird"}, "u")
        self.assertIsInstance(e, forkd.ServerError)

    def test_command_exit_error(self) -> None:
        r = forkd.CommandResult("out", "bad thing\n", 3)
        e = forkd.CommandExitError(r)
        self.assertEqual((e.exit_code, e.stdout, e.stderr), (3, "out", "bad thing\n"))
        self.assertIn("code 3", str(e))
        self.assertIn("bad thing", str(e))
        self.assertIn(
            "timed out",
            str(forkd.CommandExitError(forkd.CommandResult("", "", -1, True))),
        )


def _ndjson(*events: Dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


class FakeDaemonTest(unittest.TestCase):
    """The SDK against a scripted daemon."""

    def serve(self, routes: Dict[Any, Any], **kw: Any) -> FakeDaemon:
        d = FakeDaemon(routes, **kw)
        d.__enter__()
        self.addCleanup(d.__exit__)
        return d

    def test_headers_body_and_error(self) -> None:
        def spawn(r: Request) -> None:
            body = r.json()
            if body["snapshot_tag"] == "nope":
                return r.error(404, "no tag nope", "not_found")
            r.send_json(201, [{"id": "sb-1", "snapshot_tag": body["snapshot_tag"]}])

        d = self.serve({("POST", "/v1/sandboxes"): spawn})
        c = Controller(d.url, token="secret")
        out = c.spawn_sandboxes("t", n=1, prewarm=False, memory_limit_mib=None)
        self.assertEqual(out[0]["id"], "sb-1")
        req = d.requests[0]
        self.assertEqual(req.headers["Authorization"], "Bearer secret")
        self.assertEqual(req.headers["Connection"], "close")
        self.assertEqual(req.headers["Content-Type"], "application/json")
        with self.assertRaises(forkd.NotFoundError) as cm:
            c.spawn_sandboxes("nope")
        self.assertEqual(cm.exception.code, "not_found")
        self.assertEqual(cm.exception.method, "POST")
        self.assertTrue(cm.exception.url.endswith("/v1/sandboxes"))

    def test_forkd_spawn_body_sends_flags_only_when_true(self) -> None:
        bodies: List[Any] = []

        def spawn(r: Request) -> None:
            bodies.append(r.json())
            r.send_json(201, [{"id": "sb-1"}])

        d = self.serve({("POST", "/v1/sandboxes"): spawn})
        c = Controller(d.url)
        c.spawn_sandboxes("t")
        c.spawn_sandboxes("t", 2, True, 256, True, True, True, cpu_limit=0.5)
        self.assertEqual(bodies[0], {"snapshot_tag": "t", "n": 1})
        self.assertEqual(
            bodies[1],
            {
                "snapshot_tag": "t",
                "n": 2,
                "per_child_netns": True,
                "memory_limit_mib": 256,
                "prewarm": True,
                "live_fork": True,
                "hugepages": True,
                "cpu_limit": 0.5,
            },
        )

    def test_branch_and_exec_bodies(self) -> None:
        bodies: List[Any] = []

        def record(status: int, answer: Any) -> Any:
            def fn(r: Request) -> None:
                bodies.append(r.json())
                r.send_json(status, answer)

            return fn

        d = self.serve(
            {
                ("POST", "/v1/sandboxes/sb-1/branch"): record(201, {"tag": "b"}),
                ("POST", "/v1/sandboxes/sb-1/exec"): record(200, {"stdout": "", "exit_code": 0}),
            }
        )
        c = Controller(d.url)
        c.branch_sandbox("sb-1")
        c.branch_sandbox("sb-1", tag="b", diff=True)
        c.branch_sandbox("sb-1", mode="live", measure_diff=True, wait=False)
        self.assertEqual(
            bodies[:3],
            [
                {},
                {"tag": "b", "diff": True},
                {"mode": "live", "measure_diff": True, "wait": False},
            ],
        )
        c.exec_command("sb-1", ["ls", "-l"])
        c.exec_command(
            "sb-1",
            "echo hi",
            timeout_secs=None,
            env={"A": 1},
            user=0,
            stdin=b"\x00\xff",
        )
        self.assertEqual(bodies[3], {"args": ["ls", "-l"], "timeout_secs": 30})
        self.assertEqual(
            bodies[4],
            {"shell": "echo hi", "env": {"A": "1"}, "user": "0", "stdin_b64": "AP8="},
        )

    def test_quoting_of_ids_and_paths(self) -> None:
        def stat(r: Request) -> None:
            if r.query["path"] == "/missing":
                return r.error(404, "no such file /missing", "not_found")
            r.send_json(
                200,
                {
                    "path": r.query["path"],
                    "type": "file",
                    "size": 1,
                    "mode": 420,
                    "mtime": 5,
                },
            )

        d = self.serve({("GET", "/v1/sandboxes/sb-1/files/stat"): stat})
        c = Controller(d.url)
        info = c.stat_file("sb-1", "/tmp/a b&c=d?.txt")
        self.assertEqual(info["path"], "/tmp/a b&c=d?.txt")
        sbx = forkd.Sandbox._from_info(c, {"id": "sb-1"})
        e = sbx.files.get_info("/tmp/a b&c=d?.txt")
        self.assertEqual((e.name, e.type, e.mode, e.mtime), ("a b&c=d?.txt", "file", 0o644, 5.0))
        self.assertTrue(sbx.files.exists("/tmp/x"))
        self.assertFalse(sbx.files.exists("/missing"))
        with self.assertRaises(forkd.NotFoundError) as cm:  # a "/" in an id stays in one segment
            c.stat_file("sb-1/../x", "/")
        self.assertIn("sb-1%2F..%2Fx", cm.exception.url)

    def test_error_answers_over_unix_socket(self) -> None:
        def get(r: Request) -> None:
            r.send_json(200, [{"id": "sb-1", "host": r.headers.get("Host")}])

        d = self.serve({("GET", "/v1/sandboxes"): get}, unix=True)
        c = Controller(d.url, token="x" * 32)
        out = c.list_sandboxes()
        self.assertEqual(out, [{"id": "sb-1", "host": "localhost"}])
        with self.assertRaises(forkd.NotFoundError) as cm:
            c.get_sandbox("sb-9")
        self.assertEqual(cm.exception.code, "http_error")

    def test_connection_refused(self) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        with self.assertRaises(forkd.ForkdConnectionError) as cm:
            Controller(url).healthz()
        self.assertIsInstance(cm.exception, ConnectionError)
        self.assertIn(url, str(cm.exception))
        with self.assertRaises(forkd.ForkdConnectionError) as cm:
            Controller("unix:///nonexistent/forkd.sock").healthz()
        self.assertIn("/nonexistent/forkd.sock", str(cm.exception))

    def test_client_timeout(self) -> None:
        def slow(r: Request) -> None:
            time.sleep(1.0)
            r.send_json(200, {"ok": True})

        d = self.serve({("GET", "/healthz"): slow})
        with self.assertRaises(forkd.ClientTimeoutError) as cm:
            Controller(d.url, timeout=0.2).healthz()
        self.assertIsInstance(cm.exception, TimeoutError)

    def test_non_json_success_is_protocol_error(self) -> None:
        d = self.serve({("GET", "/version"): lambda r: r.send_raw(200, b"hello", "text/plain")})
        with self.assertRaises(forkd.ProtocolError):
            Controller(d.url).version()

    def test_upload_bytes_text_and_streams(self) -> None:
        got: List[Dict[str, Any]] = []

        def put(r: Request) -> None:
            data = r.body()
            got.append(
                {
                    "query": r.query,
                    "chunked": r.headers.get("Transfer-Encoding") == "chunked",
                    "length": r.headers.get("Content-Length"),
                    "sha": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                }
            )
            r.send_json(200, {"path": r.query["path"], "size": len(data)})

        d = self.serve({("PUT", "/v1/sandboxes/sb-1/files"): put})
        sbx = forkd.Sandbox._from_info(Controller(d.url), {"id": "sb-1"})
        blob = os.urandom(3 * 1024 * 1024 + 17)
        w = sbx.files.write("/tmp/a", blob, mode=0o600)
        self.assertEqual((w.path, w.size, w.name), ("/tmp/a", len(blob), "a"))
        self.assertEqual(got[-1]["query"], {"path": "/tmp/a", "mode": "0600"})
        self.assertEqual(got[-1]["sha"], hashlib.sha256(blob).hexdigest())
        sbx.files.write("/tmp/t", "héllo")
        self.assertEqual(got[-1]["size"], len("héllo".encode()))
        # A file object without a size: chunked, in pieces.
        sbx.files.write("/tmp/b", io.BytesIO(blob))
        self.assertTrue(got[-1]["chunked"])
        self.assertEqual(got[-1]["sha"], hashlib.sha256(blob).hexdigest())
        # A regular file: its remaining size as Content-Length.
        with tempfile.TemporaryFile() as f:
            f.write(blob)
            f.seek(100)
            sbx.files.write("/tmp/c", f)
        self.assertFalse(got[-1]["chunked"])
        self.assertEqual(got[-1]["length"], str(len(blob) - 100))
        self.assertEqual(got[-1]["sha"], hashlib.sha256(blob[100:]).hexdigest())
        # A text file object: encoded as it is read, so chunked.
        sbx.files.write("/tmp/d", io.StringIO("ü" * 1000))
        self.assertTrue(got[-1]["chunked"])
        self.assertEqual(got[-1]["size"], 2000)

    def test_upload_refused_early(self) -> None:
        def put(r: Request) -> None:
            r.error(413, "file larger than 1 MiB", "body_too_large")  # without reading the body

        d = self.serve({("PUT", "/v1/sandboxes/sb-1/files"): put})
        c = Controller(d.url)
        with self.assertRaises((forkd.PayloadTooLargeError, forkd.ForkdConnectionError)):
            c.write_file("sb-1", "/tmp/big", io.BytesIO(b"x" * (8 << 20)))

    def test_download_streamed_and_cut(self) -> None:
        blob = os.urandom(2 * 1024 * 1024 + 5)

        def get(r: Request) -> None:
            path = r.query["path"]
            if path == "/missing":
                return r.error(404, "no such file /missing", "not_found")
            r.start_chunked(200, "application/octet-stream")
            for i in range(0, len(blob), 700_000):
                r.chunk(blob[i : i + 700_000])
            if path == "/cut":
                return  # no final chunk: the connection just closes
            r.end_chunked()

        d = self.serve({("GET", "/v1/sandboxes/sb-1/files"): get})
        sbx = forkd.Sandbox._from_info(Controller(d.url), {"id": "sb-1"})
        self.assertEqual(sbx.files.read("/f", format="bytes"), blob)
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        dest = os.path.join(tmp, "out.bin")
        self.assertEqual(sbx.files.read_to("/f", dest), len(blob))
        with open(dest, "rb") as f:
            self.assertEqual(f.read(), blob)
        buf = io.BytesIO()
        sbx.files.read_to("/f", buf)
        self.assertEqual(buf.getvalue(), blob)
        with sbx.files.read("/f", format="stream") as s:
            self.assertEqual(b"".join(s.iter_chunks()), blob)
        with self.assertRaises(forkd.ForkdConnectionError):
            sbx.files.read_to("/cut", os.path.join(tmp, "cut.bin"))
        self.assertEqual(os.listdir(tmp), ["out.bin"])  # no partial file left
        with self.assertRaises(forkd.NotFoundError):
            sbx.files.read("/missing")

    def test_streaming_run_is_incremental(self) -> None:
        def exec_(r: Request) -> None:
            body = r.json()
            assert body["stream"] is True and body["shell"] == "x", body
            r.start_chunked()
            r.chunk(_ndjson({"type": "start", "command_id": "cmd-0123456789abcdef"}))
            r.chunk(_ndjson({"type": "stdout", "data": "first\n"}))
            time.sleep(1.0)
            # One event split across two chunks, then two events in one chunk.
            line = _ndjson({"type": "stderr", "data": "warn\n"})
            r.chunk(line[:5])
            r.chunk(line[5:] + _ndjson({"type": "stdout", "data": "second\n"}))
            r.chunk(
                _ndjson(
                    {
                        "type": "exit",
                        "exit_code": 0,
                        "timed_out": False,
                        "duration_ms": 1000,
                    }
                )
            )
            r.end_chunked()

        d = self.serve({("POST", "/v1/sandboxes/sb-1/exec"): exec_})
        sbx = forkd.Sandbox._from_info(Controller(d.url), {"id": "sb-1"})
        seen: List[Any] = []
        t0 = time.monotonic()
        res = sbx.commands.run(
            "x",
            on_stdout=lambda s: seen.append(("out", s, time.monotonic() - t0)),
            on_stderr=lambda s: seen.append(("err", s, time.monotonic() - t0)),
        )
        total = time.monotonic() - t0
        self.assertEqual(
            [s[:2] for s in seen],
            [("out", "first\n"), ("err", "warn\n"), ("out", "second\n")],
        )
        self.assertLess(seen[0][2], total - 0.7)
        self.assertEqual((res.stdout, res.stderr, res.exit_code), ("first\nsecond\n", "warn\n", 0))
        self.assertEqual(res.command_id, "cmd-0123456789abcdef")

    def test_stream_error_line(self) -> None:
        def exec_(r: Request) -> None:
            r.body()
            r.start_chunked()
            r.chunk(_ndjson({"type": "start", "command_id": "cmd-1"}))
            r.chunk(_ndjson({"type": "error", "error": "agent gone", "code": "agent_timeout"}))
            r.end_chunked()

        d = self.serve({("POST", "/v1/sandboxes/sb-1/exec"): exec_})
        sbx = forkd.Sandbox._from_info(Controller(d.url), {"id": "sb-1"})
        with self.assertRaises(forkd.SandboxTimeoutError) as cm:
            sbx.commands.run("x", on_stdout=lambda s: None)
        self.assertEqual(cm.exception.code, "agent_timeout")

    def test_stream_without_exit(self) -> None:
        def exec_(r: Request) -> None:
            r.body()
            r.start_chunked()
            r.chunk(_ndjson({"type": "start", "command_id": "cmd-1"}))
            r.end_chunked()

        d = self.serve({("POST", "/v1/sandboxes/sb-1/exec"): exec_})
        sbx = forkd.Sandbox._from_info(Controller(d.url), {"id": "sb-1"})
        with self.assertRaises(forkd.ForkdConnectionError):
            sbx.commands.run("x", on_stdout=lambda s: None)

    def test_run_check_and_results(self) -> None:
        def exec_(r: Request) -> None:
            body = r.json()
            code = int(body["args"][1])
            r.send_json(
                200,
                {
                    "stdout": "o",
                    "stderr": "e",
                    "exit_code": code,
                    "timed_out": False,
                    "duration_ms": 3,
                    "truncated": False,
                    "stdout_bytes": 1,
                    "stderr_bytes": 1,
                },
            )

        d = self.serve({("POST", "/v1/sandboxes/sb-1/exec"): exec_})
        sbx = forkd.Sandbox._from_info(Controller(d.url), {"id": "sb-1"})
        res = sbx.commands.run(["exit", "0"])
        self.assertTrue(res.ok)
        self.assertEqual((res.duration_ms, res.stdout_bytes), (3, 1))
        with self.assertRaises(forkd.CommandExitError) as cm:
            sbx.commands.run(["exit", "4"])
        self.assertEqual(cm.exception.result.exit_code, 4)
        self.assertEqual(sbx.commands.run(["exit", "5"], check=False).exit_code, 5)
        with self.assertRaises(TypeError):
            sbx.commands.run("x", env={"A": "1"}, envs={"B": "2"})

    def test_background_handle(self) -> None:
        state = {"waits": 0}
        info = {
            "command_id": "cmd-00000000000000aa",
            "sandbox_id": "sb-1",
            "status": "running",
            "exit_code": None,
            "killed": False,
        }

        def start(r: Request) -> None:
            body = r.json()
            assert body["background"] is True and "timeout_secs" not in body, body
            r.send_json(202, info)

        def wait(r: Request) -> None:
            state["waits"] += 1
            assert r.json()["timeout_secs"] >= 1
            done = state["waits"] >= 2
            r.send_json(
                200,
                dict(
                    info,
                    status="exited" if done else "running",
                    exit_code=0 if done else None,
                    stdout="ab",
                    stderr="",
                ),
            )

        def kill(r: Request) -> None:
            r.send_json(200, dict(info, killed=r.json().get("signal") == "TERM"))

        base = "/v1/sandboxes/sb-1/commands/cmd-00000000000000aa"
        d = self.serve(
            {
                ("POST", "/v1/sandboxes/sb-1/exec"): start,
                ("POST", base + "/wait"): wait,
                ("POST", base + "/kill"): kill,
                ("GET", base + "/output"): lambda r: r.send_json(
                    200, dict(info, stdout="a", stderr="")
                ),
            }
        )
        sbx = forkd.Sandbox._from_info(Controller(d.url), {"id": "sb-1"})
        h = sbx.commands.run("sleep 1", background=True, timeout=None)
        self.assertEqual(h.command_id, "cmd-00000000000000aa")
        self.assertEqual(h.stdout, "a")
        res = h.wait()
        self.assertEqual((res.stdout, res.exit_code, state["waits"]), ("ab", 0, 2))
        self.assertTrue(h.kill("TERM"))

    def test_fork_partial_failure(self) -> None:
        lock = threading.Lock()
        count = {"n": 0}

        def branch(r: Request) -> None:
            r.send_json(201, {"tag": r.json().get("tag") or "branch-x", "status": "ready"})

        def spawn(r: Request) -> None:
            tag = r.json()["snapshot_tag"]
            with lock:
                count["n"] += 1
                n = count["n"]
            if tag == "t2" and n == 4:  # the second child of the second fork
                return r.error(503, "busy", "busy")
            r.send_json(201, [{"id": f"sb-c{n}", "snapshot_tag": tag}])

        d = self.serve(
            {
                ("POST", "/v1/sandboxes/sb-1/branch"): branch,
                ("POST", "/v1/sandboxes"): spawn,
            }
        )
        sbx = forkd.Sandbox._from_info(Controller(d.url), {"id": "sb-1"})
        kids = sbx.fork(2, tag="t1")
        self.assertEqual(len(kids), 2)
        self.assertTrue(all(k.snapshot_tag == "t1" for k in kids))
        self.assertNotEqual(kids[0], kids[1])
        with self.assertRaises(forkd.ForkError) as cm:
            sbx.fork(3, tag="t2")
        err = cm.exception
        self.assertEqual(err.tag, "t2")
        self.assertEqual(len(err.results), 3)
        self.assertEqual(len(err.sandboxes), 2)
        self.assertEqual(len(err.errors), 1)
        self.assertIsInstance(list(err.errors.values())[0], forkd.UnavailableError)

    def test_eval(self) -> None:
        def eval_(r: Request) -> None:
            code = r.json()["code"]
            if code == "1/0":
                return r.send_json(
                    200,
                    {
                        "result": None,
                        "error": "Traceback...\nZeroDivisionError",
                        "exit_code": 1,
                        "stdout": "",
                    },
                )
            r.send_json(200, {"result": "2", "error": None, "exit_code": 0, "stdout": ""})

        d = self.serve({("POST", "/v1/sandboxes/sb-1/eval"): eval_})
        sbx = forkd.Sandbox._from_info(Controller(d.url), {"id": "sb-1"})
        self.assertEqual(sbx.eval("1+1"), "2")
        with self.assertRaises(forkd.EvalError) as cm:
            sbx.eval("1/0")
        self.assertIn("ZeroDivisionError", cm.exception.error)


@unittest.skipUnless(shutil.which("openssl"), "the openssl CLI is not installed")
class TlsTest(unittest.TestCase):
    dir: str
    cert: str
    key: str
    other_cert: str
    other_key: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.dir = tempfile.mkdtemp(prefix="forkd-sdk-tls-")
        cls.cert, cls.key = cls.make_cert("good", "subjectAltName=IP:127.0.0.1,DNS:localhost")
        cls.other_cert, cls.other_key = cls.make_cert("other", "subjectAltName=DNS:other.example")

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def make_cert(cls, name: str, san: str) -> Tuple[str, str]:
        cert = os.path.join(cls.dir, name + "-cert.pem")
        key = os.path.join(cls.dir, name + "-key.pem")
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-addext",
                san,
                "-keyout",
                key,
                "-out",
                cert,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return cert, key

    def serve(self, cert: str, key: str) -> FakeDaemon:
        d = FakeDaemon(
            {("GET", "/healthz"): lambda r: r.send_json(200, {"ok": True})},
            tls=(cert, key),
        )
        d.__enter__()
        self.addCleanup(d.__exit__)
        return d

    def test_verified_with_ca_file(self) -> None:
        d = self.serve(self.cert, self.key)
        self.assertEqual(Controller(d.url, ca_file=self.cert).healthz(), {"ok": True})
        port = d.url.rsplit(":", 1)[1]
        self.assertEqual(
            Controller(f"https://localhost:{port}", ca_file=self.cert).healthz(),
            {"ok": True},
        )
        with mock.patch.dict(os.environ, {"FORKD_CA_CERT": self.cert}):
            self.assertEqual(Controller(d.url).healthz(), {"ok": True})

    def test_unknown_ca_refused(self) -> None:
        d = self.serve(self.cert, self.key)
        with mock.patch.dict(os.environ, {}, clear=True):
            with self.assertRaises(forkd.ForkdConnectionError) as cm:
                Controller(d.url).healthz()
        self.assertIn("TLS", str(cm.exception))

    def test_host_name_mismatch_refused(self) -> None:
        d = self.serve(self.other_cert, self.other_key)
        with self.assertRaises(forkd.ForkdConnectionError):
            Controller(d.url, ca_file=self.other_cert).healthz()


if __name__ == "__main__":
    unittest.main()
