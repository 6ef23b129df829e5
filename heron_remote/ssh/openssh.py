"""The OpenSSH tunnel backend: the ``ssh`` binary carries a host's port forwards.

Selected per server with ``"tunnel": "openssh"`` in the registry. OpenSSH moves the bytes
in C, in its own process, off the rig process's GIL: measured here (``heron-remote bench``,
2 cores) the whole path reached ~1.5x the paramiko backend's throughput over a loopback sshd,
and eight 26 MB/s sources cost the rig process ~5% CPU each instead of ~17% (and ~4% in ssh).
Commands (starting and stopping workers) keep riding the host's paramiko connection; only
the forwards move, so a host has one paramiko connection and one ssh master.

One ``ssh -M -N`` control master per host connection (a :class:`~heron_remote.ssh.tunnel.TunnelHost`)
carries all of that host's forwards: each is added with ``ssh -O forward -L`` on a local
port picked here (OpenSSH does not report a port it picks for ``-L``), checked by
connecting to it, and removed with ``-O cancel``. The master exits (``-O exit``, then
TERM, then KILL) with the last forward. It runs under ``setpriv --pdeathsig`` where that
exists, started from a thread that lives as long as it does, so it also ends when this
process dies. When the master dies under its forwards (a lost link: ``ServerAliveInterval``
notices), it is started again with back-off and the forwards come back on the same ports.

The host-key policy and credentials are the registry's, as for paramiko: known_hosts
checked strictly (the paramiko connection, opened first, has already pinned a first key
where trust-on-first-use is on), ``-F /dev/null`` so that no ssh_config changes it, a key
file or the agent's keys, and never a password: ssh could only take one from a prompt. The
agent and X11 are never forwarded. The command lines are built in :mod:`.openssh_argv`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .._backoff import Backoff
from .._procs import stop_child
from .._shared import SharedRegistry
from .._threads import KeptThread
from ..errors import TunnelError
from .openssh_argv import control_argv, master_argv
from .registry import Server
from .translate import translated
from .tunnel import BaseTunnel, TunnelHost

__all__ = ["OpenSSHMaster", "OpenSSHTunnel", "master_argv", "master_of", "openssh_forward"]

logger = logging.getLogger(__name__)

#: Seconds a control command (``-O forward`` and the like) may take: it only talks to the master.
CONTROL_TIMEOUT_S = 10.0
#: Local ports tried for one forward: another program may take a free port before ssh binds it.
PORT_ATTEMPTS = 5
RESTART_BACKOFF = Backoff(first=0.1, maximum=2.0)
_STDERR_TAIL = 1500


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OpenSSHTunnel(BaseTunnel):
    """A local forward ``127.0.0.1:local_port`` -> the server's ``remote_host:remote_port``, via ssh."""

    def __init__(self, master: OpenSSHMaster, local_port: int, remote_host: str, remote_port: int) -> None:
        super().__init__(local_port, (remote_host, remote_port))
        #: What close() calls: removes the forward from the master (or ends a master no longer needed).
        self.on_close: Callable[[OpenSSHTunnel], None] = master.remove

    @property
    def spec(self) -> str:
        """The ``-L`` argument of this forward."""
        return f"127.0.0.1:{self.local_port}:{self.remote[0]}:{self.remote[1]}"

    def _close(self) -> None:
        self.on_close(self)


