"""Whole-path runs: bench worker -> com -> data forwarder -> subscriber, with :class:`heron_remote.Source`.

:func:`measure_stream` is the hook: give it any callable that, for a plan, opens a
stream of payloads (each starting with the bench header) and it returns the figures.
:func:`source_stream` is the one used here: a ``Source`` running
``python -m heron_remote.bench.worker`` on this machine or on a link's host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NamedTuple

from .._linkkeys import unauthenticated_launches
from ..settings import ForwarderPorts, Settings
from ..source import Source
from .links import Link
from .protocol import Plan, Result, measure

__all__ = [
    "FREE_PORTS",
    "WORKER",
    "Stream",
    "StreamOpener",
    "measure_stream",
    "source_stream",
    "whole_path",
    "whole_path_noauth",
    "whole_path_openssh",
]

logger = logging.getLogger(__name__)

WORKER = "python -m heron_remote.bench.worker"
#: Free forwarder ports, so that a bench never meets the forwarders of a running experiment.
FREE_PORTS = ForwarderPorts.free()
#: Messages the whole path can queue (worker, com, publisher, forwarder, subscriber high-water marks).
_PATH_QUEUE_MESSAGES = 8 + 8 + 200 + 2 * 200 + 1000
_TUNNEL_BUFFER_BYTES = 16 * 1024 * 1024
_MAX_DRAIN_S = 10.0


class Stream(NamedTuple):
    """Payloads as they arrive, and how to tell the sender its queues are drained (None: it guesses)."""

    frames: Iterator[Any]
    on_drain: Callable[[], None] | None = None


#: Opens a stream for a plan; leaving the context manager stops whatever sends it.
StreamOpener = Callable[[Plan], AbstractContextManager[Stream]]


def measure_stream(name: str, plan: Plan, open_stream: StreamOpener) -> Result:
    """Measure the payloads ``open_stream(plan)`` yields (the hook for any whole-path run)."""
    with open_stream(plan) as stream:
        return measure(name, stream.frames, plan, stream.on_drain)


#: Loggers that a saturated path floods: a warning per index gap, errors for each reconnection
#: attempt of the com through a tunnel once the bench worker has ended.
_NOISY = {
    "heron_remote.source": logging.ERROR,
    "heron_remote.ssh.sshtunnel_backend": logging.CRITICAL,
    "heron_remote.ssh.paramiko": logging.CRITICAL,
}


@contextmanager
def _quiet() -> Iterator[None]:
    """Raise the noisy loggers' levels for the duration of a run; the caller's levels come back after."""
    saved = {}
    for name, level in _NOISY.items():
        log = logging.getLogger(name)
        saved[name] = log.level
        log.setLevel(max(level, log.getEffectiveLevel()))
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def source_stream(link: Link, notes: dict[str, Any], *, ports: ForwarderPorts = FREE_PORTS) -> StreamOpener:
    """A StreamOpener running the bench worker in a Source, here or on ``link``'s host.

    ``notes`` receives the source's counters (gaps, lost) when the stream closes; ``ports``:
    the forwarders' (free ones, started in this process, unless given).
    """

    @contextmanager
    def open_stream(plan: Plan) -> Iterator[Stream]:
        settings = Settings(ports=ports, ssh_info=str(link.registry) if link.registry else None)
        source = Source(
            WORKER,
            name="bench",
            parameters=plan.to_dict(),
            settings=settings,
            host=link.server_id if link.host is not None else None,
        )
        with _quiet(), source:

            def payloads() -> Iterator[Any]:
                for frame in source.frames(timeout=plan.idle_timeout_s):
                    yield frame.arrays[0]

            try:
                yield Stream(payloads(), lambda: source.set_parameters({"drained": True}))
            finally:
                notes.update(gaps=source.gaps, lost=source.stats.lost, published=source.stats.published)

    return open_stream


def path_plan(plan: Plan) -> Plan:
    """The plan for a whole path: its queues, and time to drain them (DRAIN markers end the wait early).

    Socket buffers hold far more small messages than the high-water marks, so a subscriber
    that falls behind can sit seconds behind the worker.
    """
    backlog = min(_PATH_QUEUE_MESSAGES * plan.size, 64 * 1024 * 1024) + _TUNNEL_BUFFER_BYTES
    changes = {"backlog_bytes": backlog, "overhead_bytes": 96, "max_drain_s": max(plan.max_drain_s, _MAX_DRAIN_S)}
    return Plan(**{**plan.to_dict(), **changes})


def whole_path(name: str, link: Link, plan: Plan) -> Result:
    """The whole source path with the worker on ``link`` (``local``: this machine)."""
    notes: dict[str, Any] = {}
    result = measure_stream(name, path_plan(plan), source_stream(link, notes))
    result.notes.update(notes)
    return result


def whole_path_openssh(name: str, link: Link, plan: Plan) -> Result:
    """The whole source path with the worker on ``link``'s host, its forwards made by OpenSSH."""
    result = whole_path(name, link.with_tunnel("openssh"), plan)
    result.notes["tunnel"] = "openssh"
    return result


def whole_path_noauth(name: str, link: Link, plan: Plan) -> Result:
    """The whole source path with no key on the com <-> worker link: what authentication costs.

    The switch is the bench's own (a private context manager, not a setting): a user cannot
    turn the link's authentication off.
    """
    with unauthenticated_launches():
        result = whole_path(name, link, plan)
    result.notes["auth"] = "none (bench only)"
    return result
