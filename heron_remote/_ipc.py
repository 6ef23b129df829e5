"""Unix sockets for a local worker's data: in this account's private folder, never a port.

A worker its com started on the same machine binds its data socket on a Unix socket the com
named (a random name, in ``<private folder>/sockets``) instead of on loopback TCP. The folder is
0700 (:mod:`heron_remote._paths`), so no other account can reach the socket, and a frame
crosses a Unix socket with less kernel work than TCP (no segments, no acknowledgements).
Where Unix sockets are missing (Windows' pyzmq) or the path would be too long for one, the
worker binds loopback TCP with its key as before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
import stat
import sys
import time
from pathlib import Path

import zmq

from ._paths import private_dir, secure_dir
from .errors import UnsafePathError

__all__ = [
    "STALE_AFTER_S",
    "data_socket_name",
    "is_private_endpoint",
    "is_socket",
    "new_data_socket",
    "remove_socket",
    "sweep_stale",
    "usable_socket_path",
]

#: Longest socket path that fits every platform's ``sun_path`` (108 on Linux, 104 on macOS).
_MAX_PATH = 100
_FOLDER = "sockets"
_NAME = re.compile(r"data-[0-9a-f]{16}\.sock")
#: Seconds a socket file must have existed before a sweep may take it for a dead worker's.
STALE_AFTER_S = 60.0


def _folder() -> Path | None:
    if os.name != "posix" or not zmq.has("ipc"):
        return None
    try:
        return private_dir(_FOLDER)
    except (UnsafePathError, OSError):
        return None


def new_data_socket() -> str | None:
    """A fresh ``ipc://`` endpoint for a local worker's data, or None when none can serve here."""
    folder = _folder()
    if folder is None:
        return None
    path = folder / f"data-{secrets.token_hex(8)}.sock"
    return f"ipc://{path}" if len(str(path)) <= _MAX_PATH else None


def usable_socket_path(path: str) -> bool:
    """Whether a worker may bind ``path``: a data socket's name, in a private folder of its account."""
    candidate = Path(path)
    if "\0" in path or not _NAME.fullmatch(candidate.name) or len(path) > _MAX_PATH:
        return False
    try:
        secure_dir(candidate.parent, create=False)
    except UnsafePathError:
        return False
    return True


def _path(endpoint: str) -> str:
    return endpoint.removeprefix("ipc://")


def is_private_endpoint(endpoint: str) -> bool:
    """Whether ``endpoint`` is a data socket in this account's folder of them: nothing that
    reaches a com or the forwarders' relay host points them anywhere else."""
    if not endpoint.startswith("ipc://") or "\0" in endpoint:
        return False
    folder = _folder()
    path = Path(_path(endpoint))
    return folder is not None and path.parent == folder and bool(_NAME.fullmatch(path.name))


def data_socket_name(endpoint: str) -> str | None:
    """The random part of a data socket's name (what its worker's other files are named by), or None
    when ``endpoint`` is no data socket in this account's folder of them."""
    if not is_private_endpoint(endpoint):
        return None
    return Path(_path(endpoint)).name.removeprefix("data-").removesuffix(".sock")


def remove_socket(endpoint: str) -> None:
    """Remove a data socket's file (a worker that was killed leaves it behind)."""
    if is_private_endpoint(endpoint):
        with contextlib.suppress(OSError):
            os.unlink(_path(endpoint))


def sweep_stale() -> int:
    """Remove the data sockets of workers that are gone (nothing listens on them); how many.

    Linux only: there a refusal means no listener, where macOS also refuses when a live
    listener's queue is full. A file younger than STALE_AFTER_S is left alone, since a worker binds
    its socket a moment before it listens on it.
    """
    folder = _folder()
    if folder is None or not sys.platform.startswith("linux"):
        return 0
    removed = 0
    now = time.time()
    for path in folder.glob("data-*.sock"):
        try:
            if not _NAME.fullmatch(path.name) or now - path.lstat().st_mtime < STALE_AFTER_S:
                continue
        except OSError:
            continue
        with socket.socket(socket.AF_UNIX) as probe:
            probe.setblocking(False)  # a frozen worker's full queue would block a connect for good
            try:
                probe.connect(str(path))
            except OSError as exc:
                if exc.errno == errno.ECONNREFUSED:
                    with contextlib.suppress(OSError):
                        path.unlink()
                        removed += 1
    return removed


def is_socket(endpoint: str) -> bool:
    """Whether an ``ipc://`` endpoint's file is there, and a socket."""
    try:
        return stat.S_ISSOCK(os.lstat(_path(endpoint)).st_mode)
    except (OSError, ValueError):
        return False
