"""Keeping a connection's transport alive: probe a quiet link, reconnect a lost one.

When nothing has come from the host for ``link_timeout`` seconds (a probe asks for a reply
whenever the link is quiet) or the transport ends, the watch drops it and connects again,
with back-off, until the connection is closed. A refused login or a changed host key ends
the watch instead: retrying cannot help, and :attr:`LinkWatch.error` says why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paramiko

from .._backoff import Backoff
from .._threads import KeptThread
from ..errors import HostUnreachableError, SSHError
from .translate import LINK_ERRORS
from .transport import WatchedSocket

__all__ = ["RECONNECT_ATTEMPT_S", "RECONNECT_BACKOFF", "LinkWatch"]

logger = logging.getLogger(__name__)

#: Seconds one connection attempt may take while reconnecting: on a LAN a SYN is answered in
#: milliseconds, and a short attempt means a fresh SYN soon after the link returns.
RECONNECT_ATTEMPT_S = 1.0
RECONNECT_BACKOFF = Backoff(first=0.1, maximum=2.0)
#: Seconds between the warnings that a host is still unreachable.
_NOTE_EVERY_S = 10.0


class LinkWatch:
    """The current transport of the connection to one server (``name``, ``label``), and the thread that keeps one.

    ``connect(attempt_timeout)`` opens a logged-in transport, raising HostUnreachableError when
    the host does not answer (retried) and another SSHError when it refuses us (not retried).
    """

    def __init__(
        self,
        name: str,
        label: str,
        connect: Callable[[float], paramiko.Transport],
        *,
        timeout: float,
        link_timeout: float,
        log: logging.LoggerAdapter[Any],
    ) -> None:
        self.name = name
        self.label = label
        self.timeout = timeout
        self.link_timeout = link_timeout
        self.log = log
        #: How many times the watch has connected again after losing the link.
        self.reconnects = 0
        self._connect = connect
        self._transport: paramiko.Transport | None = None
        self._sock: WatchedSocket | None = None
        self._given_up: SSHError | None = None
        self._crashed: SSHError | None = None
        self._up = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._thread: KeptThread | None = None
        self._probe_thread: KeptThread | None = None

    # -- state -------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    @property
    def error(self) -> SSHError | None:
        """Why the watch gave up (a changed host key, a refused login) or failed; None while it keeps the link."""
        if self._given_up is not None:
            return self._given_up
        thread = self._thread
        if self._crashed is None and thread is not None and thread.error is not None:
            self._crashed = SSHError(f"the watch of the connection to {self.label} failed: {thread.error!r}")
        return self._crashed

    @property
    def is_active(self) -> bool:
        transport = self._transport
        return transport is not None and transport.is_active()

    @property
    def transport(self) -> paramiko.Transport:
        transport = self._transport
        if transport is None:
            raise self._why_down()
        return transport

    def _why_down(self) -> SSHError:
        return self.error or SSHError(f"the connection to {self.label} is down (reconnecting) or closed")

    def wait_transport(self, timeout: float) -> paramiko.Transport:
        """The live transport, waiting up to ``timeout`` s for a reconnect to finish."""
        deadline = time.monotonic() + timeout
        while True:
            if self._up.wait(max(0.0, min(0.05, deadline - time.monotonic()))):
                transport = self._transport
                if transport is not None and transport.is_active():
                    return transport
                if self._closing.is_set() or self.error is not None:
                    raise self._why_down()
                # Ended, and the watch has not seen it yet: it reconnects within its interval.
                self._closing.wait(0.05)
            if time.monotonic() >= deadline:
                raise self.error or HostUnreachableError(
                    f"no connection to {self.label} for {timeout:g} s: it is being re-established"
                )

    # -- life cycle ----------------------------------------------------------------------
    def start(self, transport: paramiko.Transport) -> None:
        """Use ``transport`` (its socket a WatchedSocket) and start watching it."""
        with self._lock:
            self._use(transport)
        self._thread = KeptThread.start_new(
            self._watch, name=f"heron-ssh-watch-{self.name}", on_error=self._watch_failed
        )

    def stop(self) -> paramiko.Transport | None:
        """Stop watching; the transport it held (for the caller to close), if any. Idempotent."""
        with self._lock:
            self._closing.set()
            transport, self._transport, self._sock = self._transport, None, None
        self._up.set()  # wakes waiters for a reconnect: they find it closed
        return transport

    def join(self) -> None:
        """Wait for the watch thread to end (an attempt in progress included)."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(RECONNECT_ATTEMPT_S + 1)

    def _use(self, transport: paramiko.Transport) -> None:
        self._transport = transport
        sock = transport.sock
        assert isinstance(sock, WatchedSocket), "the transport must be opened by transport.connect()"
        self._sock = sock
        self._up.set()

    # -- the watch thread ------------------------------------------------------------------
    def _watch_failed(self, exc: BaseException) -> None:
        """The watch thread ended on ``exc`` (kept for self.error): say it now, and wake waiters to raise it."""
        self.log.error("watch thread of the connection to %s failed", self.label, exc_info=exc)
        self._up.set()

    def _watch(self) -> None:
        """Probe a quiet link; reconnect when the host stays silent or the transport ends."""
        interval = min(1.0, self.link_timeout / 3)
        while not self._closing.wait(interval):
            transport, sock = self._transport, self._sock
            if transport is None or sock is None:
                return  # gave up: self.error says why
            silent = time.monotonic() - sock.last_received
            if not transport.is_active():
                self._reconnect("the host closed it")
            elif silent > self.link_timeout:
                self._reconnect(f"nothing from the host for {silent:.1f} s")
            elif silent > interval and not self._probing():
                self._probe(transport)

    def _probing(self) -> bool:
        probe = self._probe_thread
        if probe is None:
            return False
        if probe.is_alive():
            return True
        probe.check()  # a probe that failed other than by the link: the watch fails with it
        return False

    def _probe(self, transport: paramiko.Transport) -> None:
        """Ask the host for a reply without waiting here: the reply itself is what is watched."""

        def ask() -> None:
            try:
                transport.global_request("keepalive@openssh.com", wait=True)
            except LINK_ERRORS as exc:
                self.log.debug("probe of %s failed: %s", self.label, exc)

        self._probe_thread = KeptThread.start_new(ask, name=f"heron-ssh-probe-{self.name}")

    def _reconnect(self, why: str) -> None:
        with self._lock:
            old, self._transport, self._sock = self._transport, None, None
            self._up.clear()
        lost_at = time.monotonic()
        self.log.warning("lost the SSH connection to %s (%s): reconnecting", self.label, why)
        if old is not None:
            old.close()  # ends its channels: the tunnels' clients reconnect through the new transport
        attempt = 0
        next_note = lost_at + _NOTE_EVERY_S
        while not self._closing.is_set():
            attempt += 1
            try:
                transport = self._connect(min(self.timeout, RECONNECT_ATTEMPT_S))
            except HostUnreachableError as exc:
                if time.monotonic() > next_note:
                    next_note = time.monotonic() + _NOTE_EVERY_S
                    self.log.warning(
                        "%s still unreachable after %.0f s: %s", self.label, time.monotonic() - lost_at, exc
                    )
                self._closing.wait(RECONNECT_BACKOFF.delay(attempt))
                continue
            except SSHError as exc:  # a changed host key or a refused login: retrying cannot help
                self._given_up = exc
                self._up.set()
                self.log.error("cannot reconnect to %s, giving up: %s", self.label, exc)
                return
            with self._lock:
                if self._closing.is_set():
                    transport.close()
                    return
                self._use(transport)
                self.reconnects += 1
            self.log.warning(
                "reconnected to %s after %.2f s; tunnels kept their local ports", self.label, time.monotonic() - lost_at
            )
            return
