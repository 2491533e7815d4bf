"""Exceptions raised by the forkd SDK.

Every exception derives from :class:`ForkdError`. Errors the daemon answers (any 4xx/5xx, whose
body is ``{"error": message, "code": "not_found", ...}``) are :class:`ControllerError` (forkd's
name) or one of its subclasses, chosen by HTTP status and error code::

    ForkdError (RuntimeError)
    +-- ControllerError               status, code, message, body, url, method, retry_after
    |   +-- InvalidRequestError       400 (invalid_argument, ...)
    |   +-- AuthenticationError       401 / 403 (missing or wrong token)
    |   +-- NotFoundError             404 (unknown sandbox, tag, file, command; or no such route)
    |   +-- ConflictError             409 (already_exists, failed_precondition, ...)
    |   |   +-- NoPythonError         409 no_python (eval in an image without Python)
    |   +-- PayloadTooLargeError      413 (body_too_large)
    |   +-- RateLimitError            429 (too many execs or commands on one sandbox)
    |   +-- ServerError               500 and any other 5xx
    |       +-- AgentError            502 (the guest agent failed or answered nonsense)
    |       +-- UnavailableError      503 (busy, a cap reached, a feature missing on the host)
    |       +-- SandboxTimeoutError   504, or code agent_timeout / timeout
    +-- ForkdConnectionError          (also ConnectionError) the daemon cannot be reached
    +-- ClientTimeoutError            (also TimeoutError) a deadline of this client passed
    +-- ProtocolError                 the daemon answered something this SDK cannot read
    +-- CommandExitError              a command exited non-zero (carries the CommandResult)
    +-- EvalError                     eval raised inside the sandbox (carries the traceback)
    +-- ForkError                     some children of Sandbox.fork() failed (per-child results)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Type, Union

if TYPE_CHECKING:
    from .models import CommandResult
    from .sandbox import Sandbox

__all__ = [
    "ForkdError",
    "ControllerError",
    "InvalidRequestError",
    "AuthenticationError",
    "NotFoundError",
    "ConflictError",
    "NoPythonError",
    "PayloadTooLargeError",
    "RateLimitError",
    "ServerError",
    "AgentError",
    "UnavailableError",
    "SandboxTimeoutError",
    "ForkdConnectionError",
    "ClientTimeoutError",
    "ProtocolError",
    "CommandExitError",
    "EvalError",
    "ForkError",
    "error_from_response",
    "error_from_stream_event",
]

# Bound on how much of a non-JSON error body goes into a message.
_MAX_SNIPPET = 500


class ForkdError(RuntimeError):
    """Base class of every exception this SDK raises."""


class ControllerError(ForkdError):
    """The daemon answered with an HTTP error (forkd's name for it).

    Attributes:
        status: the HTTP status (for an error reported inside a stream, the stream's 200).
        body: the parsed JSON error body, or the body as text when it is not JSON.
        url: the request's URL.
        code: the daemon's stable error code (``"not_found"``, ``"agent_timeout"``, ...), or None.
        message: the daemon's message (the body's ``error``), or a snippet of the body.
        method: the request's HTTP method, when known.
        retry_after: seconds from a ``Retry-After`` header (429 and 503 answers), or None.
    """

    def __init__(
        self,
        status: int,
        body: Any,
        url: str,
        method: Optional[str] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        self.status = status
        self.body = body
        self.url = url
        self.method = method
        self.retry_after = retry_after
        self.code: Optional[str] = None
        self.message: str = ""
        if isinstance(body, dict):
            code = body.get("code")
            self.code = code if isinstance(code, str) else None
            err = body.get("error")
            self.message = err if isinstance(err, str) else json.dumps(body)[:_MAX_SNIPPET]
        elif isinstance(body, str):
            self.message = body[:_MAX_SNIPPET]
        elif body is not None:
            self.message = repr(body)[:_MAX_SNIPPET]
        where = f"{method} {url}" if method else url
        code_part = f" {self.code}" if self.code else ""
        super().__init__(f"HTTP {status}{code_part}: {self.message} ({where})")


class InvalidRequestError(ControllerError):
    """400: the daemon refused the request (a bad field, path, tag, user, ...)."""


class AuthenticationError(ControllerError):
    """401/403: the bearer token is missing or wrong (see ``FORKD_TOKEN``)."""


class NotFoundError(ControllerError):
    """404: no such sandbox, tag, workspace, command or guest file.

    ``code`` is ``"not_found"`` for those; a daemon without the route answers ``"http_error"``.
    """


class ConflictError(ControllerError):
    """409: the request conflicts with the current state (a tag exists, a branch is in flight,
    a tag has dependents, the tag is not restorable, ...)."""


class NoPythonError(ConflictError):
    """409 ``no_python``: eval in a sandbox whose image has no Python."""


class PayloadTooLargeError(ControllerError):
    """413: a body or a file is larger than the daemon accepts."""


class RateLimitError(ControllerError):
    """429: too many execs or background commands on one sandbox; retry after ``retry_after``."""


class ServerError(ControllerError):
    """5xx: the daemon or something it drives (QEMU, the guest, the disk) failed."""


class AgentError(ServerError):
    """502: the guest agent answered with an error or with a reply of the wrong shape."""


class UnavailableError(ServerError):
    """503: the daemon is busy or at a cap (retry after ``retry_after``), or a feature is not
    available on this host."""


class SandboxTimeoutError(ServerError):
    """504, or error code ``agent_timeout``/``timeout``: the guest agent stopped answering."""


class ForkdConnectionError(ForkdError, ConnectionError):
    """The daemon cannot be reached (not running, wrong URL, TLS failure) or cut the connection.

    Attributes:
        url: the URL that was tried.
        reason: the underlying exception's text.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot talk to the forkd daemon at {url}: {reason}")


class ClientTimeoutError(ForkdError, TimeoutError):
    """A deadline of this client passed: no answer from the daemon within the request's timeout,
    or a command still running when ``wait(timeout=...)`` gave up (the command goes on).

    Attributes:
        url: the URL of the request, or None.
        timeout: the deadline in seconds.
    """

    def __init__(self, message: str, url: Optional[str] = None, timeout: Optional[float] = None):
        self.url = url
        self.timeout = timeout
        super().__init__(message)


class ProtocolError(ForkdError):
    """The daemon answered something this SDK cannot read (not JSON, a malformed stream)."""


class CommandExitError(ForkdError):
    """A command exited with a non-zero code (or timed out); ``result`` has its output.

    Raised by ``commands.run()`` and ``CommandHandle.wait()`` unless ``check=False``.
    """

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        if result.timed_out:
            what = "timed out"
        elif result.exit_code is None:
            what = "ended without an exit code"
            if result.error:
                what += f" ({result.error})"
        else:
            what = f"exited with code {result.exit_code}"
        tail = result.stderr.strip()[-_MAX_SNIPPET:]
        super().__init__(f"command {what}" + (f": {tail}" if tail else ""))

    @property
    def exit_code(self) -> Optional[int]:
        """The command's exit code (None if it has none)."""
        return self.result.exit_code

    @property
    def stdout(self) -> str:
        """The command's standard output."""
        return self.result.stdout

    @property
    def stderr(self) -> str:
        """The command's standard error."""
        return self.result.stderr


class EvalError(ForkdError):
    """Code passed to ``Sandbox.eval()`` raised inside the sandbox.

    Attributes:
        error: the guest's error text (the traceback).
        stdout: what the code printed before it failed.
        response: the daemon's whole answer.
    """

    def __init__(self, response: Mapping[str, Any]) -> None:
        self.response = dict(response)
        err = response.get("error")
        self.error: str = err if isinstance(err, str) else str(err)
        out = response.get("stdout")
        self.stdout: str = out if isinstance(out, str) else ""
        super().__init__(self.error.rstrip() or "eval failed")


class ForkError(ForkdError):
    """Some children of ``Sandbox.fork()`` could not be spawned.

    Attributes:
        tag: the tag the children were spawned from (it is kept).
        results: per child index, the Sandbox or the exception. The children that started are
            still running: kill them or use them.
    """

    def __init__(self, tag: str, results: List[Union[Sandbox, BaseException]]) -> None:
        self.tag = tag
        self.results = results
        failed = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
        first = f"; child {failed[0][0]}: {failed[0][1]}" if failed else ""
        super().__init__(
            f"fork from tag {tag}: {len(failed)} of {len(results)} children failed{first}"
        )

    @property
    def sandboxes(self) -> List[Sandbox]:
        """The children that started."""
        return [r for r in self.results if not isinstance(r, BaseException)]

    @property
    def errors(self) -> Dict[int, BaseException]:
        """The failures, by child index."""
        return {i: r for i, r in enumerate(self.results) if isinstance(r, BaseException)}


_BY_STATUS: Dict[int, Type[ControllerError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitError,
    502: AgentError,
    503: UnavailableError,
    504: SandboxTimeoutError,
}

_BY_CODE: Dict[str, Type[ControllerError]] = {
    "agent_timeout": SandboxTimeoutError,
    "timeout": SandboxTimeoutError,
    "no_python": NoPythonError,
    "agent_error": AgentError,
    "agent_protocol": AgentError,
    "not_found": NotFoundError,
    "unauthorized": AuthenticationError,
    "body_too_large": PayloadTooLargeError,
}


def _class_for(status: int, code: Optional[str]) -> Type[ControllerError]:
    # The code is the more precise signal (agent_timeout is 504, but it is the agent that timed
    # out); the status decides otherwise.
    if code is not None and code in _BY_CODE:
        by_code = _BY_CODE[code]
        by_status = _BY_STATUS.get(status)
        # A code never moves an error out of its status's family (a 4xx stays a client error).
        if by_status is None or issubclass(by_code, by_status):
            return by_code
        if issubclass(by_code, ServerError) and status >= 500:
            return by_code
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls
    return ServerError if status >= 500 else ControllerError


def error_from_response(
    status: int,
    raw: bytes,
    url: str,
    method: Optional[str] = None,
    retry_after: Optional[str] = None,
) -> ControllerError:
    """The exception for an error answer: its status, raw body and ``Retry-After`` header."""
    body: Any
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", errors="replace")
    code = body.get("code") if isinstance(body, dict) else None
    cls = _class_for(status, code if isinstance(code, str) else None)
    return cls(status, body, url, method, _parse_retry_after(retry_after))


def error_from_stream_event(
    event: Mapping[str, Any], url: str, method: Optional[str] = None, status: int = 200
) -> ControllerError:
    """The exception for a ``{"type": "error", "error": ..., "code": ...}`` line of a stream."""
    body = {k: v for k, v in event.items() if k != "type"}
    code = body.get("code")
    cls = _class_for(status, code if isinstance(code, str) else None)
    if cls is ControllerError and isinstance(code, str):
        cls = ServerError
    return cls(status, body, url, method)


def _parse_retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: not something this daemon sends
    return seconds if seconds >= 0 else None
