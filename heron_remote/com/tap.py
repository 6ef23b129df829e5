"""What a com publishes, handed to a :class:`~heron_remote.Source`'s reader in the same process.

A Source's ``frames()`` read back, through the data forwarder, what its own com had just
published: five ZeroMQ frames received per message, each receive giving the com's thread the
interpreter lock and taking it back. With a :class:`FrameTap` the relay also appends each
published output to a bounded queue that ``frames()`` reads: no socket and no copy, and a
wake-up only when the reader waits. The com still publishes everything on the forwarders, for
every other subscriber.

The queue is bounded (:data:`TAP_MESSAGES`, :data:`TAP_BYTES`): a reader that falls behind loses
the newest outputs, as a ZeroMQ subscriber would. They are counted (``dropped``), and the reader
sees their indices missing and counts them as gaps.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, NamedTuple

__all__ = ["TAP_BYTES", "TAP_MESSAGES", "FrameTap", "Tapped"]

#: Outputs the queue holds at most. A Source beside its forwarders reads only this queue (it does not
#: subscribe), so it holds what a subscriber's queue and the forwarder's together held before.
TAP_MESSAGES = 4000
#: And about this many bytes of payload (judged by the size of the packet being added).
TAP_BYTES = 256 * 1024 * 1024
#: Outputs queued before put() wakes a waiting reader; otherwise the relay wakes it when it has
#: no packet left to relay: one wake-up per burst of packets, not one per packet.
WAKE_AT = 32


class Tapped(NamedTuple):
    """One published output as the relay published it (its metadata without the capture time)."""

    topic: bytes
    index: int  # type: ignore[assignment]  # the wire's name; tuple.index stays reachable as tuple.index
    time_us: int
    captured_us: int | None
    meta: bytes
    payload: Any


class FrameTap:
    """A bounded hand-off of published outputs from one relay thread to one reader thread at a time."""

    def __init__(self) -> None:
        self._items: deque[Tapped] = deque()
        # A lock used as a signal: held while the reader may wait, released by put() when it does.
        # Cheaper per wake-up than an Event's condition variable.
        self._wake = threading.Lock()
        self._wake.acquire()
        self._waiting = False
        #: Set by the relay's first put(): the com relays in this process (it may start elsewhere).
        self.live = False
        #: Outputs not queued because the reader was too far behind.
        self.dropped = 0

    def put(self, item: Tapped, nbytes: int) -> None:
        """Queue ``item`` (its packet had ``nbytes`` of payload) for the reader; drop it if the queue is full."""
        self.live = True
        items = self._items
        if len(items) >= TAP_MESSAGES or len(items) * nbytes >= TAP_BYTES:
            self.dropped += 1
            return
        items.append(item)
        if len(items) >= WAKE_AT:
            self.wake()

    def wake(self) -> None:
        """Wake the reader if it waits (the relay calls this before it waits for packets itself)."""
        if self._waiting:
            self._waiting = False
            try:
                self._wake.release()
            except RuntimeError:  # released already: the reader has not taken the last wake-up yet
                pass

    def get(self, timeout: float) -> Tapped | None:
        """The oldest queued output, waiting up to ``timeout`` seconds for one; None if none came."""
        items = self._items
        if items:
            return items.popleft()
        deadline = time.monotonic() + timeout
        while True:
            self._waiting = True
            # put() may come between the look above and the flag: then it saw no one waiting.
            if not items:
                left = deadline - time.monotonic()
                if left > 0:
                    self._wake.acquire(timeout=left)
            self._waiting = False
            if items:
                return items.popleft()
            if time.monotonic() >= deadline:
                return None
            # A wake-up left from before (put() woke a reader that then found its item without
            # waiting) was taken at once: wait again for the rest of the time.

    def __len__(self) -> int:
        return len(self._items)
