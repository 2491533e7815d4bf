"""Client of the forkd daemon's REST API: every route, one method each.

``Controller`` keeps forkd's method names (``list_snapshots``, ``spawn_sandboxes``,
``branch_sandbox``, ``exec_command``, ...) so code written for forkd's SDK runs unchanged, and adds
this daemon's routes: snapshot builds from images, workspaces, guest files, streaming exec and
background commands. Answers are the daemon's JSON records as dicts (SandboxInfo, SnapshotInfo,
WorkspaceInfo, CommandInfo); errors are the typed exceptions of :mod:`forkd.errors`.

Example::

    from forkd import Controller
    c = Controller()                          # $FORKD_URL, else http://127.0.0.1:8889
    c.create_snapshot("py", image="python", eval=["import numpy"])
    sb = c.spawn_sandboxes("py", n=1)[0]
    print(c.exec_command(sb["id"], ["uname", "-a"])["stdout"])
    c.kill_sandbox(sb["id"])
"""

from __future__ import annotations

import base64
import os
import urllib.parse
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Union

from ._http import Body, EventStream, StreamResponse, Transport, split_args
from .errors import ProtocolError

__all__ = ["Controller", "BranchMode", "DEFAULT_URL"]

BranchMode = Literal["full", "diff", "live"]
"""How a running sandbox is branched: ``"live"`` (pre-copy; the source pauses only for the last
dirty pages), ``"diff"`` (an alias of live) or ``"full"`` (paused for the whole copy)."""

DEFAULT_URL = "http://127.0.0.1:8889"

# Socket timeouts (seconds) of requests that wait on a VM: a boot, a branch, a QEMU start.
_LONG_TIMEOUT = 600.0
# Exec's default limit in the daemon when timeout_secs is absent or 0, and the slack allowed on
# top of a command's limit for the daemon to answer.
_DAEMON_EXEC_DEFAULT = 300.0
_SLACK = 30.0
_EVAL_TIMEOUT = 150.0  # the daemon gives up on an eval after 120 s


