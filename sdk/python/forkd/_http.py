"""HTTP transport to the daemon: http://, https:// (verified) and unix:// sockets.

One connection per request (sent with ``Connection: close``): the client holds no shared state
between requests, so a Controller may be used from many threads at once, and the daemon keeps no
idle keep-alive connection (each would hold one of its worker threads).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import ssl
import stat
import urllib.parse
from dataclasses import dataclass
from typing import (
    IO,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from .errors import (
    ClientTimeoutError,
    ForkdConnectionError,
    ProtocolError,
    error_from_response,
    error_from_stream_event,
)

__all__ = [
    "Endpoint",
    "parse_base_url",
    "Transport",
    "StreamResponse",
    "EventStream",
    "Body",
    "USER_AGENT",
    "CHUNK_SIZE",
]

USER_AGENT = "forkd-python/0.1.0"
CHUNK_SIZE = 1 << 20  # uploads and downloads move in 1 MiB pieces, as the daemon does
# Bound on one NDJSON line (an output chunk, JSON-escaped): a longer one is a protocol error.
_MAX_EVENT_LINE = 64 << 20

# A request body: nothing, bytes, or a binary/text file object (streamed, never read whole).
Body = Union[None, bytes, bytearray, memoryview, str, IO[bytes], IO[str]]
Query = Optional[Mapping[str, Union[str, int, bool, None]]]


@dataclass(frozen=True)
class Endpoint:
    """Where the daemon listens, parsed from a base URL.

    Attributes:
        scheme: ``"http"``, ``"https"`` or ``"unix"``.
        host: the host name (``"localhost"`` for a unix socket, used as the Host header).
        port: the TCP port (None for a unix socket).
        prefix: a path prefix every route is appended to (no trailing slash), e.g. behind a proxy.
        socket_path: the unix socket's absolute path, for ``unix://``.
        url: the normalized base URL, for messages.
    """

    scheme: str
    host: str
    port: Optional[int]
    prefix: str
    socket_path: Optional[str]
    url: str


def parse_base_url(url: str) -> Endpoint:
    """Parse a daemon URL: ``http://host[:port][/prefix]``, ``https://...`` or
    ``unix:///absolute/path.sock``. Raises ValueError for anything else."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("empty forkd URL")
    url = url.strip()
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        # unix:///run/forkd.sock (empty authority) or unix:/run/forkd.sock
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"invalid forkd URL {url!r}: a unix socket URL is unix:///absolute/path.sock"
            )
        path = urllib.parse.unquote(parts.path)
        if not path.startswith("/") or path == "/":
            raise ValueError(f"invalid forkd URL {url!r}: the socket path must be absolute")
        if parts.query or parts.fragment:
            raise ValueError(f"invalid forkd URL {url!r}: no query or fragment allowed")
        return Endpoint("unix", "localhost", None, "", path, "unix://" + path)
    if scheme not in ("http", "https"):
        raise ValueError(
            f"invalid forkd URL {url!r}: use http://, https:// or unix:///path/to/socket"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"invalid forkd URL {url!r}: no query or fragment allowed")
    host = parts.hostname
    if not host:
        raise ValueError(f"invalid forkd URL {url!r}: no host")
    try:
        port = parts.port
    except ValueError as e:  # a non-numeric or out-of-range port
        raise ValueError(f"invalid forkd URL {url!r}: {e}") from None
    if port is None:
        port = 443 if scheme == "https" else 80
    prefix = parts.path.rstrip("/")
    shown_host = f"[{host}]" if ":" in host else host
    return Endpoint(scheme, host, port, prefix, None, f"{scheme}://{shown_host}:{port}{prefix}")


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix stream socket; the Host header says ``localhost``."""

    def __init__(self, socket_path: str, timeout: Optional[float]) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _ssl_context(ca_file: Optional[str]) -> ssl.SSLContext:
    # create_default_context verifies the certificate chain and the host name; with cafile it
    # trusts that file alone (a CA or the daemon's self-signed certificate).
    if ca_file is not None:
        if not os.path.isfile(ca_file):
            raise FileNotFoundError(2, f"forkd CA certificate file {ca_file!r} not found", ca_file)
        try:
            return ssl.create_default_context(cafile=ca_file)
        except ssl.SSLError as e:
            raise ValueError(f"forkd CA certificate file {ca_file!r}: {e}") from None
    return ssl.create_default_context()


def _is_timeout(e: BaseException) -> bool:
    return isinstance(e, (socket.timeout, TimeoutError))


def _body_length(f: Any) -> Optional[int]:
    """Bytes left in a binary regular file from its position, or None (then sent chunked)."""
    if isinstance(f, io.TextIOBase):
        return None  # characters, not bytes: the encoded length is not known in advance
    try:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        return max(0, st.st_size - int(f.tell()))
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _read_piece(f: Any, size: int) -> bytes:
    piece = f.read(size)
    if isinstance(piece, str):
        return piece.encode("utf-8")
    if piece is None:  # a non-blocking raw file with nothing ready: not supported
        raise ValueError("file object returned None from read(): use a blocking file")
    return bytes(piece)


class StreamResponse:
    """A successful response whose body is read as it arrives (a download, an NDJSON stream).

    Use it as a context manager, or call ``close()``: that closes the connection (for a
    streaming exec, the daemon then kills the command).
    """

    def __init__(
        self,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        url: str,
        method: str,
    ) -> None:
        self._conn = conn
        self._resp = resp
        self.url = url
        self.method = method
        self.status: int = resp.status
        self.headers: Dict[str, str] = {k.lower(): v for k, v in resp.getheaders()}

    def _guard(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except http.client.IncompleteRead as e:
            raise ForkdConnectionError(
                self.url, f"the response was cut after {len(e.partial)} more bytes"
            ) from None
        except (http.client.HTTPException, ValueError) as e:
            if isinstance(e, ValueError) and self._resp.isclosed():
                raise ValueError("read from a closed forkd response") from None
            raise ProtocolError(f"{self.method} {self.url}: malformed response: {e}") from None
        except OSError as e:
            if _is_timeout(e):
                raise ClientTimeoutError(
                    f"{self.method} {self.url}: no data from the daemon within "
                    f"{self._conn.timeout} s",
                    self.url,
                    self._conn.timeout,
                ) from None
            raise ForkdConnectionError(self.url, str(e) or type(e).__name__) from None

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is left for ``n < 0``); ``b""`` at the end."""
        if n is None or n < 0:
            return self._guard(self._resp.read)  # type: ignore[no-any-return]
        return self._guard(lambda: self._resp.read(n))  # type: ignore[no-any-return]

    def read1(self, n: int = -1) -> bytes:
        """What is available now (at most ``n`` bytes), waiting only if nothing is."""
        return self._guard(lambda: self._resp.read1(n))  # type: ignore[no-any-return]

    def readline(self, limit: int = -1) -> bytes:
        """One line including its newline (or up to ``limit`` bytes); ``b""`` at the end."""
        return self._guard(lambda: self._resp.readline(limit))  # type: ignore[no-any-return]

    def iter_chunks(self, size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The body in pieces of at most ``size`` bytes, as they arrive."""
        while True:
            piece = self.read1(size)
            if not piece:
                return
            yield piece

    def readable(self) -> bool:
        """True: this is a readable binary stream."""
        return True

    @property
    def closed(self) -> bool:
        """True once closed or fully read."""
        return self._resp.isclosed()

    def close(self) -> None:
        """Close the response and its connection."""
        try:
            self._resp.close()
        finally:
            self._conn.close()

    def __enter__(self) -> StreamResponse:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._conn.close()
        except Exception:
            pass


class EventStream:
    """An NDJSON stream of command events: ``start``, ``stdout``, ``stderr``, then ``exit``.

    Iterating yields each event as a dict, as soon as its line arrives. A ``{"type": "error"}``
    line raises the matching ControllerError (e.g. SandboxTimeoutError for ``agent_timeout``);
    a stream that ends without ``exit`` raises ForkdConnectionError. ``close()`` (or leaving the
    ``with`` block) drops the connection: for a streaming exec the daemon then kills the command.
    """

    def __init__(self, response: StreamResponse) -> None:
        self._response = response
        self.command_id: Optional[str] = None
        self.exit: Optional[Dict[str, Any]] = None

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        r = self._response
        try:
            while True:
                line = r.readline(_MAX_EVENT_LINE + 1)
                if not line:
                    break
                if len(line) > _MAX_EVENT_LINE:
                    raise ProtocolError(f"{r.method} {r.url}: a stream line over 64 MiB")
                line = line.strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    raise ProtocolError(
                        f"{r.method} {r.url}: a stream line is not JSON: {line[:200]!r}"
                    ) from None
                if not isinstance(event, dict):
                    raise ProtocolError(f"{r.method} {r.url}: a stream line is not an object")
                kind = event.get("type")
                if kind == "start" and isinstance(event.get("command_id"), str):
                    self.command_id = event["command_id"]
                if kind == "error":
                    raise error_from_stream_event(event, r.url, r.method, r.status)
                yield event
                if kind == "exit":
                    self.exit = event
                    return
        finally:
            r.close()
        raise ForkdConnectionError(r.url, "the stream ended before the command's exit event")

    def close(self) -> None:
        """Drop the stream's connection."""
        self._response.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Transport:
    """Sends requests to one daemon. Thread-safe: every request opens its own connection."""

    def __init__(
        self,
        base_url: str,
        token: Optional[str],
        timeout: Optional[float],
        ca_file: Optional[str] = None,
    ) -> None:
        self.endpoint = parse_base_url(base_url)
        self.token = token
        self.timeout = timeout
        self.ca_file = ca_file
        self._ssl: Optional[ssl.SSLContext] = (
            _ssl_context(ca_file) if self.endpoint.scheme == "https" else None
        )

    # --- building blocks ---------------------------------------------------------------------

    def target(self, path: str, query: Query = None) -> str:
        """The request target: prefix, path and the encoded query (None values left out)."""
        t = self.endpoint.prefix + path
        if query:
            items = []
            for k, v in query.items():
                if v is None:
                    continue
                if isinstance(v, bool):
                    v = "true" if v else "false"
                items.append((k, str(v)))
            if items:
                t += "?" + urllib.parse.urlencode(items, quote_via=urllib.parse.quote)
        return t

    def url(self, target: str) -> str:
        """The full URL of a request target, for messages."""
        e = self.endpoint
        if e.scheme == "unix":
            return f"{e.url}:{target}"
        return e.url[: len(e.url) - len(e.prefix)] + target if e.prefix else e.url + target

    def _connect(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        e = self.endpoint
        if e.scheme == "unix":
            assert e.socket_path is not None
            return _UnixHTTPConnection(e.socket_path, timeout)
        if e.scheme == "https":
            return http.client.HTTPSConnection(e.host, e.port, timeout=timeout, context=self._ssl)
        return http.client.HTTPConnection(e.host, e.port, timeout=timeout)

    def _headers(self, extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
        h = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Connection": "close",
        }
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if extra:
            h.update(extra)
        return h

    # --- requests ----------------------------------------------------------------------------

    def open(
        self,
        method: str,
        path: str,
        *,
        query: Query = None,
        json_body: Any = None,
        body: Body = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = -1.0,
    ) -> StreamResponse:
        """Send a request and return its response unread, once its status is 2xx.

        ``json_body`` is sent as JSON; ``body`` as bytes (str is UTF-8) or streamed from a file
        object (with Content-Length when its size is known, else chunked). ``timeout`` is the
        socket timeout in seconds (-1: the transport's; None: wait forever). An error answer
        raises the matching ControllerError subclass.
        """
        if timeout is not None and timeout < 0:
            timeout = self.timeout
        target = self.target(path, query)
        url = self.url(target)
        hdrs = self._headers(headers)
        payload: Optional[bytes] = None
        stream: Any = None
        length: Optional[int] = None
        if json_body is not None:
            payload = json.dumps(json_body).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        elif isinstance(body, str):
            payload = body.encode("utf-8")
        elif isinstance(body, (bytes, bytearray, memoryview)):
            payload = bytes(body)
        elif body is not None:
            if not hasattr(body, "read"):
                raise TypeError(f"unsupported body type {type(body).__name__}")
            stream = body
            length = _body_length(body)
        if payload is not None:
            hdrs["Content-Length"] = str(len(payload))
        elif stream is not None:
            if length is not None:
                hdrs["Content-Length"] = str(length)
            else:
                hdrs["Transfer-Encoding"] = "chunked"
        elif method in ("POST", "PUT"):
            hdrs["Content-Length"] = "0"

        conn = self._connect(timeout)
        try:
            resp = self._exchange(conn, method, target, url, hdrs, payload, stream, length)
        except BaseException:
            conn.close()
            raise
        if resp.status >= 400 or resp.status < 200:
            try:
                raw = _read_error_body(resp)
            finally:
                conn.close()
            raise error_from_response(resp.status, raw, url, method, resp.getheader("Retry-After"))
        return StreamResponse(conn, resp, url, method)

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        target: str,
        url: str,
        hdrs: Mapping[str, str],
        payload: Optional[bytes],
        stream: Any,
        length: Optional[int],
    ) -> http.client.HTTPResponse:
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.endheaders(payload)
        except OSError as e:
            raise self._os_error(e, method, url, conn.timeout) from None
        if stream is not None:
            try:
                _send_stream(conn, stream, length)
            except OSError as e:
                # The daemon may have answered early (an unknown sandbox, a body too large) and
                # closed its end: its answer explains more than a broken pipe does.
                try:
                    return conn.getresponse()
                except (OSError, http.client.HTTPException):
                    raise self._os_error(e, method, url, conn.timeout) from None
        try:
            return conn.getresponse()
        except OSError as e:
            raise self._os_error(e, method, url, conn.timeout) from None
        except http.client.HTTPException as e:
            raise ProtocolError(f"{method} {url}: malformed response: {e!r}") from None

    def _os_error(self, e: OSError, method: str, url: str, timeout: Optional[float]) -> Exception:
        if _is_timeout(e):
            return ClientTimeoutError(
                f"{method} {url}: no answer from the daemon within {timeout} s",
                url,
                timeout,
            )
        if isinstance(e, ssl.SSLError):
            return ForkdConnectionError(url, f"TLS: {e}")
        reason = e.strerror if isinstance(e.strerror, str) and e.strerror else str(e)
        if isinstance(e, (ConnectionRefusedError, FileNotFoundError)):
            reason += " (is `forkd serve` running there?)"
        return ForkdConnectionError(url, reason or type(e).__name__)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Query = None,
        json_body: Any = None,
        body: Body = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = -1.0,
    ) -> Any:
        """Send a request and return its JSON answer (None for an empty body)."""
        with self.open(
            method,
            path,
            query=query,
            json_body=json_body,
            body=body,
            headers=headers,
            timeout=timeout,
        ) as r:
            raw = r.read()
            if not raw:
                return None
            try:
                return json.loads(raw)
            except ValueError:
                raise ProtocolError(
                    f"{method} {r.url}: answer is not JSON: {raw[:200]!r}"
                ) from None

    def request_text(self, method: str, path: str, timeout: Optional[float] = -1.0) -> str:
        """Send a request and return its body as text (``/metrics``)."""
        with self.open(method, path, timeout=timeout) as r:
            return r.read().decode("utf-8", errors="replace")


