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

Messages are ``[verb, JSON]``. From a com (DEALER) to the host (ROUTER): ``attach`` (its number,
endpoint, keys, routes, outputs, threads, sequence, counters, offset: relay from this worker;
again after a restart), ``unpoint`` (the worker is gone), ``restarted``, ``offset``, ``threads``,
``drain``, ``ping`` and ``detach`` (also sent by a com that gave up waiting: a host that was only
slow then stops pulling from its worker). From the host: ``attached`` (the attach's number),
``report``, ``drained`` (once the worker's socket stayed empty for DRAINED_AFTER_S, in the com's
turns: one draining com holds up no other), ``refused`` (a message it could not take, or a relay
that failed: that com relays itself, the others go on) and ``unknown`` to a com it does not
relay for (one silent for COM_SILENT_S), which then relays itself. The coms take turns of at
most _TURN_S, the first of them rotating.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from . import forwarders_hello
from ._ipc import is_private_endpoint
from ._linkkeys import LinkKeys
from ._threads import KeptThread
from .com.heartbeat import back_off
from .com.publisher import open_publisher
from .com.relay import PUBLISH_SNDHWM, Relay
from .com.stats import ComStats
from .errors import DecodeError, ForwarderError
from .forwarders_subscriptions import Subscriptions

__all__ = ["RelayHost", "relay_path"]

logger = logging.getLogger(__name__)

#: How often a relay reports while packets flow, and at least how often when none do.
REPORT_S = 0.01
IDLE_REPORT_S = 0.2
#: A com not heard from for this long has gone (SIGKILLed, say): its relay stops. Longer than a
#: com may spend starting a worker again (back-off and reaching the PC), when it sends nothing.
COM_SILENT_S = 600.0
#: The host relays for a com only while the com's last word is this recent (by the time the com
#: wrote it: a monotonic clock is one clock for every process of a machine). A com that stopped
#: waiting for a host that was suspended has taken its worker back by then, and what the host
#: still holds of that worker's packets must not come out after the com's own.
COM_FRESH_S = 1.0
#: A draining com's worker has said all once its socket stayed empty this long.
DRAINED_AFTER_S = 0.1
#: How long one com's packets are relayed before the others' get their turn.
_TURN_S = 0.005
_MAX_BODY = 64 * 1024


def _said_at(body: dict[str, Any]) -> float:
    """When the com wrote a message (``t``, its monotonic clock), never later than now."""
    now = time.monotonic()
    said = body.get("t")
    return min(float(said), now) if isinstance(said, (int, float)) and not isinstance(said, bool) else now


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
    #: Whether the com waits for a drain, and since when its socket was empty.
    draining: bool = False
    quiet: float | None = None


class RelayHost:
    """Relays for coms of this account that ask, in one thread of the forwarders' process.

    ``publish`` is the data forwarder's in-process submit endpoint (on the shared context);
    ``subscriptions``, what its subscribers want: only that is relayed to it.
    """

    def __init__(self, port: int, publish: str, subscriptions: Subscriptions | None = None) -> None:
        self.path = relay_path(port)
        self._publish = publish
        self._subscriptions = subscriptions
        self._wake = f"inproc://heron-remote-relay-host-{port}-{id(self)}"
        self._closed = False
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
                inode = os.stat(self.path).st_ino
            except (zmq.ZMQError, OSError) as exc:
                ready_error.append(exc)
                return
            finally:
                ready.set()
            poller = zmq.Poller()
            poller.register(router, zmq.POLLIN)
            poller.register(wake, zmq.POLLIN)
            turns = 0
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
                turn = list(hosted.values())
                if turn:  # who goes first rotates: one com's backlog does not starve the others
                    first = turns % len(turn)
                    turn = turn[first:] + turn[:first]
                turns += 1
                for com in turn:
                    try:
                        self._serve_com(router, com, com.data in events)
                    except Exception as exc:  # that com's relaying ends; it relays itself, the others go on
                        logger.error("the relay of a com failed: %r; it relays in its own process now", exc)
                        self._refuse(router, com.identity, f"its relay failed: {exc!r}")
                        self._drop(com, hosted, poller)
                        continue
                    if time.monotonic() - com.heard > COM_SILENT_S:
                        logger.info("a com was silent for %.0f s: its relay stops", COM_SILENT_S)
                        self._drop(com, hosted, poller)
        finally:
            for com in list(hosted.values()):
                com.data.close()
                com.publish.close()
            router.close()
            wake.close()
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == inode:  # not a later owner's (a takeover meanwhile)
                    self.path.unlink()

    def _serve_com(self, router: zmq.Socket, com: _Hosted, readable: bool) -> None:
        """One com's turn: relay what waits (for at most _TURN_S), report when due, end a drain."""
        com.relay.keep_sending()
        if time.monotonic() - com.heard > COM_FRESH_S:
            readable = False  # not until the com speaks again (its pings come every _PING_S)
        elif readable:
            n = com.relay.pump(until=time.monotonic() + _TURN_S)
            com.pending += n
        now = time.monotonic()
        if com.draining:
            if readable or com.data.poll(0):
                com.quiet = None
            elif com.quiet is None:
                com.quiet = now
            elif now - com.quiet >= DRAINED_AFTER_S:
                com.draining, com.quiet = False, None
                self._report(router, com, b"drained")
                return
        if now - com.reported >= (REPORT_S if com.pending else IDLE_REPORT_S):
            self._report(router, com, b"report")

    @staticmethod
    def _refuse(router: zmq.Socket, identity: bytes, why: str) -> None:
        """Tell a com to relay in its own process (it connects to its worker itself)."""
        with contextlib.suppress(zmq.ZMQError):
            router.send_multipart((identity, b"refused", json.dumps({"why": why}).encode()))

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
                try:
                    self._point(com, body)
                except Exception:
                    self._drop(com, hosted, poller)
                    raise
                com.draining, com.quiet = False, None
                self._report(router, com, b"report")
                router.send_multipart((identity, b"attached", json.dumps({"attach": body.get("attach")}).encode()))
                return
            known = hosted.get(identity)
            if known is None:
                if verb != b"detach":
                    router.send_multipart((identity, b"unknown", b"{}"))
                return
            com = known
            com.heard = _said_at(body)
            if verb == b"unpoint":
                self._unpoint(com)
            elif verb == b"restarted":
                com.relay.restarted()
            elif verb == b"offset":
                offset = body.get("offset")
                com.relay.stats.clock_offset_s = float(offset) if offset is not None else None
            elif verb == b"threads":
                com.relay.unpack_threads = max(1, int(body.get("threads", 1)))
            elif verb == b"drain":  # answered once the socket stayed empty, in the com's turns
                com.draining, com.quiet = True, None
            elif verb == b"detach":
                self._drop(com, hosted, poller)
        except Exception as exc:
            # Only this account's processes reach this socket: a bug, not an attack. That com relays
            # itself; the others go on.
            logger.warning("a com's %r to the relay host was not understood: %r", verb[:16], exc)
            self._refuse(router, identity, f"its {verb[:16]!r} was not understood: {exc!r}")

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
        stats.take_relay_counters(body["counters"])
        relay = Relay(routes, outputs, stats, log)
        relay.sequence.restore(body["sequence"])
        relay.unpack_threads = max(1, int(body.get("threads", 1)))
        offset = body.get("offset")
        stats.clock_offset_s = float(offset) if offset is not None else None
        data = context.socket(zmq.PULL)
        publish = open_publisher(context)  # no other account's cancel silences it
        try:
            data.linger = 0
            back_off(data)  # as the com's own data socket: a gone worker is not tried ten times a second
            publish.linger = 1000  # what was relayed last still reaches the forwarder
            publish.sndhwm = PUBLISH_SNDHWM
            publish.connect(self._publish)
            relay.attach(data, publish, self._subscriptions)
            data.rcvtimeo = 0  # pump() returns when nothing waits: the other coms' turn
        except BaseException:
            data.close()
            publish.close()
            raise
        com = _Hosted(identity, relay, data, publish, log, heard=time.monotonic())
        hosted[identity] = com
        poller.register(data, zmq.POLLIN)
        return com

    def _point(self, com: _Hosted, body: dict[str, Any]) -> None:
        endpoint = str(body["endpoint"])
        if not (endpoint.startswith("tcp://") or is_private_endpoint(endpoint)):
            raise DecodeError(f"worker endpoint {endpoint!r:.60} is neither tcp:// nor a local worker's Unix socket")
        keys = LinkKeys.from_client_state(body["keys"])
        self._unpoint(com)
        com.relay.read_ring_of(endpoint)  # a local worker's large payloads wait there
        keys.apply_client(com.data)  # a new connection takes the options set before it
        com.data.connect(endpoint)
        com.endpoint = endpoint
        com.heard = _said_at(body)

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
            "counters": stats.relay_counters(),
            "last_error": stats.last_error,
            "sequence": relay.sequence.state(),
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
        com.data.close()
        com.publish.close()
