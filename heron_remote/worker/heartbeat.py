"""The worker's side of the heartbeat: pulses in, liveness beacons out, death after the window."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import zmq

from .._drops import Drops
from .._protocol import EXIT_NO_HEARTBEAT, liveness, parse_pulse
from ..errors import DecodeError
from ..wire.bounded import PULSE_MAX_BYTES
from . import clock

__all__ = ["WorkerHeartbeat"]


#: Seconds between a worker's probes while it waits for its com to answer one.
PROBE_EVERY_S = 0.05


class WorkerHeartbeat:
    """Answers each pulse with a beacon (the com measures the round trip), beacons every
    ``rate`` seconds, and ends the worker when no pulse came for ``rate * beats_to_death``.

    :meth:`probe` asks the com to answer at once: a worker whose SSH session closed learns
    within ``session_grace`` whether its com still lives (the answer echoes the probe, so a
    pulse already on its way when the com died cannot pass for one).

    Anyone on the PC can write to the pulse port: what is not a pulse is dropped and counted in
    ``drops``, whose count each beacon carries to the com.
    """

    def __init__(
        self,
        rate: float,
        beats_to_death: int,
        bind: Callable[[zmq.Socket, str], None],
        die: Callable[[str, int], object],
        drops: Drops,
    ) -> None:
        self._rate = rate
        self._drops = drops
        self._beats_to_death = beats_to_death
        self._bind = bind
        self._die = die
        self._error: str | None = None
        self._now = threading.Event()
        #: Connections the worker refused for want of its com's key, for the beacons.
        self.refused: Callable[[], int] = lambda: 0
        #: The shared-memory ring's (bypassed, renewed) counts, for the beacons; None without a ring.
        self.ring_counts: Callable[[], tuple[int, int] | None] = lambda: None
        #: The packets sent and the messages they went in, for the beacons; None before the data socket.
        self.sent_counts: Callable[[], tuple[int, int] | None] = lambda: None
        #: Called on every pulse (the start record's live file takes its time).
        self.on_pulse: Callable[[], object] = lambda: None
        self._probe: tuple[int, float, Callable[[], object]] | None = None
        self._probes = 0
        self._probe_lock = threading.Lock()
        self._last_pulse = time.monotonic()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def last_pulse(self) -> float:
        """``time.monotonic()`` of the last pulse (or of the start)."""
        return self._last_pulse

    def probe(self, timeout: float, unanswered: Callable[[], object]) -> None:
        """Ask the com to answer within ``timeout`` s; else call ``unanswered`` (in the heartbeat thread)."""
        with self._probe_lock:
            self._probes += 1
            self._probe = (self._probes, time.monotonic() + timeout, unanswered)
        self._now.set()

    def report(self, error: str) -> None:
        """Tell the com, with the next beacon (sent at once), what went wrong in the worker."""
        self._error = error
        self._now.set()

    def run(self, context: zmq.Context) -> None:
        pulses = context.socket(zmq.PULL)
        pulses.linger = 0
        pulses.maxmsgsize = PULSE_MAX_BYTES  # per frame: ZeroMQ drops a link that sends more
        beacon = context.socket(zmq.PUB)
        beacon.linger = 0
        self._bind(pulses, "heartbeat")
        self._bind(beacon, "liveness")
        window = self._rate * self._beats_to_death
        pid, seq, echo, received = os.getpid(), 0, 0, 0
        self._last_pulse = time.monotonic()
        next_beacon = self._last_pulse
        connected = False
        while True:
            probe = self._probe
            wait = min(next_beacon, self._last_pulse + window) - time.monotonic()
            if self._now.is_set():
                self._now.clear()
                next_beacon, wait = time.monotonic(), 0
            if pulses.poll(max(0, int(wait * 1000) + 1)):
                frames = pulses.recv_multipart()
                at = clock.now_ns()  # when it came, for the com's estimate of this clock's offset
                sent = self._pulse_in(frames, probe)
                if sent is not None:
                    echo, received, connected = sent, at, True
                    next_beacon = self._last_pulse  # answer at once: the com measures the round trip
            now = time.monotonic()
            if now - self._last_pulse > window:
                self._die(
                    f"no heartbeat from the com for {window:g} s ({self._beats_to_death} beats): ending",
                    EXIT_NO_HEARTBEAT,
                )
            probe = self._probe
            if probe is not None and now > probe[1]:
                self._probe = None
                probe[2]()
            if now >= next_beacon:
                seq += 1
                error, self._error = self._error, None
                asking = probe[0] if probe is not None else None
                try:
                    times = (received, clock.now_ns())
                    message = liveness(
                        pid,
                        seq,
                        echo,
                        error,
                        self._drops.count,
                        asking,
                        self.refused(),
                        times=times,
                        ring=self.ring_counts(),
                        sent=self.sent_counts(),
                    )
                    beacon.send_multipart(message, zmq.NOBLOCK)
                except zmq.Again:
                    self._error = self._error or error  # goes with the next beacon
                every = self._rate if connected else min(0.1, self._rate)
                next_beacon = now + (PROBE_EVERY_S if self._probe is not None else every)

    def _pulse_in(self, frames: list[bytes], probe: tuple[int, float, Callable[[], object]] | None) -> int | None:
        """The send time of a pulse; None (counted) for a message that is not one."""
        try:
            sent, answer = parse_pulse(frames)
        except DecodeError as exc:
            self._drops(exc)
            return None
        self._last_pulse = time.monotonic()
        self.on_pulse()
        if probe is not None and answer == probe[0]:
            with self._probe_lock:
                if self._probe is probe:
                    self._probe = None
        return sent
