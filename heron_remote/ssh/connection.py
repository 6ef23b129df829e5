"""One SSH connection per acquisition PC, shared by every source on it.

:class:`HostConnection` opens a tuned, verified paramiko transport (:mod:`.transport`,
:mod:`.auth`), keeps it alive (:mod:`.watch`: probes, reconnects with back-off, tunnels keep
their local ports), and carries everything over it: the port forwards of the server's tunnel
backend (:mod:`.tunnel`) and fabric's commands (:mod:`.remote_process`). It is the
:class:`~heron_remote.ssh.link.HostLink` a :class:`~heron_remote.ssh.launcher.RemoteLauncher` uses.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import hmac
import logging
import os
import threading
import time

import paramiko

from .._shared import SharedRegistry
from ..errors import SSHError
from .link import TextSink
from .registry import Server
from .remote_process import FabricProcess, run_command, start_command
from .shells import PROBE, Shell, shell_from_probe
from .transport import connect
from .tunnel import Tunnel, open_tunnel
from .watch import LinkWatch

__all__ = ["HostConnection", "pool_key"]

logger = logging.getLogger(__name__)

_PoolKey = tuple[object, ...]
#: Keys the password's digest: two entries with one password share a connection, and the pool
#: holds no value from which the password could be read back or guessed offline.
_DIGEST_KEY = os.urandom(32)
#: Fields that only name an entry: entries that differ in nothing else share a connection.
_NAMES_ONLY = ("id", "name", "password")


def pool_key(server: Server) -> _PoolKey:
    """What two registry entries must share to share a connection: the name they give the PC
    (an ssh config alias), and every setting of it, as ~/.ssh/config completes it (host, port,
    user, key, known_hosts, trust on first use, tunnel backend, password, python, run dir)."""
    resolved = server.with_ssh_config()
    password = None
    if resolved.password is not None:
        password = hmac.new(_DIGEST_KEY, resolved.password.encode(), hashlib.sha256).hexdigest()
    settings = tuple(
        (f.name, getattr(resolved, f.name)) for f in dataclasses.fields(resolved) if f.name not in _NAMES_ONLY
    )
    return (server.host, resolved.username or getpass.getuser(), password, *settings)


class HostConnection:
    """The SSH connection to one server. Get it with :meth:`acquire`, give it back with :meth:`release`."""

    #: The connections of this process, one per :func:`pool_key`, each counted by its users.
    _pool: SharedRegistry[_PoolKey, HostConnection] = SharedRegistry(lambda conn: conn.close())

    def __init__(self, server: Server, *, timeout: float = 10.0, link_timeout: float = 3.0) -> None:
        self.server = server.with_ssh_config()
        self.username = self.server.username or getpass.getuser()
        self.timeout = timeout
        self.link_timeout = link_timeout
        self.log = logging.LoggerAdapter(logger, {"host": self.server.name})
        self._watch = LinkWatch(
            self.server.name,
            self.server.label,
            self._connect,
            timeout=timeout,
            link_timeout=link_timeout,
            log=self.log,
        )
        self._shell: Shell | None = None
        self._tunnels: set[Tunnel] = set()
        self._pool_key: _PoolKey | None = None
        self._lock = threading.Lock()

    # -- sharing ---------------------------------------------------------------
    @classmethod
    def acquire(cls, server: Server, *, timeout: float = 10.0, link_timeout: float = 3.0) -> HostConnection:
        """The connection to ``server`` this process already has, or a new one; open either way.

        It is shared only with entries that have every setting of ``server`` (:func:`pool_key`):
        one with its own known_hosts, key or tunnel backend gets a connection made with them.
        """
        key = pool_key(server)

        def make() -> HostConnection:
            conn = cls(server, timeout=timeout, link_timeout=link_timeout)
            conn._pool_key = key
            return conn

        conn, _ = cls._pool.acquire(key, make)
        try:
            conn.open()
        except BaseException:
            conn.release()
            raise
        return conn

    def release(self) -> None:
        """One user fewer; the last one closes the connection (one made without acquire(): at once)."""
        if self._pool_key is None:
            self.close()
        else:
            self._pool.release(self._pool_key, self)

    @classmethod
    def pooled(cls) -> tuple[HostConnection, ...]:
        """The connections this process shares now (held by someone, open or reconnecting)."""
        return tuple(cls._pool.values())

    @classmethod
    def open_connections(cls) -> int:
        """How many SSH connections this process holds."""
        return sum(1 for c in cls._pool.values() if c.is_active)

    # -- the transport -----------------------------------------------------------
    @property
    def reconnects(self) -> int:
        """How many times the connection was made again after the link was lost."""
        return self._watch.reconnects

    @property
    def error(self) -> SSHError | None:
        """Why the connection gave up reconnecting (a changed host key, a refused login), if it did."""
        return self._watch.error

    @property
    def is_active(self) -> bool:
        return self._watch.is_active

    @property
    def transport(self) -> paramiko.Transport:
        """The current transport; SSHError while reconnecting or once closed."""
        return self._watch.transport

    def wait_transport(self, timeout: float) -> paramiko.Transport:
        """The live transport, waiting up to ``timeout`` s for a reconnect to finish."""
        return self._watch.wait_transport(timeout)

    def open(self) -> None:
        """Connect, unless connected; while the watch thread reconnects, wait for it (``timeout``)."""
        with self._lock:
            if self._watch.closed:
                raise SSHError(f"the connection to {self.server.label} is closed")
            if self._watch.error is not None:
                raise self._watch.error
            if not self._watch.started:
                self._watch.start(self._connect(self.timeout))
                return
        self._watch.wait_transport(self.timeout)

    def _connect(self, attempt_timeout: float) -> paramiko.Transport:
        return connect(self.server, self.username, attempt_timeout=attempt_timeout, timeout=self.timeout, log=self.log)

    # -- using it ------------------------------------------------------------------
    def forward(self, remote_port: int, remote_host: str = "127.0.0.1") -> Tunnel:
        """A local port that reaches ``remote_host:remote_port`` on the server, by the server's backend."""
        tunnel = open_tunnel(self, remote_port, remote_host)
        with self._lock:
            # Closed ones are dropped here, so that a connection held for days does not collect them.
            self._tunnels = {t for t in self._tunnels if not t.closed}
            self._tunnels.add(tunnel)
        return tunnel

    def endpoints(self) -> tuple[str, str]:
        """(this rig's address, the PC's address) of the live connection, as the IP layer sees them."""
        sock = self.wait_transport(self.link_timeout).sock
        return str(sock.getsockname()[0]), str(sock.getpeername()[0])

    def run(self, command: str, *, timeout: float = 30.0) -> tuple[int, str, str]:
        """Run a short command; (exit status, stdout, stderr)."""
        transport = self.wait_transport(self.link_timeout)
        return run_command(transport, self.server, self.username, command, timeout=timeout)

    def start(self, command: str, *, out_stream: TextSink, err_stream: TextSink) -> FabricProcess:
        """Start a long-running command, its output written to the streams as it comes."""
        transport = self.wait_transport(self.link_timeout)
        return start_command(transport, self.server, self.username, command, out=out_stream, err=err_stream)

    @property
    def shell(self) -> Shell:
        """The PC's command shell (POSIX, cmd or PowerShell), probed once per connection."""
        if self._shell is None:
            code, out, err = self.run(PROBE, timeout=self.timeout)
            if code != 0:
                raise SSHError(f"cannot tell the shell of {self.server.label}: {err.strip() or out.strip()}")
            self._shell = shell_from_probe(out)
            if self._shell.name != "posix":
                self.log.info("%s runs commands in %s", self.server.label, self._shell.name)
        return self._shell

    def round_trip(self) -> float:
        """Seconds for one SSH-level request and its reply."""
        started = time.perf_counter()
        if self.transport.global_request("keepalive@openssh.com", wait=True) is None and not self.is_active:
            raise SSHError(f"the connection to {self.server.label} is closed")
        return time.perf_counter() - started

    def close(self) -> None:
        """Close the tunnels and the transport, and stop the watch. Idempotent."""
        with self._lock:
            transport = self._watch.stop()
            tunnels, self._tunnels = self._tunnels, set()
        for tunnel in tunnels:
            tunnel.close()
        if transport is not None:
            transport.close()
            self.log.info("closed the connection to %s", self.server.label)
        self._watch.join()

    def __enter__(self) -> HostConnection:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
