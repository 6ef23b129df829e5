"""The com's heartbeat: a PULSE to the worker every ``heartbeat_rate`` seconds, from a thread of its own.

The same thread times the worker's answer to each pulse on a liveness socket of its own, for
the estimate of the worker's clock offset (:mod:`.clock`): the com's loop looks at its liveness
socket only every few milliseconds, which would blur the round trip.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import NamedTuple

import zmq

from .._linkkeys import LinkKeys
from .._protocol import parse_liveness, pulse
from .._threads import KeptThread
from ..errors import DecodeError, HeronRemoteError
from .clock import ClockEstimate
from .stats import ComStats

__all__ = ["Heartbeat", "back_off"]

#: Seconds between checks for a stop while waiting for the next pulse.
_STOP_CHECK_S = 0.05
#: Seconds the thread waits for the worker's answer to a pulse, at most, and in slices of.
_ANSWER_WAIT_S = 0.5
_ANSWER_SLICE_MS = 10


class _Target(NamedTuple):
    """Where the heartbeat thread points: the worker's heartbeat port, its liveness port (to time
    the answers; None: no timing) and the launch's keys, which every socket there must present."""

    endpoint: str
    liveness: str | None
    keys: LinkKeys


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
        self,
        context: zmq.Context,
        rate: float,
        stopping: threading.Event,
        log: logging.LoggerAdapter,
        *,
        stats: ComStats | None = None,
    ) -> None:
        self._context = context
        self._rate = rate
        self._stopping = stopping
        self._log = log
        self._stats = stats
        #: The worker's clock offset, from the answers to the pulses.
        self.clock = ClockEstimate()
        self._target: _Target | None = None
        self._thread: KeptThread | None = None
        self._answer: int | None = None
        self._wake = threading.Event()

    def start(self) -> None:
        if self._thread is None:
            self._thread = KeptThread.start_new(self._loop, name="heron-com-heartbeat")

    def run(self) -> None:
        """Pulse from the calling thread until the com stops (Heron's ``heartbeat_loop``)."""
        self._loop()

    def aim(self, endpoint: str, keys: LinkKeys, *, liveness: str | None = None) -> None:
        """Pulse the worker at ``endpoint`` from now on and time its answers on ``liveness``;
        every socket this thread points at the worker presents ``keys``."""
        self._target = _Target(endpoint, liveness, keys)  # one assignment: the thread sees all or nothing

    def forget(self) -> None:
        """Point at no worker: a gone worker's ports may soon be another program's, which must get
        no connection from this thread (nor the gone launch's key, nor a say in the clock estimate)."""
        self._target = None
        self._wake.set()

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
        timing: zmq.Socket | None = None
        target: _Target | None = None
        try:
            while not self._stopping.is_set():
                wanted = self._target
                if wanted != target:
                    for old in (sock, timing):
                        if old is not None:
                            old.close()
                    sock = timing = None
                    target = wanted
                if target is not None and sock is None:
                    sock = self._context.socket(zmq.PUSH)
                    sock.linger = 0
                    sock.sndhwm = 1
                    back_off(sock)
                    target.keys.apply_client(sock)
                    sock.connect(target.endpoint)
                    timing = self._timing_socket(target)
                started = time.monotonic()
                if sock is not None:
                    answer, self._answer = self._answer, None
                    frames = pulse(answer)
                    try:
                        sock.send_multipart(frames, zmq.NOBLOCK)
                    except zmq.Again:
                        pass  # the pipe is full or not up yet: a late pulse is useless, drop it
                    else:
                        if timing is not None:
                            self._time_answer(timing, int(frames[1]), started + min(self._rate, _ANSWER_WAIT_S))
                wait = self._rate - (time.monotonic() - started) if sock is not None else 0.02
                self._pause(max(wait, 0.0))
        except BaseException:
            self._log.exception("the heartbeat thread failed")
            raise
        finally:
            for old in (sock, timing):
                if old is not None:
                    old.close()

    def _timing_socket(self, target: _Target) -> zmq.Socket | None:
        """A socket of this thread's own on the worker's liveness port, with the launch's keys (the
        worker refuses it without them); the estimate starts anew."""
        self.clock.reset()
        if self._stats is not None:
            self._stats.clock_offset_s = self._stats.clock_rtt_s = None
        if target.liveness is None:
            return None
        timing = self._context.socket(zmq.SUB)
        timing.linger = 0
        timing.subscribe(b"")
        back_off(timing)
        target.keys.apply_client(timing)
        timing.connect(target.liveness)
        return timing

    def _time_answer(self, timing: zmq.Socket, sent_ns: int, until: float) -> None:
        """Wait (until ``until``, monotonic) for the answer to the pulse sent at ``sent_ns`` and take
        its times into the estimate. Beacons that answer nothing just now are passed over."""
        while not self._stopping.is_set() and not self._wake.is_set():
            left = until - time.monotonic()
            if left <= 0:
                return
            if not timing.poll(min(_ANSWER_SLICE_MS, int(left * 1000) + 1)):
                continue
            frames = timing.recv_multipart(zmq.NOBLOCK)
            arrived = time.time_ns()
            try:
                body = parse_liveness(frames)
            except DecodeError:
                continue  # the com's loop counts those, on its own liveness socket
            if body.get("echo_ns") != sent_ns:
                continue
            received, left_at = body.get("rx_ns"), body.get("tx_ns")
            if type(received) is int and type(left_at) is int and self.clock.add(sent_ns, received, left_at, arrived):
                best = self.clock.best()
                if best is not None and self._stats is not None:
                    self._stats.clock_offset_s, self._stats.clock_rtt_s = best
            return
