"""Live status of the sources a rig runs: what ``heron-remote status`` shows.

Every com publishes a status message about once a second on the proof-of-life
forwarder (``[b"heron_remote.status##" + node, JSON]``), next to Heron's proof-of-life
messages, and a last one when it stops (state ``stopped``, or ``failed``).
:class:`StatusBoard` subscribes to them from any process; a :class:`SourceStatus` is one
source's latest report. A source that stops reporting without a last word (its com was
killed, or hangs) is shown ``unknown`` after ``unknown_after`` seconds and dropped after
``forget_after``; so is a stopped one, after ``forget_after``. Anyone on the machine can
publish there: a message that is not a status is dropped and counted
(``StatusBoard.rejected``), and the board keeps at most MAX_SOURCES sources.
"""

from __future__ import annotations

import dataclasses
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
from .com.stats import ComStats, RateMeter
from .errors import DecodeError
from .wire.bounded import CONTROL_MAX_BYTES, NUMBER_LIMIT, read_json

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
#: Sources a board keeps; beyond, the one heard from least recently is forgotten.
MAX_SOURCES = 256
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
    #: Messages the com and its worker dropped as undecodable on their control inputs.
    rejected: int = 0
    stalled_s: float | None = None
    down_s: float = 0.0
    silent_s: float | None = None
    #: How the data comes: "local", "tunnel", "direct", or "tunnel (direct unreachable)" (a direct
    #: server's fall-back); "" from a com older than the field.
    transport: str = ""
    #: Bytes unpacked per byte that crossed the link packed (None: nothing came packed).
    compression_ratio: float | None = None
    #: The worker's clock minus the com's, in ms, as the heartbeat measures it (None: not yet).
    clock_offset_ms: float | None = None

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
    "stalled_s": (*_NUMBER, type(None)),
    "down_s": _NUMBER,
    "silent_s": (*_NUMBER, type(None)),
    "transport": (str,),
    "compression_ratio": (*_NUMBER, type(None)),
    "clock_offset_ms": (*_NUMBER, type(None)),
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
        # No ZMQ_MAXMSGSIZE: one larger message from anyone would cut the board off the forwarder for good.
        self._sub.subscribe(STATUS_TOPIC)
        self._sub.connect(f"tcp://{host}:{port}")
        self.unknown_after = unknown_after
        self.forget_after = forget_after
        #: The latest report of each node, and when (time.monotonic()) it came; least recent first.
        self._heard: OrderedDict[str, tuple[SourceStatus, float]] = OrderedDict()
        self._drops = Drops(logger, "a message on the status topic that is no status")

    @property
    def rejected(self) -> int:
        """Messages on the status topic dropped because they were not a status."""
        return self._drops.count

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
            try:
                status = _status_in(self._sub.recv_multipart())
            except DecodeError as exc:
                self._drops(exc)
                continue
            self._keep(status)
        return self.sources

    def _keep(self, status: SourceStatus) -> None:
        self._heard[status.node] = (status, time.monotonic())
        self._heard.move_to_end(status.node)
        if len(self._heard) > MAX_SOURCES:
            self._heard.popitem(last=False)

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


def _state(s: SourceStatus) -> str:
    if s.state == "stalled" and s.stalled_s is not None:
        return f"stalled {s.stalled_s:.1f}s"
    return s.state


def _via(s: SourceStatus) -> str:
    """The transport in a word: a direct server's fall-back to its tunnel is ``tunnel*``."""
    if s.transport.startswith("tunnel ("):
        return "tunnel*"
    return _shown(s.transport[:7]) or "-"


def _live(s: SourceStatus) -> bool:
    """Whether its rates are current: not for a source that stopped or is not heard from."""
    return s.state not in FINAL_STATES and s.state != "unknown"


def render(sources: dict[str, SourceStatus]) -> str:
    """A table for a terminal (the README's *Live status* explains each state)."""
    head = f"{'node':<16} {'host':<12} {'via':<7} {'pid':>7} {'state':<13} {'frames/s':>9} {'MB/s':>8} {'gaps':>6} "
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
            f"{_shown(s.node):<16} {_shown(s.host):<12} {_via(s):<7} {s.worker_pid or '-':>7} {_shown(_state(s)):<13} "
            f"{fps:>9} {mbs:>8} {s.gaps:>6} {restarts:>10} {rtt:>7}  {_shown(error)}".rstrip()
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
        rejected=stats.rejected + stats.worker_rejected + stats.worker_refused,
        stalled_s=None if stalled is None else round(stalled, 1),
        down_s=round(stats.down_s, 1),
        transport=stats.transport,
        compression_ratio=None if stats.compression_ratio is None else round(stats.compression_ratio, 3),
        clock_offset_ms=None if stats.clock_offset_s is None else round(stats.clock_offset_s * 1000, 3),
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
