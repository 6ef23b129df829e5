"""The worker's wall clock, read in one place: packets' capture times and the heartbeat's time stamps.

The com estimates this clock's offset from its own over the heartbeat (NTP-style) and
publishes capture times in the rig's clock.
"""

from __future__ import annotations

import time

__all__ = ["now_ns", "offset_ns"]

#: For tests only: added to every reading, so that a test worker plays a PC whose clock is off.
#: A test worker script sets it before it starts; nothing else does.
offset_ns = 0


def now_ns() -> int:
    """This PC's wall-clock time in nanoseconds (``time.time_ns()``)."""
    return time.time_ns() + offset_ns
