"""RemoteLauncher: a worker on an acquisition PC, started over the host's link, reached through tunnels.

The command is ``echo HERON_REMOTE_PID $$; exec env PYTHONUNBUFFERED=1 python3 …``:
sshd makes the shell a session leader and ``exec`` keeps its pid, so the pid the
first line reports is the worker's pid and its process group, which stop() signals
over a fresh channel of the same connection.

When the SSH connection drops, the worker's session ends with it but the worker does
not: it runs on, reached again through the reconnected tunnels. From then on its state
is asked of the host (the shell's alive command), and its end is seen by the com's heartbeat watch.

With the direct transport (the registry's ``"transport": "direct"`` or ``"direct-only"``) SSH
still starts, watches and stops the worker and carries its keys, but the worker binds on the
PC's address as the SSH connection reaches it (passed in argv: an address is no secret, and the
com connects to that very address) and the com connects there with CurveZMQ. When those ports
cannot be reached, a ``"direct"`` launch forwards the same ports through the tunnel (still
CurveZMQ) and says why in a WARNING; a ``"direct-only"`` one fails with DirectUnreachableError.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import signal
from collections.abc import Callable

from .._linkkeys import LinkKeys
from .._protocol import ReadyLine, WorkerArgs
from ..errors import DecodeError, DirectUnreachableError, SSHError, WorkerStartError
from ..launcher import WorkerLauncher
from ..settings import Settings
from .direct import unreachable, url
from .link import HostLink, RemoteProcess
from .registry import Server
from .shells import Shell
from .tunnel import Tunnel

__all__ = ["RemoteLauncher"]

logger = logging.getLogger(__name__)


class _LineSink:
    """A file-like object a host writes one output stream to; feeds the worker's output collector."""

    def __init__(self, feed: Callable[[str, str], None], stream: str) -> None:
        self._feed = feed
        self._stream = stream

    def write(self, text: str) -> int:
        self._feed(self._stream, text)
        return len(text)

    def flush(self) -> None:
        pass


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def _is_relative_path(word: str) -> bool:
    """A script or program named by a path that does not start at the root (or at ~)."""
    return (word.endswith(".py") or "/" in word) and not word.startswith(("/", "~", "-", "$"))


