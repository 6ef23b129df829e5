"""The default tunnel backend ("tunnel": "sshtunnel"): sshtunnel's forward server over our transport.

Each tunnel is one of sshtunnel's threading forward servers on a free local port; each client
connection gets a ``direct-tcpip`` channel of the host's live transport, also after a
reconnect (a client that connects while the link is down waits for the new transport). A
thread of the connection copies the client's bytes to the channel; the channel's go into the
client's socket from paramiko's transport thread, and from another thread of the connection
only when the socket does not take them at once (:mod:`.channel_feed`). The private sshtunnel
names used here are pinned by ``tests/test_ssh_sshtunnel_pins.py``.

The port is open to every account of the rig, and threads are what a connection costs here.
Where the system names the owner of a connecting socket (Linux), a connection from another
account is closed at once, before a thread is made for it (counted in ``refused``, logged at
DEBUG); a connection that sends nothing within :data:`GREETING_S` (every ZeroMQ peer sends its
greeting at once) is closed before a channel is opened for it. Elsewhere the worker's own key
check (:mod:`heron_remote._linkkeys`) turns foreign connections away.
"""

from __future__ import annotations

import logging
import select
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any

import paramiko
import sshtunnel

from .._peeruid import is_ours
from .._threads import KeptThread
from ..errors import SSHError, TunnelError
from .channel_feed import FeedCounts, forward_channel
from .translate import LINK_ERRORS, translated
from .tunnel import BaseTunnel, TunnelHost

__all__ = ["READ_CHUNK", "TUNNEL_WAIT_S", "SSHTunnel"]

logger = logging.getLogger(__name__)

#: Bytes read at once from the local socket: with the transport's window and packet size
#: (transport.py), 1 MiB reads carried ~400 MB/s on a veth link where sshtunnel's 16 KiB did ~100.
READ_CHUNK = 1024 * 1024
#: Seconds a client of a tunnel waits for the connection to come back before it is closed.
TUNNEL_WAIT_S = 20.0
#: Seconds a client has to send its first bytes (ZeroMQ's greeting) before it is closed.
GREETING_S = 2.0
#: Seconds to open a channel on a live transport.
CHANNEL_TIMEOUT_S = 10.0
#: Why a client's channel may not open: the link, or the connection down for longer than TUNNEL_WAIT_S.
_NOT_OPENED: tuple[type[BaseException], ...] = (*LINK_ERRORS, SSHError)


def pump(sock: socket.socket, chan: paramiko.Channel, counts: FeedCounts) -> None:
    """Copy both ways between a local socket and a channel until either side closes.

    The channel's bytes go to the socket from paramiko's transport thread where the socket takes
    them at once (:mod:`.channel_feed`); the socket's go to the channel from a thread of their
    own, blocking. Selecting on the channel would make paramiko open a pipe for it, which it
    closes from its transport thread while a select may still hold the descriptor; a reused
    descriptor then corrupts another connection (seen when several streaming sources stopped at
    once). ``counts``: what the channel delivered is added to it.
    """

    def upstream() -> None:
        try:
            while data := sock.recv(READ_CHUNK):
                chan.sendall(data)
        except OSError:
            pass  # the local side or the channel ended
        finally:
            try:
                chan.shutdown_write()
            except (OSError, EOFError):
                pass

    up = KeptThread.start_new(upstream, name="heron-tunnel-up")
    try:
        forward_channel(chan, sock, counts)
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # ends upstream's recv
        except OSError:
            pass
        up.join(5)
    up.check()


def _handler(
    host: TunnelHost, remote: tuple[str, int], log: logging.Logger, refusing: Callable[[], bool], counts: FeedCounts
) -> type[socketserver.BaseRequestHandler]:
    """sshtunnel's request handler, for ``remote`` over ``host``'s live transport, while not ``refusing()``;
    what its channels deliver is added to ``counts``."""

    class Handler(sshtunnel._ForwardHandler):
        # sshtunnel's server reads both in its error report.
        remote_address = remote
        logger = log

        def handle(self) -> None:
            if refusing():
                return  # the worker is being stopped: the server would refuse, and paramiko log it as an ERROR
            if not _greets(self.request):
                log.debug("a connection to the forward to %s:%d sent nothing for %g s: closed", *remote, GREETING_S)
                return
            try:
                chan = host.wait_transport(TUNNEL_WAIT_S).open_channel(
                    "direct-tcpip", dest_addr=remote, src_addr=self.request.getpeername(), timeout=CHANNEL_TIMEOUT_S
                )
            except _NOT_OPENED as exc:
                # ZeroMQ retries on its own; a worker that has ended refuses until the tunnel closes.
                log.debug("forward to %s:%d on %s not opened: %s", *remote, host.server.name, exc)
                return
            try:
                # Small messages (pulses, parameters) go at once, not after a delayed ACK.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                pump(self.request, chan, counts)
            except LINK_ERRORS as exc:
                # The worker ended, or the link went: the channel's last window adjustment finds it closed.
                log.debug("forward to %s:%d ended: %r", *remote, exc)
            finally:
                chan.close()

    return Handler


def _greets(sock: socket.socket) -> bool:
    """Whether ``sock`` has sent something (a ZeroMQ peer's greeting) within GREETING_S."""
    try:
        readable, _, _ = select.select([sock], [], [], GREETING_S)
        return bool(readable) and bool(sock.recv(1, socket.MSG_PEEK))
    except (OSError, ValueError):
        return False


class _OwnAccountServer(sshtunnel._ThreadingForwardServer):
    """sshtunnel's threading forward server that serves only connections of this account."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused = 0
        self._count = threading.Lock()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # Runs in the serving thread, before the mixin starts a thread for the connection.
        if is_ours(request):
            return True
        with self._count:
            self.refused += 1
        logger.debug(
            "refused a connection from %s to forward port %d: another account's (%d so far)",
            client_address,
            self.server_address[1],
            self.refused,
        )
        return False


class SSHTunnel(BaseTunnel):
    """A local forward ``127.0.0.1:local_port`` -> ``remote_host:remote_port`` on ``host``'s server."""

    def __init__(self, host: TunnelHost, remote_port: int, remote_host: str = "127.0.0.1") -> None:
        remote = (remote_host, remote_port)
        #: What this tunnel's channels delivered, over all its connections so far.
        self.delivered = FeedCounts()
        with translated(TunnelError, f"cannot open a local port to forward to {host.server.name}", (OSError,)):
            self._server = _OwnAccountServer(
                ("127.0.0.1", 0), _handler(host, remote, logger, lambda: self.refusing, self.delivered), logger=logger
            )
        self._server.daemon_threads = True
        super().__init__(self._server.server_address[1], remote)
        self._thread = KeptThread.start_new(
            self._server.serve_forever, args=(0.1,), name=f"heron-tunnel-{self.local_port}"
        )

    @property
    def refused(self) -> int:
        """Connections from other accounts closed at once."""
        return self._server.refused

    def _close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        done = self.delivered
        if done.direct + done.queued:
            logger.debug(
                "forward %s delivered %.1f MB, %.0f %% of it written by the transport thread",
                self.address,
                (done.direct + done.queued) / 1e6,
                100 * done.direct / (done.direct + done.queued),
            )
        if self._thread.error is not None:
            logger.error("the forward server of %s ended on %r", self.address, self._thread.error)
