"""Where heron_remote keeps files on a host: one private folder per account, checked on every use.

Rigs and acquisition PCs are shared by several accounts. Anything another account could
create first or swap for a symlink (a shared ``/tmp/heron-remote``, a record opened by
name) would let it steer what our launches end or overwrite. So every account gets its
own folder -- ``$XDG_RUNTIME_DIR/heron-remote`` where the login provides one, else
``<temp dir>/heron-remote-<uid>`` -- and every folder we use must be ours: a real
directory (not a symlink), owned by this account, with no access for group or others.
Files in it are opened with ``O_NOFOLLOW``; node names become safe file names.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from urllib.parse import quote

from .errors import UnsafePathError

__all__ = ["TEMP_DIR", "open_private", "private_dir", "safe_name", "secure_dir"]

#: Our folder's name; not the package's name, or a script run from there would import it.
TEMP_DIR = "heron-remote"

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_POSIX = os.name == "posix"


def _uid() -> int | None:
    return os.getuid() if _POSIX else None


def secure_dir(path: str | os.PathLike[str], *, create: bool = True) -> Path:
    """``path`` as a folder only this account can use; created (0700) if missing.

    Raises UnsafePathError when it exists but is a symlink, not a folder, another
    account's, or open to group or others.
    """
    folder = Path(path)
    if create:
        parent = folder.parent
        if parent != folder and not parent.exists():
            parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise UnsafePathError(f"cannot create the private folder {folder}: {exc.strerror}") from exc
    _check_dir(folder)
    return folder


def _check_dir(folder: Path) -> None:
    try:
        st = os.lstat(folder)
    except OSError as exc:
        raise UnsafePathError(f"the private folder {folder} cannot be read: {exc.strerror}") from exc
    if not _POSIX:
        return  # Windows: the profile's temp folder is the user's own
    what = None
    if stat.S_ISLNK(st.st_mode):
        what = "is a symbolic link"
    elif not stat.S_ISDIR(st.st_mode):
        what = "is not a folder"
    elif st.st_uid != _uid():
        what = f"belongs to another account (uid {st.st_uid})"
    elif st.st_mode & 0o077:
        what = f"is open to other accounts (mode {stat.S_IMODE(st.st_mode):o})"
    if what is not None:
        raise UnsafePathError(
            f"refusing to use {folder}: it {what}. heron_remote keeps its start records and logs there, "
            "so another account could steer them; remove it (or ask an administrator to) and start again",
            path=str(folder),
        )


def private_dir(*parts: str) -> Path:
    """This account's heron_remote folder on this host (or a subfolder of it), checked."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base: Path | None = None
    if runtime and _POSIX:
        try:
            st = os.lstat(runtime)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == _uid() and not st.st_mode & 0o077:
                base = Path(runtime) / TEMP_DIR
        except OSError:
            base = None
    if base is None:
        owner = _uid() if _POSIX else os.environ.get("USERNAME", "user")
        base = Path(tempfile.gettempdir()) / f"{TEMP_DIR}-{owner}"
    folder = secure_dir(base)
    for part in parts:
        folder = secure_dir(folder / part)
    return folder


def open_private(path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symlink at the last step and creates files 0600."""
    try:
        return os.open(path, flags | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(f"refusing to open {path}: it is a symbolic link", path=str(path)) from exc
        raise


def safe_name(name: str) -> str:
    """``name`` as one file name: separators, control and odd characters percent-encoded,
    never ``.``/``..`` or hidden, so a node called ``../x`` stays inside its folder."""
    if not name:
        return "%00"
    encoded = quote(name, safe=" -_#@+=,")
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    return encoded
