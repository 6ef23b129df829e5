"""heron_remote: run the source nodes of an experiment pipeline here or on acquisition PCs over SSH.

The public API is what ``__all__`` lists; modules and names starting with ``_`` are internal.
"""

from ._version import __version__
from .errors import (
    AuthenticationError,
    ConfigError,
    DecodeError,
    ForwarderError,
    HeronRemoteError,
    HostKeyError,
    HostUnreachableError,
    NoDataError,
    SSHError,
    TunnelError,
    WorkerError,
    WorkerExitedError,
    WorkerLostError,
    WorkerStartError,
)
from .forwarders import Forwarders
from .relic import read_relic
from .settings import ForwarderPorts, RestartPolicy, Settings
from .source import Frame, Source
from .source_com import ComStats, SourceCom
from .status import SourceStatus, StatusBoard
from .wire import IGNORE, Packet, decode_published
from .worker import SourceWorker, start_the_source_worker_process

__all__ = [
    "IGNORE",
    "AuthenticationError",
    "ComStats",
    "ConfigError",
    "DecodeError",
    "ForwarderError",
    "ForwarderPorts",
    "Forwarders",
    "Frame",
    "HeronRemoteError",
    "HostKeyError",
    "HostUnreachableError",
    "NoDataError",
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
    "WorkerError",
    "WorkerExitedError",
    "WorkerLostError",
    "WorkerStartError",
    "__version__",
    "decode_published",
    "read_relic",
    "start_the_source_worker_process",
]
