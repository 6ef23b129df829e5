"""Starting and stopping a worker process: one base class, a few hooks per place.

:class:`WorkerLauncher` owns the logic every launch shares: turning ``worker_exec``
into an argv, collecting the worker's output (logged, with a tail kept for error
messages), waiting for its ready line, and stopping it with TERM, a grace period,
KILL and a check that it is gone. Subclasses say *where*: :class:`LocalLauncher`
runs the worker on this machine in a new session; the SSH layer adds a remote one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from typing import IO

from ._ipc import is_socket, new_data_socket, remove_socket, sweep_stale
from ._linkkeys import LinkKeys
from ._logging import NodeLogger
from ._output import WorkerOutput
from ._procs import exit_status, group_members, write_stdin
from ._protocol import EXIT_HELD, EXIT_MEANINGS, STOP_LINE, ReadyLine, WorkerArgs
from ._ring import remove_ring, sweep_stale_rings
from ._threads import KeptThread
from .errors import ConfigError, NodeHeldError, WorkerError, WorkerExitedError, WorkerStartError

__all__ = ["LocalLauncher", "WorkerLauncher"]

logger = logging.getLogger(__name__)

_PYTHON_NAMES = {"python", "python3", "py", "python.exe", "python3.exe", "py.exe"}


class WorkerLauncher(ABC):
    """Start, watch and stop one worker. Subclasses implement the hooks below."""

    #: Where the worker runs, for messages ("this machine", a server's name).
    where: str = "this machine"
    #: Seconds between checks of the worker's group while stopping (a remote check is a command).
    _group_poll_s: float = 0.02
    #: What the worker's stdin is (WorkerArgs.control): how it tells its com is gone.
    control: str = "pipe"
    #: How the com reaches the worker's ports: "local", "tunnel", "direct" (CurveZMQ to the PC's
    #: address) or "tunnel (direct unreachable)" (a direct server's fallback).
    transport: str = "local"

    def __init__(self, worker_exec: str, *, node_name: str) -> None:
        if not isinstance(worker_exec, str) or not worker_exec.strip():
            raise ConfigError(
                f"worker_exec must be a command line (a script, or python -m module), got {worker_exec!r}"
            )
        self.worker_exec = worker_exec
        self.node_name = node_name
        self.log = NodeLogger(logger, node=node_name, host=self.where)
        self.output = WorkerOutput(self.log)
        self.ready: ReadyLine | None = None
        #: This launch's keys: only a com that holds them gets through the worker's sockets.
        self.keys = LinkKeys.make()
        self._spawned = False
        self._spawning = False
        self._stopped = False
        # Re-entrant: stop() may run in a signal handler of the very thread that is starting.
        self._stop_lock = threading.RLock()

    # -- hooks -------------------------------------------------------------
    @abstractmethod
    def _python(self) -> list[str]:
        """The interpreter (its path, then its options) that runs ``.py`` scripts and bare ``python`` commands."""

    @abstractmethod
    def _spawn(self, argv: list[str]) -> None:
        """Start argv in a new process group; route its output to ``self.output``."""

    @abstractmethod
    def returncode(self) -> int | None:
        """The worker's exit status, or None while it runs."""

    @abstractmethod
    def _signal_group(self, sig: signal.Signals) -> bool:
        """Send sig to the worker's process group; False when nothing of it is left."""

    def _running(self) -> bool:
        """Whether the worker itself is still running."""
        return self.returncode() is None

    def _group_alive(self) -> bool:
        """Whether any process of the worker's group still runs (helpers it spawned included)."""
        return False

    @property
    def pid(self) -> int | None:
        """The worker's pid, which is also its process group."""
        return None

    def address(self, port: int) -> str:
        """The endpoint through which this process reaches the worker's loopback ``port``."""
        return f"tcp://127.0.0.1:{port}"

    def endpoint(self, channel: str) -> str:
        """The endpoint through which this process reaches the ready worker's ``channel``."""
        assert self.ready is not None
        return self.address(self.ready.ports[channel])

    def _release(self) -> None:
        """Free what the launch holds besides the process (tunnels, connections)."""

    def refuse_connections(self) -> None:
        """No new connection to the worker from now on: it has ended, or is about to be stopped."""

    def _check_exec(self, argv: list[str]) -> None:
        """Fail early when the program or script cannot exist where the worker runs."""

    def _tell(self, line: str) -> bool:
        """Write ``line`` to the worker's control channel (stdin); False when it is closed."""
        return False

    def _paths_note(self) -> str:
        """Where relative paths in ``worker_exec`` start, for an error about a worker that did not start."""
        return ""

    # -- shared logic --------------------------------------------------------
    def argv(self, args: WorkerArgs) -> list[str]:
        try:
            words = shlex.split(self.worker_exec)
        except ValueError as exc:
            raise ConfigError(f"worker_exec {self.worker_exec!r} is not a valid command line: {exc}") from exc
        if words[0].lower() in _PYTHON_NAMES:
            words[0:1] = self._python()
        elif words[0].endswith(".py"):
            words[0:0] = self._python()
        return words + dataclasses.replace(args, control=self.control).to_argv()

    def start(self, args: WorkerArgs) -> None:
        argv = self.argv(args)
        self._check_exec(argv)
        self.log.info("starting worker: %s", shlex.join(argv))
        with self._stop_lock:  # a stop() that came first wins
            if self._stopped:
                raise WorkerStartError(
                    f"worker of node {self.node_name!r} was stopped before it started", node=self.node_name
                )
            self._spawning = True
        try:
            self._spawn(argv)
        except BaseException:
            with self._stop_lock:
                self._spawning = False
                stopped_meanwhile = self._stopped
            if stopped_meanwhile:  # that stop() left the clean-up to this thread
                self._release()
            raise
        # The keys go first on the control channel, before the worker binds anything.
        if not self._tell(self.keys.to_line()):
            self.log.debug("the worker's stdin closed before its keys were written: it has ended")
        with self._stop_lock:
            self._spawning = False
            self._spawned = True
            stopped_meanwhile = self._stopped
        if stopped_meanwhile:  # a stop() came while spawning and found nothing yet: end it now
            self._stopped = False
            self.stop(grace=1.0)
            raise WorkerStartError(
                f"worker of node {self.node_name!r} was stopped while it started", node=self.node_name
            )

    def wait_ready(self, timeout: float) -> ReadyLine:
        """Block until the worker announced its ports; WorkerStartError if it exits or times out."""
        deadline = time.monotonic() + timeout
        while not self.output.ready_event.wait(0.05):
            code = self.returncode()
            if code is not None:
                raise self.exit_error(code, starting=True)
            if time.monotonic() > deadline:
                self.stop(grace=1.0)
                raise WorkerStartError(
                    f"worker of node {self.node_name!r} on {self.where} did not report ready within {timeout:g} s "
                    f"(command: {self.worker_exec!r}); is it a heron_remote worker that calls "
                    "start_the_source_worker_process?",
                    node=self.node_name,
                    stderr_tail=self.output.tail(),
                )
        self.ready = self.output.ready
        assert self.ready is not None
        self.log.info("worker pid %d ready, ports %s", self.ready.pid, self.ready.ports)
        return self.ready

    def _settle_output(self, timeout: float = 1.0) -> None:
        """Give the output readers a moment to deliver what a dead worker wrote."""

    def exit_error(self, code: int, *, starting: bool = False) -> WorkerError:
        """The error for a worker that ended with ``code``, carrying its last stderr lines."""
        self._settle_output()
        how = self.describe_exit(code)
        if starting and code == EXIT_HELD:
            return NodeHeldError(
                f"worker of node {self.node_name!r} on {self.where} did not start: {how}",
                node=self.node_name,
                returncode=code,
                stderr_tail=self.output.tail(),
            )
        if starting:
            return WorkerStartError(
                f"worker of node {self.node_name!r} on {self.where} {how} before it was ready "
                f"(command: {self.worker_exec!r}{self._paths_note()})",
                node=self.node_name,
                returncode=code,
                stderr_tail=self.output.tail(),
            )
        return WorkerExitedError(
            f"worker of node {self.node_name!r} on {self.where} {how}",
            node=self.node_name,
            returncode=code,
            stderr_tail=self.output.tail(),
        )

    def describe_exit(self, code: int) -> str:
        if code < 0:
            return f"was killed by signal {-code}"
        meaning = EXIT_MEANINGS.get(code)
        return f"exited with status {code}" + (f" ({meaning})" if meaning else "")

    def stop(self, grace: float = 3.0) -> int | None:
        """TERM the worker's group, KILL it after ``grace`` s, confirm it is gone. Idempotent."""
        with self._stop_lock:
            if self._stopped:
                return self.returncode()
            self._stopped = True
            if self._spawning:
                return None  # the starting thread finds _stopped after its spawn and stops it then
        try:
            if not self._spawned:
                return None
            self.refuse_connections()
            if self._running() and self._tell(STOP_LINE + "\n"):
                self.log.info("stopping worker (asked on its control channel; TERM after %.1f s)", grace)
                self._wait_running(grace)
            if self._running() or self._group_alive():
                self.log.info("stopping worker (TERM to its group, KILL after %.1f s)", grace)
                self._signal_group(signal.SIGTERM)
                if not self._wait_exit(grace):
                    self.log.warning("worker or its helpers ignored TERM for %.1f s: sending KILL", grace)
                    # The leader may be gone while helpers it spawned live on: KILL the rest.
                    self._signal_group(signal.SIGKILL)
                    if not self._wait_exit(5.0):
                        raise WorkerError(
                            f"worker of node {self.node_name!r} on {self.where} (group {self.pid}) survived KILL",
                            node=self.node_name,
                        )
            self._settle_output()
            code = self.returncode()
            self.log.info("worker stopped (status %s)", code)
            return code
        finally:
            self._release()

    def abandon(self) -> None:
        """Give up on a worker that stopped answering. Here it can still be signalled: stop it."""
        self.stop(grace=0.5)

    def _wait_running(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._running():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _wait_exit(self, timeout: float) -> bool:
        """Wait until the worker, then everything of its process group, has ended."""
        deadline = time.monotonic() + timeout
        for alive, every in ((self._running, 0.02), (self._group_alive, self._group_poll_s)):
            while alive():
                if time.monotonic() > deadline:
                    return False
                time.sleep(every)
        return True

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> WorkerLauncher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalLauncher(WorkerLauncher):
    """Runs the worker on this machine, in a new session (its own process group)."""

    where = "this machine"

    def __init__(self, worker_exec: str, *, node_name: str, env: dict[str, str] | None = None) -> None:
        super().__init__(worker_exec, node_name=node_name)
        self._env = env
        self._proc: subprocess.Popen[str] | None = None
        self._readers: list[KeptThread] = []
        #: The Unix socket this launch's worker binds its data on ("": loopback TCP).
        self._data_socket = ""

    def _python(self) -> list[str]:
        return [sys.executable]

    def argv(self, args: WorkerArgs) -> list[str]:
        if not self._data_socket:
            sweep_stale()  # what workers ended by a SIGKILL left
            sweep_stale_rings()
            self._data_socket = new_data_socket() or ""
        return super().argv(dataclasses.replace(args, data_ipc=self._data_socket.removeprefix("ipc://")))

    def endpoint(self, channel: str) -> str:
        assert self.ready is not None
        if channel == "data" and self._data_socket and self.ready.endpoints.get("data") == self._data_socket:
            if not is_socket(self._data_socket):  # removed since the worker bound it: it would never connect
                raise WorkerStartError(
                    f"the Unix socket of worker of node {self.node_name!r}, {self._data_socket}, is gone: something "
                    "removed it from this account's private folder after the worker bound it",
                    node=self.node_name,
                )
            return self._data_socket
        if not self.ready.ports.get(channel):
            raise WorkerStartError(
                f"worker of node {self.node_name!r} bound its {channel} socket neither on a port nor on the Unix "
                f"socket its com named ({self._data_socket or 'none'}); it said {self.ready.endpoints or 'nothing'}",
                node=self.node_name,
                stderr_tail=self.output.tail(),
            )
        return super().endpoint(channel)

    def _check_exec(self, argv: list[str]) -> None:
        program = argv[0]
        here = f"check the path (a relative one starts from this process's working directory, {os.getcwd()})"
        if os.sep in program or (os.altsep and os.altsep in program):
            if not os.path.isfile(program):
                raise ConfigError(f"worker_exec program {program!r} does not exist: {here}")
        elif shutil.which(program) is None:
            raise ConfigError(f"worker_exec program {program!r} is not on PATH: give its full path, or install it")
        if program == sys.executable and len(argv) > 1 and argv[1].endswith(".py") and not os.path.isfile(argv[1]):
            raise ConfigError(f"worker_exec script {argv[1]!r} does not exist: {here}")

    def _spawn(self, argv: list[str]) -> None:
        env = dict(os.environ if self._env is None else self._env)
        env["PYTHONUNBUFFERED"] = "1"
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,  # the worker's control channel: it closes when this process ends
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                bufsize=1,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise WorkerStartError(
                f"cannot start worker {argv[0]!r} of node {self.node_name!r}: {exc}", node=self.node_name
            ) from exc
        for stream, pipe in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr)):
            name = f"heron-worker-{stream}-{self._proc.pid}"
            self._readers.append(KeptThread.start_new(self._pump, args=(stream, pipe), name=name))

    def _pump(self, stream: str, pipe: IO[str]) -> None:
        try:
            for line in pipe:
                self.output.line(stream, line.rstrip("\n"))
        except (OSError, ValueError) as exc:  # the pipe closed under us at shutdown
            self.log.debug("%s reader stopped: %s", stream, exc)
        finally:
            pipe.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _tell(self, line: str) -> bool:
        return write_stdin(self._proc, line)

    def returncode(self) -> int | None:
        return None if self._proc is None else exit_status(self._proc)

    def _group_alive(self) -> bool:
        return self._proc is not None and bool(group_members(self._proc.pid))

    def _signal_group(self, sig: signal.Signals) -> bool:
        if self._proc is None:
            return False
        try:
            os.killpg(self._proc.pid, sig)  # the worker leads its session's group
        except ProcessLookupError:
            return False
        return True

    def _release(self) -> None:
        if self._data_socket and self.returncode() is not None:
            remove_socket(self._data_socket)  # the worker removes it as it exits, unless it was killed
            remove_ring(self._data_socket)
        stdin = self._proc.stdin if self._proc is not None else None
        if stdin is not None:
            try:
                stdin.close()
            except OSError as exc:  # the worker is gone and the pipe broke: nothing to tell it any more
                self.log.debug("closing the worker's stdin: %s", exc)

    def _settle_output(self, timeout: float = 1.0) -> None:
        for reader in self._readers:
            reader.join(timeout)
            if reader.error is not None:
                self.log.error("reading the worker's output failed: %r", reader.error)
