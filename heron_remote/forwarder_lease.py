"""The forwarders a Source publishes through: found where the com looks for them, else its own.

``Settings.forwarder_host`` is where forwarders are looked for; when none answer there, the
Source starts its own on ``Settings.forwarder_bind``, 127.0.0.1 unless the caller names another
interface. Where to find forwarders never decides where to open them: forwarders on a LAN
address serve frames and take parameters from anyone on that LAN.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import socket
from collections.abc import Callable

import zmq

from ._shared import SharedRegistry
from .errors import ForwarderError
from .forwarders import Forwarders
from .settings import ForwarderPorts

__all__ = ["ForwarderLease", "lease_forwarders", "reach"]

logger = logging.getLogger(__name__)

#: Seconds to wait for forwarders to accept a connection where the com looks for them.
PROBE_TIMEOUT_S = 1.0
_WILDCARDS = ("0.0.0.0", "*")

#: Forwarders this process started on fixed ports, shared by its Sources and counted.
_shared: SharedRegistry[tuple[str, ForwarderPorts], Forwarders] = SharedRegistry(Forwarders.close)


class _NoneHere(LookupError):
    pass


def _none_here() -> Forwarders:
    raise _NoneHere


def reach(bind: str) -> str:
    """The address that reaches forwarders bound on ``bind`` from this machine."""
    return "127.0.0.1" if bind in _WILDCARDS else bind


class ForwarderLease:
    """The forwarders one user (a Source) relies on; :meth:`close` gives them back. Idempotent.

    ``host`` is where its users connect to them. ``running_here`` is the :class:`Forwarders` of
    this process the lease holds, shared and counted, or None when forwarders that run
    elsewhere (another process) serve ``ports``.
    """

    def __init__(
        self, host: str, ports: ForwarderPorts, running_here: Forwarders | None, release: Callable[[], object]
    ) -> None:
        self.host = host
        self.ports = ports
        self.running_here = running_here
        self._release: Callable[[], object] | None = release

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> ForwarderLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shared_lease(host: str, ports: ForwarderPorts, make: Callable[[], Forwarders]) -> ForwarderLease:
    key = (host, ports)
    shared, _ = _shared.acquire(key, make)
    return ForwarderLease(reach(host), shared.ports, shared, lambda: _shared.release(key, shared))


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def lease_forwarders(ports: ForwarderPorts, *, find_at: str = "127.0.0.1", bind: str = "127.0.0.1") -> ForwarderLease:
    """Forwarders on ``ports``: those found at ``find_at`` (this process's, or any that accept a
    connection there), else this process's on ``bind``, started here and shared with its other
    users, else, when ``bind``'s ports are taken, the ones that hold them."""
    if 0 in dataclasses.astuple(ports):  # free ports: nobody else can ask for these
        own = Forwarders(host=bind, ports=ports).start()
        return ForwarderLease(reach(bind), own.ports, own, own.close)
    for host in dict.fromkeys((find_at, bind)):  # this process's, shared
        try:
            return _shared_lease(host, ports, _none_here)
        except _NoneHere:
            pass
    if find_at != bind:
        if _answers(find_at, ports.data_submit):
            logger.info("forwarders answer on %s; using them", find_at)
            return ForwarderLease(find_at, ports, None, lambda: None)
        logger.info("no forwarders answer on %s: starting this process's own on %s (forwarder_bind)", find_at, bind)
    try:
        return _shared_lease(bind, ports, lambda: Forwarders(host=bind, ports=ports).start())
    except ForwarderError as exc:
        cause = exc.__cause__
        if isinstance(cause, zmq.ZMQError) and cause.errno == errno.EADDRINUSE:
            logger.info("forwarders already run on %s; using them", bind)
            return ForwarderLease(reach(bind), ports, None, lambda: None)
        raise
