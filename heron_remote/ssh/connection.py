"""One SSH connection per acquisition PC, shared by every source on it.

:class:`HostConnection` opens a paramiko transport itself (so that it can tune it,
check the host key against known_hosts and say exactly why a login failed), then
carries everything over it: sshtunnel's forward servers for the workers' ports, and
fabric for commands (starting, signalling and checking workers).

A watch thread keeps it alive: when nothing has come from the host for
``link_timeout`` seconds (a probe asks for a reply whenever the link is quiet) or the
transport ends, it drops the transport and connects again, with back-off, for as long
as the connection is held. The tunnels keep their local ports throughout; a client
that connects to one while the link is down waits for the new transport, so ZeroMQ's
reconnect finds the path open again the moment the host is back.
"""

from __future__ import annotations

import getpass
import logging
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
from .openssh import OpenSSHTunnel, openssh_forward
from .registry import Server
from .shells import PROBE, Shell, shell_from_probe

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
#: Seconds one connection attempt may take while reconnecting: on a LAN a SYN is answered in
#: milliseconds, and a short attempt means a fresh SYN soon after the link returns.
RECONNECT_ATTEMPT_S = 1.0
RECONNECT_BACKOFF_MAX_S = 2.0
#: Seconds a client of a tunnel waits for the connection to come back before it is closed.
TUNNEL_WAIT_S = 20.0
_DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


class _RidingConnection(fabric.Connection):
    """A fabric Connection on our transport that never opens one of its own.

    fabric would open a fresh connection, with its own host key policy and keys, when
    the transport it was given has ended; that must fail instead.
    """

    def open(self) -> None:
        if not self.is_connected:
            raise SSHError(f"the connection to {self.host} ended under a command")


class _StreamingRemote(Remote):
    """fabric's remote runner, minus its in-memory copy of all output.

    A worker runs for hours; its output goes to logging line by line, so the
    buffer invoke keeps for the final Result would only grow.
    """

    def _handle_output(self, buffer_: list[str], hide: bool, output: IO[str], reader: Callable[..., Any]) -> None:
        for data in self.read_proc_output(reader):
            if not hide:
                self.write_our_output(stream=output, string=data)


class _WatchedSocket:
    """The transport's socket, noting when bytes last arrived: any traffic proves the link alive."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.last_received = time.monotonic()

    def recv(self, n: int) -> bytes:
        data = self._sock.recv(n)
        if data:
            self.last_received = time.monotonic()
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _pump(sock: socket.socket, chan: paramiko.Channel) -> None:
    """Copy both ways between a local socket and a channel until either side closes.

    Each direction blocks in its own thread. Selecting on the channel would make paramiko
    open a pipe for it, which it closes from its transport thread while a select may still
    hold the descriptor; a reused descriptor then corrupts another connection (seen when
    several streaming sources stopped at once).
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

    up = threading.Thread(target=upstream, name="heron-tunnel-up", daemon=True)
    up.start()
    try:
        while data := chan.recv(READ_CHUNK):
            sock.sendall(data)
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # ends upstream's recv
        except OSError:
            pass
        up.join(5)


