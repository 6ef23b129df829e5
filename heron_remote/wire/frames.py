"""The wire's messages on ZeroMQ sockets: every one is written and read here, nowhere else.

Worker -> com, one multipart message per packet: its number, then two frames per output::

    [packet number (ascii int, from 1)[ capture time (ascii int, us, the worker's clock)]]
        + [metadata, payload] * n_outputs

Com -> data forwarder -> subscribers, one multipart message per published output::

    [topic (ascii), index (ascii int), time (ascii), metadata (JSON), payload]

``time`` is the com's wall clock in integer microseconds; a float is read as seconds
(Heron's transform coms write ``perf_counter`` seconds).

The readers are the hot path of small packets, and measured (README, "Performance"):
asking ZeroMQ whether more frames follow costs several times more than reading a small
frame, so a message of known length is read frame by frame without asking. Every frame
after the first is read without blocking: a message too short runs out (returned short),
one too long leaves frames that the next read takes for a message. Either way the
caller's checks fail on what it got, and :func:`resync` drops frames up to the next
message boundary. Frames are sent one by one with pyzmq's compiled send: cheaper than
``send_multipart`` for small frames, and a large payload goes on without a copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Sequence
from typing import Any, NamedTuple

import zmq

from .._ring import unshared
from ..errors import DecodeError
from .bounded import NUMBER_LIMIT, read_int, undecodable
from .codec import ZERO_COPY_MIN, Meta, check_output, decode_output, parse_meta, parse_published_meta

__all__ = [
    "Packet",
    "PacketError",
    "check_packet",
    "decode_published",
    "packet_captured",
    "packet_length",
    "packet_number",
    "parse_packet",
    "parse_time",
    "payload_slots",
    "publish",
    "read_published",
    "read_published_captured",
    "recv_message",
    "resync",
    "send_packet",
]

_MORE = zmq.SNDMORE
_NOBLOCK = zmq.NOBLOCK
_RCVMORE = zmq.RCVMORE
#: pyzmq's compiled send, without the Python layer over it (which only adds DRAFT-socket
#: options): a third of the cost of a small frame.
_send = zmq.backend.Socket.send
#: Digits a packet number may have (it is below NUMBER_LIMIT, 2**63).
_NUMBER_DIGITS = len(str(NUMBER_LIMIT - 1))
#: Characters a time frame of float seconds may have.
_TIME_CHARS = 32


# -- worker -> com ---------------------------------------------------------------------


def packet_length(outputs: int) -> int:
    """Frames in a worker packet of ``outputs`` outputs."""
    return 1 + 2 * outputs


def payload_slots(outputs: int) -> frozenset[int]:
    """Positions of the payload frames in a worker packet."""
    return frozenset(range(2, packet_length(outputs), 2))


def send_packet(
    sock: zmq.Socket,
    number: int,
    frames: Sequence[Any],
    *,
    copy: bool = True,
    captured_us: int | None = None,
    more: bool = False,
) -> None:
    """Send packet ``number`` (from 1): ``frames`` are the outputs' [metadata, payload] pairs;
    ``captured_us``: when it was captured, in the worker's clock; ``more``: other packets follow
    in the same message.

    Small payloads are bytes already; a large one is sent as it is unless ``copy``.
    """
    left = len(frames)
    end = _MORE if more else 0
    head = b"%d" % number if captured_us is None else b"%d %d" % (number, captured_us)
    _send(sock, head, _MORE if left else end)
    for frame in frames:
        left -= 1
        flags = _MORE if left else end
        if copy or type(frame) is bytes:
            _send(sock, frame, flags)
        else:
            _send(sock, frame, flags, copy=False)


def packet_number(msg: list[Any]) -> int:
    """The number of a worker packet; DecodeError when its first frame is not one (the rest
    of a packet too long)."""
    first = msg[0] if msg else b""
    if type(first) is not bytes:
        first = _bytes(first)
    if 32 in first:  # b" ": a byte's test, which costs a tenth of a substring's
        first = first.partition(b" ")[0]
    if not first.isdigit() or len(first) > _NUMBER_DIGITS:
        raise DecodeError(
            f"the first frame must be the packet number (an ascii integer of at most {_NUMBER_DIGITS} digits)"
        )
    number = int(first)
    if number >= NUMBER_LIMIT:
        raise DecodeError(f"the packet number must be below 2**63, got {number}")
    return number


def packet_captured(first: Any) -> int | None:
    """The capture time (us, the worker's clock) in a packet's first frame, or None when it has none
    or it is no bounded integer (a packet's number is read, and checked, by packet_number)."""
    if type(first) is not bytes:
        try:
            first = _bytes(first)
        except Exception:
            return None
    stamp = first.partition(b" ")[2]
    if not stamp.isdigit() or len(stamp) > _NUMBER_DIGITS:
        return None
    value = int(stamp)
    return value if value < NUMBER_LIMIT else None


class PacketError(DecodeError):
    """A worker packet that breaks the format; ``number`` is its number when its first frame has one."""

    def __init__(self, message: str, number: int | None) -> None:
        super().__init__(message)
        self.number = number


def parse_packet(msg: list[Any], expected: int) -> tuple[int, list[bool], int]:
    """(number, publish-or-ignore per output, payload bytes) of a worker packet of ``expected`` frames.

    The relay's hot path, in one call. Raises PacketError, which carries the packet's number
    when it has one: a packet of the wrong length is numbered all the same (so a gap is not
    counted twice), one whose first frame is no number is the rest of a packet too long.
    """
    first = msg[0] if msg else b""
    head = first.partition(b" ")[0] if type(first) is bytes and 32 in first else first  # 32: b" "
    if type(head) is bytes and len(head) < _NUMBER_DIGITS and head.isdigit():
        number = int(head)  # fewer digits than 2**63 has: the usual case, without packet_number's call
    else:
        try:
            number = packet_number(msg)
        except Exception as exc:  # whatever the frames are, the relay sees a PacketError
            raise PacketError(str(undecodable("the packet number", exc)), None) from None
    try:
        flags, size = check_packet(msg, expected)
    except Exception as exc:
        raise PacketError(str(undecodable("the packet", exc)), number) from None
    return number, flags, size


def check_packet(msg: list[Any], expected: int) -> tuple[list[bool], int]:
    """Publish-or-ignore per output and the payload bytes of a numbered packet; DecodeError."""
    if len(msg) != expected:
        n = (expected - 1) // 2
        raise DecodeError(
            f"expected {expected} frames (packet number, then {n} outputs x [metadata, payload]), got {len(msg)}"
        )
    publish = []
    size = 0
    for k in range(1, expected, 2):
        meta, payload_len = msg[k], len(msg[k + 1])
        size += payload_len
        publish.append(check_output(meta if type(meta) is bytes else _bytes(meta), payload_len))
    return publish, size


def recv_message(sock: zmq.Socket, expected: int, payloads: Container[int], *, wait: bool = False) -> list[Any]:
    """``expected`` frames, or fewer when the message runs out (zmq.Again when nothing waits).

    With ``wait`` the first frame is awaited for the socket's RCVTIMEO: a reader that keeps
    up then sleeps inside ZeroMQ instead of paying for a poll and a zmq.Again per message.
    Frames at the positions in ``payloads`` come as ``zmq.Frame`` (no copy) when the
    metadata before them announces ZERO_COPY_MIN bytes or more; all else as bytes.
    """
    recv = sock.recv
    frames: list[Any] = [recv(0 if wait else _NOBLOCK)]
    try:
        for i in range(1, expected):
            if i in payloads:
                try:
                    large = parse_meta(frames[i - 1]).nbytes >= ZERO_COPY_MIN
                except (DecodeError, TypeError):
                    large = False  # the caller's check says what is wrong
                frames.append(recv(_NOBLOCK, copy=not large))
            else:
                frames.append(recv(_NOBLOCK))
    except zmq.Again:
        pass  # too short: nothing more was sent
    return frames


def resync(sock: zmq.Socket) -> int:
    """After a message that failed its checks: drop frames up to the next message boundary.

    Returns how many frames were dropped.
    """
    dropped = 0
    while sock.get(_RCVMORE):
        sock.recv(_NOBLOCK)
        dropped += 1
    return dropped


# -- com -> forwarder -> subscribers -------------------------------------------------------


def publish(pub: zmq.Socket, topic: bytes, index: bytes, time_us: bytes, meta: Any, payload: Any) -> None:
    """Send one published message; ``index`` and ``time_us`` are ascii integers already."""
    _send(pub, topic, _MORE)
    _send(pub, index, _MORE)
    _send(pub, time_us, _MORE)
    _send(pub, meta, _MORE)
    _send(pub, payload)


def parse_time(raw: bytes) -> float:
    """The time frame in seconds: integer microseconds, or (Heron's) float seconds; DecodeError."""
    if raw.isdigit():
        return (int(raw) if len(raw) < _NUMBER_DIGITS else read_int(raw, "the time frame")) / 1e6
    try:
        if len(raw) <= _TIME_CHARS:
            seconds = float(raw)
            if math.isfinite(seconds):
                return seconds
    except (TypeError, ValueError):
        pass
    raise DecodeError(f"the time frame is neither microseconds nor seconds: {bytes(raw[:30])!r}")


def read_published(recv: Callable[..., Any]) -> tuple[int, float, Any]:
    """(index, time in seconds, value) of a published message whose topic ``recv`` just read.

    ``recv`` is the subscriber's ``recv``; the rest of the message must be there already
    (ZeroMQ delivers a message whole), so it is read without blocking. Raises zmq.Again
    when the message ended early, DecodeError when a frame is wrong.
    """
    index, stamp, _captured, value = read_published_captured(recv)
    return index, stamp, value


def published_value(meta: Meta, payload: Any) -> Any:
    """The value ``payload`` carries as published; a large array over a ring this process maps is
    copied out of it (see :func:`heron_remote._ring.unshared`). DecodeError when it does not match."""
    value = meta.decode(payload)
    return unshared(value) if meta.nbytes >= ZERO_COPY_MIN else value


def read_published_captured(recv: Callable[..., Any]) -> tuple[int, float, float | None, Any]:
    """:func:`read_published` with the capture time in seconds, rig clock (None when the message has none)."""
    try:
        raw = recv(_NOBLOCK)
        # Fewer digits than 2**63 has are below it: the usual case, without a call.
        index = int(raw) if len(raw) < _NUMBER_DIGITS and raw.isdigit() else read_int(raw, "the index frame")
        raw = recv(_NOBLOCK)
        stamp = int(raw) / 1e6 if len(raw) < _NUMBER_DIGITS and raw.isdigit() else parse_time(raw)
        meta, captured = parse_published_meta(recv(_NOBLOCK))
        value = published_value(meta, recv(_NOBLOCK, copy=meta.nbytes < ZERO_COPY_MIN))
        return index, stamp, None if captured is None else captured / 1e6, value
    except (zmq.Again, DecodeError):
        raise
    except Exception as exc:
        raise undecodable("a published message", exc) from exc


class Packet(NamedTuple):
    """One published output: (topic, index, time_us, value)."""

    topic: str
    index: int  # type: ignore[assignment]  # the wire's name; tuple.index stays reachable as tuple.index
    time_us: int
    value: Any


def decode_published(frames: Sequence[Any]) -> Packet:
    """Decode a message read from the data forwarder's publish port (``recv_multipart``)."""
    if len(frames) != 5:
        raise DecodeError(f"a published message has 5 frames, got {len(frames)}")
    try:
        topic, index, stamp, meta, payload = (f.buffer if hasattr(f, "buffer") else f for f in frames)
        name = _bytes(topic).decode("ascii")
        number = read_int(index, "the index")
        raw_time = _bytes(stamp)
        time_us = read_int(raw_time, "the time") if raw_time.isdigit() else round(parse_time(raw_time) * 1e6)
    except Exception as exc:
        raise DecodeError(f"bad topic, index or time frame: {undecodable('a frame', exc)}") from exc
    try:
        return Packet(name, number, time_us, unshared(decode_output(_bytes(meta), payload)))
    except Exception as exc:
        raise undecodable("a published message", exc) from exc


def _bytes(frame: Any) -> bytes:
    return frame.bytes if isinstance(frame, zmq.Frame) else memoryview(frame).tobytes()
