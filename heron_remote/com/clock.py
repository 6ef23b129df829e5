"""The worker's clock offset from the com's, estimated from the heartbeat (NTP-style). Pure: no sockets.

Each pulse the com sends carries its send time ``t1`` (com clock); the worker's answer carries
when the pulse came, ``t2``, and when the answer left, ``t3`` (worker clock); the com notes its
arrival, ``t4``. Then ``offset = ((t2 - t1) + (t3 - t4)) / 2`` and ``round trip = (t4 - t1) -
(t3 - t2)``. A sample is off by at most half its round trip, and a delay on one way only (a
busy interpreter, a queue) shows as a longer round trip; so the estimate is the offset of the
sample with the shortest round trip among the last :data:`WINDOW`, once :data:`MIN_SAMPLES` came.
"""

from __future__ import annotations

from collections import deque

__all__ = ["MIN_SAMPLES", "WINDOW", "ClockEstimate"]

#: Samples the estimate chooses from (one per heartbeat: 16 s at the default rate).
WINDOW = 16
#: Samples needed before there is an estimate at all.
MIN_SAMPLES = 4


class ClockEstimate:
    """The offset (worker clock minus com clock) and round trip of the best recent sample."""

    def __init__(self) -> None:
        self._samples: deque[tuple[int, int]] = deque(maxlen=WINDOW)  # (round trip, offset), ns

    def add(self, t1: int, t2: int, t3: int, t4: int) -> bool:
        """Take one exchange's four times (ns); False (not kept) when they cannot be one."""
        rtt = (t4 - t1) - (t3 - t2)
        if rtt < 0 or t4 < t1 or t3 < t2:
            return False
        self._samples.append((rtt, ((t2 - t1) + (t3 - t4)) // 2))
        return True

    def reset(self) -> None:
        """Forget every sample (another worker, maybe on another PC)."""
        self._samples.clear()

    @property
    def samples(self) -> int:
        return len(self._samples)

    def best(self) -> tuple[float, float] | None:
        """(offset, round trip) in seconds, or None before MIN_SAMPLES samples."""
        if len(self._samples) < MIN_SAMPLES:
            return None
        rtt, offset = min(self._samples)
        return offset / 1e9, rtt / 1e9
