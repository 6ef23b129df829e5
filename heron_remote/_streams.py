"""A worker's stdout and stderr that outlive their pipe.

A remote worker's output travels over its SSH session. When the link drops, that
session ends but the worker runs on (it is reached again through the reconnected
tunnels); a plain ``print`` would then raise BrokenPipeError and end the work. These
streams catch the first failed write and carry on into a file on the worker's host:
``<private folder>/logs/<node>-<pid>.log``, created 0600 without following a symlink.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import TextIO

from ._paths import open_private, private_dir, safe_name
from .errors import HeronRemoteError

__all__ = ["guard_std_streams"]


class _Rerouting(io.TextIOBase):
    def __init__(self, stream: TextIO, fallback: _Fallback) -> None:
        self._stream = stream
        self._fallback = fallback
        self._file: TextIO | None = None

    @property
    def rerouted(self) -> bool:
        return self._file is not None

    def _reroute(self, exc: OSError) -> TextIO:
        if self._file is None:
            self._file = self._fallback.open()
            self._file.write(f"--- output continues here: the com's pipe broke ({exc}) ---\n")
        return self._file

    def write(self, text: str) -> int:
        if self._file is None:
            try:
                n = self._stream.write(text)
                self._stream.flush()
                return n
            except OSError as exc:  # EPIPE, or EIO: the reader is gone
                self._reroute(exc)
        assert self._file is not None
        return self._file.write(text)

    def flush(self) -> None:
        try:
            (self._file or self._stream).flush()
        except OSError as exc:
            self._reroute(exc)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return (self._file or self._stream).fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


class _Fallback:
    """The file a worker's output goes to once its pipe broke, made when first needed."""

    def __init__(self, name: str) -> None:
        self._name = f"{safe_name(name)}-{os.getpid()}.log"

    @property
    def path(self) -> Path:
        return private_dir("logs") / self._name

    def open(self) -> TextIO:
        try:
            fd = open_private(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        except (OSError, HeronRemoteError):
            # Nowhere safe to write (an unsafe folder, a full disk): the output is dropped, the work goes on.
            return open(os.devnull, "w", encoding="utf-8")
        return open(fd, "a", buffering=1, encoding="utf-8", errors="replace")


def guard_std_streams(name: str) -> None:
    """Wrap sys.stdout and sys.stderr; they fall back to a file of the private folder (made when needed)."""
    fallback = _Fallback(name)
    if not isinstance(sys.stdout, _Rerouting):
        sys.stdout = _Rerouting(sys.stdout, fallback)
    if not isinstance(sys.stderr, _Rerouting):
        sys.stderr = _Rerouting(sys.stderr, fallback)
