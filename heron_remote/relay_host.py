"""Coms' data relays run inside the forwarders' process: Heron's layout with a Source's hops.

Heron's editor runs each com in a process of its own and the forwarders in another, so a frame
crossed three loopback TCP hops (worker, com, forwarders, subscriber) where a
:class:`~heron_remote.Source` makes it cross two. Forwarders on loopback therefore offer to
relay for the coms of this account: a com hands its worker's data endpoint and the launch's keys
over a ZeroMQ ``ipc://`` socket in this account's private folder (mode 0700: no other account
reaches it), and the :class:`RelayHost` thread pulls the worker's packets and publishes them on
the data forwarder in-process, with the com's own :class:`~heron_remote.com.relay.Relay`. The com
keeps all else (pulses, parameters, restarts, status) and gets the relay's counters, sequence and
log lines back in a report at least every IDLE_REPORT_S. A com whose forwarders offer nothing,
or stop reporting, relays in its own process (:mod:`heron_remote.com.hosted`).

Messages are ``[verb, JSON]``. From a com (DEALER) to the host (ROUTER): ``attach`` (endpoint,
keys, routes, outputs, threads, sequence, counters, offset: relay from this worker; again after a
restart), ``unpoint`` (the worker is gone), ``restarted``, ``offset``, ``threads``, ``drain``,
``ping`` and ``detach``. From the host: ``report``, ``drained``, and ``unknown`` to a com it
does not relay for (one silent for COM_SILENT_S), which then attaches again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from . import forwarders_hello
from ._linkkeys import LinkKeys
from ._threads import KeptThread
from .com.heartbeat import back_off
from .com.relay import PUBLISH_SNDHWM, Relay
from .com.stats import ComStats
from .errors import DecodeError, ForwarderError

__all__ = ["COUNTED", "RelayHost", "relay_path"]

logger = logging.getLogger(__name__)

#: How often a relay reports while packets flow, and at least how often when none do.
REPORT_S = 0.01
IDLE_REPORT_S = 0.2
#: A com not heard from for this long has gone (SIGKILLed, say): its relay stops.
COM_SILENT_S = 30.0
#: How long one com's packets are relayed before the others' get their turn.
_TURN_S = 0.005
_MAX_BODY = 64 * 1024
#: The com's counters the relay keeps, sent back in each report.
COUNTED = (
    "received",
    "lost",
    "published",
    "ignored",
    "malformed",
    "bytes_received",
    "packed_bytes",
    "unpacked_bytes",
    "skipped",
)


def relay_path(port: int) -> Path:
    """Where the forwarders of data submit ``port`` take coms' relays (ForwarderError if the private
    folder is not safe)."""
    return forwarders_hello.private_dir() / f"relay-{port}.sock"


class _Collected(logging.LoggerAdapter[logging.Logger]):
    """A relay's log lines, kept for its com's next report: they belong in the com's log."""

    def __init__(self) -> None:
        super().__init__(logger, {})
        self.lines: list[tuple[int, str]] = []

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if len(self.lines) < 100:  # a flood is cut: the counters say how many
            self.lines.append((level, str(msg) % args if args else str(msg)))

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


@dataclass
class _Hosted:
    """One com's relay in this process."""

    identity: bytes
    relay: Relay
    data: zmq.Socket
    publish: zmq.Socket
    log: _Collected
    heard: float
    endpoint: str = ""
    reported: float = 0.0
    pending: int = 0
    sockets: list[zmq.Socket] = field(default_factory=list)