def _seg(value: str, what: str) -> str:
    """One path segment (a sandbox id, tag, name), percent-encoded so it stays one segment."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return urllib.parse.quote(value, safe="")


def _octal_mode(mode: Union[int, str]) -> str:
    if isinstance(mode, bool):
        raise TypeError("mode is an int such as 0o644 or an octal string such as '0644'")
    if isinstance(mode, int):
        if not 0 <= mode <= 0o7777:
            raise ValueError(f"mode {mode:o} is outside 0..7777 (octal)")
        return f"{mode:04o}"
    if isinstance(mode, str) and mode and all(c in "01234567" for c in mode):
        return mode
    raise ValueError(f"mode {mode!r} is not an octal permission string such as '0644'")


class Controller:
    """Client of one forkd daemon (thread-safe; every request uses its own connection).

    Args:
        base_url: ``http://host:port``, ``https://host:port`` or ``unix:///path/to/forkd.sock``.
            Defaults to ``$FORKD_URL``, then ``http://127.0.0.1:8889``.
        token: the bearer token. Defaults to ``$FORKD_TOKEN``; needed when the daemon runs with
            ``--token-file``.
        timeout: socket timeout of a request in seconds (None: wait forever). Requests that wait
            on a VM (snapshot, spawn, branch, workspaces) wait at least 600 s, execs at least
            their command's limit plus 30 s.
        ca_file: for ``https://``, a PEM file (a CA or the daemon's self-signed certificate) to
            verify the daemon against instead of the system CAs. Defaults to ``$FORKD_CA_CERT``.
            The certificate and host name are always verified.
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: Optional[float] = 60.0,
        ca_file: Optional[str] = None,
    ) -> None:
        url = base_url or os.environ.get("FORKD_URL") or DEFAULT_URL
        self.token: Optional[str] = token if token is not None else os.environ.get("FORKD_TOKEN")
        self.timeout = timeout
        self.ca_file: Optional[str] = ca_file or os.environ.get("FORKD_CA_CERT") or None
        self._t = Transport(url, self.token, timeout, self.ca_file)
        self.base_url: str = self._t.endpoint.url

    def __repr__(self) -> str:
        return f"Controller({self.base_url!r})"

    def _at_least(self, seconds: Optional[float]) -> Optional[float]:
        """A socket timeout of at least ``seconds`` (None stays None: wait forever)."""
        if self.timeout is None or seconds is None:
            return None
        return max(self.timeout, seconds)

    def _exec_timeout(self, timeout_secs: Optional[float]) -> Optional[float]:
        limit = timeout_secs if timeout_secs else _DAEMON_EXEC_DEFAULT
        return self._at_least(limit + _SLACK)

    def _obj(self, method: str, path: str, **kw: Any) -> Dict[str, Any]:
        """A request whose answer is one JSON object."""
        r = self._t.request(method, path, **kw)
        if not isinstance(r, dict):
            raise ProtocolError(f"{method} {path}: expected a JSON object, got {r!r:.200}")
        return r

    def _list(self, method: str, path: str, **kw: Any) -> List[Dict[str, Any]]:
        """A request whose answer is a JSON array of objects."""
        r = self._t.request(method, path, **kw)
        if not isinstance(r, list) or not all(isinstance(x, dict) for x in r):
            raise ProtocolError(f"{method} {path}: expected an array of objects, got {r!r:.200}")
        return r

    # --- meta --------------------------------------------------------------------------------

    def healthz(self) -> Dict[str, Any]:
        """``GET /healthz``: ``{"ok": true}`` when the daemon is up (needs no token)."""
        return self._obj("GET", "/healthz")

    def version(self) -> Dict[str, Any]:
        """``GET /version``: ``{version, api, boundary, ...}`` (the isolation in force)."""
        return self._obj("GET", "/version")

    def metrics(self) -> str:
        """``GET /metrics``: the Prometheus text."""
        return self._t.request_text("GET", "/metrics")

    # --- snapshots ---------------------------------------------------------------------------

    def list_snapshots(self) -> List[Dict[str, Any]]:
        """``GET /v1/snapshots``: every tag, as SnapshotInfo dicts."""
        return self._list("GET", "/v1/snapshots")

    def snapshot_info(self, tag: str) -> Dict[str, Any]:
        """``GET /v1/snapshots/:tag/info``: SnapshotInfoDetail (sizes, chain, dependents)."""
        return self._obj("GET", f"/v1/snapshots/{_seg(tag, 'tag')}/info")

    def create_snapshot(
        self,
        tag: str,
        image: str = "minimal",
        memory_mib: Optional[int] = None,
        exec: Optional[Sequence[str]] = None,
        eval: Optional[Sequence[str]] = None,
        network: Optional[str] = None,
        force: bool = False,
        cascade: bool = False,
        request_timeout: Optional[float] = None,
    ) -> Dict[str, Any]:
        """``POST /v1/snapshots``: boot ``image`` (``"minimal"`` or ``"python"``), warm it up and
        freeze it as ``tag``.

        Args:
            tag: the new tag (``^[A-Za-z0-9_-]{1,64}$``).
            image: the guest image.
            memory_mib: the guest's RAM (64..65536; the daemon's default when None).
            exec: shell commands run before the snapshot (warm-up).
            eval: Python statements run in the warm worker before the snapshot (python image).
            network: ``"none"`` (no NIC) or ``"outbound"``; the daemon's default when None.
            force: replace an existing tag (409 if it has dependents, unless ``cascade``).
            cascade: with ``force``, remove the tag's dependents first.
            request_timeout: socket timeout of this request (default: at least 600 s).

        Returns the new tag's SnapshotInfo (``{tag, dir, created_at_unix, ...}``).
        """
        body: Dict[str, Any] = {"tag": tag, "image": image}
        if memory_mib is not None:
            body["memory_mib"] = memory_mib
        if exec:
            body["exec"] = list(exec)
        if eval:
            body["eval"] = list(eval)
        if network is not None:
            body["network"] = network
        if force:
            body["force"] = True
        if cascade:
            body["cascade"] = True
        timeout = request_timeout if request_timeout is not None else self._at_least(_LONG_TIMEOUT)
        return self._obj("POST", "/v1/snapshots", json_body=body, timeout=timeout)

    def delete_snapshot(self, tag: str, cascade: bool = False, force: bool = False) -> None:
        """``DELETE /v1/snapshots/:tag``: remove a tag (its files and record).

        A tag with dependents (tags branched from it) is 409 ConflictError unless ``cascade``
        (remove them too, deepest first) or ``force`` (leave them orphaned; they still spawn).
        """
        query = {"cascade": True if cascade else None, "force": True if force else None}
        self._t.request("DELETE", f"/v1/snapshots/{_seg(tag, 'tag')}", query=query)

    def compact_snapshot(self, tag: str, to: str) -> Dict[str, Any]:
        """``POST /v1/snapshots/:tag/compact``: flatten a chain link into a new base tag ``to``.

        Returns the new tag's SnapshotInfo (``branched_from: "compact:<tag>"``).
        """
        return self._obj(
            "POST",
            f"/v1/snapshots/{_seg(tag, 'tag')}/compact",
            json_body={"to": to},
            timeout=self._at_least(_LONG_TIMEOUT),
        )

    # --- sandboxes ---------------------------------------------------------------------------

    def spawn_sandboxes(
        self,
        snapshot_tag: str,
        n: int = 1,
        per_child_netns: bool = False,
        memory_limit_mib: Optional[int] = None,
        prewarm: bool = False,
        live_fork: bool = False,
        hugepages: bool = False,
        **more: Any,
    ) -> List[Dict[str, Any]]:
        """``POST /v1/sandboxes``: fork ``n`` children (1..1000) from a tag.

        ``prewarm``, ``live_fork``, ``hugepages`` and ``per_child_netns`` are sent only when
        true, as forkd's SDK does (this daemon refuses prewarm and hugepages: use
        ``forkd pool``). ``more`` passes further fields as they are: ``cpu_limit`` (cores),
        ``pids_limit``, ``network`` (``"none"``/``"outbound"``), ``expose`` (guest TCP ports),
        ``allow_list``. A field the daemon does not know is 400 InvalidRequestError.

        Returns the children's SandboxInfo dicts (``id``, ``snapshot_tag``, ``state``, ...).
        A batch in which one child fails is removed whole and raises that child's error.
        """
        body: Dict[str, Any] = {"snapshot_tag": snapshot_tag, "n": n}
        if per_child_netns:
            body["per_child_netns"] = True
        if memory_limit_mib is not None:
            body["memory_limit_mib"] = memory_limit_mib
        if prewarm:
            body["prewarm"] = True
        if live_fork:
            body["live_fork"] = True
        if hugepages:
            body["hugepages"] = True
        body.update({k: v for k, v in more.items() if v is not None})
        return self._list(
            "POST",
            "/v1/sandboxes",
            json_body=body,
            timeout=self._at_least(_LONG_TIMEOUT),
        )

    def list_sandboxes(self) -> List[Dict[str, Any]]:
        """``GET /v1/sandboxes``: every sandbox, as SandboxInfo dicts."""
        return self._list("GET", "/v1/sandboxes")

    def get_sandbox(self, sandbox_id: str) -> Dict[str, Any]:
        """``GET /v1/sandboxes/:id``: one sandbox's SandboxInfo (404 NotFoundError if none)."""
        return self._obj("GET", f"/v1/sandboxes/{_seg(sandbox_id, 'sandbox id')}")

    def kill_sandbox(self, sandbox_id: str) -> None:
        """``DELETE /v1/sandboxes/:id``: stop a sandbox and remove it."""
        self._t.request("DELETE", f"/v1/sandboxes/{_seg(sandbox_id, 'sandbox id')}")

    def ping_sandbox(self, sandbox_id: str) -> Dict[str, Any]:
        """``POST /v1/sandboxes/:id/ping``: ``{pong, pid, numpy_version?, agent_lang,
        warmup_ready}`` from the guest agent."""
        return self._obj("POST", f"/v1/sandboxes/{_seg(sandbox_id, 'sandbox id')}/ping")

    def exec_command(
        self,
        sandbox_id: str,
        args: Union[str, Sequence[str], None],
        timeout_secs: Optional[float] = 30,
        **more: Any,
    ) -> Dict[str, Any]:
        """``POST /v1/sandboxes/:id/exec``: run a command and wait for it.

        Args:
            args: the argv list, or a string run by ``/bin/sh -c`` (sent as ``shell``); None
                when ``shell=`` is given in ``more``.
            timeout_secs: the command's limit (None or 0: the daemon's 300 s; at most 3600).
            more: further fields, sent as they are: ``shell``, ``env`` (dict of str),
                ``cwd``, ``user`` (a name or uid), ``stdin`` (str, or bytes: sent as
                ``stdin_b64``), ``max_output_bytes``.

        Returns ``{stdout, stderr, exit_code, timed_out, duration_ms, truncated, ...}``.
        """
        body = self._exec_body(args, timeout_secs, more)
        return self._obj(
            "POST",
            f"/v1/sandboxes/{_seg(sandbox_id, 'sandbox id')}/exec",
            json_body=body,
            timeout=self._exec_timeout(timeout_secs),
        )

    def exec_stream(
        self,
        sandbox_id: str,
        args: Union[str, Sequence[str], None],
        timeout_secs: Optional[float] = None,
        **more: Any,
    ) -> EventStream:
        """``POST /v1/sandboxes/:id/exec`` with ``"stream": true``: the command's events as
        they happen.

        Takes what :meth:`exec_command` takes. Returns an :class:`EventStream`: iterate it for
        ``{"type": "start"|"stdout"|"stderr"|"exit", ...}`` dicts; close it (or leave its
        ``with`` block) to stop, which kills the command.
        """
        body = self._exec_body(args, timeout_secs, more)
        body["stream"] = True
        r = self._t.open(
            "POST",
            f"/v1/sandboxes/{_seg(sandbox_id, 'sandbox id')}/exec",
            json_body=body,
            timeout=self._exec_timeout(timeout_secs),
        )
        return EventStream(r)

    def start_command(
        self,
        sandbox_id: str,
        args: Union[str, Sequence[str], None],
        timeout_secs: Optional[float] = None,
        **more: Any,
    ) -> Dict[str, Any]:
        """``POST /v1/sandboxes/:id/exec`` with ``"background": true``: start a command and
        return its CommandInfo at once (``command_id``, ``status: "running"``, ...).

        Takes what :meth:`exec_command` takes; ``timeout_secs`` None means no limit (at most
        7 days). The daemon keeps the output until :meth:`delete_command`.
        """
        body = self._exec_body(args, timeout_secs, more)
        body["background"] = True
        return self._obj(
            "POST",
            f"/v1/sandboxes/{_seg(sandbox_id, 'sandbox id')}/exec",
            json_body=body,
        )

    @staticmethod
    def _exec_body(
        args: Union[str, Sequence[str], None],
        timeout_secs: Optional[float],
        more: Mapping[str, Any],
    ) -> Dict[str, Any]:
        body: Dict[str, Any] = {}
        if args is not None:
            shell, argv = split_args(args)
            if shell is not None:
                body["shell"] = shell
            else:
                body["args"] = argv
        if timeout_secs:
            body["timeout_secs"] = timeout_secs
        for k, v in more.items():
            if v is None:
                continue
            if k == "stdin" and isinstance(v, (bytes, bytearray, memoryview)):
                body["stdin_b64"] = base64.b64encode(bytes(v)).decode("ascii")
            elif k == "user" and isinstance(v, int) and not isinstance(v, bool):
                body["user"] = str(v)
            elif k == "env":
                body["env"] = {str(ek): str(ev) for ek, ev in dict(v).items()}
            else:
                body[k] = v
        if "args" not in body and "shell" not in body:
            raise ValueError("give the command: args (a list of str) or shell (a string)")
        return body

    def eval_code(self, sandbox_id: str, code: str) -> Dict[str, Any]:
        """``POST /v1/sandboxes/:id/eval``: evaluate Python in the sandbox's warm worker.

        Returns ``{result, error, exit_code, stdout}``: ``result`` is the value's repr (None for
        a statement), ``error`` the traceback when the code raised. An image without Python is
        409 NoPythonError.
        """
        return self._obj(
            "POST",
            f"/v1/sandboxes/{_seg(sandbox_id, 'sandbox id')}/eval",
            json_body={"code": code},
            timeout=self._at_least(_EVAL_TIMEOUT),
        )

    def branch_sandbox(
        self,
        sandbox_id: str,
        tag: Optional[str] = None,
        diff: bool = False,
        measure_diff: bool = False,
        mode: Optional[BranchMode] = None,
        wait: bool = True,
    ) -> Dict[str, Any]:
        """``POST /v1/sandboxes/:id/branch``: snapshot a running sandbox into a new tag; the
        sandbox goes on afterwards.

        Args:
            tag: the new tag; the daemon makes one up when None
                (``branch-<id>-<unix-ts>-<hex>``).
            diff: forkd's legacy flag (``mode="diff"``); ignored when ``mode`` is given.
            measure_diff: forkd's measurement hook; sent only when true (this daemon refuses it).
            mode: ``"live"``, ``"diff"`` or ``"full"`` (the daemon's default when None).
            wait: False answers as soon as the source runs again (status ``writing``; poll
                :meth:`snapshot_info`).

        Returns the new tag's SnapshotInfo (``tag``, ``branched_from``, ``pause_ms``, ``mode``,
        ``status``, ...). Spawn children from it with :meth:`spawn_sandboxes`.
        """
        body: Dict[str, Any] = {}
        if tag is not None:
            body["tag"] = tag
        if mode is not None:
            body["mode"] = mode
        elif diff:
            body["diff"] = True
        if measure_diff:
            body["measure_diff"] = True
        if not wait:
            body["wait"] = False
        return self._obj(
            "POST",
            f"/v1/sandboxes/{_seg(sandbox_id, 'sandbox id')}/branch",
            json_body=body,
            timeout=self._at_least(_LONG_TIMEOUT),
        )

    # --- background commands -----------------------------------------------------------------

    def _cmd(self, sandbox_id: str, command_id: str, tail: str = "") -> str:
        return (
            f"/v1/sandboxes/{_seg(sandbox_id, 'sandbox id')}/commands/"
            f"{_seg(command_id, 'command id')}{tail}"
        )

    def list_commands(self, sandbox_id: str) -> List[Dict[str, Any]]:
        """``GET /v1/sandboxes/:id/commands``: the sandbox's background commands (CommandInfo)."""
        return self._list("GET", f"/v1/sandboxes/{_seg(sandbox_id, 'sandbox id')}/commands")

    def get_command(self, sandbox_id: str, command_id: str) -> Dict[str, Any]:
        """``GET /v1/sandboxes/:id/commands/:cid``: one command's CommandInfo."""
        return self._obj("GET", self._cmd(sandbox_id, command_id))

    def command_output(self, sandbox_id: str, command_id: str) -> Dict[str, Any]:
        """``GET .../commands/:cid/output``: ``{stdout, stderr, ...CommandInfo}`` so far."""
        return self._obj("GET", self._cmd(sandbox_id, command_id, "/output"))

    def stream_command(
        self, sandbox_id: str, command_id: str, timeout: Optional[float] = None
    ) -> EventStream:
        """``GET .../commands/:cid/stream``: the output kept so far, then live output, then
        ``exit``, as an :class:`EventStream`. Closing it does not stop the command.

        ``timeout`` is the socket timeout (None: wait as long as the command runs).
        """
        r = self._t.open("GET", self._cmd(sandbox_id, command_id, "/stream"), timeout=timeout)
        return EventStream(r)

    def wait_command(
        self, sandbox_id: str, command_id: str, timeout_secs: Optional[float] = None
    ) -> Dict[str, Any]:
        """``POST .../commands/:cid/wait``: ``{stdout, stderr, ...CommandInfo}`` once the
        command ended, or after ``timeout_secs`` (default 60, at most 3600) with
        ``status: "running"``."""
        body: Dict[str, Any] = {}
        if timeout_secs is not None:
            body["timeout_secs"] = timeout_secs
        limit = timeout_secs if timeout_secs is not None else 60.0
        return self._obj(
            "POST",
            self._cmd(sandbox_id, command_id, "/wait"),
            json_body=body,
            timeout=self._at_least(limit + _SLACK),
        )

    def kill_command(
        self, sandbox_id: str, command_id: str, signal: Optional[str] = None
    ) -> Dict[str, Any]:
        """``POST .../commands/:cid/kill``: send ``signal`` (``"KILL"`` (default), ``"TERM"``,
        ``"INT"``, ``"HUP"``); returns its CommandInfo. An ended command is left as it is.
        """
        body: Dict[str, Any] = {}
        if signal is not None:
            body["signal"] = signal
        return self._obj("POST", self._cmd(sandbox_id, command_id, "/kill"), json_body=body)

    def delete_command(self, sandbox_id: str, command_id: str) -> None:
        """``DELETE .../commands/:cid``: forget a command and its output (killed if running)."""
        self._t.request("DELETE", self._cmd(sandbox_id, command_id))

    # --- guest files -------------------------------------------------------------------------

    def _files(self, sandbox_id: str, tail: str = "") -> str:
        return f"/v1/sandboxes/{_seg(sandbox_id, 'sandbox id')}/files{tail}"

    def write_file(
        self,
        sandbox_id: str,
        path: str,
        data: Body,
        mode: Union[int, str, None] = None,
    ) -> Dict[str, Any]:
        """``PUT /v1/sandboxes/:id/files?path=P``: write a guest file (replaced atomically).

        ``data`` is bytes, a str (UTF-8), or a file object (binary or text), which is streamed:
        with a Content-Length when it is a regular file, else chunked. ``mode`` is an int
        (``0o600``) or an octal string (``"0600"``); the daemon's default is 0644.

        Returns ``{path, size}``.
        """
        query = {"path": path, "mode": _octal_mode(mode) if mode is not None else None}
        return self._obj(
            "PUT",
            self._files(sandbox_id),
            query=query,
            body=data if data is not None else b"",
            headers={"Content-Type": "application/octet-stream"},
        )

    def open_file(self, sandbox_id: str, path: str) -> StreamResponse:
        """``GET /v1/sandboxes/:id/files?path=P``: a guest file as a binary stream.

        Read it with ``read(n)`` or ``iter_chunks()``, then close it (or use ``with``). The
        header ``x-forkd-file-size`` (``r.headers``) is the size when the download started.
        """
        return self._t.open(
            "GET",
            self._files(sandbox_id),
            query={"path": path},
            headers={"Accept": "application/octet-stream"},
        )

    def read_file(self, sandbox_id: str, path: str) -> bytes:
        """``GET /v1/sandboxes/:id/files?path=P``: a guest file's bytes."""
        with self.open_file(sandbox_id, path) as r:
            return r.read()

    def stat_file(self, sandbox_id: str, path: str) -> Dict[str, Any]:
        """``GET /v1/sandboxes/:id/files/stat?path=P``: ``{path, type, size, mode, mtime}``."""
        return self._obj("GET", self._files(sandbox_id, "/stat"), query={"path": path})

    def list_files(self, sandbox_id: str, path: str) -> Dict[str, Any]:
        """``GET /v1/sandboxes/:id/files/list?path=P``: ``{path, entries, truncated}``."""
        return self._obj("GET", self._files(sandbox_id, "/list"), query={"path": path})

    def make_dir(self, sandbox_id: str, path: str, parents: bool = True) -> Dict[str, Any]:
        """``POST /v1/sandboxes/:id/files/mkdir``: create a directory (and its parents when
        ``parents``); an existing directory is fine. Returns ``{path}``."""
        return self._obj(
            "POST",
            self._files(sandbox_id, "/mkdir"),
            json_body={"path": path, "parents": parents},
        )

    def remove_file(self, sandbox_id: str, path: str, recursive: bool = False) -> None:
        """``DELETE /v1/sandboxes/:id/files?path=P``: remove a file, or a directory (a non-empty
        one only with ``recursive``)."""
        query = {"path": path, "recursive": True if recursive else None}
        self._t.request("DELETE", self._files(sandbox_id), query=query)

    # --- workspaces --------------------------------------------------------------------------

    def list_workspaces(self) -> List[Dict[str, Any]]:
        """``GET /v1/workspaces``: every workspace, as WorkspaceInfo dicts."""
        return self._list("GET", "/v1/workspaces")

    def create_workspace(
        self,
        name: str,
        snapshot_tag: str,
        per_child_netns: bool = False,
        memory_limit_mib: Optional[int] = None,
    ) -> Dict[str, Any]:
        """``POST /v1/workspaces``: a named, long-lived sandbox spawned from ``snapshot_tag``.
        Returns its WorkspaceInfo (``status: "running"``, ``sandbox_id``)."""
        body: Dict[str, Any] = {"name": name, "snapshot_tag": snapshot_tag}
        if per_child_netns:
            body["per_child_netns"] = True
        if memory_limit_mib is not None:
            body["memory_limit_mib"] = memory_limit_mib
        return self._obj(
            "POST",
            "/v1/workspaces",
            json_body=body,
            timeout=self._at_least(_LONG_TIMEOUT),
        )

    def get_workspace(self, name: str) -> Dict[str, Any]:
        """``GET /v1/workspaces/:name``: one WorkspaceInfo."""
        return self._obj("GET", f"/v1/workspaces/{_seg(name, 'workspace name')}")

    def delete_workspace(self, name: str) -> None:
        """``DELETE /v1/workspaces/:name``: kill its sandbox and delete its state tag (never the
        source tag)."""
        self._t.request("DELETE", f"/v1/workspaces/{_seg(name, 'workspace name')}")

    def suspend_workspace(self, name: str, diff: Optional[bool] = None) -> Dict[str, Any]:
        """``POST /v1/workspaces/:name/suspend``: snapshot it into ``ws-<name>-state`` and stop
        its sandbox. ``diff`` False makes a full branch (default: live)."""
        body: Dict[str, Any] = {}
        if diff is not None:
            body["diff"] = diff
        return self._obj(
            "POST",
            f"/v1/workspaces/{_seg(name, 'workspace name')}/suspend",
            json_body=body,
            timeout=self._at_least(_LONG_TIMEOUT),
        )

    def resume_workspace(self, name: str) -> Dict[str, Any]:
        """``POST /v1/workspaces/:name/resume``: spawn it again from its state tag."""
        return self._obj(
            "POST",
            f"/v1/workspaces/{_seg(name, 'workspace name')}/resume",
            timeout=self._at_least(_LONG_TIMEOUT),
        )