class RemoteLauncher(WorkerLauncher):
    """Runs the worker on ``connection``'s server.

    The caller acquires the connection (``HostConnection.acquire(server, timeout=...,
    link_timeout=...)``) and hands it over: once constructed, the launcher owns it and
    releases it when the worker is stopped or abandoned. A constructor that raises leaves
    it with the caller.
    """

    _group_poll_s = 0.1  # each check is a command on the PC
    control = "session"

    def __init__(
        self, worker_exec: str, *, node_name: str, connection: HostLink, settings: Settings | None = None
    ) -> None:
        self.where = connection.server.name
        super().__init__(worker_exec, node_name=node_name)
        self.settings = settings or Settings()
        self._server = connection.server
        self._connection: HostLink | None = connection
        self._process: RemoteProcess | None = None
        self._tunnels: list[Tunnel] = []
        self._shell: Shell | None = None
        self._lost_noted = False
        #: The PC's address the worker binds on (direct transport), and this rig's, for advice.
        self._direct: tuple[str, str] | None = None
        self.transport = "tunnel"
        if self._server.direct:
            self._direct = connection.endpoints()[::-1]
            self.transport = "direct"
            self.keys = LinkKeys.make("curve", link_timeout=self.settings.link_timeout)

    @property
    def server(self) -> Server:
        return self._server

    @property
    def connection(self) -> HostLink | None:
        """The host's connection; None once the launcher has released it."""
        return self._connection

    @property
    def tunnels(self) -> tuple[Tunnel, ...]:
        """The forwards to the worker's ports, in the order the com asked for them."""
        return tuple(self._tunnels)

    def _python(self) -> list[str]:
        return self._server.python_argv

    def argv(self, args: WorkerArgs) -> list[str]:
        if args.port:
            self.log.info(
                "port %d is not used on %s: remote workers bind free ports, so none collide", args.port, self.where
            )
        bind = self._direct[0] if self._direct is not None else ""
        return super().argv(dataclasses.replace(args, port=0, run_dir=self._server.run_dir or "", bind=bind))

    def _link(self) -> HostLink:
        if self._connection is None:
            raise SSHError(f"no connection to {self._server.label}")
        return self._connection

    def _paths_note(self) -> str:
        relative = [w for w in _words(self.worker_exec) if _is_relative_path(w)]
        if not relative:
            return ""
        user = f"user {self._server.username!r}" if self._server.username else "the user it logs in as"
        return (
            f"; on {self.where} the relative path {relative[0]!r} starts from the home directory of {user}: "
            "give the script's full path on the PC"
        )

    def _spawn(self, argv: list[str]) -> None:
        link = self._link()
        self._shell = link.shell
        self._process = link.start(
            self._shell.start(argv),
            out_stream=_LineSink(self.output.feed, "stdout"),
            err_stream=_LineSink(self.output.feed, "stderr"),
        )

    def wait_ready(self, timeout: float) -> ReadyLine:
        ready = super().wait_ready(timeout)
        if self._direct is not None:
            try:
                self.keys = self.keys.with_server(ready.server_key)
            except DecodeError as exc:
                self.stop(grace=1.0)
                raise WorkerStartError(
                    f"worker of node {self.node_name!r} on {self.where} reported no CurveZMQ key for the direct "
                    f"transport ({exc}): is heron_remote on the PC as new as here (version {ready.version} there)?",
                    node=self.node_name,
                ) from exc
            self._choose_path(ready)
        return ready

    def _choose_path(self, ready: ReadyLine) -> None:
        """Direct when the rig reaches the worker's ports on the PC; else the tunnel, or an error."""
        assert self._direct is not None
        address, rig = self._direct
        # The worker counts its death window from now: the tunnel must be up well inside it.
        timeout = min(self.settings.link_timeout, self.settings.death_window / 3)
        failed = unreachable(address, ready.ports.values(), timeout)
        if failed is None:
            self.log.info("direct transport: CurveZMQ to %s, ports %s", address, sorted(ready.ports.values()))
            return
        port, why = failed
        advice = (
            f"to go direct, let {self.where} accept TCP from {rig} to {address} on the ports its workers bind "
            "(free ports, from its ephemeral range: on Linux net.ipv4.ip_local_port_range)"
        )
        if self._server.transport == "direct-only":
            self.stop(grace=1.0)
            raise DirectUnreachableError(
                f'server {self.where} has "transport": "direct-only" but this rig cannot reach the worker of node '
                f"{self.node_name!r} at {address} port {port}: {why}. {advice[0].upper()}{advice[1:]}, or write "
                '"direct" to fall back to the SSH tunnel'
            )
        self.transport = "tunnel (direct unreachable)"
        self.log.warning(
            "direct transport to %s: %s port %d cannot be reached from this rig (%s); the data goes through the "
            "SSH tunnel instead. %s%s",
            self.where,
            address,
            port,
            why,
            advice[0].upper(),
            advice[1:],
        )

    @property
    def pid(self) -> int | None:
        # POSIX shells report it first; on Windows the worker's ready line is the first word of it.
        if self.output.pid is not None:
            return self.output.pid
        return self.output.ready.pid if self.output.ready is not None else None

    def returncode(self) -> int | None:
        """The status the host reported; None while the worker runs, and once its session is lost."""
        process = self._process
        if process is None:
            return None
        code = process.poll()
        if process.session_lost and not self._lost_noted:
            self._lost_noted = True
            self.log.warning(
                "the SSH session of worker %s ended with the connection; the worker runs on, watched by its "
                "heartbeat, and its output is no longer seen here",
                self.output.pid,
            )
        return code

    def _running(self) -> bool:
        # Once the session is lost the leader's status is unknown here: the group check says.
        return self.returncode() is None and not (self._process is not None and self._process.session_lost)

    def _group_alive(self) -> bool:
        pid, link = self.pid, self._connection
        if pid is None or link is None or self._shell is None:
            return False
        try:
            code, _, _ = link.run(self._shell.alive(pid), timeout=10)
        except SSHError as exc:
            self.log.warning("cannot ask %s whether worker group %d is alive: %s", self.where, pid, exc)
            return False
        return code == 0

    def describe_exit(self, code: int) -> str:
        # sshd reports a death by signal without a status; paramiko shows it as -1.
        return "was killed by a signal" if code == -1 else super().describe_exit(code)

    def _signal_group(self, sig: signal.Signals) -> bool:
        pid, link = self.pid, self._connection
        if pid is None or link is None or self._shell is None:
            return False
        try:
            code, _, _ = link.run(self._shell.signal(pid, sig), timeout=10)
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

    def _tell(self, line: str) -> bool:
        process = self._process
        return process is not None and not process.session_lost and process.send(line)

    def address(self, port: int) -> str:
        if self._direct is not None and self.transport == "direct":
            return url(self._direct[0], port)
        # A direct worker binds on the PC's address, not its loopback: the fallback forwards there.
        tunnel = self._link().forward(port, self._direct[0] if self._direct is not None else "127.0.0.1")
        self._tunnels.append(tunnel)
        return tunnel.address

    def _settle_output(self, timeout: float = 1.0) -> None:
        if self._process is None:
            return
        self._process.settle(timeout)
        self.output.flush()

    def refuse_connections(self) -> None:
        # The com's sockets reconnect to a worker that has ended until the tunnels close: each
        # attempt would open a channel that the PC refuses (paramiko logs every refusal as an ERROR).
        for tunnel in self._tunnels:
            tunnel.refuse_new()

    def _release(self) -> None:
        link, self._connection = self._connection, None
        if link is None:
            return
        for tunnel in self._tunnels:
            tunnel.close()
        self._tunnels.clear()
        process = self._process
        if process is not None and process.poll() is not None:
            try:
                process.join()
            except Exception as exc:
                self.log.debug("collecting the remote command's end: %r", exc)
        link.release()
