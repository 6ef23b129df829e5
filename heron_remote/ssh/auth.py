"""Logging in on a transport: the server's key file, else the agent's and the default keys, then a password.

A refusal names the user, what was tried and what the server accepts, because "authentication
failed" alone sends a lab user guessing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import paramiko

from ..errors import AuthenticationError, ConfigError, SSHError
from .registry import Server
from .translate import is_encrypted_key_error, key_file_errors, translated

__all__ = ["DEFAULT_KEYS", "authenticate", "candidate_keys", "load_key"]

logger = logging.getLogger(__name__)

#: Tried in ~/.ssh, in this order, when the server names no key_file (as ssh does).
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


def authenticate(transport: paramiko.Transport, server: Server, username: str) -> None:
    """Log in as ``username``: keys first, then the server's password; AuthenticationError naming all tried."""
    tried: list[str] = []
    failed = f"authentication with {server.label} failed"
    # paramiko's AuthenticationException (a refusal) is expected and handled here; any
    # other SSHException means the exchange itself broke.
    refusals = (paramiko.AuthenticationException,)
    allowed = _accepted_methods(transport, username, failed)
    if transport.is_authenticated():
        return
    for label, key in candidate_keys(server):
        tried.append(label)
        try:
            with translated(SSHError, failed, (paramiko.SSHException,), passing=refusals):
                transport.auth_publickey(username, key)
        except paramiko.BadAuthenticationType as exc:
            allowed = exc.allowed_types
            break
        except paramiko.AuthenticationException:
            continue
        if transport.is_authenticated():
            return
    password = server.resolve_password()
    if password is not None:
        tried.append("the password")
        try:
            with translated(SSHError, failed, (paramiko.SSHException,), passing=refusals):
                transport.auth_password(username, password)
        except paramiko.BadAuthenticationType as exc:
            allowed = exc.allowed_types
        except paramiko.AuthenticationException:
            pass
        if transport.is_authenticated():
            return
    methods = f" (it accepts: {', '.join(allowed)})" if allowed else ""
    raise AuthenticationError(
        f"{server.label} refused to log in user {username!r}{methods}; tried "
        f"{', '.join(tried) or 'nothing: give a key_file, load a key into ssh-agent, or a password'}. "
        'Check the user name ("username" in the registry) and that the public key is in that user\'s '
        "~/.ssh/authorized_keys on the PC, or give key_file or password."
    )


def _accepted_methods(transport: paramiko.Transport, username: str, failed: str) -> list[str] | None:
    """The log-in methods the server accepts for ``username`` (the answer to method "none", as ssh
    asks first); None when it does not say. A server that lets "none" in has logged us in."""
    try:
        with translated(SSHError, failed, (paramiko.SSHException,), passing=(paramiko.AuthenticationException,)):
            transport.auth_none(username)
    except paramiko.BadAuthenticationType as exc:
        return list(exc.allowed_types)
    except paramiko.AuthenticationException:
        return None
    return None


def candidate_keys(server: Server) -> list[tuple[str, paramiko.PKey]]:
    """(label, key) to offer: the server's key_file alone, else the agent's keys and the default files."""
    if server.key_file:
        return [(f"key {server.key_file}", load_key(Path(server.key_file), server))]
    keys: list[tuple[str, paramiko.PKey]] = []
    try:
        keys += [(f"ssh-agent key {i + 1}", k) for i, k in enumerate(paramiko.Agent().get_keys())]
    except paramiko.SSHException as exc:
        logger.debug("no ssh-agent keys: %s", exc)
    for name in DEFAULT_KEYS:
        path = Path("~/.ssh").expanduser() / name
        if path.is_file():
            try:
                keys.append((f"key {path}", paramiko.PKey.from_path(path)))
            except (paramiko.SSHException, OSError, TypeError) as exc:  # a key type paramiko lacks, or encrypted
                if isinstance(exc, TypeError) and not is_encrypted_key_error(exc):
                    raise
                logger.debug("skipped %s: %s", path, exc)
    return keys


def load_key(path: Path, server: Server) -> paramiko.PKey:
    """The private key in ``path`` (the server's key_file); ConfigError when it cannot be used."""
    if not path.is_file():
        raise ConfigError(f"server {server.name!r}: key_file {path} does not exist")
    with key_file_errors(server, path):
        key = paramiko.PKey.from_path(path)
    return key