class RelayHost:
    """Relays for coms of this account that ask, in one thread of the forwarders' process.

    ``publish`` is the data forwarder's in-process submit endpoint (on the shared context).
    """

    def __init__(self, port: int, publish: str) -> None:
        self.path = relay_path(port)
        self._publish = publish
        self._wake = f"inproc://heron-remote-relay-host-{port}-{id(self)}"
        self._error: BaseException | None = None
        self._closed = False
        self.coms = 0
        ready_error: list[BaseException] = []
        ready = threading.Event()
        self._thread = KeptThread.start_new(
            self._serve, name=f"heron-relay-host-{port}", args=(ready, ready_error), on_error=self._failed
        )
        if not ready.wait(10) or ready_error:
            self.close()
            cause = ready_error[0] if ready_error else None
            raise ForwarderError(f"the forwarders cannot offer relays at {self.path}: {cause}") from cause

    @property
    def error(self) -> BaseException | None:
        """What ended the relays' thread, if it failed (reported when it did; the forwarders go on)."""
        return self._thread.error

    def _failed(self, exc: BaseException) -> None:
        # The coms see the connection close and relay in their own processes: the forwarders
        # themselves are not at fault, so this is reported, not raised into them.
        logger.error("the forwarders' relays for other processes stopped (%r); those coms relay themselves now", exc)

    def close(self) -> None:
        """Stop every relay; their coms relay in their own processes from then on. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            wake: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PAIR)
            wake.linger = 1000
            wake.connect(self._wake)
            wake.send(b"")
            self._thread.join(5)
            wake.close()

    # -- the thread ------------------------------------------------------------------
    def _serve(self, ready: Any, ready_error: list[BaseException]) -> None:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        router = context.socket(zmq.ROUTER)
        wake = context.socket(zmq.PAIR)
        hosted: dict[bytes, _Hosted] = {}
        try:
            try:
                router.linger = wake.linger = 0
                router.maxmsgsize = _MAX_BODY
                wake.bind(self._wake)
                router.bind(f"ipc://{self.path}")
            except (zmq.ZMQError, OSError) as exc:
                ready_error.append(exc)
                return
            finally:
                ready.set()
            poller = zmq.Poller()
            poller.register(router, zmq.POLLIN)
            poller.register(wake, zmq.POLLIN)
            while True:
                events = dict(poller.poll(int(REPORT_S * 1000)))
                if wake in events:
                    return
                if router in events:
                    for _ in range(100):
                        try:
                            msg = router.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._on_message(router, msg, hosted, poller, context)
                now = time.monotonic()
                for com in list(hosted.values()):
                    if com.data in events:
                        com.pending += com.relay.pump(until=now + _TURN_S)
                    if now - com.reported >= (REPORT_S if com.pending else IDLE_REPORT_S):
                        self._report(router, com, b"report")
                    if now - com.heard > COM_SILENT_S:
                        logger.info("a com was silent for %.0f s: its relay stops", COM_SILENT_S)
                        self._drop(com, hosted, poller)
                self.coms = len(hosted)
        finally:
            for com in list(hosted.values()):
                for sock in com.sockets:
                    sock.close()
            router.close()
            wake.close()
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _on_message(
        self,
        router: zmq.Socket,
        msg: list[bytes],
        hosted: dict[bytes, _Hosted],
        poller: zmq.Poller,
        context: zmq.Context,
    ) -> None:
        if len(msg) != 3:
            return  # no com of ours sends this
        identity, verb, raw = msg
        try:
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise DecodeError("the body is no JSON object")
            if verb == b"attach":
                com = hosted.get(identity) or self._host(identity, body, context, hosted, poller)
                self._point(com, body)
                self._report(router, com, b"report")
                return
            known = hosted.get(identity)
            if known is None:
                if verb != b"detach":
                    router.send_multipart((identity, b"unknown", b"{}"))
                return
            com = known
            com.heard = time.monotonic()
            if verb == b"unpoint":
                self._unpoint(com)
            elif verb == b"restarted":
                com.relay.restarted()
            elif verb == b"offset":
                offset = body.get("offset")
                com.relay.stats.clock_offset_s = float(offset) if offset is not None else None
            elif verb == b"threads":
                com.relay.unpack_threads = max(1, int(body.get("threads", 1)))
            elif verb == b"drain":
                com.pending += com.relay.pump(until=time.monotonic() + _TURN_S) if com.endpoint else 0
                if com.endpoint:
                    com.relay.drain(_TURN_S)
                self._report(router, com, b"drained")
            elif verb == b"detach":
                self._drop(com, hosted, poller)
        except (DecodeError, ValueError, TypeError, KeyError, zmq.ZMQError) as exc:
            # Only this account's processes reach this socket: a bug, not an attack; the com's relay
            # goes on in the com when this one stops reporting.
            logger.warning("a com's %r to the relay host was not understood: %s", verb[:16], exc)

    def _host(
        self,
        identity: bytes,
        body: dict[str, Any],
        context: zmq.Context,
        hosted: dict[bytes, _Hosted],
        poller: zmq.Poller,
    ) -> _Hosted:
        routes = [(str(topic).encode("ascii"), int(k)) for topic, k in body["routes"]]
        outputs = int(body["outputs"])
        if not 1 <= outputs <= 64 or any(not 0 <= k < outputs for _, k in routes):
            raise DecodeError(f"{outputs} outputs and routes {routes!r:.80}")
        log = _Collected()
        stats = ComStats()
        for name, value in dict(body.get("counters", {})).items():
            if name in COUNTED:
                setattr(stats, name, int(value))
        relay = Relay(routes, outputs, stats, log)
        relay.sequence.restore(body["sequence"])
        relay.unpack_threads = max(1, int(body.get("threads", 1)))
        offset = body.get("offset")
        stats.clock_offset_s = float(offset) if offset is not None else None
        data = context.socket(zmq.PULL)
        publish = context.socket(zmq.PUB)
        data.linger = 0
        back_off(data)  # as the com's own data socket: a gone worker is not tried ten times a second
        publish.linger = 1000  # what was relayed last still reaches the forwarder
        publish.sndhwm = PUBLISH_SNDHWM
        publish.connect(self._publish)
        relay.attach(data, publish)
        data.rcvtimeo = 0  # pump() returns when nothing waits: the other coms' turn
        com = _Hosted(identity, relay, data, publish, log, heard=time.monotonic(), sockets=[data, publish])
        hosted[identity] = com
        poller.register(data, zmq.POLLIN)
        return com

    def _point(self, com: _Hosted, body: dict[str, Any]) -> None:
        endpoint = str(body["endpoint"])
        if not endpoint.startswith("tcp://"):
            raise DecodeError(f"worker endpoint {endpoint!r:.60} is not tcp://")
        keys = LinkKeys.from_client_state(body["keys"])
        self._unpoint(com)
        keys.apply_client(com.data)  # a new connection takes the options set before it
        com.data.connect(endpoint)
        com.endpoint = endpoint
        com.heard = time.monotonic()

    @staticmethod
    def _unpoint(com: _Hosted) -> None:
        if com.endpoint:
            with contextlib.suppress(zmq.ZMQError):
                com.data.disconnect(com.endpoint)
            com.endpoint = ""

    @staticmethod
    def _report(router: zmq.Socket, com: _Hosted, verb: bytes) -> None:
        relay, stats = com.relay, com.relay.stats
        body = {
            "n": com.pending,
            "counters": {name: getattr(stats, name) for name in COUNTED},
            "last_error": stats.last_error,
            "sequence": relay.sequence.state(),
            "hwm": relay.data_hwm,
            "logs": com.log.lines,
        }
        router.send_multipart((com.identity, verb, json.dumps(body, separators=(",", ":")).encode()))
        com.log.lines = []
        com.pending = 0
        com.reported = time.monotonic()

    @staticmethod
    def _drop(com: _Hosted, hosted: dict[bytes, _Hosted], poller: zmq.Poller) -> None:
        hosted.pop(com.identity, None)
        poller.unregister(com.data)
        com.relay.close()
        for sock in com.sockets:
            sock.close()
