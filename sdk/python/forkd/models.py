"""Plain result types: command results and guest file entries.

Daemon records (SandboxInfo, SnapshotInfo, WorkspaceInfo, CommandInfo) stay dicts, as the daemon
sends them, so fields it adds later reach the caller unchanged.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["CommandResult", "EntryInfo", "EntryList", "WriteInfo"]


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _opt_int(v: Any) -> Optional[int]:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _int(v: Any, default: int = 0) -> int:
    i = _opt_int(v)
    return default if i is None else i


def _opt_str(v: Any) -> Optional[str]:
    return v if isinstance(v, str) else None


@dataclass
class CommandResult:
    """What a command did: its output, exit code and accounting.

    The first three fields are forkd's (and E2B's) ``CommandResult``.

    Attributes:
        stdout, stderr: the output kept (invalid UTF-8 became U+FFFD).
        exit_code: the exit code; None when the command has none (it failed to run, the agent
            failed).
        timed_out: the command was killed at its timeout.
        duration_ms: how long it ran.
        truncated: output beyond the cap was read and dropped (either stream), or a stream's
            reader fell behind and output was dropped (``dropped_bytes``).
        stdout_bytes, stderr_bytes: what the command wrote, kept or not (None if unknown).
        dropped_bytes: output a slow reader or the cap made the daemon drop (streams, background).
        command_id: the daemon's command id (streaming and background commands).
        killed: a kill was sent to it (background commands).
        error: why the command failed, when the daemon says (background commands).
    """

    stdout: str
    stderr: str
    exit_code: Optional[int]
    timed_out: bool = False
    duration_ms: Optional[int] = None
    truncated: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stdout_bytes: Optional[int] = None
    stderr_bytes: Optional[int] = None
    dropped_bytes: int = 0
    command_id: Optional[str] = None
    killed: bool = False
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        """True when the command exited 0 without timing out."""
        return self.exit_code == 0 and not self.timed_out

    @classmethod
    def from_response(
        cls,
        resp: Mapping[str, Any],
        stdout: Optional[str] = None,
        stderr: Optional[str] = None,
    ) -> CommandResult:
        """Build one from an exec answer, a command's output/wait answer or a stream's ``exit``
        event; ``stdout``/``stderr`` replace the answer's own (for streams, the collected output).
        """
        out_t = bool(resp.get("stdout_truncated", False))
        err_t = bool(resp.get("stderr_truncated", False))
        dropped = _int(resp.get("dropped_bytes"))
        return cls(
            stdout=_str(resp.get("stdout")) if stdout is None else stdout,
            stderr=_str(resp.get("stderr")) if stderr is None else stderr,
            exit_code=_opt_int(resp.get("exit_code")),
            timed_out=bool(resp.get("timed_out", False)),
            duration_ms=_opt_int(resp.get("duration_ms")),
            truncated=bool(resp.get("truncated", out_t or err_t or dropped > 0)),
            stdout_truncated=out_t,
            stderr_truncated=err_t,
            stdout_bytes=_opt_int(resp.get("stdout_bytes")),
            stderr_bytes=_opt_int(resp.get("stderr_bytes")),
            dropped_bytes=dropped,
            command_id=_opt_str(resp.get("command_id")),
            killed=bool(resp.get("killed", False)),
            error=_opt_str(resp.get("error")),
        )


@dataclass
class EntryInfo:
    """A file, directory or other entry in a sandbox's file system.

    Attributes:
        name: the last component of ``path``.
        path: the absolute guest path.
        type: ``"file"``, ``"dir"``, ``"symlink"`` or ``"other"``.
        size: the size in bytes.
        mode: the permission bits, an integer (``oct(mode)`` gives ``'0o644'``).
        mtime: the modification time, unix seconds.
    """

    name: str
    path: str
    type: str
    size: int
    mode: int
    mtime: float

    @property
    def is_dir(self) -> bool:
        """True for a directory."""
        return self.type == "dir"

    @property
    def is_file(self) -> bool:
        """True for a regular file."""
        return self.type == "file"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EntryInfo:
        """Build one from a stat answer or a list entry."""
        path = _str(d.get("path"))
        name = d.get("name")
        mtime = d.get("mtime")
        return cls(
            name=name if isinstance(name, str) else posixpath.basename(path.rstrip("/")) or path,
            path=path,
            type=_str(d.get("type")) or "other",
            size=_int(d.get("size")),
            mode=_int(d.get("mode")),
            mtime=float(mtime) if isinstance(mtime, (int, float)) else 0.0,
        )


class EntryList(List[EntryInfo]):
    """The entries of a directory, sorted by name; ``truncated`` is true when the daemon listed
    only the first 8192."""

    truncated: bool = False

    def __init__(self, entries: List[EntryInfo], truncated: bool = False) -> None:
        super().__init__(entries)
        self.truncated = truncated


@dataclass
class WriteInfo:
    """The result of a file upload: the guest path and the bytes written."""

    path: str
    size: int

    @property
    def name(self) -> str:
        """The last component of ``path``."""
        return posixpath.basename(self.path)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WriteInfo:
        """Build one from the upload's answer ``{path, size}``."""
        return cls(path=_str(d.get("path")), size=_int(d.get("size")))


def entries_from_list(resp: Mapping[str, Any]) -> EntryList:
    """The EntryList of a ``files/list`` answer."""
    raw = resp.get("entries")
    items: List[Dict[str, Any]] = (
        [e for e in raw if isinstance(e, dict)] if isinstance(raw, list) else []
    )
    return EntryList([EntryInfo.from_dict(e) for e in items], bool(resp.get("truncated", False)))
