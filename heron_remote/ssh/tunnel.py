"""Tunnels: a local port that reaches a port on a server, and the backends that make them.

A backend is picked per server by the registry's ``"tunnel"`` name, looked up in
:data:`BACKENDS` (the one place that knows the names; the registry validates against its
keys). The factories import their backend when first used, so that reading a registry
imports neither paramiko nor sshtunnel.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    import paramiko

    from .registry import Server

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "BaseTunnel", "Tunnel", "TunnelFactory", "TunnelHost", "open_tunnel"]

logger = logging.getLogger(__name__)


@runtime_checkable
class Tunnel(Protocol):
    """A local forward ``127.0.0.1:local_port`` -> ``remote`` on the server."""

    @property
    def local_port(self) -> int: ...

    @property
    def remote(self) -> tuple[str, int]: ...

    @property
    def address(self) -> str:
        """``tcp://127.0.0.1:<local_port>``, for ZeroMQ."""
        ...

    @property
    def closed(self) -> bool: ...

    def refuse_new(self) -> None:
        """Take no new client connections; those open go on. For a worker being stopped: a client
        reconnecting after it ended would only be refused on the server (and logged as an error)."""
        ...

    def close(self) -> None:
        """Stop forwarding. Idempotent."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class BaseTunnel:
    """What every tunnel shares: the address, an idempotent close, the context manager."""

    def __init__(self, local_port: int, remote: tuple[str, int]) -> None:
        self._local_port = local_port
        self._remote = remote
        self._closed = False
        self._refusing = False

    @property
    def local_port(self) -> int:
        return self._local_port

    @property
    def remote(self) -> tuple[str, int]:
        return self._remote

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self._local_port}"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def refusing(self) -> bool:
        """Whether new client connections are turned away (:meth:`refuse_new`)."""
        return self._refusing

    def refuse_new(self) -> None:
        self._refusing = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close()

    def _close(self) -> None:
        """Stop forwarding; called once."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TunnelHost(Protocol):
    """What a backend needs of the connection to a server (a HostConnection has it).

    Hashable: the OpenSSH backend keeps one master per connection.
    """

    def __hash__(self) -> int: ...

    @property
    def server(self) -> Server: ...

    @property
    def username(self) -> str: ...

    @property
    def timeout(self) -> float: ...

    @property
    def link_timeout(self) -> float: ...

    def wait_transport(self, timeout: float) -> paramiko.Transport:
        """The live transport, waiting up to ``timeout`` s for a reconnect to finish."""
        ...


#: ``factory(host, remote_port, remote_host)``: a new tunnel over ``host``'s connection.
TunnelFactory = Callable[["TunnelHost", int, str], Tunnel]


def _sshtunnel(host: TunnelHost, remote_port: int, remote_host: str) -> Tunnel:
    from .sshtunnel_backend import SSHTunnel

    return SSHTunnel(host, remote_port, remote_host)


def _openssh(host: TunnelHost, remote_port: int, remote_host: str) -> Tunnel:
    from .openssh import openssh_forward

    return openssh_forward(host, remote_port, remote_host)


#: The port-forward backends by the registry's ``"tunnel"`` name; the first is the default.
BACKENDS: Mapping[str, TunnelFactory] = MappingProxyType({"sshtunnel": _sshtunnel, "openssh": _openssh})
DEFAULT_BACKEND = next(iter(BACKENDS))


def open_tunnel(host: TunnelHost, remote_port: int, remote_host: str = "127.0.0.1") -> Tunnel:
    """A tunnel to ``remote_host:remote_port`` by the backend ``host``'s server names."""
    return BACKENDS[host.server.tunnel](host, remote_port, remote_host)
