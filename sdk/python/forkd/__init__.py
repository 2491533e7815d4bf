"""Python SDK of forkd: microVM sandboxes that fork copy-on-write from snapshot tags.

Two surfaces, both over the daemon's REST API (``forkd serve``), standard library only:

- :class:`Sandbox` (E2B's shape): spawn, run commands (streamed or in the background), move
  files, evaluate Python, branch and fork a running sandbox.
- :class:`Controller` (forkd's names): one method per route, answers as the daemon's dicts.

The daemon is found at ``$FORKD_URL`` (``http://``, ``https://`` or ``unix:///path.sock``; default
``http://127.0.0.1:8889``) with the token ``$FORKD_TOKEN`` and, for https, the CA file
``$FORKD_CA_CERT``.

Example::

    from forkd import Sandbox
    with Sandbox.create("py") as sbx:
        print(sbx.commands.run("echo hi").stdout)
        print(sbx.eval("numpy.zeros(3).tolist()"))
"""

from .commands import CommandHandle, Commands
from .controller import BranchMode, Controller
from .errors import (
    AgentError,
    AuthenticationError,
    ClientTimeoutError,
    CommandExitError,
    ConflictError,
    ControllerError,
    EvalError,
    ForkdConnectionError,
    ForkdError,
    ForkError,
    InvalidRequestError,
    NoPythonError,
    NotFoundError,
    PayloadTooLargeError,
    ProtocolError,
    RateLimitError,
    SandboxTimeoutError,
    ServerError,
    UnavailableError,
)
from .files import Files
from .models import CommandResult, EntryInfo, EntryList, WriteInfo
from .sandbox import Sandbox
from ._http import EventStream, StreamResponse

__version__ = "0.1.0"

__all__ = [
    "Sandbox",
    "Controller",
    "BranchMode",
    "Commands",
    "CommandHandle",
    "CommandResult",
    "Files",
    "EntryInfo",
    "EntryList",
    "WriteInfo",
    "EventStream",
    "StreamResponse",
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
    "__version__",
]
