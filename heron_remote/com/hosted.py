"""A com's relay done in the forwarders' process while they offer it (:mod:`heron_remote.relay_host`).

In Heron's layout (a com per process, the forwarders in another) a frame would cross a loopback
TCP hop more than in a :class:`~heron_remote.Source`. :class:`HostedRelay` hands the worker's
data endpoint and keys to the forwarders' relay host instead of connecting its own data socket,
and takes the host's reports into its counters, sequence and log. When the host does not answer
an attach within ATTACH_TIMEOUT_S, or stops reporting for LOST_AFTER_S (its forwarders were
stopped or taken over), the com relays in its own process from the host's last sequence on,
as a com always did.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from .._linkkeys import LinkKeys
from ..errors import DecodeError, ForwarderError
from ..forwarders import endpoint as forwarder_endpoint
from ..forwarders_hello import AVAILABLE
from ..relay_host import relay_path
from ..settings import Settings
from .relay import Relay

if TYPE_CHECKING:
    from .sockets import ComSockets

__all__ = ["RELAYED_THERE", "HostedRelay", "offered", "relay_kind"]

#: What a com logs once the forwarders' process relays its packets.
RELAYED_THERE = "the forwarders' process relays this com's packets"

#: How long the forwarders' host has to take a com's relay before the com relays itself.
ATTACH_TIMEOUT_S = 1.0
#: Reports are due every 0.2 s at least: this long without one, the host is gone.
LOST_AFTER_S = 1.5
#: The com speaks at least this often while the host relays for it (see relay_host.COM_FRESH_S).
_PING_S = 0.25
_DRAIN_TIMEOUT_S = 5.0


def relay_kind(verbose: int | str) -> type[Relay]:
    """:class:`HostedRelay` where the platform allows one, else :class:`Relay` (also for a verbose
    com: its per-packet log is written where it runs)."""
    return Relay if verbose or not AVAILABLE else HostedRelay


def offered(settings: Settings) -> Path | None:
    """Where forwarders of this account in another process take relays, if they do (and may)."""
    if not settings.relay_in_forwarders:
        return None
    target, _ = forwarder_endpoint(settings.forwarder_host, settings.ports.data_submit)
    if not target.startswith("tcp://") or settings.forwarder_host not in ("127.0.0.1", "localhost"):
        return None  # in this process (no hop to save), or not on this machine
    try:
        path = relay_path(settings.ports.data_submit)
    except ForwarderError:
        return None
    # A file that takes no connection is left by forwarders that were killed: without this look,
    # every com would wait ATTACH_TIMEOUT_S for an answer that cannot come.
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except OSError:
            return None
    return path


class HostedRelay(Relay):
    """A :class:`Relay` whose packets the forwarders' process relays while it can."""

    # Set before the com's first packet, by serve() and point(); class defaults, so that the
    # constructor stays Relay's.
    _link: zmq.Socket | None = None
    _monitor: zmq.Socket | None = None
    _sockets: ComSockets | None = None
    _pointed: tuple[str, LinkKeys] | None = None
    _hosted = False
    _given_up = False
    _threads = 1
    _host_error: str | None = None
    _last_report = 0.0
    _last_sent = 0.0
    _sent_offset: float | None = None
    _attaches = 0
    _pointing = False

    # -- what the com asks -----------------------------------------------------------
    @property
    def hosted(self) -> bool:
        """Whether the forwarders' process relays this com's packets now."""
        return self._hosted

    @property
    def unpack_threads(self) -> int:
        return self._threads

    @unpack_threads.setter
    def unpack_threads(self, threads: int) -> None:
        self._threads = threads
        if self._hosted:
            self._send(b"threads", {"threads": threads})

    def serve(self, sockets: ComSockets, settings: Settings) -> None:
        """Relay for the com of ``sockets``: its data socket connects only when this relays itself."""
        self.attach(sockets.data, sockets.publish, sockets.listeners)
        path = offered(settings)
        if path is None:
            return
        self._sockets = sockets
        sockets.hosted_data = self
        link = self._link = sockets.context.socket(zmq.DEALER)
        link.linger = 100  # a detach still leaves when the com closes
        # The host's process ending closes the connection at once: no need to wait for LOST_AFTER_S.
        self._monitor = link.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        link.connect(f"ipc://{path}")

    def point(self, endpoint: str, keys: LinkKeys) -> bool:
        """Have the host relay from the worker at ``endpoint``; False when this com must connect itself."""
        self._pointed = (endpoint, keys)
        if self._link is None or self._given_up:
            return False
        stats = self.stats
        self._attaches += 1
        self._send(
            b"attach",
            {
                "attach": self._attaches,
                "endpoint": endpoint,
                "keys": keys.client_state(),
                "routes": [[topic.decode("ascii"), k] for topic, k in self.routes],
                "outputs": len(self._outputs),
                "threads": self._threads,
                "sequence": self.sequence.state(),
                "counters": stats.relay_counters(),
                "offset": stats.clock_offset_s,
            },
        )
        self._sent_offset = stats.clock_offset_s
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        self._pointing = True
        try:
            # Only the answer to this attach says yes: a report or an answer to an earlier one does not.
            while (left := deadline - time.monotonic()) > 0 and self._link is not None:
                if self._link.poll(int(left * 1000) + 1):
                    verb, n = self._take()
                    if verb == b"attached" and n == self._attaches:
                        self._hosted = True
                        self._last_report = time.monotonic()
                        self.log.info("%s (they run in another process)", RELAYED_THERE)
                        return True
            if not self._given_up:
                self._give_up(f"they did not answer within {ATTACH_TIMEOUT_S:g} s", connect=False)
            return False
        finally:
            self._pointing = False

    def unpoint(self) -> None:
        """The worker is gone: forget its endpoint (a freed tunnel port may soon lead elsewhere)."""
        self._pointed = None
        if self._hosted:
            self._send(b"unpoint", {})

    def restarted(self) -> None:
        super().restarted()
        if self._hosted:
            self._send(b"restarted", {})

    def pump(self, until: float) -> int:
        if not self._hosted:
            return super().pump(until)
        link = self._link
        assert link is not None
        self._keep_up()
        n = 0
        while True:
            left = until - time.monotonic()
            if link.poll(max(0, int(left * 1000))):
                while self._hosted and link.poll(0):
                    n += self._take()[1]
            if n or time.monotonic() >= until or not self._hosted:
                break
        if self._hosted and self._monitor is not None and self._monitor.poll(0):
            self._give_up("their process closed the connection", connect=True)
        elif self._hosted and time.monotonic() - self._last_report > LOST_AFTER_S:
            self._give_up(f"they sent no report for {LOST_AFTER_S:g} s", connect=True)
        return n

    def drain(self, chores_s: float) -> None:
        if self._hosted:
            assert self._link is not None
            self._send(b"drain", {})
            deadline = time.monotonic() + _DRAIN_TIMEOUT_S
            while (left := deadline - time.monotonic()) > 0 and self._hosted and self._link is not None:
                self._keep_up()  # the host drains only while this com speaks
                if self._link.poll(min(int(left * 1000) + 1, int(_PING_S * 1000))) and self._take()[0] == b"drained":
                    return
            if self._hosted:
                self._give_up(f"they did not drain within {_DRAIN_TIMEOUT_S:g} s", connect=True)
        super().drain(chores_s)

    def received_soon(self, timeout_ms: int) -> bool:
        """Whether the worker's packets arrive within ``timeout_ms`` (a worker that sent and ended)."""
        if not self._hosted:
            assert self._data is not None
            return bool(self._data.poll(timeout_ms))
        before = self.stats.received
        self.drain(timeout_ms / 1000)
        return self.stats.received > before

    def close(self) -> None:
        if self._link is not None and self._hosted:
            self._send(b"detach", {})
        self._hosted = False
        self._close_link()
        super().close()

    def _close_link(self) -> None:
        if self._link is not None:
            if self._monitor is not None:
                self._link.disable_monitor()
                self._monitor.close()
                self._monitor = None
            self._link.close()
            self._link = None

    # -- the host's side of it -------------------------------------------------------
    def _send(self, verb: bytes, body: dict[str, Any]) -> None:
        assert self._link is not None
        self._last_sent = body["t"] = time.monotonic()  # the host relays only while this is recent
        self._link.send_multipart((verb, json.dumps(body, separators=(",", ":")).encode()))

    def _keep_up(self) -> None:
        """The clock offset when it changed, and a ping now and then: the host knows this com lives."""
        offset = self.stats.clock_offset_s
        if offset != self._sent_offset:
            self._sent_offset = offset
            self._send(b"offset", {"offset": offset})
        elif time.monotonic() - self._last_sent > _PING_S:
            self._send(b"ping", {})

    def _take(self) -> tuple[bytes, int]:
        """Read one message from the host: its verb, and the packets it reports relayed (for
        ``attached``: the number of the attach it answers)."""
        assert self._link is not None
        verb, *rest = self._link.recv_multipart()
        try:
            body = json.loads(rest[0]) if rest else {}
            if verb in (b"report", b"drained"):
                return verb, self._apply(body)
            if verb == b"attached":
                return verb, int(body["attach"])
        except (IndexError, ValueError, TypeError, KeyError, OverflowError, DecodeError) as exc:
            self._give_up(f"their {verb[:16]!r} could not be read ({exc!r})", connect=not self._pointing)
            return verb, 0
        if verb == b"refused":
            why = body.get("why") if isinstance(body, dict) else None
            self._give_up(f"they refused: {why}", connect=not self._pointing)
        elif verb == b"unknown":  # it dropped this com (silent too long): no second guess, relay here
            self._give_up("they no longer knew this com", connect=not self._pointing)
        return verb, 0

    def _apply(self, body: dict[str, Any]) -> int:
        self.stats.take_relay_counters(body["counters"])
        error = body["last_error"]
        if error != self._host_error:
            self._host_error = self.stats.last_error = error
        self.sequence.restore(body["sequence"])
        for level, text in body["logs"]:
            self.log.log(int(level), "%s", text)
        self._last_report = time.monotonic()
        return int(body["n"])

    def _give_up(self, why: str, *, connect: bool) -> None:
        """Relay in this process from now on (connecting the data socket to the worker, if any)."""
        was = self._hosted
        self._hosted = False
        self._given_up = True
        if self._link is not None:  # a host that is only slow must not go on pulling from the worker
            with contextlib.suppress(zmq.ZMQError):
                self._link.send_multipart((b"detach", b"{}"), zmq.NOBLOCK)
        self._close_link()  # for good: a host that comes back later is another process's
        (self.log.warning if was else self.log.info)(
            "the forwarders' process does not relay for this com: %s; the com relays in its own process", why
        )
        if connect and self._pointed is not None and self._sockets is not None:
            self._sockets.connect_data(*self._pointed)
