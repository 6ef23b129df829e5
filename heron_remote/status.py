"""Live status of the sources a rig runs: what ``heron-remote status`` shows.

Every com publishes a status message about once a second on the proof-of-life
forwarder (``[b"heron_remote.status##" + node, JSON]``), next to Heron's proof-of-life
messages. :class:`StatusBoard` subscribes to them from any process; a
:class:`SourceStatus` is one source's latest report.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import zmq

from .com.stats import ComStats

__all__ = ["STATUS_TOPIC", "SourceStatus", "StatusBoard", "StatusPublisher", "render", "status_of"]

logger = logging.getLogger(__name__)

STATUS_TOPIC = b"heron_remote.status##"
#: Seconds between two status messages of a com.
STATUS_INTERVAL_S = 1.0


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

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SourceStatus | None:
        try:
            body = json.loads(raw)
            return cls(**{f.name: body[f.name] for f in fields(cls)})
        except (ValueError, KeyError, TypeError):
            return None


class StatusBoard:
    """Collects the status messages of every com on one proof-of-life forwarder. Use in one thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 6570) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._sub = self._context.socket(zmq.SUB)
        self._sub.linger = 0
        self._sub.subscribe(STATUS_TOPIC)
        self._sub.connect(f"tcp://{host}:{port}")
        self.sources: dict[str, SourceStatus] = {}

    def poll(self, timeout: float) -> dict[str, SourceStatus]:
        """Take in what arrives for ``timeout`` seconds; the latest status per node."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self._sub.poll(int(left * 1000) + 1):
                break
            frames = self._sub.recv_multipart()
            status = SourceStatus.from_json(frames[1]) if len(frames) == 2 else None
            if status is None:
                logger.debug("ignored a malformed status message")
                continue
            self.sources[status.node] = status
        return dict(self.sources)

    def close(self) -> None:
        self._sub.close()

    def __enter__(self) -> StatusBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        error = (s.last_error or "").splitlines()[0][:60] if s.last_error else ""
        lines.append(
            f"{s.node:<16} {s.host:<12} {s.worker_pid or '-':>7} {state:<10} {s.frames_per_s:>9.1f} "
            f"{s.mb_per_s:>8.2f} {s.gaps:>6} {s.restarts:>8} {rtt:>7}  {error}"
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
