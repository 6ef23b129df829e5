"""Opening one paramiko transport to a server: the TCP socket, its tuning, the handshake, the host key.

We open the transport ourselves (not through fabric or sshtunnel) so that it is tuned for
bulk data, its host key is checked against known_hosts, and a failure says exactly why.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import paramiko

from .._threads import KeptThread
from ..errors import HostUnreachableError
from .auth import authenticate
from .hostkeys import HostKeys
from .registry import Server
from .translate import reaching, translated

__all__ = ["MAX_PACKET_SIZE", "PREFERRED_CIPHERS", "WINDOW_SIZE", "KexSafeTransport", "WatchedSocket", "connect"]

logger = logging.getLogger(__name__)

#: Receive window and packet size of the transport. Measured on a veth link with 1 MiB
#: frames: paramiko's defaults (2 MiB, 32 KiB) with sshtunnel's 16 KiB reads give ~100 MB/s;
#: these with the tunnel's 1 MiB reads ~400 MB/s. A larger window without larger reads is
#: slower, because paramiko re-slices its receive buffer on every read.
WINDOW_SIZE = 8 * 1024 * 1024
MAX_PACKET_SIZE = 128 * 1024
#: paramiko's own log lines for our transports go here, not to "paramiko.transport".
PARAMIKO_LOG = "heron_remote.ssh.paramiko"
#: Fastest first: AES-GCM beats AES-CTR + HMAC where the CPU has AES-NI.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")


class _ExpectedRefusals(logging.Filter):
    """paramiko logs a refused forward as an ERROR. For us it is expected -- a tunnel's client
    (ZeroMQ, reconnecting) reaching a worker that has just ended, before its com has seen the end
    -- and accounted for: the com reports the worker's end itself. So it is DEBUG here."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and "open FAILED: Connection refused" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_paramiko_log = logging.getLogger(PARAMIKO_LOG)
_paramiko_log.addFilter(_ExpectedRefusals())


class WatchedSocket:
    """The transport's socket, noting when bytes last arrived: any traffic proves the link alive.

    Reads ahead: paramiko asks for each packet's first block and then for the rest, a receive
    call each, and every call gives up the interpreter lock. With many threads in the process
    (coms, tunnels, subscribers) each of those calls waited for the lock again, and the
    transport thread fell behind the data (scale: 8 sources x 26 MB/s delivered 67-91 %). One
    read of up to READ_AHEAD bytes now serves several packets.
    """

    #: Bytes read at once from the TCP socket; paramiko's reads are served from them.
    READ_AHEAD = 256 * 1024

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._ahead = b""
        self._offset = 0
        self.last_received = time.monotonic()

    def recv(self, n: int) -> bytes:
        ahead, offset = self._ahead, self._offset
        if offset < len(ahead):  # paramiko's reads are never shared between threads
            self._offset = end = offset + n
            return ahead[offset:end]
        data = self._sock.recv(max(n, self.READ_AHEAD))
        if data:
            self.last_received = time.monotonic()
            if len(data) > n:
                self._ahead, self._offset = data, n
                return data[:n]
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class KexSafeTransport(paramiko.Transport):
    """paramiko's Transport, except that its own thread never waits for a key exchange to end.

    paramiko answers a channel closed by the PC (and a request that wants a reply) from its
    transport thread, with a message that waits until the key exchange under way is over --
    an exchange that this very thread runs, so it waits until the link is given up (paramiko
    issue 822). Streaming 500 MB/s renews the keys every second, so a worker that ended during
    an exchange cost the link 3 s and a reconnect (here: 1 in 10 transfers of 256 MiB with an
    exchange every 32 MiB; and on the first of 40 commands run during back-to-back exchanges).
    Such a message is held here instead, and a helper thread sends the held ones, in order,
    once the exchange is over.
    """

    def __init__(self, sock: Any, **kwargs: Any) -> None:
        super().__init__(sock, **kwargs)
        self._held: list[paramiko.Message] = []
        self._held_lock = threading.Lock()
        self._held_sender: KeptThread | None = None

    def _send_user_message(self, data: paramiko.Message) -> None:
        if threading.current_thread() is not self:
            super()._send_user_message(data)  # waits out an exchange
            return
        if not self.active:
            return  # as paramiko does: the connection is gone
        # Under the lock an exchange starts under (also one asked for from another thread).
        with self.clear_to_send_lock:
            if self.clear_to_send.is_set():
                self._send_message(data)
                return
        with self._held_lock:
            self._held.append(data)
            if self._held_sender is None:
                self._held_sender = KeptThread.start_new(
                    self._send_held, name="heron-ssh-held", on_error=self._held_failed
                )

    def _send_held(self) -> None:
        while True:
            with self._held_lock:
                held, self._held = self._held, []
                if not held:
                    self._held_sender = None
                    return
            for data in held:
                super()._send_user_message(data)  # waits for the exchange to end

    def _held_failed(self, exc: BaseException) -> None:
        with self._held_lock:
            dropped, self._held, self._held_sender = len(self._held), [], None
        # The link itself is failing (the exchange timed out, or the connection ended): the
        # connection's watch reports and reconnects; this says what was not sent.
        logger.warning("messages held for a key exchange not sent (%d more dropped): %s", dropped, exc)


def connect(
    server: Server, username: str, *, attempt_timeout: float, timeout: float, log: logging.LoggerAdapter[Any]
) -> paramiko.Transport:
    """A logged-in transport to ``server``, its socket a :class:`WatchedSocket`.

    Reaching the PC may take ``attempt_timeout`` s; the handshake and log-in get what is left
    of ``timeout`` (a Raspberry Pi takes a while), the banner and authentication included.
    """
    started = time.monotonic()
    with reaching(server, attempt_timeout):
        sock = socket.create_connection((server.host, server.port), timeout=attempt_timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # paramiko writes whole packets
    transport = KexSafeTransport(
        WatchedSocket(sock), default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE
    )
    transport.set_log_channel(PARAMIKO_LOG)
    try:
        _handshake(transport, server, timeout=max(1.0, timeout - (time.monotonic() - started)))
        authenticate(transport, server, username)
    except BaseException:
        transport.close()
        raise
    log.info(
        "connected to %s in %.0f ms (%s)", server.label, (time.monotonic() - started) * 1000, transport.remote_cipher
    )
    return transport


def _handshake(transport: paramiko.Transport, server: Server, *, timeout: float) -> None:
    """Key exchange with our cipher order, asking for a host key type we know, then verify that key."""
    known = HostKeys(server)
    options = transport.get_security_options()
    options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in options.ciphers) + tuple(
        c for c in options.ciphers if c not in PREFERRED_CIPHERS
    )
    if known.key_types():
        options.key_types = tuple(t for t in known.key_types() if t in options.key_types)
    transport.banner_timeout = transport.auth_timeout = timeout
    with translated(HostUnreachableError, f"SSH handshake with {server.label} failed"):
        transport.start_client(timeout=timeout)
    known.verify(transport.get_remote_server_key())
