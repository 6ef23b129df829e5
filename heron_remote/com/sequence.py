"""Packet numbers to indices: what downstream counts gaps with."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import DecodeError

__all__ = ["INDEX_JUMP_LIMIT", "PacketSequence"]

#: How far a jump may take the index: from there, one by one, it stays below 2**63 (the wire's
#: bound) for ever. A number that would go further is no packet of a real worker.
INDEX_JUMP_LIMIT = 1 << 62


class PacketSequence:
    """Turns a worker's packet numbers (from 1) into the com's index (from 1).

    The index is the packet number, so a packet lost between worker and com is a gap
    downstream, and is counted in :attr:`lost`. A new worker (after a restart) goes on
    from the index where it stood, skipping one (:attr:`skipped`), so that subscribers see
    the restart as a gap. A worker that numbers from 1 again on its own continues the index
    where it stood. Nothing is ever numbered twice. A number that would take the index past
    INDEX_JUMP_LIMIT raises DecodeError and changes nothing.
    """

    __slots__ = ("_base", "_last", "index", "lost", "on_jump", "renumbered", "skipped")

    def __init__(self, on_jump: Callable[[int], None] | None = None) -> None:
        #: Called with the packets missed (0 when the numbering started again) after a jump.
        self.on_jump = on_jump
        self.index = 0
        self.lost = 0
        #: How many times the numbering started again.
        self.renumbered = 0
        #: Indices left out at restarts (one each).
        self.skipped = 0
        self._base = 0
        self._last = 0

    def advance(self, number: int) -> int:
        """The index of packet ``number``."""
        if number == self._last + 1:  # the usual case
            self._last = number
            self.index = index = self._base + number
            return index
        again = number <= self._last
        base = self.index if again else self._base
        if base + number >= INDEX_JUMP_LIMIT:
            raise DecodeError(f"packet number {number} would take the index past 2**62 (after {self.index})")
        missed = 0
        if again:
            self.renumbered += 1
            self._base = base
        else:
            missed = number - self._last - 1
            self.lost += missed
        self._last = number
        self.index = self._base + number
        if self.on_jump is not None:
            self.on_jump(missed)
        return self.index

    def state(self) -> list[int]:
        """Everything it knows, as plain numbers (another process relays on from here: :meth:`restore`)."""
        return [self.index, self.lost, self.renumbered, self.skipped, self._base, self._last]

    def restore(self, state: list[int]) -> None:
        """Go on from :meth:`state`; DecodeError when it is not one."""
        if not (isinstance(state, list) and len(state) == 6 and all(type(x) is int and x >= 0 for x in state)):
            raise DecodeError(f"not a packet sequence's state: {state!r:.80}")
        self.index, self.lost, self.renumbered, self.skipped, self._base, self._last = state

    def new_worker(self) -> None:
        """The next packet comes from a new worker, numbered from 1: the index goes on, one skipped."""
        self._base, self._last = self.index + 1, 0
        self.skipped += 1
