"""The SSH layer: server registry, host keys, one connection per host, tunnels, remote launcher.

Remote workers reuse the core unchanged: :class:`RemoteLauncher` is a
:class:`heron_remote.launcher.WorkerLauncher` whose ``address()`` hook maps a worker's
loopback port to a local forward over the host's one SSH connection.

Modules, one job each: :mod:`.registry` (ssh_info.json), :mod:`.hostkeys` (known_hosts),
:mod:`.transport` (the tuned, verified transport), :mod:`.auth` (logging in), :mod:`.watch`
(keepalive and reconnect), :mod:`.tunnel` (the Tunnel protocol and the backend table),
:mod:`.sshtunnel_backend` and :mod:`.openssh` (the two backends), :mod:`.remote_process`
(commands through fabric), :mod:`.connection` (HostConnection), :mod:`.link` (what a launcher
needs of a host), :mod:`.launcher`, :mod:`.shells`, :mod:`.translate` (errors), :mod:`.check`.
"""

from .connection import HostConnection
from .hostkeys import HostKeys, fingerprint
from .launcher import RemoteLauncher
from .link import HostLink, RemoteProcess
from .registry import Registry, Server, default_registry_path
from .tunnel import BACKENDS, Tunnel

__all__ = [
    "BACKENDS",
    "HostConnection",
    "HostKeys",
    "HostLink",
    "Registry",
    "RemoteLauncher",
    "RemoteProcess",
    "Server",
    "Tunnel",
    "default_registry_path",
    "fingerprint",
]
