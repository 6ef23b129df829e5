"""The com's heartbeat: a PULSE to the worker every ``heartbeat_rate`` seconds, from a thread of its own."""

from __future__ import annotations

import logging
import threading
import time

import zmq

from .._linkkeys import LinkKeys
from .._protocol import pulse
from .._threads import KeptThread
from ..errors import HeronRemoteError

__all__ = ["Heartbeat", "back_off"]

#: Seconds between checks for a stop while waiting for the next pulse.
_STOP_CHECK_S = 0.05


def back_off(sock: zmq.Socket) -> None:
    """Reconnect to a worker that is gone with a growing interval, not ten times a second."""
    sock.reconnect_ivl = 100
    sock.reconnect_ivl_max = 2000


class Heartbeat:
    """Pulses whatever worker endpoint it is aimed at, until ``stopping`` is set.

    Its socket is made in its own thread (ZeroMQ sockets stay in one thread); :meth:`aim`
    points it at a new worker after a restart. A failure of the thread is kept in
    :attr:`error` for the com to report.
    """

    def __init__(
        self, context: zmq.Context, rate: float, stopping: threading.Event, log: logging.LoggerAdapter
    ) -> None:
        self._context = context
        self._rate = rate
        self._stopping = stopping
        self._log = log
        self._target: tuple[str, LinkKeys] | None = None
        self._thread: KeptThread | None = None
        self._answer: int | None = None
        self._wake = threading.Event()

    def start(self) -> None:
        if self._thread is None:
            self._thread = KeptThread.start_new(self._loop, name="heron-com-heartbeat")

    def run(self) -> None:
        """Pulse from the calling thread until the com stops (Heron's ``heartbeat_loop``)."""
        self._loop()

    def aim(self, endpoint: str, keys: LinkKeys) -> None:
        """Pulse the worker at ``endpoint``, which takes ``keys``, from now on."""
        self._target = (endpoint, keys)

    def answer(self, probe: int) -> None:
        """Pulse at once, echoing the worker's ``probe``: it asked whether this com still lives."""
        self._answer = probe
        self._wake.set()

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> HeronRemoteError | None:
        """Why the heartbeat thread died, if it did."""
        thread = self._thread
        if thread is None or thread.error is None:
            return None
        return HeronRemoteError(f"the com's heartbeat thread failed: {thread.error!r}")

    def join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _pause(self, seconds: float) -> None:
        """Wait until the next pulse is due, an answer is asked for, or the com stops."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._wake.wait(min(left, _STOP_CHECK_S)):
                break
        self._wake.clear()

    def _loop(self) -> None:
        sock: zmq.Socket | None = None
        target: tuple[str, LinkKeys] | None = None
        try:
            while not self._stopping.is_set():
                wanted = self._target
                if wanted is not None and wanted != target:
                    if sock is not None:
                        sock.close()
                    target = wanted
                    sock = self._context.socket(zmq.PUSH)
                    sock.linger = 0
                    sock.sndhwm = 1
                    back_off(sock)
                    endpoint, keys = target
                    keys.apply_client(sock)
                    sock.connect(endpoint)
                if sock is not None:
                    answer, self._answer = self._answer, None
                    try:
                        sock.send_multipart(pulse(answer), zmq.NOBLOCK)
                    except zmq.Again:
                        pass  # the pipe is full or not up yet: a late pulse is useless, drop it
                self._pause(self._rate if sock is not None else 0.02)
        except BaseException:
            self._log.exception("the heartbeat thread failed")
            raise
        finally:
            if sock is not None:
                sock.close()
