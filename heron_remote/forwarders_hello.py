"""Who runs the forwarders on a port: a hello on a unix socket in a folder only this account enters.

Forwarders on a port answer on ``<private dir>/forwarders-<data submit port>.sock``. Whoever
connects reads one line of JSON (what they are, protocol, version, pid, ports) and keeps the
connection for as long as it uses them: the connection ends when the forwarders go, after a
goodbye line if they stopped cleanly, without one if their process died. The kernel names the
other end (``SO_PEERCRED``): it must be this account, and the pid the hello names must hold the
forwarders' TCP ports. A port probe could tell none of this: any listener answers a connect,
another account's forwarders included.

The private dir is ``$XDG_RUNTIME_DIR/heron-remote`` when that runtime dir is this account's,
else ``<temp dir>/heron-remote-<uid>``; it must be this account's, mode 0700, not a link.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from . import _paths
from ._portowner import describe_process, listeners, socket_inodes
from ._threads import KeptThread
from ._version import __version__
from .errors import ForwarderError, UnsafePathError
from .settings import ForwarderPorts

__all__ = ["AVAILABLE", "PROTOCOL", "Hello", "HelloLink", "HelloServer", "lock", "private_dir", "say_hello"]

logger = logging.getLogger(__name__)

#: Whether this platform has what the hello needs (unix sockets, accounts); elsewhere forwarders are
#: not shared between processes and a port in use is an error.
AVAILABLE = hasattr(socket, "AF_UNIX") and hasattr(os, "getuid") and hasattr(socket, "SO_PEERCRED")
SERVICE = "heron_remote forwarders"
#: Bumped when the hello or the forwarders' behaviour changes in a way the other side must know.
PROTOCOL = 1
_GOODBYE = b'{"goodbye": true}\n'
_HELLO_TIMEOUT_S = 2.0
_MAX_LINE = 4096


@dataclass(frozen=True)
class Hello:
    """What forwarders say of themselves."""

    pid: int
    version: str
    bind: str
    ports: ForwarderPorts
    program: str = ""

    def __str__(self) -> str:
        return self.program or f"pid {self.pid}"


def private_dir() -> Path:
    """This account's private folder (:func:`heron_remote._paths.private_dir`), where forwarders
    keep their sockets and locks; ForwarderError when it is not safe to use."""
    try:
        return _paths.private_dir()
    except UnsafePathError as exc:
        raise ForwarderError(f"forwarders say who they are in this account's private folder, and {exc}") from exc


def socket_path(port: int) -> Path:
    return private_dir() / f"forwarders-{port}.sock"


@contextlib.contextmanager
def lock(port: int, timeout: float) -> Iterator[None]:
    """One process at a time decides who runs the forwarders of ``port`` (start or take over)."""
    import fcntl

    path = private_dir() / f"forwarders-{port}.lock"
    with open(_paths.open_private(path, os.O_RDWR | os.O_CREAT), "a") as held:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ForwarderError(
                        f"another process of this account held {path} for {timeout:g} s while deciding who runs "
                        f"the forwarders of port {port}; try again"
                    ) from None
                time.sleep(0.005)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


class HelloServer:
    """The forwarders' side: answer each connection with the hello, hold it, say goodbye on close."""

    def __init__(self, hello: Hello) -> None:
        self.hello = hello
        self.path = socket_path(hello.ports.data_submit)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Whoever holds the TCP ports owns this path: a file left here is a dead owner's.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        try:
            self._listener.bind(str(self.path))
            self._listener.listen(64)
            self._inode = os.stat(self.path).st_ino
        except OSError as exc:
            self._listener.close()
            raise ForwarderError(f"cannot open {self.path}, where forwarders say who they are: {exc}") from exc
        line = json.dumps({"service": SERVICE, "protocol": PROTOCOL, **asdict(hello)}).encode() + b"\n"
        self._line = line
        self._wake_r, self._wake_w = socket.socketpair()
        self._users = 0
        self._closed = False
        self._thread = KeptThread.start_new(self._serve, name=f"heron-forwarders-hello-{hello.ports.data_submit}")

    @property
    def users(self) -> int:
        """Connections held now: the processes that use these forwarders (this one's own included)."""
        return self._users

    def _serve(self) -> None:
        held: list[socket.socket] = []
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            try:
                while True:
                    for key, _ in sel.select():
                        if key.fileobj is self._wake_r:
                            return
                        if key.fileobj is self._listener:
                            try:
                                conn, _ = self._listener.accept()
                            except OSError as exc:  # out of descriptors, say: this user tries again
                                logger.warning("the forwarders' hello could not accept a connection: %s", exc)
                                time.sleep(0.1)
                                continue
                            try:
                                conn.settimeout(1.0)
                                conn.sendall(self._line)
                            except OSError:
                                conn.close()
                                continue
                            held.append(conn)
                            sel.register(conn, selectors.EVENT_READ)
                        else:
                            conn = key.fileobj  # type: ignore[assignment]
                            try:
                                data = conn.recv(256)
                            except OSError:
                                data = b""
                            if not data:  # the user left
                                sel.unregister(conn)
                                held.remove(conn)
                                conn.close()
                        self._users = len(held)
            finally:
                for conn in held:
                    if self._closed:  # a goodbye only when the forwarders stop, not if this thread failed
                        with contextlib.suppress(OSError):
                            conn.sendall(_GOODBYE)
                    conn.close()
                self._listener.close()

    def close(self) -> None:
        """Remove the socket (if still ours), say goodbye to every user and stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            # Before the goodbye: a user taking over must not find (or lose) this path.
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
        self._wake_w.send(b"x")
        self._thread.join(5)
        self._wake_r.close()
        self._wake_w.close()


class HelloLink:
    """A user's connection to forwarders that answered; held as long as it uses them."""

    def __init__(self, sock: socket.socket, hello: Hello) -> None:
        self.hello = hello
        self._sock = sock
        self._closed = False

    def wait_gone(self) -> bool:
        """Block until the forwarders go (or :meth:`close`); True when they said goodbye."""
        self._sock.settimeout(None)
        said = b""
        while True:
            try:
                data = self._sock.recv(256)
            except OSError:
                data = b""
            if not data:
                return _GOODBYE.strip() in said
            said = (said + data)[-_MAX_LINE:]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes wait_gone in another thread
        self._sock.close()


