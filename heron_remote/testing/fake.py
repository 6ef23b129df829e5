"""A host without sshd: a :class:`~heron_remote.ssh.link.HostLink` that runs commands on this machine.

For unit tests of what the SSH layer does with a host (launch, stop, a lost session) with
no sshd, no network and no namespaces.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import threading
from typing import IO

from .._procs import write_stdin
from .._threads import KeptThread
from ..errors import HostUnreachableError
from ..ssh.link import TextSink
from ..ssh.registry import Server
from ..ssh.shells import PosixShell, Shell
from ..ssh.tunnel import BaseTunnel

__all__ = ["FakeHost", "FakeProcess", "FakeTunnel"]


class FakeTunnel(BaseTunnel):
    """A "forward" on a host that is this machine: the local port is the remote port."""

    def __init__(self, remote_port: int, remote_host: str = "127.0.0.1") -> None:
        super().__init__(remote_port, (remote_host, remote_port))


def _login_shell() -> str:
    """The shell sshd runs commands in for this user (its login shell: dash's kill differs from bash's)."""
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        return "sh"
    return shell if shell and os.access(shell, os.X_OK) else "sh"


class FakeProcess:
    """A :class:`~heron_remote.ssh.link.RemoteProcess` run here by the login shell, in a new session (as sshd does)."""

    def __init__(self, command: str, out: TextSink, err: TextSink) -> None:
        self._proc = subprocess.Popen(
            [_login_shell(), "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        self._lost = threading.Event()
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [
            KeptThread.start_new(self._read, name=f"fake-host-{name}-{self._proc.pid}", args=(pipe, sink))
            for name, pipe, sink in (("out", self._proc.stdout, out), ("err", self._proc.stderr, err))
        ]

    @property
    def pid(self) -> int:
        """The pid of the session's shell (and, after its ``exec``, of the command)."""
        return self._proc.pid

    def _read(self, pipe: IO[str], sink: TextSink) -> None:
        with pipe:
            while chunk := pipe.readline():
                if not self._lost.is_set():  # a lost session's output is not seen any more
                    sink.write(chunk)

    def lose_session(self) -> None:
        self._lost.set()

    def poll(self) -> int | None:
        code = self._proc.poll()  # reaps it even when its session is lost
        return None if self._lost.is_set() else code

    @property
    def session_lost(self) -> bool:
        return self._lost.is_set()

    def settle(self, timeout: float) -> None:
        for reader in self._readers:
            reader.join(timeout)
            reader.check()

    def join(self) -> None:
        self._proc.wait(10)
        self.settle(5)

    def send(self, text: str) -> bool:
        return not self._lost.is_set() and write_stdin(self._proc, text)


class FakeHost:
    """A :class:`~heron_remote.ssh.link.HostLink` whose host is this machine: no sshd, no tunnel.

    Commands run in the user's login shell, as sshd runs them (a POSIX host); ``forward()`` hands
    back the port itself. :meth:`cut` drops the link as a lost SSH connection would: commands fail
    until :meth:`restore`, and the sessions of processes started so far are lost for good (status
    unknown here, output no longer seen) while the processes run on. What was asked is recorded.
    """

    def __init__(self, name: str = "fake-pc", *, python: str = sys.executable) -> None:
        self.server = Server(id=name, name=name, host="127.0.0.1", python=python)
        self.shell: Shell = PosixShell()
        #: What run() and start() were given (also while the link was cut), what they and forward() made.
        self.commands: list[str] = []
        self.started: list[str] = []
        self.processes: list[FakeProcess] = []
        self.tunnels: list[FakeTunnel] = []
        self.releases = 0  # calls of release()
        self._cut = False

    def _check_link(self) -> None:
        if self._cut:
            raise HostUnreachableError(f"no connection to {self.server.label}: the link is cut")

    def run(self, command: str, *, timeout: float = 30.0) -> tuple[int, str, str]:
        self.commands.append(command)
        self._check_link()
        done = subprocess.run(
            [_login_shell(), "-c", command], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout
        )
        return done.returncode, done.stdout, done.stderr

    def start(self, command: str, *, out_stream: TextSink, err_stream: TextSink) -> FakeProcess:
        self.started.append(command)
        self._check_link()
        process = FakeProcess(command, out_stream, err_stream)
        self.processes.append(process)
        return process

    def endpoints(self) -> tuple[str, str]:
        return "127.0.0.1", "127.0.0.1"

    def forward(self, remote_port: int, remote_host: str = "127.0.0.1") -> FakeTunnel:
        self._check_link()
        tunnel = FakeTunnel(remote_port, remote_host)
        self.tunnels.append(tunnel)
        return tunnel

    def release(self) -> None:
        self.releases += 1

    def cut(self) -> None:
        """Drop the link: every session so far is lost, and commands fail until restore()."""
        self._cut = True
        for process in self.processes:
            process.lose_session()

    def restore(self) -> None:
        """The link is back (a reconnect): commands run again; lost sessions stay lost."""
        self._cut = False
