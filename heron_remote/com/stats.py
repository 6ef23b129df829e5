"""What a com counts: read it at any time (``com.stats``, ``Source.stats``); and its rates."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ComStats", "RateMeter"]


#: The counters a com's relay keeps.
RELAY_COUNTERS = (
    "received",
    "lost",
    "published",
    "unheard",
    "ignored",
    "malformed",
    "bytes_received",
    "packed_bytes",
    "unpacked_bytes",
    "shared_bytes",
    "skipped",
)


@dataclass
class ComStats:
    """Counters a com keeps.

    ``lost`` counts packets the worker sent that never reached the com; ``malformed``
    those that arrived but did not follow the wire format; ``skipped`` the indices left out
    at restarts (one each, so that subscribers see a restart as a gap). All three show as
    index gaps downstream. ``restarts`` counts workers started again under the restart
    policy, ``down_s`` the seconds the stream had no worker's data around them (from the
    last thing heard from the worker that failed to the first packet of the next).
    ``stalled_since`` is the ``time.monotonic()`` of the last thing heard from the worker
    while the stream is stalled (see :data:`~heron_remote.com.supervisor.STALL_BEATS`), else None.
    ``rejected`` counts messages the com dropped as undecodable on its parameters and liveness
    inputs, ``worker_rejected`` those its worker dropped on its pulse and parameters inputs (as
    the worker last said), ``worker_refused`` the connections its workers (all launches) refused
    for not carrying the com's per-launch key.
    ``bytes_received`` counts payload bytes as they crossed the link from the worker; of them,
    ``packed_bytes`` came packed and unpacked to ``unpacked_bytes`` (see :attr:`compression_ratio`
    and :attr:`bytes_unpacked`); ``shared_bytes`` came through a local worker's shared-memory ring
    rather than its socket (:mod:`heron_remote._ring`); ``worker_ring_bypassed`` counts the large
    payloads the worker sent through its socket because its ring could not take them (full of
    frames still held, or over a quarter of its size) and ``worker_ring_renewed`` the rings it
    started anew because a record was never released; ``worker_packets`` the packets the worker
    sent and ``worker_messages`` the ZeroMQ messages they travelled in (fewer when small packets
    came close together: Settings.batch_window), as the worker last said.
    ``unheard`` counts the outputs published while no subscriber of the data forwarder had
    subscribed to their topic, and so not sent to it: a forwarder in the com's process tells
    (:mod:`heron_remote.forwarders_subscriptions`); a Source's own ``frames()`` takes them in-process.
    ``clock_offset_s`` is the worker's clock minus the com's, as the heartbeat measures it (None
    until enough pulses were answered), ``clock_rtt_s`` the round trip of the pulse it comes from.
    """

    received: int = 0
    lost: int = 0
    published: int = 0
    unheard: int = 0
    ignored: int = 0
    malformed: int = 0
    rejected: int = 0
    worker_rejected: int = 0
    worker_refused: int = 0
    bytes_received: int = 0
    packed_bytes: int = 0
    unpacked_bytes: int = 0
    shared_bytes: int = 0
    worker_ring_bypassed: int = 0
    worker_ring_renewed: int = 0
    worker_packets: int = 0
    worker_messages: int = 0
    clock_offset_s: float | None = None
    clock_rtt_s: float | None = None
    liveness_seen: int = 0
    heartbeat_rtt_s: float | None = None
    worker_pid: int | None = None
    last_error: str | None = None
    #: "starting", "running", "stalled", "lost", "restarting", "stopped" or "failed".
    state: str = "starting"
    restarts: int = 0
    skipped: int = 0
    down_s: float = 0.0
    stalled_since: float | None = None
    stalls: int = 0
    #: How the com reaches its worker (WorkerLauncher.transport): "local", "tunnel", "direct", ...
    transport: str = "local"

    def relay_counters(self) -> dict[str, int]:
        """The counters a relay keeps (RELAY_COUNTERS), for a relay in another process to go on with
        or to report back (:mod:`heron_remote.relay_host`)."""
        return {name: getattr(self, name) for name in RELAY_COUNTERS}

    def take_relay_counters(self, counters: Mapping[str, object]) -> None:
        """Take the relay counters in ``counters`` (others are no relay's; ValueError or TypeError
        when one is no integer)."""
        for name in RELAY_COUNTERS:
            if name in counters:
                setattr(self, name, int(counters[name]))  # type: ignore[call-overload]

    @property
    def compression_ratio(self) -> float | None:
        """Bytes unpacked per byte that came packed; None before anything came packed."""
        return self.unpacked_bytes / self.packed_bytes if self.packed_bytes else None

    @property
    def bytes_unpacked(self) -> int:
        """Payload bytes received, counted unpacked: what the com publishes per sending topic."""
        return self.bytes_received - self.packed_bytes + self.unpacked_bytes

    @property
    def gaps(self) -> int:
        """Indices downstream never sees: lost, malformed, or skipped at a restart."""
        return self.lost + self.malformed + self.skipped

    def stalled_for(self, now: float | None = None) -> float | None:
        """Seconds the stream has been stalled, or None while it flows."""
        since = self.stalled_since
        if since is None:
            return None
        return (time.monotonic() if now is None else now) - since


class RateMeter:
    """Frames/s and bytes/s over about the last ``window`` seconds, from samples the com's loop takes.

    The first sample is taken when the first frame has come, so that a rate read soon after
    the stream starts covers the time since its first frame (not since the com started).
    Samples are added by one thread; :meth:`rates` may be read from any.
    """

    def __init__(self, window: float = 2.0, every: float = 0.25) -> None:
        self._window = window
        self._every = every
        self._samples: deque[tuple[float, int, int]] = deque()

    def sample(self, received: int, nbytes: int, now: float | None = None) -> None:
        """Note the counters now (kept about every ``every`` s, once frames have come)."""
        if received == 0:
            return
        now = time.monotonic() if now is None else now
        samples = self._samples
        if samples and now - samples[-1][0] < self._every:
            return
        samples.append((now, received, nbytes))
        # The base is the newest sample at least a window old (or the first): never fewer than one.
        while len(samples) > 1 and samples[1][0] <= now - self._window:
            samples.popleft()

    def rates(self, received: int, nbytes: int, now: float | None = None) -> tuple[float, float]:
        """(frames/s, bytes/s) from the oldest sample kept to these counters now; zeros before any frame."""
        samples = self._samples
        if not samples:
            return 0.0, 0.0
        then, base_received, base_bytes = samples[0]
        elapsed = (time.monotonic() if now is None else now) - then
        if elapsed <= 0:
            return 0.0, 0.0
        return (received - base_received) / elapsed, (nbytes - base_bytes) / elapsed
