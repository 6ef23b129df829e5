"""The com's data path: worker packets checked, numbered, unpacked, stamped and published on their topics."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import zmq

from .._protocol import DATA_HWM
from .._ring import RingTap
from .._verbosity import PacketLog, PacketTimer
from ..compression import unpack
from ..errors import ConfigError, DecodeError
from ..forwarders_subscriptions import Subscriptions
from ..wire import (
    PacketError,
    packet_captured,
    packet_length,
    packet_number,
    parse_meta,
    parse_packet,
    payload_slots,
    publish,
    recv_message,
    resync,
    with_captured,
)
from .publisher import KEEP_S, keep_sending
from .sequence import PacketSequence
from .stats import ComStats
from .tap import FrameTap, Tapped

__all__ = ["Relay", "route_topics"]

#: Packets a com's publisher queues for the data forwarder.
PUBLISH_SNDHWM = 200
_time_ns = time.time_ns
_KEEP_US = round(KEEP_S * 1e6)
#: Malformed packets logged one by one before only every 1000th is.
_MALFORMED_LOGGED = 5


def route_topics(sending_topics: Sequence[str], outputs: Sequence[str]) -> list[tuple[bytes, int]]:
    """Which output each sending topic carries: Heron matches the output's name in the topic."""
    routes = []
    for topic in sending_topics:
        head = topic.split("##")[0]
        match = [k for k, name in enumerate(outputs) if name.replace(" ", "_") in head]
        if not match and len(outputs) > 1:
            raise ConfigError(
                f"sending topic {topic!r} names none of the outputs {list(outputs)}: a topic starts "
                "with the name of the output it carries"
            )
        try:
            routes.append((topic.encode("ascii"), match[0] if match else 0))
        except UnicodeEncodeError as exc:
            raise ConfigError(f"sending topic {topic!r} must be ASCII") from exc
    return routes


