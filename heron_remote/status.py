"""Live status of the sources a rig runs: what ``heron-remote status`` shows.

Every com publishes a status message about once a second on the proof-of-life
forwarder (``[b"heron_remote.status##" + node, JSON]``), next to Heron's proof-of-life
messages, and a last one when it stops (state ``stopped``, or ``failed``).
:class:`StatusBoard` subscribes to them from any process; a :class:`SourceStatus` is one
source's latest report. A source that stops reporting without a last word (its com was
killed, or hangs) is shown ``unknown`` after ``unknown_after`` seconds and dropped after
``forget_after``; so is a stopped one, after ``forget_after``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import zmq

from .com.stats import ComStats, RateMeter

__all__ = [
    "FINAL_STATES",
    "FORGET_AFTER_S",
    "STATUS_TOPIC",
    "UNKNOWN_AFTER_S",
    "SourceStatus",
    "StatusBoard",
    "StatusPublisher",
    "render",
    "status_of",
]

logger = logging.getLogger(__name__)

STATUS_TOPIC = b"heron_remote.status##"
#: Seconds between two status messages of a com.
STATUS_INTERVAL_S = 1.0
#: A source not heard from for this long is shown ``unknown`` (three missed reports)...
UNKNOWN_AFTER_S = 3.0
#: ... and dropped from the board after this long (a stopped one too).
FORGET_AFTER_S = 60.0
#: A com's last word: such a row stays as it is until it is forgotten.
FINAL_STATES = frozenset({"stopped", "failed"})


@dataclass(frozen=True, kw_only=True)
class SourceStatus:
    """One source as its com last reported it. Rates cover about the two seconds before ``time``
    (since the first frame, early on). ``stalled_s``: how long the stream has been stalled, if it is.
    ``down_s``: seconds without a worker's data around restarts. ``silent_s``: set by a
    :class:`StatusBoard`, how long ago it last heard from this source."""

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
    stalled_s: float | None = None
    down_s: float = 0.0
    silent_s: float | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SourceStatus | None:
        try:
            body = json.loads(raw)
            given = {f.name: body[f.name] for f in fields(cls) if f.name in body or f.default is dataclasses.MISSING}
            return cls(**given)
        except (ValueError, KeyError, TypeError):
            return None


class StatusBoard:
    """Collects the status messages of every com on one proof-of-life forwarder. Use in one thread.

    A source it has not heard from for ``unknown_after`` seconds is shown in state ``unknown``
    (unless its last report was final: ``stopped`` or ``failed``); after ``forget_after``
    seconds it is dropped.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 6570,
        *,
        unknown_after: float = UNKNOWN_AFTER_S,
        forget_after: float = FORGET_AFTER_S,
    ) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._sub = self._context.socket(zmq.SUB)
        self._sub.linger = 0
        self._sub.subscribe(STATUS_TOPIC)
        self._sub.connect(f"tcp://{host}:{port}")
        self.unknown_after = unknown_after
        self.forget_after = forget_after
        #: The latest report of each node, and when (time.monotonic()) it came.
        self._heard: dict[str, tuple[SourceStatus, float]] = {}

    @property
    def sources(self) -> dict[str, SourceStatus]:
        """What the board shows now: each node's latest report, aged (see the class)."""
        now = time.monotonic()
        for node in [n for n, (_, at) in self._heard.items() if now - at > self.forget_after]:
            del self._heard[node]
        return {node: self._aged(status, now - at) for node, (status, at) in self._heard.items()}

    def _aged(self, status: SourceStatus, silent: float) -> SourceStatus:
        if silent > self.unknown_after and status.state not in FINAL_STATES:
            return dataclasses.replace(status, state="unknown", silent_s=round(silent, 1))
        return dataclasses.replace(status, silent_s=round(silent, 1))

    def poll(self, timeout: float) -> dict[str, SourceStatus]:
        """Take in what arrives for ``timeout`` seconds; then :attr:`sources`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self._sub.poll(int(left * 1000) + 1):
                break
            frames = self._sub.recv_multipart()
            status = SourceStatus.from_json(frames[1]) if len(frames) == 2 else None
            if status is None:
                logger.debug("ignored a malformed status message")
                continue
            self._heard[status.node] = (status, time.monotonic())
        return self.sources

    def close(self) -> None:
        self._sub.close()

    def __enter__(self) -> StatusBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _state(s: SourceStatus) -> str:
    if s.state == "stalled" and s.stalled_s is not None:
        return f"stalled {s.stalled_s:.1f}s"
    return s.state


def _live(s: SourceStatus) -> bool:
    """Whether its rates are current: not for a source that stopped or is not heard from."""
    return s.state not in FINAL_STATES and s.state != "unknown"


def render(sources: dict[str, SourceStatus]) -> str:
    """A table for a terminal (the README's *Live status* explains each state)."""
    head = f"{'node':<16} {'host':<12} {'pid':>7} {'state':<13} {'frames/s':>9} {'MB/s':>8} {'gaps':>6} "
    head += f"{'restarts':>10} {'rtt ms':>7}  last error"
    lines = [head]
    for name in sorted(sources):
        s = sources[name]
        fps, mbs = (f"{s.frames_per_s:.1f}", f"{s.mb_per_s:.2f}") if _live(s) else ("-", "-")
        rtt = "-" if s.heartbeat_rtt_ms is None or not _live(s) else f"{s.heartbeat_rtt_ms:.1f}"
        restarts = f"{s.restarts} ({s.down_s:.1f}s)" if s.restarts else "0"
        error = (s.last_error or "").splitlines()[0][:60] if s.last_error else ""
        if s.state == "unknown":
            error = f"no report for {s.silent_s or 0:.0f} s" + (f"; {error}" if error else "")
        lines.append(
            f"{s.node:<16} {s.host:<12} {s.worker_pid or '-':>7} {_state(s):<13} {fps:>9} "
            f"{mbs:>8} {s.gaps:>6} {restarts:>10} {rtt:>7}  {error}".rstrip()
        )
    if not sources:
        lines.append("(no source has reported yet)")
    return "\n".join(lines)


def status_of(node_name: str, where: str, stats: ComStats, meter: RateMeter) -> SourceStatus:
    """A com's status now, its rates from ``meter``."""
    stalled = stats.stalled_for()
    # Stalled: nothing has come for several beats, whatever the window's average still holds.
    frames_per_s, bytes_per_s = (0.0, 0.0) if stalled else meter.rates(stats.received, stats.bytes_received)
    return SourceStatus(
        node=node_name,
        host=where,
        worker_pid=stats.worker_pid,
        state=stats.state,
        frames_per_s=round(frames_per_s, 2),
        mb_per_s=round(bytes_per_s / 1e6, 3),
        received=stats.received,
        gaps=stats.gaps,
        restarts=stats.restarts,
        heartbeat_rtt_ms=None if stats.heartbeat_rtt_s is None else round(stats.heartbeat_rtt_s * 1000, 3),
        last_error=stats.last_error,
        time=time.time(),
        stalled_s=None if stalled is None else round(stalled, 1),
        down_s=round(stats.down_s, 1),
    )


class StatusPublisher:
    """Publishes a com's status on the proof-of-life forwarder, about once a second (``due``).

    The com's loop calls :meth:`sample` often (it feeds the rates) and :meth:`publish` when due.
    """

    def __init__(self, node_name: str, stats: ComStats, where: Callable[[], str]) -> None:
        self._topic = STATUS_TOPIC + node_name.encode()
        self._node_name = node_name
        self._stats = stats
        self._where = where
        self._meter = RateMeter()
        self._next = 0.0

    @property
    def due(self) -> bool:
        return time.monotonic() >= self._next

    def sample(self) -> None:
        self._meter.sample(self._stats.received, self._stats.bytes_received)

    def status(self) -> SourceStatus:
        """This com's status now (any thread)."""
        return status_of(self._node_name, self._where(), self._stats, self._meter)

    def publish(self, sock: zmq.Socket) -> SourceStatus:
        status = self.status()
        self._next = time.monotonic() + STATUS_INTERVAL_S
        sock.send_multipart((self._topic, status.to_json()))
        return status
