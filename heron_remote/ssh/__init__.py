"""The SSH layer: server registry, host keys, one connection per host, remote launcher.

Remote workers reuse the core unchanged: :class:`RemoteLauncher` is a
:class:`heron_remote.launcher.WorkerLauncher` whose ``address()`` hook maps a worker's
loopback port to a local forward over the host's one SSH connection.
"""

from .connection import HostConnection, Tunnel
from .hostkeys import HostKeys, fingerprint
from .launcher import RemoteLauncher
from .registry import Registry, Server, default_registry_path

__all__ = [
    "HostConnection",
    "HostKeys",
    "Registry",
    "RemoteLauncher",
    "Server",
    "Tunnel",
    "default_registry_path",
    "fingerprint",
]