class OpenSSHMaster:
    """One ``ssh -M`` process to ``server``, carrying forwards added while it runs."""

    def __init__(self, server: Server, username: str, *, timeout: float = 10.0, link_timeout: float = 3.0) -> None:
        self.server = server
        self.username = username
        self.timeout = timeout
        self.link_timeout = link_timeout
        self.log = logging.LoggerAdapter(logger, {"host": server.name})
        #: How many times the master was started again after it died.
        self.restarts = 0
        self._ssh = shutil.which("ssh")
        self._dir = Path(tempfile.mkdtemp(prefix="hr-ssh-"))  # a short path: a socket name has ~100 bytes
        self.control_path = self._dir / "ctl"
        try:
            self._argv = master_argv(self._ssh, server, username, self.control_path, timeout, link_timeout)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self._lock = threading.Lock()
        self._tunnels: set[OpenSSHTunnel] = set()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Path = self._dir / "stderr"
        self._spawned = threading.Event()
        self._closing = threading.Event()
        self._thread: KeptThread | None = None
        self._was_up = False
        self._open_lock = threading.Lock()
        self._opened = False
        self._open_error: BaseException | None = None

    # -- the command lines -----------------------------------------------------------
    def _control(self, operation: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``ssh -O operation args`` against this master."""
        return subprocess.run(
            [*control_argv(self._ssh, self.control_path), "-O", operation, *args, "--", self.server.host],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=CONTROL_TIMEOUT_S,
        )

    def stderr_tail(self) -> str:
        try:
            text = self._stderr.read_text(errors="replace").strip()
        except OSError:
            return ""
        return text[-_STDERR_TAIL:]

    # -- life cycle ------------------------------------------------------------------
    def open(self) -> None:
        """Start the master and return once it is logged in, or raise TunnelError with ssh's stderr."""
        self._thread = thread = KeptThread.start_new(self._run, name=f"heron-openssh-{self.server.name}")
        self._spawned.wait()
        if self._proc is None:  # the spawn failed, and the thread ends with why
            thread.join()
            raise TunnelError(f"cannot start ssh for {self.server.label}: {thread.error}") from thread.error
        try:
            self._wait_ready(self.timeout + 5)
        except BaseException:
            self.close()
            raise
        self._was_up = True
        self.log.info("OpenSSH master to %s up (pid %s)", self.server.label, self.pid)

    def open_once(self) -> None:
        """Open on the first call; later calls wait for that one, and share its failure."""
        with self._open_lock:
            if self._open_error is not None:
                raise self._open_error
            if self._opened:
                return
            try:
                self.open()
            except BaseException as exc:
                self._open_error = exc
                raise
            self._opened = True

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def _spawn(self) -> subprocess.Popen[bytes]:
        # A killed master leaves its socket behind, and ssh would then run without one.
        self.control_path.unlink(missing_ok=True)
        with open(self._stderr, "wb") as err:  # a file, not a pipe: nobody reads it while all goes well
            return subprocess.Popen(self._argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)

    def _run(self) -> None:
        """Run the master, and run it again while forwards need it. The thread that spawned it
        must outlive it, as the parent-death signal follows the thread."""
        try:
            self._proc = self._spawn()
        finally:
            self._spawned.set()
        while True:
            code = self._proc.wait()
            if self._closing.is_set() or not self._was_up:  # closed, or open() reports the failure
                return
            self.log.warning(
                "the OpenSSH master to %s ended (status %s: %s); starting it again",
                self.server.label,
                code,
                self.stderr_tail() or "no message",
            )
            if not self._restart():
                return

    def _restart(self) -> bool:
        """Start the master again, with back-off, until it is up (True) or being closed (False)."""
        attempt = 0
        while not self._closing.wait(RESTART_BACKOFF.delay(attempt := attempt + 1)):
            try:
                self._proc = self._spawn()
                if self._closing.is_set():  # close() may have missed this one
                    self._end(self._proc)
                    return False
                self._wait_ready(self.timeout + 5)
            except (OSError, subprocess.SubprocessError, TunnelError) as exc:
                self.log.warning("restarting the OpenSSH master to %s failed: %s", self.server.label, exc)
                continue
            self.restarts += 1
            with self._lock:  # those still open now: some may have closed while it was down
                forwards = list(self._tunnels)
            for tunnel in forwards:
                done = self._control("forward", "-L", tunnel.spec)
                if done.returncode != 0:
                    self.log.error("forward %s on %s not restored: %s", tunnel.spec, self.server.name, done.stderr)
            self.log.warning("OpenSSH master to %s back; forwards kept their local ports", self.server.label)
            return True
        return False

    def _is_up(self) -> bool:
        try:
            return self._control("check").returncode == 0
        except subprocess.TimeoutExpired:
            return False  # a master that does not answer is not up; the caller's deadline decides

    def _wait_ready(self, timeout: float) -> None:
        """Until ``-O check`` answers: the control socket appears only once ssh has logged in."""
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.control_path.exists() and self._is_up():
                return
            if proc.poll() is not None:
                raise TunnelError(
                    f"ssh to {self.server.label} exited with status {proc.returncode} before it was up: "
                    f"{self.stderr_tail() or 'no message'}"
                )
            if time.monotonic() > deadline:
                self._end(proc)
                raise TunnelError(
                    f"ssh to {self.server.label} was not up within {timeout:g} s: {self.stderr_tail() or 'no message'}"
                )
            time.sleep(0.01)

    # -- forwards ------------------------------------------------------------------
    def forward(self, remote_port: int, remote_host: str = "127.0.0.1") -> OpenSSHTunnel:
        """A new local port that reaches ``remote_host:remote_port`` on the server, checked open."""
        last = ""
        for _ in range(PORT_ATTEMPTS):
            tunnel = OpenSSHTunnel(self, _free_port(), remote_host, remote_port)
            done = self._control("forward", "-L", tunnel.spec)
            if done.returncode == 0:
                with self._lock:
                    self._tunnels.add(tunnel)
                try:
                    self._check_listening(tunnel)
                except BaseException:
                    tunnel.close()
                    raise
                return tunnel
            last = done.stderr.strip()
            if self._proc is not None and self._proc.poll() is not None:
                break  # the master is gone: another port will not help
        raise TunnelError(
            f"ssh cannot forward a local port to {remote_host}:{remote_port} on {self.server.label}: "
            f"{last or 'no message'}; ssh said: {self.stderr_tail() or 'nothing'}"
        )

    def _check_listening(self, tunnel: OpenSSHTunnel) -> None:
        """Connect to the new port: the master accepted ``-O forward``, so its listener must answer."""
        failed = f"the OpenSSH forward {tunnel.spec} to {self.server.label} does not accept connections"
        with (
            translated(TunnelError, failed, (OSError,)),
            socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=self.timeout),
        ):
            pass

    def remove(self, tunnel: OpenSSHTunnel) -> None:
        with self._lock:
            self._tunnels.discard(tunnel)
        if self._closing.is_set():
            return
        try:
            done = self._control("cancel", "-L", tunnel.spec)
        except (OSError, subprocess.SubprocessError) as exc:
            self.log.debug("cancelling forward %s: %s", tunnel.spec, exc)
            return
        if done.returncode != 0:
            self.log.debug("cancelling forward %s: %s", tunnel.spec, done.stderr.strip())

    @property
    def forwards(self) -> int:
        with self._lock:
            return len(self._tunnels)

    def close(self) -> None:
        """End the master (``-O exit``, then TERM, then KILL) and remove its files. Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._end(self._proc, graceful=True)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
            if thread.error is not None and self._was_up:  # a failed open() has raised it already
                self.log.error("the OpenSSH master thread of %s failed: %r", self.server.label, thread.error)
        self._end(self._proc)  # one the restart loop started meanwhile
        shutil.rmtree(self._dir, ignore_errors=True)
        self.log.info("OpenSSH master to %s closed", self.server.label)

    def _end(self, proc: subprocess.Popen[bytes] | None, *, graceful: bool = False) -> None:
        if proc is None or proc.poll() is not None:
            return
        if graceful:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self._control("exit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(3)
                return
        stop_child(proc)


# -- one master per host connection -----------------------------------------------------------

#: The master of each connection, shared by its forwards: the last one closed ends it.
_masters: SharedRegistry[TunnelHost, OpenSSHMaster] = SharedRegistry(OpenSSHMaster.close)


def openssh_forward(host: TunnelHost, remote_port: int, remote_host: str = "127.0.0.1") -> OpenSSHTunnel:
    """A forward through the OpenSSH master of ``host``'s connection, started with its first forward."""

    def make() -> OpenSSHMaster:
        return OpenSSHMaster(host.server, host.username, timeout=host.timeout, link_timeout=host.link_timeout)

    master, _ = _masters.acquire(host, make)
    try:
        master.open_once()  # the first caller logs in; the others wait for it, and share its failure
        tunnel = master.forward(remote_port, remote_host)
    except BaseException:
        _masters.release(host, master)
        raise
    tunnel.on_close = lambda t: _drop(host, master, t)
    return tunnel


def _drop(host: TunnelHost, master: OpenSSHMaster, tunnel: OpenSSHTunnel) -> None:
    """One forward fewer on the master: end it if that was the last, else cancel the forward."""
    if not _masters.release(host, master):
        master.remove(tunnel)


def master_of(host: TunnelHost) -> OpenSSHMaster | None:
    """The OpenSSH master ``host``'s connection runs now, if any (for tests and the bench)."""
    return _masters.get(host)
