"""Small packets sent close together travel to the com as one ZeroMQ message.

Each message a worker sends costs a wake-up of ZeroMQ's I/O thread and a system call on both
sides, and the com a receive per frame: at 64 bytes a packet that, not the bytes, is the cost
(measured: see README, "Performance"). A packet that follows the previous message within
:data:`BATCH_WINDOW_S` is therefore held back, and the packets after it join it, up to
:data:`BATCH_PACKETS` or :data:`BATCH_BYTES`, in one multipart message that is sent when it is
full or :data:`BATCH_WINDOW_S` after it began. A packet that comes alone goes at once, as before.

The com reads a packet's frames one by one whatever message they came in, so a batch needs
nothing on its side: it is the worker's packets back to back, each with its own number.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import zmq

from .._threads import KeptThread
from ..settings import DEFAULT_BATCH_WINDOW
from ..wire import send_packet

__all__ = ["BATCH_BYTES", "BATCH_PACKETS", "BATCH_WINDOW_S", "SMALL_BYTES", "Batcher"]

logger = logging.getLogger(__name__)

#: A packet sent within this time of the previous message waits, at most this long, for others
#: (Settings.batch_window).
BATCH_WINDOW_S = DEFAULT_BATCH_WINDOW
#: A batch is sent once it holds this many packets...
BATCH_PACKETS = 64
#: ...or this many bytes of payload.
BATCH_BYTES = 64 * 1024
#: Packets with more payload than this end a batch (or go alone): their bytes are their cost.
SMALL_BYTES = 8 * 1024


class Batcher:
    """Sends a worker's packets on ``sock``, small ones close together as one message.

    Every method is called with ``lock`` held (the worker's send lock); a thread of its own sends
    a batch whose window ended.
    """

    def __init__(self, sock: zmq.Socket, lock: threading.Lock, *, window_s: float = BATCH_WINDOW_S) -> None:
        self._sock = sock
        self._window_s = window_s
        self._due = threading.Condition(lock)
        #: The batch's last packet, sent when it is known whether another follows.
        self._held: tuple[int, Sequence[Any], bool, int | None] | None = None
        self._deadline = 0.0  # when the open batch is sent; 0: none is open
        self._packets = 0
        self._bytes = 0
        self._last_sent = -1.0
        self._closed = False
        self._thread: KeptThread | None = None
        #: Messages sent, and packets in them (their ratio: the batching achieved).
        self.messages = 0
        self.packets = 0

    def send(self, number: int, frames: Sequence[Any], *, copy: bool, captured_us: int | None, size: int) -> None:
        """Send packet ``number`` (``size`` bytes of payload), now or with the packets that follow it."""
        now = time.monotonic()
        self.packets += 1
        if self._held is not None:
            self._send_held(more=True)
        deadline = self._deadline
        # A batch whose window has ended (its thread waits for the lock) ends with this packet.
        joins = now < deadline if deadline else now - self._last_sent < self._window_s
        if size <= SMALL_BYTES and joins:
            if not deadline:
                self._deadline = now + self._window_s
                self._packets = self._bytes = 0
                self._start()
                self._due.notify()
            self._packets += 1
            self._bytes += size
            if self._packets < BATCH_PACKETS and self._bytes < BATCH_BYTES:
                self._held = (number, frames, copy, captured_us)
                return
        send_packet(self._sock, number, frames, copy=copy, captured_us=captured_us)
        self._ended(now)

    def flush(self) -> None:
        """Send the open batch now."""
        if self._held is not None:
            self._send_held(more=False)
            self._ended(time.monotonic())

    def _send_held(self, *, more: bool) -> None:
        number, frames, copy, captured_us = self._held  # type: ignore[misc]
        self._held = None
        send_packet(self._sock, number, frames, copy=copy, captured_us=captured_us, more=more)

    def close(self) -> None:
        """Send what waits and stop the thread. Called with the lock held; idempotent."""
        self.flush()
        self._closed = True
        self._due.notify()

    def _ended(self, now: float) -> None:
        self._deadline = 0.0
        self._last_sent = now
        self.messages += 1

    def _start(self) -> None:
        if self._thread is None:
            self._thread = KeptThread.start_new(self._run, name="heron-worker-batches")

    def _run(self) -> None:
        due = self._due
        with due:
            while not self._closed:
                if not self._deadline:
                    due.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    due.wait(left)
                    continue
                self.flush()
