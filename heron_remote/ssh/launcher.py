"""RemoteLauncher: a worker on an acquisition PC, started with fabric, reached through tunnels.

The command is ``echo HERON_REMOTE_PID $$; exec env PYTHONUNBUFFERED=1 python3 …``:
sshd makes the shell a session leader and ``exec`` keeps its pid, so the pid the
first line reports is the worker's pid and its process group, which stop() signals
over a fresh channel of the same connection.

When the SSH connection drops, the worker's session ends with it but the worker does
not: it runs on, reached again through the reconnected tunnels. From then on its state
is asked of the host (the shell's alive command), and its end is seen by the com's heartbeat watch.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from typing import Any

from .._protocol import WorkerArgs
from ..errors import SSHError
from ..launcher import WorkerLauncher
from ..settings import Settings
from .connection import HostConnection, Tunnel
from .registry import Server
from .shells import Shell

__all__ = ["RemoteLauncher"]

logger = logging.getLogger(__name__)


class _LineSink:
    """A file-like object fabric writes a stream to; feeds the worker's output collector."""

    def __init__(self, launcher: RemoteLauncher, stream: str) -> None:
        self._launcher = launcher
        self._stream = stream

    def write(self, text: str) -> int:
        self._launcher.output.feed(self._stream, text)
        return len(text)

    def flush(self) -> None:
        pass


class RemoteLauncher(WorkerLauncher):
    """Runs the worker on ``server`` over the process's one SSH connection to it."""

    _group_poll_s = 0.1  # each check is a command on the PC

    def __init__(self, worker_exec: str, *, node: str, server: Server, settings: Settings | None = None) -> None:
        self.where = server.name
        super().__init__(worker_exec, node=node)
        self.server = server
        self.settings = settings or Settings()
        self.connection: HostConnection | None = None
        self._promise: Any = None
        self._tunnels: list[Tunnel] = []
        self._session_lost = False
        self._shell: Shell | None = None

    def _python(self) -> str:
        return self.server.python

    def argv(self, args: WorkerArgs) -> list[str]:
        if args.port:
            self.log.info(
                "port %d is not used on %s: remote workers bind free ports, so none collide", args.port, self.where
            )
        return super().argv(dataclasses.replace(args, port=0, run_dir=self.server.run_dir or ""))

    def _spawn(self, argv: list[str]) -> None:
        self.connection = HostConnection.acquire(
            self.server, timeout=self.settings.connect_timeout, link_timeout=self.settings.link_timeout
        )
        self._shell = self.connection.shell
        command = self._shell.start(argv)
        self._promise = self.connection.start(
            command, out_stream=_LineSink(self, "stdout"), err_stream=_LineSink(self, "stderr")
        )

    @property
    def pid(self) -> int | None:
        # POSIX shells report it first; on Windows the worker's ready line is the first word of it.
        if self.output.pid is not None:
            return self.output.pid
        return self.output.ready.pid if self.output.ready is not None else None

    def returncode(self) -> int | None:
        """The status sshd reported; None while the worker runs, and once its session is lost."""
        if self._promise is None:
            return None
        channel = self._promise.runner.channel
        if not channel.status_event.is_set():
            return None
        # paramiko ends every channel of a transport that closes, with status -1, as if by a signal.
        if channel.exit_status != -1 or channel.get_transport().is_active():
            return channel.exit_status
        if not self._session_lost:
            self._session_lost = True
            self.log.warning(
                "the SSH session of worker %s ended with the connection; the worker runs on, watched by its "
                "heartbeat, and its output is no longer seen here",
                self.output.pid,
            )
        return None

    def _running(self) -> bool:
        # Once the session is lost the leader's status is unknown here: the group check says.
        return self.returncode() is None and not self._session_lost

    def _group_alive(self) -> bool:
        pid = self.pid
        if pid is None or self.connection is None or self._shell is None:
            return False
        try:
            code, _, _ = self.connection.run(self._shell.alive(pid), timeout=10)
        except SSHError as exc:
            self.log.warning("cannot ask %s whether worker group %d is alive: %s", self.where, pid, exc)
            return False
        return code == 0

    def describe_exit(self, code: int) -> str:
        # sshd reports a death by signal without a status; paramiko shows it as -1.
        return "was killed by a signal" if code == -1 else super().describe_exit(code)

    def _signal_group(self, sig: signal.Signals) -> bool:
        pid = self.pid
        if pid is None or self.connection is None or self._shell is None:
            return False
        try:
            code, _, _ = self.connection.run(self._shell.signal(pid, sig), timeout=10)
        except SSHError as exc:
            self.log.error("cannot signal the worker's group %d on %s: %s", pid, self.where, exc)
            return False
        return code == 0

    def abandon(self) -> None:
        """The PC stopped answering: signalling it would hang on the dead link. Free the tunnels and
        the connection; the worker ends itself once the pulses stop."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self.log.warning("giving up on the worker (pid %s): it ends itself without pulses", self.output.pid)
        self._release()

    def address(self, port: int) -> str:
        if self.connection is None:
            raise SSHError(f"no connection to {self.server.label}")
        tunnel = self.connection.forward(port)
        self._tunnels.append(tunnel)
        return tunnel.address

    def _settle_output(self, timeout: float = 1.0) -> None:
        if self._promise is None:
            return
        channel = self._promise.runner.channel
        deadline = time.monotonic() + timeout
        while not (channel.closed or channel.eof_received) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)  # let fabric's reader threads hand over the last chunks
        self.output.flush()

    def _release(self) -> None:
        conn, self.connection = self.connection, None
        if conn is None:
            return
        for tunnel in self._tunnels:
            conn.close_tunnel(tunnel)
        self._tunnels.clear()
        if self._promise is not None and self.returncode() is not None:
            try:
                self._promise.join()
            except Exception as exc:
                self.log.debug("collecting the remote command's end: %r", exc)
        conn.release()
