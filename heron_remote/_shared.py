"""Things a process shares by key and counts: the last user to release one closes it.

One copy of the pattern behind the SSH connection pool (one connection per host),
the OpenSSH control masters (one per connection) and the forwarders that several
Sources of one process use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["SharedRegistry"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedRegistry(Generic[K, V]):
    """Values by key, each with a count of its users; ``close`` runs when the count drops to 0.

    ``make`` and ``close`` run outside the registry's lock, so they may block (connect, log
    in, join a thread) without holding up users of other keys.
    """

    def __init__(self, close: Callable[[V], None]) -> None:
        self._close = close
        self._entries: dict[K, list] = {}  # key -> [value, users]
        self._lock = threading.Lock()

    def acquire(self, key: K, make: Callable[[], V]) -> tuple[V, bool]:
        """The value shared under ``key`` (made by ``make`` if none is), and whether it is new."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry[1] += 1
                return entry[0], False
            value = make()
            self._entries[key] = [value, 1]
            return value, True

    def add(self, key: K, value: V) -> None:
        """Share an existing ``value`` under ``key``, with one user (the caller)."""
        with self._lock:
            if key in self._entries:
                raise KeyError(f"{key!r} is shared already")
            self._entries[key] = [value, 1]

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry[0]

    def release(self, key: K, value: V | None = None) -> bool:
        """One user fewer; True when that was the last and the value was closed.

        With ``value``, only that value counts down (one that replaced it is left alone).
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or (value is not None and entry[0] is not value):
                return False
            entry[1] -= 1
            if entry[1] > 0:
                return False
            del self._entries[key]
        self._close(entry[0])
        return True

    def values(self) -> list[V]:
        with self._lock:
            return [entry[0] for entry in self._entries.values()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
