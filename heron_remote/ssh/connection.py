"""One SSH connection per acquisition PC, shared by every source on it.

:class:`HostConnection` opens a paramiko transport itself (so that it can tune it,
check the host key against known_hosts and say exactly why a login failed), then
carries everything over it: sshtunnel's forward servers for the workers' ports, and
fabric for commands (starting, signalling and checking workers).
"""

from __future__ import annotations

import getpass
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import fabric
import paramiko
import sshtunnel
from fabric.runners import Remote

from ..errors import AuthenticationError, ConfigError, HostUnreachableError, SSHError, TunnelError
from .hostkeys import HostKeys
from .registry import Server

__all__ = ["HostConnection", "Tunnel"]

logger = logging.getLogger(__name__)

#: Receive window and packet size of the transport. Measured on a veth link with 1 MiB
#: frames: paramiko's defaults (2 MiB, 32 KiB) with sshtunnel's 16 KiB reads give ~100 MB/s;
#: these with READ_CHUNK reads ~400 MB/s. A larger window without larger reads is slower,
#: because paramiko re-slices its receive buffer on every read.
WINDOW_SIZE = 8 * 1024 * 1024
MAX_PACKET_SIZE = 128 * 1024
READ_CHUNK = 1024 * 1024
#: Fastest first: AES-GCM beats AES-CTR + HMAC where the CPU has AES-NI.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
KEEPALIVE_S = 5
_DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


class _StreamingRemote(Remote):
    """fabric's remote runner, minus its in-memory copy of all output.

    A worker runs for hours; its output goes to logging line by line, so the
    buffer invoke keeps for the final Result would only grow.
    """

    def _handle_output(self, buffer_: list[str], hide: bool, output: IO[str], reader: Callable[..., Any]) -> None:
        for data in self.read_proc_output(reader):
            if not hide:
                self.write_our_output(stream=output, string=data)


def _pump(sock: socket.socket, chan: paramiko.Channel) -> None:
    """Copy both ways between a local socket and a channel until either side closes."""
    while chan.active:
        ready, _, _ = select.select([sock, chan], [], [], 5)
        if sock in ready:
            data = sock.recv(READ_CHUNK)
            if not data:
                return
            chan.sendall(data)
        if chan in ready:
            data = chan.recv(READ_CHUNK)
            if not data:
                return
            sock.sendall(data)


