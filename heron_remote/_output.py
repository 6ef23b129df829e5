"""A worker's output as its launcher sees it: logged as it comes, a tail kept, the ready line caught."""

from __future__ import annotations

import logging
import threading
from collections import deque

from ._protocol import PID_PREFIX, ReadyLine

__all__ = ["WorkerOutput"]

#: Lines of a worker's stderr kept for error messages.
TAIL_LINES = 30


class WorkerOutput:
    """Lines a worker writes: logged as they come, the last ones kept, the ready line caught."""

    def __init__(self, log: logging.LoggerAdapter) -> None:
        self._log = log
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._partial = {"stdout": "", "stderr": ""}
        self._lock = threading.Lock()
        self.ready: ReadyLine | None = None
        self.ready_event = threading.Event()
        self.pid: int | None = None

    def feed(self, stream: str, text: str) -> None:
        """Add a chunk of text from ``stream`` ("stdout" or "stderr")."""
        with self._lock:
            text = self._partial[stream] + text
            *lines, self._partial[stream] = text.split("\n")
        for line in lines:
            self.line(stream, line.rstrip("\r"))

    def flush(self) -> None:
        for stream in ("stdout", "stderr"):
            with self._lock:
                rest, self._partial[stream] = self._partial[stream], ""
            if rest:
                self.line(stream, rest)

    def line(self, stream: str, line: str) -> None:
        if stream == "stdout" and self.pid is None and line.startswith(PID_PREFIX):
            self.pid = int(line[len(PID_PREFIX) :]) if line[len(PID_PREFIX) :].isdigit() else None
            return
        if stream == "stdout" and self.ready is None:
            ready = ReadyLine.find(line)
            if ready is not None:
                self.ready = ready
                self.ready_event.set()
                return
        if stream == "stderr":
            with self._lock:
                self._tail.append(line)
        self._log.info("%s: %s", stream, line)

    def tail(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._tail)
