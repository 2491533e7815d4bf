"""``sandbox.files``: read, write, list and remove files in a sandbox.

Guest paths are absolute, at most 4096 bytes, without ``..`` components (the daemon refuses
others with 400). Transfers are streamed in 1 MiB pieces both ways, never held whole by the
daemon; ``read_to`` and ``write`` with a file object do not hold them whole here either.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO, TYPE_CHECKING, Literal, Union, overload

from ._http import CHUNK_SIZE, Body, StreamResponse
from .errors import NotFoundError
from .models import EntryInfo, EntryList, WriteInfo, entries_from_list

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["Files"]

PathLike = Union[str, "os.PathLike[str]"]


class Files:
    """The ``sandbox.files`` namespace (E2B's shape)."""

    def __init__(self, controller: Controller, sandbox_id: str) -> None:
        self._c = controller
        self._id = sandbox_id

    @overload
    def read(self, path: str, format: Literal["text"] = "text") -> str:
        ...

    @overload
    def read(self, path: str, format: Literal["bytes"]) -> bytes:
        ...

    @overload
    def read(self, path: str, format: Literal["stream"]) -> StreamResponse:
        ...

    def read(self, path: str, format: str = "text") -> Union[str, bytes, StreamResponse]:
        """Read a guest file.

        ``format``: ``"text"`` (a str; invalid UTF-8 becomes U+FFFD), ``"bytes"``, or
        ``"stream"`` (a binary stream to ``read()`` and close, for large files). A missing file
        raises NotFoundError; a directory InvalidRequestError.
        """
        if format == "stream":
            return self._c.open_file(self._id, path)
        data = self._c.read_file(self._id, path)
        if format == "bytes":
            return data
        if format == "text":
            return data.decode("utf-8", errors="replace")
        raise ValueError(f"format must be 'text', 'bytes' or 'stream', not {format!r}")

    def read_to(self, path: str, dest: Union[PathLike, IO[bytes]]) -> int:
        """Download a guest file into a local path or a binary file object, streamed.

        A local path is written to a temporary file beside it and renamed over it once the
        download is complete, so a failed download leaves no partial file. Returns the number
        of bytes written.
        """
        with self._c.open_file(self._id, path) as r:
            if hasattr(dest, "write"):
                return _copy(r, dest)  # type: ignore[arg-type]
            target = os.fspath(dest)
            folder = os.path.dirname(os.path.abspath(target))
            fd, tmp = tempfile.mkstemp(prefix=".forkd-download-", dir=folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    n = _copy(r, f)
                os.replace(tmp, target)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            return n

    def write(self, path: str, data: Body, mode: Union[int, str, None] = None) -> WriteInfo:
        """Write a guest file, replacing it once the upload is complete.

        ``data`` is bytes, a str (UTF-8) or a file object (binary or text; streamed with a
        Content-Length when it is a regular file, chunked otherwise). ``mode`` is an int such as
        ``0o600`` or an octal string (default 0644). Returns its path and size.
        """
        return WriteInfo.from_dict(self._c.write_file(self._id, path, data, mode))

    def list(self, path: str) -> EntryList:
        """The entries of a guest directory, sorted by name (at most 8192: see ``truncated``)."""
        return entries_from_list(self._c.list_files(self._id, path))

    def exists(self, path: str) -> bool:
        """True when the guest path exists (a file, directory or anything else)."""
        try:
            self._c.stat_file(self._id, path)
        except NotFoundError as e:
            if e.code == "not_found":
                return False
            raise  # e.g. a daemon without the files routes: not an answer about the path
        return True

    def get_info(self, path: str) -> EntryInfo:
        """Stat a guest path (NotFoundError if it does not exist)."""
        return EntryInfo.from_dict(self._c.stat_file(self._id, path))

    def make_dir(self, path: str, parents: bool = True) -> None:
        """Create a guest directory (and its parents with ``parents``); an existing one is
        fine."""
        self._c.make_dir(self._id, path, parents)

    def remove(self, path: str, recursive: bool = False) -> None:
        """Remove a guest file or directory (a non-empty directory only with ``recursive``)."""
        self._c.remove_file(self._id, path, recursive)


def _copy(r: StreamResponse, f: IO[bytes]) -> int:
    n = 0
    while True:
        piece = r.read(CHUNK_SIZE)
        if not piece:
            return n
        f.write(piece)
        n += len(piece)
