"""``sandbox.commands``: run commands in a sandbox, wait for them, stream them, or leave them
running in the background."""

from __future__ import annotations

import math
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    overload,
)

from ._http import EventStream
from .errors import ClientTimeoutError, CommandExitError
from .models import CommandResult

if TYPE_CHECKING:
    from .controller import Controller

__all__ = ["Commands", "CommandHandle", "OutputCallback"]

OutputCallback = Callable[[str], Any]
"""Called with each piece of output (a str) as it arrives."""

# The daemon's bound on one wait request.
_MAX_WAIT_SECS = 3600


def _env(
    env: Optional[Mapping[str, str]], envs: Optional[Mapping[str, str]]
) -> Optional[Dict[str, str]]:
    if env is not None and envs is not None:
        raise TypeError("give env or envs (its E2B name), not both")
    chosen = env if env is not None else envs
    return dict(chosen) if chosen is not None else None


def _collect(
    events: EventStream,
    on_stdout: Optional[OutputCallback],
    on_stderr: Optional[OutputCallback],
    deadline: Optional[float] = None,
    command_id: Optional[str] = None,
) -> CommandResult:
    """Read a command's event stream to its end, calling the callbacks on the way."""
    out: List[str] = []
    err: List[str] = []
    with events:
        for ev in events:
            kind = ev.get("type")
            data = ev.get("data")
            if kind == "stdout" and isinstance(data, str):
                out.append(data)
                if on_stdout is not None:
                    on_stdout(data)
            elif kind == "stderr" and isinstance(data, str):
                err.append(data)
                if on_stderr is not None:
                    on_stderr(data)
            elif kind == "exit":
                result = CommandResult.from_response(ev, "".join(out), "".join(err))
                if result.command_id is None:
                    result.command_id = events.command_id or command_id
                return result
            if deadline is not None and time.monotonic() > deadline:
                raise ClientTimeoutError(
                    f"command {events.command_id or command_id} still running at wait()'s "
                    "timeout (it goes on)"
                )
    raise AssertionError("unreachable: an EventStream ends with exit or raises")


class CommandHandle:
    """A command running in the background (``commands.run(..., background=True)``).

    The daemon keeps its output until the command is deleted (:meth:`delete`) or its sandbox
    removed; at most 16 commands per sandbox, running or ended.
    """

    def __init__(
        self,
        controller: Controller,
        sandbox_id: str,
        info: Mapping[str, Any],
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        check: bool = True,
    ) -> None:
        cid = info.get("command_id")
        if not isinstance(cid, str):
            raise ValueError("a CommandInfo without command_id")
        self._c = controller
        self.sandbox_id = sandbox_id
        self.command_id: str = cid
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._check = check
        self._last_info: Dict[str, Any] = dict(info)

    def __repr__(self) -> str:
        return f"CommandHandle({self.command_id!r}, sandbox={self.sandbox_id!r})"

    @property
    def pid(self) -> str:
        """E2B's name for the command's identity: here the ``command_id``."""
        return self.command_id

    def info(self) -> Dict[str, Any]:
        """The command's CommandInfo now (``status``, ``exit_code``, byte counts, ...)."""
        self._last_info = self._c.get_command(self.sandbox_id, self.command_id)
        return self._last_info

    def is_running(self) -> bool:
        """True while the command runs."""
        return self.info().get("status") == "running"

    def output(self) -> CommandResult:
        """The output kept so far and the state (``exit_code`` None while it runs)."""
        return CommandResult.from_response(self._c.command_output(self.sandbox_id, self.command_id))

    @property
    def stdout(self) -> str:
        """The standard output kept so far (asks the daemon each time)."""
        return self.output().stdout

    @property
    def stderr(self) -> str:
        """The standard error kept so far (asks the daemon each time)."""
        return self.output().stderr

    @property
    def exit_code(self) -> Optional[int]:
        """The exit code, or None while the command runs (asks the daemon)."""
        code = self.info().get("exit_code")
        return code if isinstance(code, int) else None

    def wait(
        self,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        timeout: Optional[float] = None,
        check: Optional[bool] = None,
    ) -> CommandResult:
        """Wait for the command to end and return its result.

        With callbacks (these, or those given to ``run``), the output is streamed to them as it
        arrives, starting with what was kept so far. ``timeout`` (seconds; None: as long as it
        runs) raises ClientTimeoutError when the command is still running then (it goes on).
        A non-zero exit raises CommandExitError unless ``check`` is False (default: run's
        ``check``).
        """
        on_stdout = on_stdout if on_stdout is not None else self._on_stdout
        on_stderr = on_stderr if on_stderr is not None else self._on_stderr
        check = self._check if check is None else check
        deadline = None if timeout is None else time.monotonic() + timeout
        if on_stdout is not None or on_stderr is not None:
            stream = self._c.stream_command(self.sandbox_id, self.command_id, timeout=timeout)
            try:
                result = _collect(stream, on_stdout, on_stderr, deadline, self.command_id)
            except ClientTimeoutError as e:
                raise ClientTimeoutError(
                    f"command {self.command_id} still running after {timeout} s (it goes on)",
                    e.url,
                    timeout,
                ) from None
        else:
            result = self._wait_polling(deadline, timeout)
        if check and not result.ok:
            raise CommandExitError(result)
        return result

    def _wait_polling(self, deadline: Optional[float], timeout: Optional[float]) -> CommandResult:
        while True:
            if deadline is None:
                secs = _MAX_WAIT_SECS
            else:
                left = deadline - time.monotonic()
                secs = max(1, min(_MAX_WAIT_SECS, math.ceil(left))) if left > 0 else 0
            if secs == 0:
                raise ClientTimeoutError(
                    f"command {self.command_id} still running after {timeout} s (it goes on)",
                    None,
                    timeout,
                )
            resp = self._c.wait_command(self.sandbox_id, self.command_id, timeout_secs=secs)
            self._last_info = {k: v for k, v in resp.items() if k not in ("stdout", "stderr")}
            if resp.get("status") != "running":
                return CommandResult.from_response(resp)

    def stream(self) -> Iterator[Tuple[str, str]]:
        """Yield ``("stdout", text)`` and ``("stderr", text)`` as output arrives (what was kept
        so far first); ends when the command ends. Stopping early does not stop the command.
        """
        with self._c.stream_command(self.sandbox_id, self.command_id) as events:
            for ev in events:
                kind = ev.get("type")
                data = ev.get("data")
                if kind in ("stdout", "stderr") and isinstance(data, str):
                    yield kind, data

    def kill(self, signal: str = "KILL") -> bool:
        """Send ``signal`` (``"KILL"``, ``"TERM"``, ``"INT"``, ``"HUP"``). Returns True when
        the daemon sent it (False: the command had already ended)."""
        self._last_info = self._c.kill_command(self.sandbox_id, self.command_id, signal)
        return bool(self._last_info.get("killed"))

    def delete(self) -> None:
        """Forget the command and its output in the daemon (killed first if it runs)."""
        self._c.delete_command(self.sandbox_id, self.command_id)


