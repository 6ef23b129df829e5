"""Commands on a host through fabric, riding our transport; :class:`FabricProcess` hides fabric's runner.

Short commands return (status, stdout, stderr). A long one returns a
:class:`~heron_remote.ssh.link.RemoteProcess` that reads its status off the SSH channel
(``promise.runner.channel``), so no launcher touches fabric's internals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import IO, Any

import fabric
import paramiko
from fabric.runners import Remote

from ..errors import SSHError
from .link import TextSink
from .registry import Server
from .translate import command_errors, translated

__all__ = ["FabricProcess", "run_command", "start_command"]

logger = logging.getLogger(__name__)

#: Seconds fabric's reader threads get to hand over the last chunks once the channel has ended.
_READERS_S = 0.05


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


def _riding(transport: paramiko.Transport, server: Server, username: str, *, streaming: bool) -> fabric.Connection:
    """A fabric Connection whose commands run over ``transport``.

    ``streaming``: output goes only to the given streams, for commands that run for hours;
    otherwise it is also kept for the result, for short commands.
    """
    # No ssh_config of fabric's own (~/.ssh/config may say ForwardAgent yes), and never the agent:
    # the worker on the PC must hold no credential of the rig's.
    config = fabric.Config(ssh_config=paramiko.SSHConfig())
    conn = _RidingConnection(host=server.host, user=username, port=server.port, config=config, forward_agent=False)
    if streaming:
        conn.config.runners.remote = _StreamingRemote
    # Never opened by fabric (so its own host key policy never applies): it rides ours.
    conn.transport = transport
    return conn


def run_command(
    transport: paramiko.Transport, server: Server, username: str, command: str, *, timeout: float
) -> tuple[int, str, str]:
    """Run a short command; (exit status, stdout, stderr)."""
    with command_errors(server, command, timeout):
        result = _riding(transport, server, username, streaming=False).run(
            command, hide=True, warn=True, in_stream=False, timeout=timeout, encoding="utf-8"
        )
    return int(result.return_code), str(result.stdout), str(result.stderr)


def start_command(
    transport: paramiko.Transport, server: Server, username: str, command: str, *, out: TextSink, err: TextSink
) -> FabricProcess:
    """Start a long-running command, its output written to ``out`` and ``err`` as it comes."""
    with translated(SSHError, f"cannot start a command on {server.label}"):
        promise = _riding(transport, server, username, streaming=True).run(
            command,
            asynchronous=True,
            warn=True,
            in_stream=False,
            pty=False,
            encoding="utf-8",
            out_stream=out,
            err_stream=err,
        )
    return FabricProcess(promise)


class FabricProcess:
    """A :class:`~heron_remote.ssh.link.RemoteProcess` over fabric's Promise of an asynchronous run."""

    def __init__(self, promise: Any) -> None:
        self._promise = promise
        self._channel: paramiko.Channel = promise.runner.channel
        self._lost = False

    def poll(self) -> int | None:
        channel = self._channel
        if not channel.status_event.is_set():
            return None
        # paramiko ends every channel of a transport that closes, with status -1, as if by a signal.
        if channel.exit_status != -1 or channel.get_transport().is_active():
            return int(channel.exit_status)
        self._lost = True
        return None

    @property
    def session_lost(self) -> bool:
        self.poll()
        return self._lost

    def settle(self, timeout: float) -> None:
        channel = self._channel
        deadline = time.monotonic() + timeout
        while not (channel.closed or channel.eof_received) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(_READERS_S)  # let fabric's reader threads hand over the last chunks

    def join(self) -> None:
        self._promise.join()

    def send(self, text: str) -> bool:
        channel = self._channel
        if channel.closed or not channel.get_transport().is_active():
            return False
        try:
            channel.sendall(text.encode())
        except (OSError, EOFError, paramiko.SSHException):
            return False
        return True
