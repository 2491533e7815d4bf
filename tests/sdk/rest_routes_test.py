"""The REST routes behind the SDKs (files, streaming exec, background commands, exec user/stdin,
ping), driven with raw HTTP against a real daemon and real VMs, including what a careless or
hostile client sends: bodies over the caps (also chunked ones), cut uploads, paths with '..'.

Run under tests/sdk/with-daemon.sh with FORKD_TEST_SERVE_ARGS="--max-file-mib 4
--max-body-bytes 65536": python3 tests/sdk/rest_routes_test.py
"""
import hashlib
import http.client
import json
import os
import socket
import time
import unittest
import urllib.parse

URL = urllib.parse.urlsplit(os.environ["FORKD_URL"])
TOKEN = os.environ["FORKD_TOKEN"]
TAG = os.environ["FORKD_TEST_TAG"]
FILE_CAP = 4 << 20  # --max-file-mib 4
BODY_CAP = 65536    # --max-body-bytes 65536


def conn(timeout=120):
    return http.client.HTTPConnection(URL.hostname, URL.port, timeout=timeout)


def request(method, path, body=None, headers=None, timeout=120):
    c = conn(timeout)
    h = {"Authorization": "Bearer " + TOKEN}
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def jrequest(method, path, body=None, **kw):
    status, data = request(method, path, body, **kw)
    return status, (json.loads(data) if data else None)


def q(path):
    return urllib.parse.quote(path, safe="")


class RestRoutesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        status, body = jrequest("POST", "/v1/sandboxes", {"snapshot_tag": TAG, "n": 2})
        assert status == 201, (status, body)
        cls.sb, cls.other = body[0]["id"], body[1]["id"]

    @classmethod
    def tearDownClass(cls):
        for sid in (cls.sb, cls.other):
            request("DELETE", "/v1/sandboxes/" + sid)

    def exec(self, sid, **body):
        status, r = jrequest("POST", "/v1/sandboxes/%s/exec" % sid, body)
        self.assertEqual(status, 200, r)
        return r

    def files(self, sid, suffix=""):
        return "/v1/sandboxes/%s/files%s" % (sid, suffix)

    # --- files -------------------------------------------------------------------------------

    def test_upload_download_round_trip_streamed(self):
        data = os.urandom(3 << 20) + b"tail"
        status, r = jrequest("PUT", self.files(self.sb, "?path=" + q("/tmp/r t/blob.bin")), data)
        self.assertEqual(status, 404, r)  # the directory does not exist yet
        status, r = jrequest("POST", self.files(self.sb, "/mkdir"), {"path": "/tmp/r t"})
        self.assertEqual((status, r), (200, {"path": "/tmp/r t"}))
        status, r = jrequest("PUT", self.files(self.sb, "?path=" + q("/tmp/r t/blob.bin") + "&mode=0600"), data)
        self.assertEqual((status, r["size"]), (200, len(data)), r)
        # chunked upload (no Content-Length), sent in odd-sized pieces
        c = conn()
        c.putrequest("PUT", self.files(self.sb, "?path=" + q("/tmp/r t/chunked.bin")))
        c.putheader("Authorization", "Bearer " + TOKEN)
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        for i in range(0, len(data), 777777):
            piece = data[i:i + 777777]
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        c.send(b"0\r\n\r\n")
        r = c.getresponse()
        self.assertEqual(r.status, 200, r.read())
        c.close()
        for name in ("blob.bin", "chunked.bin"):
            c = conn()
            c.request("GET", self.files(self.sb, "?path=" + q("/tmp/r t/" + name)),
                      headers={"Authorization": "Bearer " + TOKEN})
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.getheader("X-Forkd-File-Size"), str(len(data)))
            self.assertEqual(r.getheader("Transfer-Encoding"), "chunked")
            got = r.read()
            c.close()
            self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(data).hexdigest())
        status, st = jrequest("GET", self.files(self.sb, "/stat?path=" + q("/tmp/r t/blob.bin")))
        self.assertEqual((status, st["type"], st["size"], st["mode"]), (200, "file", len(data), 0o600))
        status, ls = jrequest("GET", self.files(self.sb, "/list?path=" + q("/tmp/r t")))
        self.assertEqual([e["name"] for e in ls["entries"]], ["blob.bin", "chunked.bin"])
        self.assertEqual(ls["entries"][0]["path"], "/tmp/r t/blob.bin")
        # the other sandbox has its own file system
        status, _ = jrequest("GET", self.files(self.other, "/stat?path=" + q("/tmp/r t/blob.bin")))
        self.assertEqual(status, 404)
        status, _ = request("DELETE", self.files(self.sb, "?path=" + q("/tmp/r t")))
        self.assertEqual(status, 400)  # not empty, not recursive
        status, _ = request("DELETE", self.files(self.sb, "?path=" + q("/tmp/r t") + "&recursive=true"))
        self.assertEqual(status, 204)
        status, _ = jrequest("GET", self.files(self.sb, "/stat?path=" + q("/tmp/r t")))
        self.assertEqual(status, 404)

    def test_caps_and_cut_uploads_leave_nothing(self):
        path = "/tmp/capped.bin"
        status, r = jrequest("PUT", self.files(self.sb, "?path=" + path), b"old contents")
        self.assertEqual(status, 200, r)
        # over the cap with a Content-Length: refused from the headers, before any byte is read
        s = socket.create_connection((URL.hostname, URL.port), timeout=60)
        s.sendall(("PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: %d\r\n\r\n" % (self.files(self.sb, "?path=" + path), TOKEN,
                                                   FILE_CAP + 1)).encode())
        head = b""
        while b"body_too_large" not in head:  # headers and body may come in separate segments
            more = s.recv(4096)
            if not more:
                break
            head += more
        head = head.decode(errors="replace")
        s.close()
        self.assertTrue(head.startswith("HTTP/1.1 413"), head)
        self.assertIn("body_too_large", head)
        # over the cap, chunked: refused once the cap is passed
        c = conn()
        c.putrequest("PUT", self.files(self.sb, "?path=" + path))
        c.putheader("Authorization", "Bearer " + TOKEN)
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        piece = b"y" * (1 << 20)
        try:
            for _ in range(6):
                c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            c.send(b"0\r\n\r\n")
        except OSError:
            pass  # the daemon may close first
        r = c.getresponse()
        self.assertEqual(r.status, 413)
        c.close()
        # cut: the client promises 3 MiB, sends 1 and goes away
        s = socket.create_connection((URL.hostname, URL.port))
        s.sendall(("PUT %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: %d\r\n\r\n" % (self.files(self.sb, "?path=" + path), TOKEN,
                                                   3 << 20)).encode() + b"z" * (1 << 20))
        s.close()
        time.sleep(2)  # the daemon sees the end of the stream and removes the staged file
        status, got = request("GET", self.files(self.sb, "?path=" + path))
        self.assertEqual((status, got), (200, b"old contents"))
        status, ls = jrequest("GET", self.files(self.sb, "/list?path=/tmp"))
        self.assertEqual([e["name"] for e in ls["entries"] if "capped" in e["name"]], ["capped.bin"])
        # a download over the cap is refused before it starts
        self.exec(self.sb, shell="head -c %d /dev/zero > /tmp/big.bin" % (FILE_CAP + 1))
        status, r = jrequest("GET", self.files(self.sb, "?path=/tmp/big.bin"))
        self.assertEqual((status, r["code"]), (413, "body_too_large"))

    def test_paths_are_checked(self):
        for bad in ["relative", "/tmp/../etc/passwd", "/..", ""]:
            status, r = jrequest("GET", self.files(self.sb, "/stat?path=" + q(bad)))
            self.assertEqual(status, 400, (bad, r))
        status, r = jrequest("GET", self.files(self.sb, "/stat"))
        self.assertEqual(status, 400)
        self.assertIn("path", r["error"])
        status, r = jrequest("GET", self.files(self.sb, "?path=/tmp"))
        self.assertEqual(status, 400)  # a directory
        status, r = jrequest("GET", self.files(self.sb, "/list?path=/etc/passwd"))
        self.assertEqual(status, 400)  # not a directory
        status, r = jrequest("GET", self.files(self.sb, "?path=/no/such"))
        self.assertEqual((status, r["code"]), (404, "not_found"))
        status, r = jrequest("GET", "/v1/sandboxes/sb-nope/files/stat?path=/")
        self.assertEqual(status, 404)

    def test_json_bodies_are_capped_also_when_chunked(self):
        c = conn()
        c.putrequest("POST", "/v1/sandboxes/%s/exec" % self.sb)
        c.putheader("Authorization", "Bearer " + TOKEN)
        c.putheader("Content-Type", "application/json")
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        piece = b" " * 16384
        try:
            for _ in range(BODY_CAP // len(piece) + 2):
                c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            c.send(b"0\r\n\r\n")
        except OSError:
            pass
        r = c.getresponse()
        self.assertEqual(r.status, 413)
        c.close()

    # --- exec ----------------------------------------------------------------------------------

    def test_exec_user_stdin_env_cwd(self):
        r = self.exec(self.sb, args=["sh", "-c", "id -u; id -g; echo $HOME; pwd; echo $X; cat"],
                      user="65534", env={"X": "from env"}, cwd="/tmp", stdin="piped\n")
        self.assertEqual(r["stdout"], "65534\n65534\n/\n/tmp\nfrom env\npiped\n", r)
        r = self.exec(self.sb, shell="id -un", user="root")
        self.assertEqual(r["stdout"], "root\n")
        r = self.exec(self.sb, args=["od", "-An", "-tx1"], stdin_b64="AP8=")
        self.assertEqual(r["stdout"].split(), ["00", "ff"])
        status, r = jrequest("POST", "/v1/sandboxes/%s/exec" % self.sb,
                             {"shell": "true", "user": "no-such-user"})
        self.assertEqual(status, 400, r)
        self.assertIn("no-such-user", r["error"])

    def test_ping_names_agent_lang(self):
        status, r = jrequest("POST", "/v1/sandboxes/%s/ping" % self.sb)
        self.assertEqual(status, 200)
        self.assertTrue(r["pong"])
        self.assertEqual(r["agent_lang"], "sh")  # the minimal image has no Python
        self.assertFalse(r["warmup_ready"])

    def test_streaming_exec_delivers_output_before_the_end(self):
        c = conn()
        c.request("POST", "/v1/sandboxes/%s/exec" % self.sb,
                  body=json.dumps({"shell": "echo first; sleep 2; echo second >&2; exit 5",
                                   "stream": True}),
                  headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
        t0 = time.monotonic()
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("Content-Type"), "application/x-ndjson")
        lines, seen = [], {}
        while True:
            line = r.readline()
            if not line:
                break
            msg = json.loads(line)
            seen.setdefault(msg["type"], time.monotonic() - t0)
            if msg["type"] != "keepalive":
                lines.append(msg)
        c.close()
        self.assertEqual([m["type"] for m in lines], ["start", "stdout", "stderr", "exit"], lines)
        self.assertEqual(lines[1]["data"], "first\n")
        self.assertEqual(lines[2]["data"], "second\n")
        self.assertEqual(lines[3]["exit_code"], 5)
        self.assertLess(seen["stdout"] + 1.5, seen["exit"], seen)
        # a command that cannot start: 127, as the plain exec answers
        status, body = request("POST", "/v1/sandboxes/%s/exec" % self.sb,
                               {"args": ["/no/such/cmd"], "stream": True})
        msgs = [json.loads(x) for x in body.splitlines()]
        self.assertEqual(msgs[-1]["exit_code"], 127, msgs)

    def test_streaming_client_going_away_kills_the_command(self):
        c = conn()
        c.request("POST", "/v1/sandboxes/%s/exec" % self.sb,
                  body=json.dumps({"shell": "echo up; sleep 60; touch /tmp/survived", "stream": True}),
                  headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
        r = c.getresponse()
        r.readline()  # start
        self.assertIn(b"up", r.readline())
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            out = self.exec(self.sb, shell="ps | grep -c '[s]leep 60' || true")["stdout"].strip()
            if out == "0":
                break
            time.sleep(0.5)
        self.assertEqual(out, "0", "the command outlived its stream")

    def test_background_commands(self):
        base = "/v1/sandboxes/%s" % self.sb
        status, cmd = jrequest("POST", base + "/exec",
                               {"shell": "echo a; sleep 1; echo b; exit 3", "background": True})
        self.assertEqual(status, 202, cmd)
        self.assertEqual(cmd["status"], "running")
        self.assertIsNone(cmd["exit_code"])
        cid = cmd["command_id"]
        status, listed = jrequest("GET", base + "/commands")
        self.assertIn(cid, [c["command_id"] for c in listed])
        # another sandbox cannot reach it
        status, _ = jrequest("GET", "/v1/sandboxes/%s/commands/%s" % (self.other, cid))
        self.assertEqual(status, 404)
        status, done = jrequest("POST", base + "/commands/%s/wait" % cid, {"timeout_secs": 30})
        self.assertEqual((status, done["status"], done["exit_code"]), (200, "exited", 3), done)
        self.assertEqual(done["stdout"], "a\nb\n")
        status, body = request("GET", base + "/commands/%s/stream" % cid)
        msgs = [json.loads(x) for x in body.splitlines()]
        msgs = [m for m in msgs if m["type"] != "keepalive"]
        self.assertEqual("".join(m.get("data", "") for m in msgs if m["type"] == "stdout"), "a\nb\n")
        self.assertEqual(msgs[-1]["type"], "exit")
        # kill a long one
        status, cmd = jrequest("POST", base + "/exec", {"args": ["sleep", "1000"], "background": True})
        cid2 = cmd["command_id"]
        status, killed = jrequest("POST", base + "/commands/%s/kill" % cid2, {"signal": "KILL"})
        self.assertEqual(status, 200, killed)
        self.assertTrue(killed["killed"])
        status, info = jrequest("POST", base + "/commands/%s/wait" % cid2, {"timeout_secs": 10})
        self.assertEqual((info["status"], info["exit_code"]), ("exited", 137), info)
        status, r = jrequest("POST", base + "/commands/%s/kill" % cid2, {"signal": "BOGUS"})
        self.assertEqual(status, 400)
        for c in (cid, cid2):
            self.assertEqual(request("DELETE", base + "/commands/" + c)[0], 204)
        self.assertEqual(jrequest("GET", base + "/commands/" + cid)[0], 404)
        # at most 16 per sandbox
        ids = []
        try:
            for i in range(16):
                status, cmd = jrequest("POST", base + "/exec", {"args": ["true"], "background": True})
                self.assertEqual(status, 202, cmd)
                ids.append(cmd["command_id"])
            status, r = jrequest("POST", base + "/exec", {"args": ["true"], "background": True})
            self.assertEqual(status, 429, r)
        finally:
            for c in ids:
                request("DELETE", base + "/commands/" + c)


if __name__ == "__main__":
    unittest.main(verbosity=2)