def _peer(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end, as the kernel knows it."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", creds)
    return pid, uid


def _read_line(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(_MAX_LINE)
        if not chunk:
            break
        line += chunk
        if len(line) > _MAX_LINE:
            break
    return line


def say_hello(port: int, timeout: float = _HELLO_TIMEOUT_S) -> HelloLink | None:
    """Connect to the forwarders of data submit ``port`` and check who they are.

    None when none answer (no socket, or one its dead owner left); ForwarderError when what
    answers is not forwarders of this account holding the ports it names.
    """
    if not AVAILABLE:
        return None
    path = socket_path(port)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        pid, uid = _peer(sock)
        if uid != os.getuid():
            raise ForwarderError(f"{path} is served by uid {uid}, not this account (uid {os.getuid()}): not used")
        try:
            line = _read_line(sock, timeout)
        except (ConnectionResetError, BrokenPipeError):
            line = b""
        except TimeoutError as exc:
            raise ForwarderError(
                f"the forwarders of {describe_process(pid)} did not say who they are within {timeout:g} s: is that "
                "script suspended (Ctrl-Z)? Let it run again (fg), or end it"
            ) from exc
        if not line:  # its process ended while this connected (a killed owner's socket, being closed)
            sock.close()
            return None
        try:
            raw = json.loads(line)
            if raw.get("service") != SERVICE:
                raise ValueError(f"service {raw.get('service')!r}")
            if raw.get("protocol") != PROTOCOL:
                raise ForwarderError(
                    f"the forwarders of {describe_process(pid)} speak protocol {raw.get('protocol')} (heron_remote "
                    f"{raw.get('version')}), this heron_remote {__version__} speaks {PROTOCOL}: run one version "
                    "of heron_remote in every script of this rig"
                )
            hello = Hello(
                pid=int(raw["pid"]),
                version=str(raw["version"]),
                bind=str(raw["bind"]),
                ports=ForwarderPorts(**raw["ports"]),
                program=describe_process(pid),
            )
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ForwarderError(
                f"{describe_process(pid)} answers on {path} but not as heron_remote forwarders ({exc}): stop it"
            ) from exc
        if hello.pid != pid:
            raise ForwarderError(f"{path} is served by pid {pid}, which says it is pid {hello.pid}: not used")
        _check_holds(hello)
    except BaseException:
        sock.close()
        raise
    return HelloLink(sock, hello)


def _check_holds(hello: Hello) -> None:
    """The pid of the hello must hold a listening socket on each of its ports."""
    inodes = socket_inodes(hello.pid) or set()
    held = {ln.port for ln in listeners() if ln.inode in inodes}
    wanted = [getattr(hello.ports, name) for name in hello.ports.__dataclass_fields__]
    missing = [port for port in wanted if port not in held]
    if missing:
        raise ForwarderError(
            f"{hello} says it runs the forwarders but does not listen on port(s) "
            f"{', '.join(map(str, missing))}: not used"
        )