class Tunnel:
    """A local forward ``127.0.0.1:local_port`` -> the server's ``remote_host:remote_port``."""

    def __init__(self, connection: HostConnection, remote_port: int, remote_host: str = "127.0.0.1") -> None:
        self.remote = (remote_host, remote_port)
        tlog = logging.getLogger(__name__ + ".tunnel")
        conn = connection

        remote = self.remote

        class Handler(sshtunnel._ForwardHandler):
            remote_address = remote
            logger = tlog

            def handle(self) -> None:
                try:
                    # The live transport, also after a reconnect (waiting for one in progress).
                    chan = conn.wait_transport(TUNNEL_WAIT_S).open_channel(
                        "direct-tcpip", dest_addr=remote, src_addr=self.request.getpeername(), timeout=10
                    )
                except (paramiko.SSHException, SSHError, OSError, EOFError) as exc:
                    # ZeroMQ retries on its own; a worker that has ended refuses until the tunnel closes.
                    tlog.debug("forward to %s:%d on %s not opened: %s", *remote, conn.server.name, exc)
                    return
                try:
                    # Small messages (pulses, parameters) go at once, not after a delayed ACK.
                    self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    _pump(self.request, chan)
                except OSError as exc:
                    tlog.debug("forward to %s:%d ended: %s", *remote, exc)
                finally:
                    chan.close()

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

    def __init__(self, server: Server, *, timeout: float = 10.0, link_timeout: float = 3.0) -> None:
        self.server = server.with_ssh_config()
        self.username = self.server.username or getpass.getuser()
        self.timeout = timeout
        self.link_timeout = link_timeout
        #: How many times the watch thread has connected again after losing the link.
        self.reconnects = 0
        #: Why the watch thread gave up (a changed host key, a refused login); raised to users.
        self.error: SSHError | None = None
        self._transport: paramiko.Transport | None = None
        self._sock: _WatchedSocket | None = None
        self._up = threading.Event()
        self._closing = threading.Event()
        self._watch_thread: threading.Thread | None = None
        self._probing = False
        self._shell: Shell | None = None
        self._tunnels: set[Tunnel] = set()
        self._refs = 0
        self._pool_key: tuple[str, int, str | None] | None = None
        self._lock = threading.Lock()
        self.log = logging.LoggerAdapter(logger, {"host": self.server.name})

    # -- sharing ---------------------------------------------------------------
    @classmethod
    def acquire(cls, server: Server, *, timeout: float = 10.0, link_timeout: float = 3.0) -> HostConnection:
        """The connection to ``server`` this process already has, or a new one."""
        key = (server.host, server.port, server.username)
        with cls._pool_lock:
            conn = cls._pool.get(key)
            if conn is None:
                conn = cls._pool[key] = cls(server, timeout=timeout, link_timeout=link_timeout)
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
        transport = self._transport
        if transport is None:
            raise self.error or SSHError(f"the connection to {self.server.label} is down (reconnecting) or closed")
        return transport

    def wait_transport(self, timeout: float) -> paramiko.Transport:
        """The live transport, waiting up to ``timeout`` s for a reconnect to finish."""
        deadline = time.monotonic() + timeout
        while True:
            if self._up.wait(max(0.0, min(0.05, deadline - time.monotonic()))):
                transport = self._transport
                if transport is not None and transport.is_active():
                    return transport
                if self._closing.is_set() or self.error is not None:
                    return self.transport  # raises why
                # Ended, and the watch has not seen it yet: it reconnects within its interval.
                self._closing.wait(0.05)
            if time.monotonic() >= deadline:
                raise self.error or HostUnreachableError(
                    f"no connection to {self.server.label} for {timeout:g} s: it is being re-established"
                )

    def open(self) -> None:
        """Connect, unless connected; while the watch thread reconnects, wait for it (``timeout``)."""
        with self._lock:
            if self._closing.is_set():
                raise SSHError(f"the connection to {self.server.label} is closed")
            if self.error is not None:
                raise self.error
            if self._watch_thread is None:
                self._use(self._connect(self.timeout))
                self._watch_thread = threading.Thread(
                    target=self._watch, name=f"heron-ssh-watch-{self.server.name}", daemon=True
                )
                self._watch_thread.start()
                return
        self.wait_transport(self.timeout)

    def _use(self, transport: paramiko.Transport) -> None:
        self._transport = transport
        self._sock = transport.sock  # type: ignore[assignment]
        self._up.set()

    # -- keeping it alive --------------------------------------------------------------
    def _watch(self) -> None:
        """Probe a quiet link; reconnect when the host stays silent or the transport ends."""
        interval = min(1.0, self.link_timeout / 3)
        try:
            while not self._closing.wait(interval):
                transport, sock = self._transport, self._sock
                if transport is None or sock is None:
                    return  # gave up: self.error says why
                silent = time.monotonic() - sock.last_received
                if not transport.is_active():
                    self._reconnect("the host closed it")
                elif silent > self.link_timeout:
                    self._reconnect(f"nothing from the host for {silent:.1f} s")
                elif silent > interval and not self._probing:
                    self._probe(transport)
        except BaseException as exc:  # kept for wait_transport(), and said now
            self.error = SSHError(f"the watch of the connection to {self.server.label} failed: {exc!r}")
            self._up.set()
            self.log.exception("watch thread of the connection to %s failed", self.server.label)

    def _probe(self, transport: paramiko.Transport) -> None:
        """Ask the host for a reply without waiting here: the reply itself is what is watched."""

        def ask() -> None:
            try:
                transport.global_request("keepalive@openssh.com", wait=True)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self.log.debug("probe of %s failed: %s", self.server.label, exc)
            finally:
                self._probing = False

        self._probing = True
        threading.Thread(target=ask, name=f"heron-ssh-probe-{self.server.name}", daemon=True).start()

    def _reconnect(self, why: str) -> None:
        with self._lock:
            old, self._transport, self._sock = self._transport, None, None
            self._up.clear()
        lost_at = time.monotonic()
        self.log.warning("lost the SSH connection to %s (%s): reconnecting", self.server.label, why)
        if old is not None:
            old.close()  # ends its channels: the tunnels' clients reconnect through the new transport
        delay = 0.1
        next_note = lost_at + 10
        while not self._closing.is_set():
            try:
                transport = self._connect(min(self.timeout, RECONNECT_ATTEMPT_S))
            except HostUnreachableError as exc:
                if time.monotonic() > next_note:
                    next_note = time.monotonic() + 10
                    self.log.warning(
                        "%s still unreachable after %.0f s: %s", self.server.label, time.monotonic() - lost_at, exc
                    )
                self._closing.wait(delay)
                delay = min(delay * 2, RECONNECT_BACKOFF_MAX_S)
                continue
            except SSHError as exc:  # a changed host key or a refused login: retrying cannot help
                self.error = exc
                self._up.set()
                self.log.error("cannot reconnect to %s, giving up: %s", self.server.label, exc)
                return
            with self._lock:
                if self._closing.is_set():
                    transport.close()
                    return
                self._use(transport)
                self.reconnects += 1
            self.log.warning(
                "reconnected to %s after %.2f s; tunnels kept their local ports",
                self.server.label,
                time.monotonic() - lost_at,
            )
            return

    def _connect(self, timeout: float) -> paramiko.Transport:
        s = self.server
        started = time.monotonic()
        try:
            sock = socket.create_connection((s.host, s.port), timeout=timeout)
        except socket.gaierror as exc:
            raise HostUnreachableError(f"cannot resolve the host name of {s.label}: {exc.strerror}") from exc
        except ConnectionRefusedError as exc:
            raise HostUnreachableError(
                f"{s.label} refused the connection: is sshd running there, on port {s.port}?"
            ) from exc
        except TimeoutError as exc:
            raise HostUnreachableError(
                f"no answer from {s.label} within {timeout:g} s: is the PC on and the address right?"
            ) from exc
        except OSError as exc:
            raise HostUnreachableError(f"cannot reach {s.label}: {exc.strerror or exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # paramiko writes whole packets
        transport = paramiko.Transport(
            _WatchedSocket(sock), default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE
        )
        try:
            known = HostKeys(s)
            options = transport.get_security_options()
            options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in options.ciphers) + tuple(
                c for c in options.ciphers if c not in PREFERRED_CIPHERS
            )
            if known.key_types():
                options.key_types = tuple(t for t in known.key_types() if t in options.key_types)
            try:
                # Reaching the PC has the attempt's bound; the handshake and log-in get the whole
                # connect timeout (a Raspberry Pi takes a while), the banner and auth included.
                left = max(1.0, self.timeout - (time.monotonic() - started))
                transport.banner_timeout = transport.auth_timeout = left
                transport.start_client(timeout=left)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise HostUnreachableError(f"SSH handshake with {s.label} failed: {exc}") from exc
            known.verify(transport.get_remote_server_key())
            self._authenticate(transport)
        except BaseException:
            transport.close()
            raise
        self.log.info(
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
    def forward(self, remote_port: int, remote_host: str = "127.0.0.1") -> Tunnel | OpenSSHTunnel:
        """A local port that reaches ``remote_host:remote_port`` on the server, by the server's backend."""
        tunnel: Tunnel | OpenSSHTunnel
        if self.server.tunnel == "openssh":
            tunnel = openssh_forward(self, remote_port, remote_host)
        else:
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
        conn = _RidingConnection(host=self.server.host, user=self.username, port=self.server.port)
        if streaming:
            conn.config.runners.remote = _StreamingRemote
        # Never opened by fabric (so its own host key policy never applies): it rides ours.
        conn.transport = self.wait_transport(self.link_timeout)
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
            self._closing.set()
            tunnels, self._tunnels = self._tunnels, set()
            transport, self._transport, self._sock = self._transport, None, None
        self._up.set()  # wakes tunnel clients waiting for a reconnect: they find it closed
        for tunnel in tunnels:
            tunnel.close()
        if transport is not None:
            transport.close()
            self.log.info("closed the connection to %s", self.server.label)
        watch = self._watch_thread
        if watch is not None and watch is not threading.current_thread():
            watch.join(RECONNECT_ATTEMPT_S + 1)

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
