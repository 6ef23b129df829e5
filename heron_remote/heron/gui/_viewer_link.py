"""The worker's side of a window: a daemon thread that runs the viewer process and feeds it.

The viewer is a process, not a thread of the worker (see :mod:`.visualisation_dpg`); the
thread shapes what ``visualise`` left in its slot and sends it down the viewer's stdin, at
most ``1 / _SEND_PERIOD`` times a second, and closes, or kills, the viewer when told.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
from typing import IO, TYPE_CHECKING, Any

from . import _viewer
from ._shaping import Say, _Shaper
from ._viewer import _frame

if TYPE_CHECKING:
    import subprocess

__all__ = ["_Viewer", "_viewer_command"]

logger = logging.getLogger("heron_remote.heron.gui.visualisation_dpg")

_SEND_PERIOD = 1 / 30  # the sender sends at most 30 updates a second
_CHILD_GRACE = 2.0  # seconds the viewer has to close once told, before it is killed


def _viewer_command(spec: dict[str, Any]) -> list[str]:
    """The viewer process: its module run as a script (no package import, so no sys.path needed)."""
    import json

    return [sys.executable, os.path.abspath(_viewer.__file__), json.dumps(spec)]


class _Viewer:
    """One window: a daemon thread that starts the viewer process and sends it what ``put`` was given."""

    def __init__(self, spec: dict[str, Any], length: int, say: Say) -> None:
        self._spec = spec
        self._say = say
        self._shaper = _Shaper(spec, length, say)
        self._lock = threading.Lock()
        self._pending: collections.deque[Any] = collections.deque(maxlen=1 if spec["kind"] == "Image" else length)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name=f"visualisation {spec['title']}", daemon=True)

    @property
    def ended(self) -> bool:
        return not self._thread.is_alive()

    @property
    def showing(self) -> bool:
        proc = self._proc
        return not self._stopping.is_set() and self._thread.is_alive() and (proc is None or proc.poll() is None)

    def start(self) -> None:
        self._thread.start()

    def put(self, data: Any) -> None:
        with self._lock:
            self._pending.append(data)
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass

    def _run(self) -> None:
        import tempfile

        try:
            with tempfile.TemporaryFile() as self._errors:
                try:
                    self._serve()
                finally:
                    self._close_process()
        except Exception as exc:
            self._say(f"viewer:{type(exc).__name__}", logging.WARNING, "the window of %s failed: %r", self._title, exc)

    @property
    def _title(self) -> str:
        return str(self._spec["title"])

    def _serve(self) -> None:
        import subprocess

        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
        try:
            self._proc = subprocess.Popen(
                _viewer_command(self._spec),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._errors,
                creationflags=flags,
            )
        except OSError as exc:
            self._say("launch", logging.WARNING, "cannot start the window of %s: %s", self._title, exc)
            return
        stdin = self._proc.stdin
        assert stdin is not None
        while not self._stopping.is_set():
            self._wake.wait(0.25)
            if self._stopping.is_set() or self._proc.poll() is not None:
                return
            with self._lock:
                items = list(self._pending)
                self._pending.clear()
                self._wake.clear()
            try:
                message = self._shaper.feed(items) if items else None
            except Exception as exc:  # the shaper says what it can; this is for what it did not foresee
                self._say(
                    f"shape:{type(exc).__name__}", logging.WARNING, "cannot show data of %s: %r", self._title, exc
                )
                continue
            if message is None:
                continue
            try:
                for part in _frame(message):
                    stdin.write(part)
                stdin.flush()
            except (OSError, ValueError):  # the viewer is gone: its exit is looked at below
                return
            self._stopping.wait(_SEND_PERIOD)

    def _close_process(self) -> None:
        import subprocess

        proc = self._proc
        if proc is None:
            return
        told = self._stopping.is_set()
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            code = proc.wait(_CHILD_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(_CHILD_GRACE)
            told = True
        if code == 0 and not told:
            self._say(
                "closed",
                logging.INFO,
                "the window of %s was closed; it opens again when visualisation is turned off and on",
                self._title,
            )
        elif code != 0 and not told:
            self._say(
                f"exit:{code}",
                logging.WARNING,
                "the window of %s could not be shown (its viewer ended with code %s): %s",
                self._title,
                code,
                _tail(self._errors),
            )


def _tail(errors: IO[bytes] | None, size: int = 1500) -> str:
    if errors is None:
        return ""
    try:
        errors.seek(0, os.SEEK_END)
        errors.seek(max(0, errors.tell() - size))
        return errors.read().decode("utf-8", "replace").strip() or "(it said nothing)"
    except OSError:
        return ""