def _send_stream(conn: http.client.HTTPConnection, f: Any, length: Optional[int]) -> None:
    if length is not None:
        left = length
        while left > 0:
            piece = _read_piece(f, min(CHUNK_SIZE, left))
            if not piece:
                raise ValueError(f"file ended {left} bytes before its announced size")
            conn.send(piece)
            left -= len(piece)
        return
    while True:
        piece = _read_piece(f, CHUNK_SIZE)
        if not piece:
            break
        conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
    conn.send(b"0\r\n\r\n")


def _read_error_body(resp: http.client.HTTPResponse) -> bytes:
    # Error bodies are small JSON objects; read at most 1 MiB of whatever came.
    try:
        return resp.read(1 << 20)
    except (OSError, http.client.HTTPException) as e:
        partial = getattr(e, "partial", b"")
        return partial if isinstance(partial, bytes) else b""


def split_args(cmd: Union[str, Sequence[str]]) -> Tuple[Optional[str], Optional[List[str]]]:
    """``(shell, None)`` for a string, ``(None, args)`` for a sequence of strings."""
    if isinstance(cmd, str):
        return cmd, None
    if isinstance(cmd, (bytes, bytearray)):
        raise TypeError("a command is a str (run by /bin/sh -c) or a list of str (argv)")
    args = list(cmd)
    if not args or not all(isinstance(a, str) for a in args):
        raise TypeError("a command given as a list must be a non-empty list of str")
    return None, args
