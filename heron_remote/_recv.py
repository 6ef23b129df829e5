"""Reading a multipart message of known length, fast.

Asking ZeroMQ whether more frames follow costs several times more than reading a small
frame (pyzmq turns every option read into an enum lookup). A well-formed message's length
is known, so ``expected`` frames are read one after the other and the question is not
asked at all. Every frame after the first is read without blocking: a message too short
either runs out (returned short) or runs into the next one; a message too long leaves
frames that the next read takes for a message. Either way the caller's checks fail on
what it got, and :func:`resync` drops frames up to the next message boundary.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import zmq

from .wire import ZERO_COPY_MIN, DecodeError, parse_meta

__all__ = ["recv_message", "resync"]

_RCVMORE = zmq.RCVMORE
_NOBLOCK = zmq.NOBLOCK


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
