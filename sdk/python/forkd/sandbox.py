"""``Sandbox``: one microVM forked from a tag, with an E2B-shaped surface.

Example::

    from forkd import Sandbox
    with Sandbox.create("py") as sbx:              # killed when the block ends
        sbx.files.write("/tmp/x.txt", "hello")
        print(sbx.commands.run("cat /tmp/x.txt").stdout)
        children = sbx.fork(3)                     # branch it, then 3 copy-on-write children
        for child in children:
            child.kill()
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Type, Union

from .commands import Commands
from .controller import BranchMode, Controller
from .errors import EvalError, ForkdError, ForkError, NotFoundError, ProtocolError
from .files import Files

__all__ = ["Sandbox"]

# Children of one fork() spawned at once (each is one request; the daemon runs up to 12 long
# requests at a time by default).
_MAX_PARALLEL_SPAWNS = 8


def _resolve(
    controller: Optional[Controller],
    url: Optional[str],
    token: Optional[str],
    ca_file: Optional[str],
) -> Controller:
    if controller is not None:
        if url is not None or token is not None or ca_file is not None:
            raise TypeError("give a controller, or url/token/ca_file, not both")
        return controller
    return Controller(base_url=url, token=token, ca_file=ca_file)


class Sandbox:
    """A sandbox: a microVM forked copy-on-write from a snapshot tag.

    ``Sandbox(tag)`` (like :meth:`create`) spawns a new one from ``tag`` (default
    ``$FORKD_TAG``); :meth:`connect` attaches to a running one. As a context manager it is
    killed when the block ends.

    Attributes:
        commands: run commands (:class:`forkd.commands.Commands`).
        files: guest files (:class:`forkd.files.Files`).
    """

    commands: Commands
    files: Files

    def __init__(
        self,
        tag: Optional[str] = None,
        *,
        controller: Optional[Controller] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        ca_file: Optional[str] = None,
        memory_limit_mib: Optional[int] = None,
        network: Optional[str] = None,
        **spawn_fields: Any,
    ) -> None:
        c = _resolve(controller, url, token, ca_file)
        tag = tag or os.environ.get("FORKD_TAG")
        if not tag:
            raise ValueError("give the tag to spawn from (or set FORKD_TAG)")
        children = c.spawn_sandboxes(
            tag, n=1, memory_limit_mib=memory_limit_mib, network=network, **spawn_fields
        )
        if not isinstance(children, list) or len(children) != 1:
            raise ProtocolError(f"spawn of one child from {tag} answered {children!r:.200}")
        self._setup(c, children[0])

    def _setup(self, controller: Controller, info: Dict[str, Any]) -> None:
        sid = info.get("id")
        if not isinstance(sid, str) or not sid:
            raise ProtocolError(f"a SandboxInfo without id: {info!r:.200}")
        self._c = controller
        self._id: str = sid
        self._info: Dict[str, Any] = dict(info)
        self.commands = Commands(controller, sid)
        self.files = Files(controller, sid)

    @classmethod
    def _from_info(cls: Type[Sandbox], controller: Controller, info: Dict[str, Any]) -> Sandbox:
        sbx = cls.__new__(cls)
        sbx._setup(controller, info)
        return sbx

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        tag: Optional[str] = None,
        *,
        controller: Optional[Controller] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        ca_file: Optional[str] = None,
        memory_limit_mib: Optional[int] = None,
        network: Optional[str] = None,
        **spawn_fields: Any,
    ) -> Sandbox:
        """Spawn one sandbox from ``tag`` (default ``$FORKD_TAG``).

        Args:
            tag: the snapshot tag.
            controller: the daemon's client; else one is made from ``url``, ``token`` and
                ``ca_file`` (defaults: ``$FORKD_URL``, ``$FORKD_TOKEN``, ``$FORKD_CA_CERT``).
            memory_limit_mib: the memory limit of its QEMU (guest RAM included).
            network: ``"none"`` or ``"outbound"`` (default: the tag's).
            spawn_fields: further POST /v1/sandboxes fields (``cpu_limit``, ``pids_limit``,
                ``expose``, ``per_child_netns``, ``allow_list``).
        """
        return cls(
            tag,
            controller=controller,
            url=url,
            token=token,
            ca_file=ca_file,
            memory_limit_mib=memory_limit_mib,
            network=network,
            **spawn_fields,
        )

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        *,
        controller: Optional[Controller] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        ca_file: Optional[str] = None,
    ) -> Sandbox:
        """Attach to a running sandbox by id (NotFoundError if there is none)."""
        c = _resolve(controller, url, token, ca_file)
        return cls._from_info(c, c.get_sandbox(sandbox_id))

    @staticmethod
    def list(
        *,
        controller: Optional[Controller] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        ca_file: Optional[str] = None,
        tag: Optional[str] = None,
    ) -> List[Dict[str, Any]]:
        """Every sandbox of the daemon as SandboxInfo dicts (only ``tag``'s children when
        given)."""
        sandboxes = _resolve(controller, url, token, ca_file).list_sandboxes()
        if tag is not None:
            sandboxes = [s for s in sandboxes if s.get("snapshot_tag") == tag]
        return sandboxes

    # --- identity ----------------------------------------------------------------------------

    @property
    def sandbox_id(self) -> str:
        """The sandbox's id (``sb-...``)."""
        return self._id

    @property
    def id(self) -> str:
        """The sandbox's id (forkd's name)."""
        return self._id

    @property
    def controller(self) -> Controller:
        """The daemon client this sandbox uses."""
        return self._c

    @property
    def snapshot_tag(self) -> Optional[str]:
        """The tag this sandbox was spawned from."""
        tag = self._info.get("snapshot_tag")
        return tag if isinstance(tag, str) else None

    @property
    def info(self) -> Dict[str, Any]:
        """The sandbox's SandboxInfo, fetched now (``state``, ``memory_mib``, ``ports``, ...)."""
        return self.get_info()

    def get_info(self) -> Dict[str, Any]:
        """The sandbox's SandboxInfo, fetched now."""
        self._info = self._c.get_sandbox(self._id)
        return self._info

    def is_running(self) -> bool:
        """True when the sandbox exists and its state is ``running``."""
        try:
            return self.get_info().get("state") == "running"
        except NotFoundError:
            return False

    def __repr__(self) -> str:
        return f"Sandbox(id={self._id!r}, tag={self.snapshot_tag!r}, url={self._c.base_url!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sandbox):
            return NotImplemented
        return self._id == other._id and self._c.base_url == other._c.base_url

    def __hash__(self) -> int:
        return hash((self._id, self._c.base_url))

    # --- agent -------------------------------------------------------------------------------

    def ping(self) -> Dict[str, Any]:
        """Round trip to the guest agent: ``{pong, pid, agent_lang, warmup_ready, ...}``."""
        return self._c.ping_sandbox(self._id)

    def eval(self, code: str) -> Optional[str]:
        """Evaluate Python in the sandbox's warm worker (numpy already imported in a tag made
        so); state persists between calls.

        Returns the value's ``repr()`` string, or None for a statement. Raises EvalError (with
        the traceback) when the code raises, NoPythonError in an image without Python.
        """
        resp = self._c.eval_code(self._id, code)
        if resp.get("error"):
            raise EvalError(resp)
        result = resp.get("result")
        return result if isinstance(result, str) or result is None else str(result)

    # --- branch and fork ---------------------------------------------------------------------

    def branch(
        self, tag: Optional[str] = None, mode: BranchMode = "live", wait: bool = True
    ) -> Dict[str, Any]:
        """Snapshot this running sandbox into a new tag (made up when None); it goes on after.

        Returns the tag's SnapshotInfo (``tag``, ``branched_from``, ``pause_ms``, ``status``).
        """
        return self._c.branch_sandbox(self._id, tag=tag, mode=mode, wait=wait)

    def fork(
        self,
        n: int,
        mode: BranchMode = "live",
        tag: Optional[str] = None,
        **spawn_fields: Any,
    ) -> List[Sandbox]:
        """Branch this sandbox into a tag, then spawn ``n`` children from it in parallel.

        Each child starts with this sandbox's memory, files and processes as they were at the
        branch. The tag (``tag``, or one the daemon makes up) is kept: it is each child's
        ``snapshot_tag``; delete it with ``controller.delete_snapshot`` once the children are
        gone. ``spawn_fields`` go to each spawn (``memory_limit_mib``, ``network``, ...).

        Raises ForkError when some children fail: its ``results`` holds, per child, the
        Sandbox or the exception; the children that started keep running.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, not {n!r}")
        made = self.branch(tag=tag, mode=mode, wait=True).get("tag")
        if not isinstance(made, str):
            raise ProtocolError("branch answered without a tag")
        new_tag: str = made
        c = self._c

        def spawn_one(_: int) -> Sandbox:
            children = c.spawn_sandboxes(new_tag, n=1, **spawn_fields)
            if not isinstance(children, list) or len(children) != 1:
                raise ProtocolError(f"spawn from {new_tag} answered {children!r:.200}")
            return Sandbox._from_info(c, children[0])

        results: List[Union[Sandbox, BaseException]] = []
        with ThreadPoolExecutor(max_workers=min(_MAX_PARALLEL_SPAWNS, n)) as pool:
            futures = [pool.submit(spawn_one, i) for i in range(n)]
            for f in futures:
                err = f.exception()
                results.append(err if err is not None else f.result())
        sandboxes = [r for r in results if isinstance(r, Sandbox)]
        if len(sandboxes) != n:
            raise ForkError(new_tag, results)
        return sandboxes

    # --- lifetime ----------------------------------------------------------------------------

    def kill(self) -> bool:
        """Stop and remove the sandbox. Returns False if it was already gone."""
        try:
            self._c.kill_sandbox(self._id)
        except NotFoundError as e:
            if e.code == "not_found":
                return False
            raise
        return True

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.kill()
        except ForkdError:
            if exc_type is None:
                raise
            # Leaving on an exception already: that one says more than a failed cleanup.
