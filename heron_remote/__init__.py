"""heron_remote: run the source nodes of an experiment pipeline here or on acquisition PCs over SSH.

The public API is what ``__all__`` lists; modules and names starting with ``_`` are internal.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .compression import Compression
from .errors import (
    AuthenticationError,
    ConfigError,
    DecodeError,
    DirectUnreachableError,
    ForwarderError,
    HeronRemoteError,
    HostKeyError,
    HostUnreachableError,
    NoDataError,
    NodeHeldError,
    SSHError,
    TunnelError,
    UnsafePathError,
    WorkerError,
    WorkerExitedError,
    WorkerLostError,
    WorkerStartError,
)
from .settings import ForwarderPorts, RestartPolicy, Settings

if TYPE_CHECKING:
    from .forwarders import Forwarders
    from .relic import read_relic
    from .source import Frame, Source
    from .source_com import ComStats, SourceCom
    from .status import SourceStatus, StatusBoard
    from .wire import IGNORE, Packet, decode_published
    from .worker import SourceWorker, start_the_source_worker_process

#: Where each name that needs ZeroMQ or numpy lives: imported on first use, so that importing
#: the package (Heron's editor imports every node's com file) starts no heavy imports.
_LAZY = {
    "Forwarders": "forwarders",
    "read_relic": "relic",
    "Frame": "source",
    "Source": "source",
    "ComStats": "source_com",
    "SourceCom": "source_com",
    "SourceStatus": "status",
    "StatusBoard": "status",
    "IGNORE": "wire",
    "Packet": "wire",
    "decode_published": "wire",
    "SourceWorker": "worker",
    "start_the_source_worker_process": "worker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'heron_remote' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "IGNORE",
    "AuthenticationError",
    "ComStats",
    "Compression",
    "ConfigError",
    "DecodeError",
    "DirectUnreachableError",
    "ForwarderError",
    "ForwarderPorts",
    "Forwarders",
    "Frame",
    "HeronRemoteError",
    "HostKeyError",
    "HostUnreachableError",
    "NoDataError",
    "NodeHeldError",
    "Packet",
    "RestartPolicy",
    "SSHError",
    "Settings",
    "Source",
    "SourceCom",
    "SourceStatus",
    "SourceWorker",
    "StatusBoard",
    "TunnelError",
    "UnsafePathError",
    "WorkerError",
    "WorkerExitedError",
    "WorkerLostError",
    "WorkerStartError",
    "__version__",
    "decode_published",
    "read_relic",
    "start_the_source_worker_process",
]
