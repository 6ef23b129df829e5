"""The exceptions heron_remote raises.

Every error is a :class:`HeronRemoteError`, so one ``except`` catches them all::

    HeronRemoteError
    ├── ConfigError            bad input: a value, a worker_exec, a verbosity string (also a ValueError)
    ├── ForwarderError         a forwarder could not bind (port held by something else, bad interface), or
    │                          forwarders that went could not be replaced
    ├── DecodeError            a message does not follow the wire format (also a ValueError)
    ├── NoDataError            no frame arrived within Source.frames()'s timeout (also a TimeoutError)
    ├── UnsafePathError        a private folder or file is another account's, a symlink or open to others
    ├── WorkerError            something went wrong with a worker process
    │   ├── WorkerStartError   it did not start, or did not report ready in time
    │   │   └── NodeHeldError  a worker of another, running com holds the node on that host
    │   ├── WorkerExitedError  it ended while the com was running
    │   └── WorkerLostError    nothing came from it for longer than its death window
    └── SSHError               the SSH layer (heron_remote.ssh) failed
        ├── HostUnreachableError   no answer, connection refused, name not resolved
        ├── HostKeyError           the host key is unknown, changed or revoked; known_hosts unreadable
        ├── AuthenticationError    the server refused our key, agent keys or password
        ├── TunnelError            a port forward could not be opened
        └── DirectUnreachableError a "direct-only" server's worker ports cannot be reached (a firewall)

Errors that carry a worker's output keep the last lines of its stderr in
``stderr_tail`` and show them in the message. Errors of paramiko and of sockets are
turned into these in one place, :mod:`heron_remote.ssh.translate`.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "DecodeError",
    "DirectUnreachableError",
    "ForwarderError",
    "HeronRemoteError",
    "HostKeyError",
    "HostUnreachableError",
    "NoDataError",
    "NodeHeldError",
    "SSHError",
    "TunnelError",
    "UnsafePathError",
    "WorkerError",
    "WorkerExitedError",
    "WorkerLostError",
    "WorkerStartError",
]


class HeronRemoteError(Exception):
    """The root of every error heron_remote raises."""


class ConfigError(HeronRemoteError, ValueError):
    """A configuration value is wrong; the message names it and says what to do."""


class ForwarderError(HeronRemoteError):
    """A forwarder could not be started (the message names what holds its port), or none could replace
    forwarders that went."""


class DecodeError(HeronRemoteError, ValueError):
    """A message does not follow the wire format; the message says how."""


class NoDataError(HeronRemoteError, TimeoutError):
    """No frame arrived within the timeout given to :meth:`heron_remote.Source.frames`."""


class UnsafePathError(HeronRemoteError):
    """A folder or file heron_remote keeps on a host is not safe to use: another account's,
    a symbolic link, or open to other accounts. ``path`` names it."""

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        super().__init__(message)


class SSHError(HeronRemoteError):
    """The SSH layer failed: connection, authentication, host key or tunnel."""


class HostUnreachableError(SSHError):
    """The SSH server could not be reached."""


class HostKeyError(SSHError):
    """The server's host key is not known, differs from the known one or is revoked; or a
    known_hosts line cannot be read (the message names the file and the line)."""


class AuthenticationError(SSHError):
    """The server refused every credential we offered."""


class TunnelError(SSHError):
    """A port forward through the SSH connection failed."""


class DirectUnreachableError(SSHError):
    """A server whose registry entry says ``"transport": "direct-only"`` started its worker, but this
    rig cannot reach the worker's ports on the PC's address (a firewall drops or refuses them)."""


class WorkerError(HeronRemoteError):
    """A worker process failed.

    ``node`` names the node, ``returncode`` is the exit status when known and
    ``stderr_tail`` the last lines the worker wrote to stderr.
    """

    def __init__(
        self,
        message: str,
        *,
        node: str = "",
        returncode: int | None = None,
        stderr_tail: tuple[str, ...] = (),
    ) -> None:
        self.node = node
        self.returncode = returncode
        self.stderr_tail = tuple(stderr_tail)
        if self.stderr_tail:
            message += "\nlast lines of the worker's stderr:\n  " + "\n  ".join(self.stderr_tail)
        super().__init__(message)


class WorkerStartError(WorkerError):
    """The worker did not start or did not report ready within the start timeout."""


class NodeHeldError(WorkerStartError):
    """A worker of another com that still runs (or still pulses) holds the node on that host:
    the launch ends nothing and fails; the message names the holder and what to do."""


class WorkerExitedError(WorkerError):
    """The worker ended while its com was running."""


class WorkerLostError(WorkerError):
    """Nothing came from the worker for longer than its death window (a link or PC down).

    By then the worker has ended itself for want of pulses.
    """
