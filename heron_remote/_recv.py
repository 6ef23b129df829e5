"""Reading a multipart message of known length, fast.

Asking ZeroMQ after every frame whether more follow costs more than reading the frame
(each option read goes through pyzmq's attribute machinery). A well-formed message's
length is known, so the frames are read one after the other and the question is asked
once, at the end. Every read is non-blocking: a message too short either runs out
(returned short) or runs into the next one, whose rest the final check drains; either
way the caller's validation sees a malformed message and drops it, and the next read
starts on a message boundary.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import zmq

from .wire import ZERO_COPY_MIN, DecodeError, parse_meta

__all__ = ["recv_message"]

_RCVMORE = zmq.RCVMORE
_NOBLOCK = zmq.NOBLOCK


def recv_message(sock: zmq.Socket, expected: int, payloads: Container[int]) -> list[Any]:
    """``expected`` frames, or what there is (zmq.Again when nothing waits).

    Frames at the positions in ``payloads`` come as ``zmq.Frame`` (no copy) when the
    metadata before them announces ZERO_COPY_MIN bytes or more; all else as bytes.
    """
    recv = sock.recv
    frames: list[Any] = [recv(_NOBLOCK)]
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
        return frames  # too short: nothing more was sent
    while sock.get(_RCVMORE):  # too long: take the rest, so the next read starts a message
        frames.append(recv(_NOBLOCK))
    return frames
