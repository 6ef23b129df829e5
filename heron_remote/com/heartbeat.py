"""The com's heartbeat: a PULSE to the worker every ``heartbeat_rate`` seconds, from a thread of its own."""

from __future__ import annotations

import logging
import threading

import zmq

from .._protocol import pulse
from .._threads import KeptThread
from ..errors import HeronRemoteError

__all__ = ["Heartbeat", "back_off"]


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
        self._target: str | None = None
        self._thread: KeptThread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = KeptThread.start_new(self._loop, name="heron-com-heartbeat")

    def run(self) -> None:
        """Pulse from the calling thread until the com stops (Heron's ``heartbeat_loop``)."""
        self._loop()

    def aim(self, endpoint: str) -> None:
        """Pulse the worker at ``endpoint`` from now on."""
        self._target = endpoint

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

    def _loop(self) -> None:
        sock: zmq.Socket | None = None
        target: str | None = None
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
                    sock.connect(target)
                if sock is not None:
                    try:
                        sock.send_multipart(pulse(), zmq.NOBLOCK)
                    except zmq.Again:
                        pass  # the pipe is full or not up yet: a late pulse is useless, drop it
                self._stopping.wait(self._rate if sock is not None else 0.02)
        except BaseException:
            self._log.exception("the heartbeat thread failed")
            raise
        finally:
            if sock is not None:
                sock.close()
