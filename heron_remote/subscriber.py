"""Reading a source's published messages back: Frames (index, time, one value per output), gaps counted."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import zmq

from ._drops import Drops
from .com.tap import FrameTap
from .errors import DecodeError, NoDataError
from .wire import parse_meta, published_value, read_published_captured, resync

__all__ = ["IDLE_MS", "Frame", "Subscriber"]

logger = logging.getLogger("heron_remote.source")

#: How long a read waits for a message before it looks at the com and its own timeout.
IDLE_MS = 100


class _Frame(NamedTuple):
    index: int  # type: ignore[assignment]  # the wire's name; tuple.index stays reachable as tuple.index
    time: float
    arrays: tuple[Any, ...]


class Frame(_Frame):
    """One packet of a source: its index (from 1), the com's time stamp and one value per output.

    ``captured`` (an attribute, not unpacked with the three) is when the worker captured it, in
    seconds of the rig's clock (the com's ``time.time()``), or None until the com knows the
    worker's clock offset (a few heartbeats after the start).
    """

    captured: float | None

    def __new__(cls, index: int, time: float, arrays: tuple[Any, ...], captured: float | None = None) -> Frame:
        return _frame(cls, index, time, arrays, captured)


def _frame(cls: type[Frame], index: int, time: float, arrays: tuple[Any, ...], captured: float | None) -> Frame:
    """A Frame made without the calls of the NamedTuple's ``__new__``: one per message."""
    self: Frame = tuple.__new__(cls, (index, time, arrays))
    self.captured = captured
    return self


class _Assembler:
    """Groups a packet's outputs, which arrive as one message each, into one Frame."""

    def __init__(self, outputs: int) -> None:
        self._n = outputs
        self._values: list[Any] = [None] * outputs
        self.index: int | None = None
        self._time = 0.0
        self._captured: float | None = None

    def add(
        self, output: int, index: int, stamp: float, value: Any, captured: float | None = None
    ) -> tuple[Frame | None, Frame | None]:
        """(a frame the new index completes by ending it, the frame ``value`` completes)."""
        ended = self.flush() if self.index is not None and index != self.index else None
        self.index, self._time, self._captured = index, stamp, captured
        self._values[output] = value
        done = self.flush() if all(v is not None for v in self._values) else None
        return ended, done

    def flush(self) -> Frame | None:
        """The frame being assembled, the outputs not yet seen as None (they were ignored)."""
        if self.index is None:
            return None
        frame = Frame(self.index, self._time, tuple(self._values), self._captured)
        self._values, self.index = [None] * self._n, None
        return frame


class Subscriber:
    """Turns the messages of one source's topics into Frames and counts the indices it never saw.

    ``ended`` says whether the source's com has stopped (raising what stopped it, if it
    failed); ``last_error`` is quoted when no frame comes in time. A message on its topics that
    cannot be decoded (anyone may publish on the forwarders) is dropped and counted in ``rejected``.
    """

    def __init__(
        self,
        name: str,
        topics: Sequence[str],
        *,
        ended: Callable[[], bool],
        last_error: Callable[[], str | None],
    ) -> None:
        self.name = name
        self._topic_output = {t.encode(): k for k, t in enumerate(topics)}
        self._outputs = len(topics)
        self._ended = ended
        self._last_error = last_error
        self.gaps = 0
        self.received = 0
        self._drops = Drops(logger, f"an undecodable message on the topics of source {name!r}")
        self._last_index: int | None = None

    def read(
        self, sub: zmq.Socket, *, timeout: float | None, limit: int | None, tap: FrameTap | None = None
    ) -> Iterator[Frame]:
        """Frames from ``sub``, until ``limit``, the com's end, or NoDataError after ``timeout`` s.

        With ``tap``, once the com relays in this process (``tap.live``), frames come from the tap
        instead: ``sub``'s topics are unsubscribed, what it holds is read, and then the tap, whose
        outputs already read from ``sub`` are skipped.
        """
        recv = sub.recv
        topic_output = self._topic_output
        single = self._outputs == 1
        assembler = _Assembler(self._outputs)
        monotonic = time.monotonic
        yielded = 0
        last_frame = monotonic()
        tapped = draining = False  # reading the tap; reading what sub holds before the tap
        skip_through = 0  # the tap's outputs up to this index were read from sub
        idle_s = IDLE_MS / 1000
        flags = 0
        while limit is None or yielded < limit:
            if tapped:
                assert tap is not None
                item = tap.get(idle_s)
                got = item is not None
                if item is not None:
                    topic, index, time_us, captured_us, raw_meta, payload = item
                    if index <= skip_through:
                        continue
                    output = topic_output[topic]
                    try:
                        value = published_value(parse_meta(raw_meta), payload)
                    except DecodeError as exc:
                        self._drops(exc)
                        continue
                    stamp = time_us / 1e6
                    captured = None if captured_us is None else captured_us / 1e6
            else:
                if not draining and tap is not None and tap.live:
                    # Unsubscribed first: the com goes on publishing, so sub would never run dry.
                    for name in topic_output:
                        sub.unsubscribe(name)
                    draining, flags = True, zmq.NOBLOCK
                try:
                    topic = recv(flags)  # waits up to IDLE_MS unless draining
                except zmq.Again:
                    if draining:  # sub is empty: on to the tap, from the first index not read whole
                        tapped = True
                        partial = assembler.index
                        skip_through = partial - 1 if partial is not None else self._last_index or 0
                        continue
                    got = False
                else:
                    try:
                        output = topic_output[topic]
                        index, stamp, captured, value = read_published_captured(recv)
                    except KeyError:  # another node whose topic starts like ours
                        resync(sub)
                        continue
                    except (zmq.Again, DecodeError) as exc:
                        resync(sub)
                        self._drops("it ended early" if isinstance(exc, zmq.Again) else exc)
                        continue
                    got = True
            if not got:
                pending = assembler.flush()  # the rest of its outputs were ignored
                if pending is not None:
                    yield pending
                    yielded += 1
                    continue
                if self._ended():
                    return
                if timeout is not None and time.monotonic() - last_frame > timeout:
                    said = self._last_error()
                    raise NoDataError(
                        f"no frame from source {self.name!r} for {timeout:g} s"
                        + (f"; last error: {said}" if said else "")
                    ) from None
                continue
            last_frame = monotonic()
            if single:
                if self._last_index == index - 1:  # the usual case, without _count's call
                    self.received += 1
                    self._last_index = index
                else:
                    self._count(index)
                yield _frame(Frame, index, stamp, (value,), captured)
                yielded += 1
                continue
            if index != assembler.index:
                self._count(index)
            for frame in assembler.add(output, index, stamp, value, captured):
                if frame is not None and (limit is None or yielded < limit):
                    yield frame
                    yielded += 1

    @property
    def rejected(self) -> int:
        """Messages on this source's topics dropped because they could not be decoded."""
        return self._drops.count

    def _count(self, index: int) -> None:
        self.received += 1
        if self._last_index is not None and index > self._last_index + 1:
            missed = index - self._last_index - 1
            self.gaps += missed
            logger.warning(
                "source %s: %d frame(s) missed before index %d (%d in all)", self.name, missed, index, self.gaps
            )
        self._last_index = index
