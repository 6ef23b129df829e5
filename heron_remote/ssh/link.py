"""What a remote launch needs of a host, in one place: :class:`HostLink` and :class:`RemoteProcess`.

:class:`~heron_remote.ssh.connection.HostConnection` is the real one (SSH, fabric);
:class:`heron_remote.testing.FakeHost` runs everything on this machine, for tests without sshd.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .registry import Server
    from .shells import Shell
    from .tunnel import Tunnel

__all__ = ["HostLink", "RemoteProcess", "TextSink"]


class TextSink(Protocol):
    """Where a command's output stream goes, as it comes."""

    def write(self, text: str) -> int: ...

    def flush(self) -> None: ...


class RemoteProcess(Protocol):
    """A long-running command on a host, started by :meth:`HostLink.start`."""

    def poll(self) -> int | None:
        """Its exit status; None while it runs, and once its session is lost (status unknown)."""
        ...

    @property
    def session_lost(self) -> bool:
        """Whether its session ended with the connection while the command may run on."""
        ...

    def settle(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the rest of its output to be delivered."""
        ...

    def join(self) -> None:
        """Collect the end of a command that has ended (raises what the runner saw go wrong)."""
        ...

    def send(self, text: str) -> bool:
        """Write ``text`` to its stdin; False when that is closed (its session ended)."""
        ...


class HostLink(Protocol):
    """A host's connection as a launcher uses it. The launcher's :meth:`release` gives it back."""

    @property
    def server(self) -> Server: ...

    @property
    def shell(self) -> Shell:
        """The host's command shell."""
        ...

    def run(self, command: str, *, timeout: float = 30.0) -> tuple[int, str, str]:
        """Run a short command; (exit status, stdout, stderr). SSHError when it cannot."""
        ...

    def start(self, command: str, *, out_stream: TextSink, err_stream: TextSink) -> RemoteProcess:
        """Start a long-running command, its output written to the streams as it comes."""
        ...

    def forward(self, remote_port: int, remote_host: str = "127.0.0.1") -> Tunnel:
        """A local port that reaches ``remote_host:remote_port`` on the host."""
        ...

    def endpoints(self) -> tuple[str, str]:
        """(this machine's address, the host's address) of the connection: the direct transport
        binds the worker on the second and names the first in its advice."""
        ...

    def release(self) -> None: ...
