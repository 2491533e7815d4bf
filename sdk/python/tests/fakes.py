"""A scripted stand-in for the daemon: a local http.server whose routes are Python functions.

Used by the unit tests, which need no VM: error mapping, headers, uploads and downloads, NDJSON
streams, timeouts, TLS and unix sockets.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import socketserver
import ssl
import tempfile
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

Handler = Callable[["Request"], None]


class Request(http.server.BaseHTTPRequestHandler):
    """One request to the fake daemon; handlers answer with the helpers below."""

    protocol_version = "HTTP/1.1"
    server: "_Server"  # type: ignore[assignment]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def address_string(self) -> str:
        return "unix" if not self.client_address else str(self.client_address[0])

    # --- reading ---

    @property
    def route(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> Dict[str, str]:
        from urllib.parse import parse_qsl, urlsplit

        return dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))

    def body(self) -> bytes:
        """The request body, Content-Length or chunked."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def json(self) -> Any:
        raw = self.body()
        return json.loads(raw) if raw else None

    # --- answering ---

    def send_json(self, status: int, obj: Any, headers: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(obj).encode()
        self.send_raw(status, data, "application/json", headers)

    def send_raw(
        self,
        status: int,
        data: bytes,
        ctype: str = "application/json",
        headers: Optional[Dict[str, str]] = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self, status: int = 200, ctype: str = "application/x-ndjson") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def error(self, status: int, message: str, code: str) -> None:
        self.send_json(status, {"error": message, "code": code})

    def _dispatch(self) -> None:
        self.server.requests.append(self)
        self.close_connection = True
        for (method, route), fn in self.server.routes.items():
            if method == self.command and route == self.route:
                fn(self)
                return
        self.error(404, f"no route for {self.command} {self.route}", "http_error")

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """Quiet about clients that went away (the tests make them go away on purpose)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass

    daemon_threads = True
    allow_reuse_address = True
    routes: Dict[Tuple[str, str], Handler]
    requests: List[Request]


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Quiet about clients that went away (the tests make them go away on purpose)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass

    daemon_threads = True
    routes: Dict[Tuple[str, str], Handler]
    requests: List[Request]


class FakeDaemon:
    """Serve ``routes`` ({(method, path): handler}) on 127.0.0.1, a unix socket, or TLS.

    Use as a context manager; ``url`` is the base URL to give the Controller.
    """

    def __init__(
        self,
        routes: Dict[Tuple[str, str], Handler],
        unix: bool = False,
        tls: Optional[Tuple[str, str]] = None,
    ) -> None:
        self._tmp: Optional[tempfile.TemporaryDirectory[str]] = None
        if unix:
            self._tmp = tempfile.TemporaryDirectory(prefix="forkd-sdk-test-")
            path = os.path.join(self._tmp.name, "d.sock")
            self.server: Any = _UnixServer(path, Request)
            self.url = "unix://" + path
        else:
            self.server = _Server(("127.0.0.1", 0), Request)
            port = self.server.server_address[1]
            if tls is not None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(tls[0], tls[1])
                self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        self.server.routes = routes
        self.server.requests = []
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.02},
            daemon=True,
        )

    @property
    def requests(self) -> List[Request]:
        return self.server.requests  # type: ignore[no-any-return]

    def __enter__(self) -> "FakeDaemon":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
        if self._tmp is not None:
            self._tmp.cleanup()


def free_port() -> int:
    """A TCP port nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)
