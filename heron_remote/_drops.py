"""Messages dropped as undecodable: counted, and logged without letting a flood fill the log."""

from __future__ import annotations

import logging
import threading

__all__ = ["Drops"]

#: The first drops of an input are logged one by one, then only every EVERY-th.
FIRST = 5
EVERY = 1000


class Drops:
    """The count of the messages one input dropped, and the last reason; thread-safe.

    Each drop is logged while there are few, then only every EVERY-th: whoever can write to
    a socket must not be able to fill a disk or a terminal with our warnings.
    """

    def __init__(self, log: logging.Logger | logging.LoggerAdapter, what: str) -> None:
        self._log = log
        self._what = what
        self._lock = threading.Lock()
        self.count = 0
        self.last: str | None = None

    def __call__(self, reason: object) -> int:
        """Count one dropped message and say why (sometimes); returns the count."""
        with self._lock:
            self.count += 1
            count = self.count
        self.last = str(reason)
        if count <= FIRST or count % EVERY == 0:
            self._log.warning("dropped %s (%d so far): %s", self._what, count, reason)
        return count