class Relay:
    """Relays a worker's packets to the data forwarder, in the thread that owns the sockets.

    Each packet is checked against the wire format, numbered (:class:`PacketSequence`),
    its packed outputs unpacked (:mod:`heron_remote.compression`), stamped with the com's time
    (and, once the worker's clock offset is known, its capture time in the com's clock) and
    published once per sending topic of its output. A malformed packet is dropped and counted;
    the com's queue from the worker is sized by the packets' bytes.
    """

    #: Where packets are published; set by attach(), before the first packet.
    _publish: zmq.Socket

    def __init__(
        self,
        routes: list[tuple[bytes, int]],
        outputs: int,
        stats: ComStats,
        log: logging.LoggerAdapter,
        *,
        verbose: int | str = 0,
    ) -> None:
        self.routes = routes
        self.stats = stats
        self.log = log
        self.sequence = PacketSequence(on_jump=self._jumped)
        self._frames = packet_length(outputs)
        self._outputs = range(outputs)
        self._slots = payload_slots(outputs)
        self._verbose = verbose
        self._packet_log: PacketLog | None = None
        self._packet_timer: PacketTimer | None = None
        self._data: zmq.Socket | None = None
        self._warned_malformed = 0
        #: When the publisher is next read for what its connections said (com/publisher.py).
        self._keep_at_us = 0
        #: The worker's clock offset last seen, and it in whole microseconds.
        self._offset_s = 0.0
        self._offset_us = 0
        #: Threads blosc2 unpacks with (the compression's, when the com knows it).
        self.unpack_threads = 1
        #: The shared-memory ring of the local worker relayed from, if it has one (:mod:`.._ring`).
        self.ring: RingTap | None = None
        #: Where a Source in this process reads what is published (:mod:`.tap`), if one does.
        self.tap: FrameTap | None = None
        #: What the forwarder's subscribers want, when the forwarder runs in this process.
        self._listeners: Subscriptions | None = None
        self._heard_version = -1
        self._heard = [True] * len(routes)

    @property
    def index(self) -> int:
        """The index of the last packet relayed (0 before the first)."""
        return self.sequence.index

    @property
    def data_hwm(self) -> int:
        """How many messages the com's queue from its worker holds (DATA_HWM, never changed mid-stream)."""
        return DATA_HWM

    def attach(self, data: zmq.Socket, publish_to: zmq.Socket, listeners: Subscriptions | None = None) -> None:
        """Relay from ``data`` (the worker's packets) to ``publish_to`` (the data forwarder); with
        ``listeners`` (a forwarder in this process), only the topics its subscribers want."""
        self._data, self._publish = data, publish_to
        self._listeners = listeners
        data.rcvhwm = DATA_HWM
        if isinstance(self._verbose, str):
            self._packet_log = PacketLog(self._verbose)
        elif self._verbose > 0:
            self._packet_timer = PacketTimer(self.log)

    def keep_sending(self) -> None:
        """Read what the data forwarder passed on to the publisher (see :mod:`.publisher`)."""
        keep_sending(self._publish)

    def read_ring_of(self, endpoint: str | None) -> None:
        """The worker at ``endpoint`` is the one relayed from now (None: none): its ring, if it has one."""
        self.ring = RingTap.of(endpoint)

    def restarted(self) -> None:
        """The next packet comes from a new worker: its index skips one (a gap every subscriber sees)."""
        self.sequence.new_worker()
        self.stats.skipped = self.sequence.skipped

    def close(self) -> None:
        self.ring = None  # the mapping goes once the frames published from it are freed
        if self._packet_log is not None:
            self._packet_log.close()

    def relay(self, msg: list[Any]) -> bool:
        """Publish one worker packet ``[number] + [metadata, payload] * outputs``; False if malformed.

        The hot path of small packets (measured: see README, "Performance"): keep it lean.
        """
        stats = self.stats
        stats.received += 1
        try:
            shared = self._from_ring(msg) if self.ring is not None else 0
            number, publish_flags, size = parse_packet(msg, self._frames)
            index = self.sequence.advance(number)
        except PacketError as exc:
            self._numbered(exc.number)
            self._malformed(exc)
            return False
        except DecodeError as exc:  # a number no worker sends
            self._malformed(exc)
            return False
        stats.bytes_received += size
        stats.shared_bytes += shared
        time_us = _time_ns() // 1000
        if not 0 < self._keep_at_us - time_us <= _KEEP_US:  # due (or the clock went back)
            # Before publishing: a new connection to the forwarder gets nothing until this has run.
            keep_sending(self._publish)
            self._keep_at_us = time_us + _KEEP_US
        index_b = b"%d" % index
        time_b = b"%d" % time_us
        for k in self._outputs:
            if publish_flags[k] and parse_meta(msg[1 + 2 * k]).packed:  # cached: cheaper than a substring test
                try:  # every output before any is published: a bad one drops the whole packet
                    self._unpack(msg, k)
                except DecodeError as exc:
                    self._malformed(exc)
                    return False
        # The capture time in the com's clock, when the worker's offset is known (and the time is later).
        captured = None
        offset = stats.clock_offset_s
        if offset is not None:
            if offset != self._offset_s:  # it changes with a heartbeat, not with a packet
                self._offset_s, self._offset_us = offset, round(offset * 1e6)
            stamp = packet_captured(msg[0])
            if stamp is not None and stamp > self._offset_us:
                captured = stamp - self._offset_us
        pub = self._publish
        tap = self.tap
        listeners = self._listeners
        if listeners is not None and listeners.version != self._heard_version:
            self._heard_version = listeners.version  # first: a change while asking is seen next time
            self._heard = listeners.heard([topic for topic, _ in self.routes])
        for (topic, k), heard in zip(self.routes, self._heard, strict=True):
            if publish_flags[k]:
                plain = meta = msg[1 + 2 * k]
                if captured is not None:
                    meta = with_captured(meta, captured)
                payload = msg[2 + 2 * k]
                if heard:
                    publish(pub, topic, index_b, time_b, meta, payload)
                else:
                    stats.unheard += 1
                stats.published += 1
                if tap is not None:
                    tap.put(Tapped(topic, index, time_us, captured, plain, payload), size)
                if self._packet_timer is not None:
                    self._packet_timer.packet(topic.decode(), index, time_us)
            else:
                stats.ignored += 1
        if self._packet_log is not None:
            self._packet_log.write(index)
        return True

    def _from_ring(self, msg: list[Any]) -> int:
        """The payloads the worker left in its ring, in place of their references: their bytes; PacketError."""
        assert self.ring is not None
        try:
            return self.ring.resolve(msg, self._slots)
        except DecodeError as exc:
            try:
                number: int | None = packet_number(msg)
            except DecodeError:
                number = None
            raise PacketError(str(exc), number) from None

    def _unpack(self, msg: list[Any], k: int) -> None:
        """Unpack output ``k`` of ``msg`` in place, its metadata made plain; DecodeError when it is bad."""
        meta = parse_meta(msg[1 + 2 * k])
        payload = msg[2 + 2 * k]
        out = unpack(payload, meta.nbytes, self.unpack_threads)
        self.stats.packed_bytes += memoryview(payload).nbytes
        self.stats.unpacked_bytes += meta.nbytes
        msg[1 + 2 * k], msg[2 + 2 * k] = meta.plain, zmq.Frame(out, copy=False)

    def pump(self, until: float) -> int:
        """Relay packets until ``until`` (monotonic), or until none came for the data socket's RCVTIMEO."""
        data = self._data
        assert data is not None
        receive, relay, frames, slots = recv_message, self.relay, self._frames, self._slots
        monotonic = time.monotonic
        tap = self.tap
        n = 0
        try:
            while True:
                if tap is None:
                    msg = receive(data, frames, slots, wait=True)
                else:
                    try:
                        msg = receive(data, frames, slots)
                    except zmq.Again:
                        tap.wake()  # nothing more for now: the reader takes what was published
                        msg = receive(data, frames, slots, wait=True)
                if not relay(msg):
                    resync(data)
                n += 1
                if monotonic() >= until:
                    break
        except zmq.Again:
            pass
        if tap is not None:
            tap.wake()  # the com turns to its chores: what it published must not wait for them
        return n

    def drain(self, chores_s: float) -> None:
        """Publish what a worker that has ended sent before it ended."""
        assert self._data is not None
        while self._data.poll(100):
            self.pump(until=time.monotonic() + chores_s)

    def _jumped(self, missed: int) -> None:
        sequence = self.sequence
        if missed:
            self.stats.lost = sequence.lost
            self.log.warning(
                "%d packet(s) from the worker never reached the com (before index %d; %d in all)",
                missed,
                sequence.index,
                sequence.lost,
            )
        else:
            self.log.info("the worker numbers its packets from 1 again: the index goes on from %d", sequence.index)

    def _numbered(self, number: int | None) -> None:
        """A malformed packet that has a number: it is counted in the index, so a gap is not counted twice."""
        if number is not None:
            try:
                self.sequence.advance(number)
            except DecodeError:
                pass  # a number no worker sends: it does not count

    def _malformed(self, exc: DecodeError) -> None:
        stats = self.stats
        stats.malformed += 1
        stats.last_error = f"malformed packet {self.sequence.index}: {exc}"
        # The first few and then every 1000th, so that a broken worker cannot flood the log.
        if self._warned_malformed < _MALFORMED_LOGGED or stats.malformed % 1000 == 0:
            self._warned_malformed += 1
            self.log.warning("dropped malformed packet %d (%d so far): %s", self.sequence.index, stats.malformed, exc)
