"""Live status of the sources a rig runs: what ``heron-remote status`` shows.

Every com publishes a status message about once a second on the proof-of-life
forwarder (``[b"heron_remote.status##" + node, JSON]``), next to Heron's proof-of-life
messages. :class:`StatusBoard` subscribes to them from any process; a
:class:`SourceStatus` is one source's latest report. Anyone on the machine can publish
there: a message that is not a status is dropped and counted (``StatusBoard.rejected``),
and the board keeps at most MAX_SOURCES sources.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import MISSING, Field, asdict, dataclass, fields
from typing import Any

import zmq

from ._drops import Drops
from .com.stats import ComStats
from .errors import DecodeError
from .wire.bounded import CONTROL_MAX_BYTES, NUMBER_LIMIT, read_json

__all__ = ["STATUS_TOPIC", "SourceStatus", "StatusBoard", "StatusPublisher", "render", "status_of"]

logger = logging.getLogger(__name__)

STATUS_TOPIC = b"heron_remote.status##"
#: Seconds between two status messages of a com.
STATUS_INTERVAL_S = 1.0
#: Sources a board keeps; beyond, the one heard from least recently is forgotten.
MAX_SOURCES = 256


@dataclass(frozen=True, kw_only=True)
class SourceStatus:
    """One source as its com last reported it. Rates cover the second before ``time``."""

    node: str
    host: str
    worker_pid: int | None
    state: str
    frames_per_s: float
    mb_per_s: float
    received: int
    gaps: int
    restarts: int
    heartbeat_rtt_ms: float | None
    last_error: str | None
    time: float
    #: Messages the com and its worker dropped as undecodable on their control inputs.
    rejected: int = 0

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, raw: bytes) -> SourceStatus:
        """The status in ``raw``, every field of its type; DecodeError for anything else."""
        body = read_json(raw, "a status message", CONTROL_MAX_BYTES)
        if not isinstance(body, dict):
            raise DecodeError(f"a status message must be a JSON object, got {type(body).__name__}")
        return cls(**{f.name: _field(body, f) for f in fields(cls)})

    @classmethod
    def from_json(cls, raw: bytes) -> SourceStatus | None:
        """:meth:`decode`, or None for what is not a status."""
        try:
            return cls.decode(raw)
        except DecodeError:
            return None


#: What each field of a status may hold (JSON numbers: int or float).
_NUMBER = (int, float)
_KINDS: dict[str, tuple[type, ...]] = {
    "node": (str,),
    "host": (str,),
    "worker_pid": (int, type(None)),
    "state": (str,),
    "frames_per_s": _NUMBER,
    "mb_per_s": _NUMBER,
    "received": (int,),
    "gaps": (int,),
    "restarts": (int,),
    "heartbeat_rtt_ms": (*_NUMBER, type(None)),
    "last_error": (str, type(None)),
    "time": _NUMBER,
    "rejected": (int,),
}


def _field(body: dict[str, Any], field: Field[Any]) -> Any:
    """The value of ``field`` in a status body, checked against its kind."""
    if field.name not in body and field.default is not MISSING:
        return field.default
    value = body.get(field.name, MISSING)
    kinds = _KINDS[field.name]
    fits = type(value) in kinds  # exact: True is no count
    if type(value) is int:
        fits = fits and abs(value) < NUMBER_LIMIT
    elif type(value) is float:
        fits = fits and math.isfinite(value)
    if not fits:
        shown = "nothing" if value is MISSING else type(value).__name__
        raise DecodeError(
            f"a status message's {field.name!r} must be {' or '.join(k.__name__ for k in kinds)}, got {shown}"
        )
    return value


class StatusBoard:
    """Collects the status messages of every com on one proof-of-life forwarder. Use in one thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 6570) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._sub = self._context.socket(zmq.SUB)
        self._sub.linger = 0
        # No ZMQ_MAXMSGSIZE: one larger message from anyone would cut the board off the forwarder for good.
        self._sub.subscribe(STATUS_TOPIC)
        self._sub.connect(f"tcp://{host}:{port}")
        self.sources: OrderedDict[str, SourceStatus] = OrderedDict()
        self._drops = Drops(logger, "a message on the status topic that is no status")

    @property
    def rejected(self) -> int:
        """Messages on the status topic dropped because they were not a status."""
        return self._drops.count

    def poll(self, timeout: float) -> dict[str, SourceStatus]:
        """Take in what arrives for ``timeout`` seconds; the latest status per node."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self._sub.poll(int(left * 1000) + 1):
                break
            try:
                status = _status_in(self._sub.recv_multipart())
            except DecodeError as exc:
                self._drops(exc)
                continue
            self._keep(status)
        return dict(self.sources)

    def _keep(self, status: SourceStatus) -> None:
        self.sources[status.node] = status
        self.sources.move_to_end(status.node)
        if len(self.sources) > MAX_SOURCES:
            self.sources.popitem(last=False)

    def close(self) -> None:
        self._sub.close()

    def __enter__(self) -> StatusBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _status_in(frames: list[bytes]) -> SourceStatus:
    """The status a ``[STATUS_TOPIC + node, JSON]`` message carries; DecodeError."""
    if len(frames) != 2:
        raise DecodeError(f"a status message has 2 frames, got {len(frames)}")
    status = SourceStatus.decode(frames[1])
    if frames[0] != STATUS_TOPIC + status.node.encode(errors="replace"):
        raise DecodeError(f"a status message of node {status.node[:40]!r} came on topic {frames[0][:60]!r}")
    return status


def _shown(text: str) -> str:
    """``text`` safe for a terminal: no escape sequences from whoever wrote it."""
    return "".join(c if c.isprintable() else "?" for c in text)


def render(sources: dict[str, SourceStatus], *, now: float | None = None) -> str:
    """A table for a terminal; a source silent for 3 s is marked stale."""
    now = time.time() if now is None else now
    head = f"{'node':<16} {'host':<12} {'pid':>7} {'state':<10} {'frames/s':>9} {'MB/s':>8} {'gaps':>6} "
    head += f"{'restarts':>8} {'rtt ms':>7}  last error"
    lines = [head]
    for name in sorted(sources):
        s = sources[name]
        state = s.state if now - s.time < 3 else f"{s.state}?"
        rtt = "-" if s.heartbeat_rtt_ms is None else f"{s.heartbeat_rtt_ms:.1f}"
        error = (s.last_error.splitlines() or [""])[0][:60] if s.last_error else ""
        lines.append(
            f"{_shown(s.node):<16} {_shown(s.host):<12} {s.worker_pid or '-':>7} {_shown(state):<10} "
            f"{s.frames_per_s:>9.1f} {s.mb_per_s:>8.2f} {s.gaps:>6} {s.restarts:>8} {rtt:>7}  {_shown(error)}"
        )
    if not sources:
        lines.append("(no source has reported yet)")
    return "\n".join(lines)


def _rate(now: float, then: float, delta: int | float) -> float:
    return delta / (now - then) if now > then else 0.0


def status_of(
    node_name: str, where: str, stats: ComStats, previous: tuple[float, int, int] | None
) -> tuple[SourceStatus, tuple[float, int, int]]:
    """A com's status now, with rates since ``previous`` (time, received, bytes); and the new mark."""
    now = time.time()
    mark = (now, stats.received, stats.bytes_received)
    then, received, size = previous or mark
    status = SourceStatus(
        node=node_name,
        host=where,
        worker_pid=stats.worker_pid,
        state=stats.state,
        frames_per_s=round(_rate(now, then, stats.received - received), 2),
        mb_per_s=round(_rate(now, then, stats.bytes_received - size) / 1e6, 3),
        received=stats.received,
        gaps=stats.lost + stats.malformed,
        restarts=stats.restarts,
        heartbeat_rtt_ms=None if stats.heartbeat_rtt_s is None else round(stats.heartbeat_rtt_s * 1000, 3),
        last_error=stats.last_error,
        time=now,
        rejected=stats.rejected + stats.worker_rejected,
    )
    return status, mark


class StatusPublisher:
    """Publishes a com's status on the proof-of-life forwarder, about once a second (``due``)."""

    def __init__(self, node_name: str, stats: ComStats, where: Callable[[], str]) -> None:
        self._topic = STATUS_TOPIC + node_name.encode()
        self._node_name = node_name
        self._stats = stats
        self._where = where
        self._mark: tuple[float, int, int] | None = None
        self._next = 0.0

    @property
    def due(self) -> bool:
        return time.monotonic() >= self._next

    def publish(self, sock: zmq.Socket) -> SourceStatus:
        status, self._mark = status_of(self._node_name, self._where(), self._stats, self._mark)
        self._next = time.monotonic() + STATUS_INTERVAL_S
        sock.send_multipart((self._topic, status.to_json()))
        return status