class Tunnel:
    """A local forward ``127.0.0.1:local_port`` -> the server's ``remote_host:remote_port``."""

    def __init__(self, connection: HostConnection, remote_port: int, remote_host: str = "127.0.0.1") -> None:
        self.remote = (remote_host, remote_port)
        tlog = logging.getLogger(__name__ + ".tunnel")
        conn = connection

        class Handler(sshtunnel._ForwardHandler):
            remote_address = self.remote
            logger = tlog

            @property
            def ssh_transport(self) -> paramiko.Transport:  # the live one, also after a reconnect
                return conn.transport

            def _redirect(self, chan: paramiko.Channel) -> None:
                _pump(self.request, chan)

        try:
            self._server = sshtunnel._ThreadingForwardServer(("127.0.0.1", 0), Handler, logger=tlog)
        except OSError as exc:
            raise TunnelError(f"cannot open a local port to forward to {connection.server.name}: {exc}") from exc
        self._server.daemon_threads = True
        self.local_port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name=f"heron-tunnel-{self.local_port}", daemon=True
        )
        self._thread.start()
        self._closed = False

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.local_port}"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class HostConnection:
    """The SSH connection to one server. Get it with :meth:`acquire`, give it back with :meth:`release`."""

    _pool: dict[tuple[str, int, str | None], HostConnection] = {}
    _pool_lock = threading.Lock()

    def __init__(self, server: Server, *, timeout: float = 10.0) -> None:
        self.server = server.with_ssh_config()
        self.username = self.server.username or getpass.getuser()
        self.timeout = timeout
        self._transport: paramiko.Transport | None = None
        self._tunnels: set[Tunnel] = set()
        self._refs = 0
        self._pool_key: tuple[str, int, str | None] | None = None
        self._lock = threading.Lock()

    # -- sharing ---------------------------------------------------------------
    @classmethod
    def acquire(cls, server: Server, *, timeout: float = 10.0) -> HostConnection:
        """The connection to ``server`` this process already has, or a new one."""
        key = (server.host, server.port, server.username)
        with cls._pool_lock:
            conn = cls._pool.get(key)
            if conn is None:
                conn = cls._pool[key] = cls(server, timeout=timeout)
                conn._pool_key = key
            conn._refs += 1
        try:
            conn.open()
        except BaseException:
            conn.release()
            raise
        return conn

    def release(self) -> None:
        with self._pool_lock:
            self._refs -= 1
            if self._refs > 0:
                return
            if self._pool.get(self._pool_key) is self:
                del self._pool[self._pool_key]
        self.close()

    @classmethod
    def open_connections(cls) -> int:
        """How many SSH connections this process holds."""
        with cls._pool_lock:
            return sum(1 for c in cls._pool.values() if c.is_active)

    # -- the transport -----------------------------------------------------------
    @property
    def is_active(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    @property
    def transport(self) -> paramiko.Transport:
        if self._transport is None:
            raise SSHError(f"the connection to {self.server.label} is closed")
        return self._transport

    def open(self) -> None:
        with self._lock:
            if not self.is_active:
                self._transport = self._connect()

    def _connect(self) -> paramiko.Transport:
        s = self.server
        started = time.monotonic()
        try:
            sock = socket.create_connection((s.host, s.port), timeout=self.timeout)
        except socket.gaierror as exc:
            raise HostUnreachableError(f"cannot resolve the host name of {s.label}: {exc.strerror}") from exc
        except ConnectionRefusedError as exc:
            raise HostUnreachableError(
                f"{s.label} refused the connection: is sshd running there, on port {s.port}?"
            ) from exc
        except TimeoutError as exc:
            raise HostUnreachableError(
                f"no answer from {s.label} within {self.timeout:g} s: is the PC on and the address right?"
            ) from exc
        except OSError as exc:
            raise HostUnreachableError(f"cannot reach {s.label}: {exc.strerror or exc}") from exc
        transport = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE)
        try:
            known = HostKeys(s)
            options = transport.get_security_options()
            options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in options.ciphers) + tuple(
                c for c in options.ciphers if c not in PREFERRED_CIPHERS
            )
            if known.key_types():
                options.key_types = tuple(t for t in known.key_types() if t in options.key_types)
            try:
                transport.start_client(timeout=max(1.0, self.timeout - (time.monotonic() - started)))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise HostUnreachableError(f"SSH handshake with {s.label} failed: {exc}") from exc
            known.verify(transport.get_remote_server_key())
            self._authenticate(transport)
            transport.set_keepalive(KEEPALIVE_S)
        except BaseException:
            transport.close()
            raise
        logger.info(
            "connected to %s in %.0f ms (%s)",
            s.label,
            (time.monotonic() - started) * 1000,
            transport.remote_cipher,
        )
        return transport

    def _authenticate(self, transport: paramiko.Transport) -> None:
        s = self.server
        tried: list[str] = []
        allowed: list[str] | None = None
        for label, key in self._keys():
            tried.append(label)
            try:
                transport.auth_publickey(self.username, key)
            except paramiko.BadAuthenticationType as exc:
                allowed = exc.allowed_types
                break
            except paramiko.AuthenticationException:
                continue
            except paramiko.SSHException as exc:
                raise SSHError(f"authentication with {s.label} failed: {exc}") from exc
            if transport.is_authenticated():
                return
        password = s.resolve_password()
        if password is not None:
            tried.append("the password")
            try:
                transport.auth_password(self.username, password)
            except paramiko.BadAuthenticationType as exc:
                allowed = exc.allowed_types
            except paramiko.AuthenticationException:
                pass
            if transport.is_authenticated():
                return
        methods = f" (it accepts: {', '.join(allowed)})" if allowed else ""
        raise AuthenticationError(
            f"{s.label} refused to log in user {self.username!r}{methods}; tried "
            f"{', '.join(tried) or 'nothing: give a key_file, load a key into ssh-agent, or a password'}. "
            "Check that the public key is in that user's ~/.ssh/authorized_keys on the PC."
        )

    def _keys(self) -> list[tuple[str, paramiko.PKey]]:
        s = self.server
        keys: list[tuple[str, paramiko.PKey]] = []
        if s.key_file:
            keys.append((f"key {s.key_file}", _load_key(Path(s.key_file), s)))
            return keys
        try:
            keys += [(f"ssh-agent key {i + 1}", k) for i, k in enumerate(paramiko.Agent().get_keys())]
        except paramiko.SSHException as exc:
            logger.debug("no ssh-agent keys: %s", exc)
        for name in _DEFAULT_KEYS:
            path = Path("~/.ssh").expanduser() / name
            if path.is_file():
                try:
                    keys.append((f"key {path}", paramiko.PKey.from_path(path)))
                except (paramiko.SSHException, OSError) as exc:
                    logger.debug("skipped %s: %s", path, exc)
        return keys

    # -- using it ------------------------------------------------------------------
    def forward(self, remote_port: int, remote_host: str = "127.0.0.1") -> Tunnel:
        """A local port that reaches ``remote_host:remote_port`` on the server."""
        tunnel = Tunnel(self, remote_port, remote_host)
        with self._lock:
            self._tunnels.add(tunnel)
        return tunnel

    def close_tunnel(self, tunnel: Tunnel) -> None:
        with self._lock:
            self._tunnels.discard(tunnel)
        tunnel.close()

    def _fabric(self, *, streaming: bool) -> fabric.Connection:
        """A fabric Connection that runs its commands over this transport.

        ``streaming``: output goes only to the given streams, for commands that run
        for hours; otherwise it is also kept for the result, for short commands.
        """
        conn = fabric.Connection(host=self.server.host, user=self.username, port=self.server.port)
        if streaming:
            conn.config.runners.remote = _StreamingRemote
        # Never opened by fabric (so its own host key policy never applies): it rides ours.
        conn.transport = self.transport
        return conn

    def run(self, command: str, *, timeout: float = 30.0) -> tuple[int, str, str]:
        """Run a short command; (exit status, stdout, stderr)."""
        from invoke.exceptions import CommandTimedOut

        try:
            result = self._fabric(streaming=False).run(
                command, hide=True, warn=True, in_stream=False, timeout=timeout, encoding="utf-8"
            )
        except CommandTimedOut as exc:
            raise SSHError(f"command on {self.server.label} did not finish within {timeout:g} s: {command}") from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(f"cannot run a command on {self.server.label}: {exc}") from exc
        return result.return_code, result.stdout, result.stderr

    def start(self, command: str, *, out_stream: IO[str], err_stream: IO[str]) -> Any:
        """Start a long-running command; returns fabric's Promise (its runner has the channel)."""
        try:
            return self._fabric(streaming=True).run(
                command,
                asynchronous=True,
                warn=True,
                in_stream=False,
                pty=False,
                encoding="utf-8",
                out_stream=out_stream,
                err_stream=err_stream,
            )
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SSHError(f"cannot start a command on {self.server.label}: {exc}") from exc

    def round_trip(self) -> float:
        """Seconds for one SSH-level request and its reply."""
        started = time.perf_counter()
        if self.transport.global_request("keepalive@openssh.com", wait=True) is None and not self.is_active:
            raise SSHError(f"the connection to {self.server.label} is closed")
        return time.perf_counter() - started

    def close(self) -> None:
        with self._lock:
            tunnels, self._tunnels = self._tunnels, set()
            transport, self._transport = self._transport, None
        for tunnel in tunnels:
            tunnel.close()
        if transport is not None:
            transport.close()
            logger.info("closed the connection to %s", self.server.label)

    def __enter__(self) -> HostConnection:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _load_key(path: Path, server: Server) -> paramiko.PKey:
    if not path.is_file():
        raise ConfigError(f"server {server.name!r}: key_file {path} does not exist")
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException as exc:
        raise ConfigError(
            f"server {server.name!r}: key_file {path} is encrypted; load it into ssh-agent and drop key_file"
        ) from exc
    except (paramiko.SSHException, OSError, ValueError) as exc:
        raise ConfigError(f"server {server.name!r}: cannot read key_file {path}: {exc}") from exc
