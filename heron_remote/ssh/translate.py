"""The one place where errors of sockets, paramiko and fabric become heron_remote's errors.

Each helper is a context manager that re-raises what it catches as one of
:mod:`heron_remote.errors`, ``from`` the original, with a message that says what failed where.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko

from ..errors import ConfigError, HeronRemoteError, HostUnreachableError, SSHError
from .registry import Server

__all__ = ["LINK_ERRORS", "command_errors", "is_encrypted_key_error", "key_file_errors", "reaching", "translated"]

logger = logging.getLogger(__name__)

#: What "No route to host" means on a lab LAN: nothing answered at that address.
_NO_ROUTE = (
    ': nothing answers at that address on this network. Is the PC switched on and plugged in, and is its "IP" in '
    "the registry right (ping it)?"
)

#: What paramiko raises when the link or the session under a request failed.
LINK_ERRORS: tuple[type[BaseException], ...] = (paramiko.SSHException, OSError, EOFError)


@contextmanager
def translated(
    error: type[HeronRemoteError],
    message: str,
    catch: tuple[type[BaseException], ...] = LINK_ERRORS,
    *,
    passing: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """``catch`` (but not ``passing``) raised inside -> ``error(f"{message}: {exc}")``."""
    try:
        yield
    except passing:
        raise
    except catch as exc:
        raise error(f"{message}: {exc}") from exc


@contextmanager
def reaching(server: Server, timeout: float) -> Iterator[None]:
    """Socket errors of connecting to ``server``'s sshd -> HostUnreachableError saying which."""
    s = server
    try:
        yield
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
        advice = _NO_ROUTE if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else ""
        raise HostUnreachableError(f"cannot reach {s.label}: {exc.strerror or exc}{advice}") from exc


@contextmanager
def command_errors(server: Server, command: str, timeout: float) -> Iterator[None]:
    """A command that outlived ``timeout``, or a link that failed under it -> SSHError."""
    from invoke.exceptions import CommandTimedOut

    try:
        with translated(SSHError, f"cannot run a command on {server.label}"):
            yield
    except CommandTimedOut as exc:
        raise SSHError(f"command on {server.label} did not finish within {timeout:g} s: {command}") from exc


@contextmanager
def key_file_errors(server: Server, path: Path) -> Iterator[None]:
    """A key file paramiko cannot load -> ConfigError naming the server and the file."""
    encrypted = f"server {server.name!r}: key_file {path} is encrypted; load it into ssh-agent and drop key_file"
    try:
        yield
    except paramiko.PasswordRequiredException as exc:
        raise ConfigError(encrypted) from exc
    except TypeError as exc:
        if not is_encrypted_key_error(exc):
            raise
        raise ConfigError(encrypted) from exc
    except (paramiko.SSHException, OSError, ValueError) as exc:
        raise ConfigError(f"server {server.name!r}: cannot read key_file {path}: {exc}") from exc


def is_encrypted_key_error(exc: BaseException) -> bool:
    """Whether loading a key failed for want of its passphrase.

    paramiko raises PasswordRequiredException for some formats; for OpenSSH's own (and PEM)
    it lets cryptography's TypeError through, which says "password".
    """
    return isinstance(exc, paramiko.PasswordRequiredException) or (
        isinstance(exc, TypeError) and "password" in str(exc).lower()
    )