class Commands:
    """The ``sandbox.commands`` namespace (E2B's shape)."""

    def __init__(self, controller: Controller, sandbox_id: str) -> None:
        self._c = controller
        self._id = sandbox_id

    @overload
    def run(
        self,
        cmd: Union[str, Sequence[str]],
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        env: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Union[str, int, None] = None,
        timeout: Optional[float] = 60,
        background: Literal[False] = False,
        stdin: Union[str, bytes, None] = None,
        check: bool = True,
        max_output_bytes: Optional[int] = None,
    ) -> CommandResult:
        ...

    @overload
    def run(
        self,
        cmd: Union[str, Sequence[str]],
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        env: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Union[str, int, None] = None,
        timeout: Optional[float] = 60,
        *,
        background: Literal[True],
        stdin: Union[str, bytes, None] = None,
        check: bool = True,
        max_output_bytes: Optional[int] = None,
    ) -> CommandHandle:
        ...

    @overload
    def run(
        self,
        cmd: Union[str, Sequence[str]],
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        env: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Union[str, int, None] = None,
        timeout: Optional[float] = 60,
        *,
        background: bool,
        stdin: Union[str, bytes, None] = None,
        check: bool = True,
        max_output_bytes: Optional[int] = None,
    ) -> Union[CommandResult, CommandHandle]:
        ...

    def run(
        self,
        cmd: Union[str, Sequence[str]],
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        env: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Union[str, int, None] = None,
        timeout: Optional[float] = 60,
        background: bool = False,
        stdin: Union[str, bytes, None] = None,
        check: bool = True,
        max_output_bytes: Optional[int] = None,
    ) -> Union[CommandResult, CommandHandle]:
        """Run a command in the sandbox.

        Args:
            cmd: a string, run by ``/bin/sh -c``; or an argv list, run directly.
            on_stdout, on_stderr: called with each piece of output (str) as it arrives; the
                command is then streamed. An exception from a callback stops the command.
            env (or ``envs``, E2B's name): variables added to the environment.
            cwd: the working directory (absolute).
            user: a user name of the guest or a uid; the command runs as that user.
            timeout: seconds before the daemon kills it; None: the daemon's default (300 s;
                no limit for a background command).
            background: start it and return a :class:`CommandHandle` at once.
            stdin: the command's standard input (str or bytes); else /dev/null.
            check: raise CommandExitError on a non-zero exit or a timeout.
            max_output_bytes: bytes of stdout and of stderr kept (each); the daemon's default
                otherwise.

        Returns a :class:`CommandResult`, or a :class:`CommandHandle` with ``background``.
        """
        fields: Dict[str, Any] = {
            "env": _env(env, envs),
            "cwd": cwd,
            "user": user,
            "stdin": stdin,
            "max_output_bytes": max_output_bytes,
        }
        if background:
            info = self._c.start_command(self._id, cmd, timeout, **fields)
            return CommandHandle(self._c, self._id, info, on_stdout, on_stderr, check)
        if on_stdout is not None or on_stderr is not None:
            stream = self._c.exec_stream(self._id, cmd, timeout, **fields)
            result = _collect(stream, on_stdout, on_stderr)
        else:
            result = CommandResult.from_response(
                self._c.exec_command(self._id, cmd, timeout, **fields)
            )
        if check and not result.ok:
            raise CommandExitError(result)
        return result

    def list(self) -> List[Dict[str, Any]]:
        """The sandbox's background commands, as CommandInfo dicts."""
        return self._c.list_commands(self._id)

    def connect(
        self,
        command_id: str,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        check: bool = True,
    ) -> CommandHandle:
        """A handle on a background command started earlier (NotFoundError if unknown)."""
        info = self._c.get_command(self._id, command_id)
        return CommandHandle(self._c, self._id, info, on_stdout, on_stderr, check)

    def kill(self, command_id: str, signal: str = "KILL") -> bool:
        """Send ``signal`` to a background command; True when it was sent."""
        return bool(self._c.kill_command(self._id, command_id, signal).get("killed"))
