"""What a message read from a socket may be, and readers that hold to it.

Any local account can write to the forwarders' submit ports and to a worker's loopback
ports, so every reader of a socket treats its frames as hostile: sizes are bounded, and
whatever fails, a reader raises :class:`~heron_remote.errors.DecodeError` and nothing else
(JSON nested too deep raises RecursionError, an integer of 5000 digits ValueError: both
are DecodeErrors here). The caller counts the message and drops it.

A socket-level cap (``zmq.MAXMSGSIZE``, per frame) is set only on sockets that bind (the
worker's pulse and parameters ports): ZeroMQ ends the connection of a peer that sends a larger
frame and never reconnects it, so the sender is cut off. On a socket that connects (to a
forwarder, which relays anyone's messages) one such message would cut *us* off for good; there
the readers' own bounds hold.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import DecodeError

__all__ = [
    "CONTROL_MAX_BYTES",
    "ERROR_MAX_CHARS",
    "META_MAX_BYTES",
    "NUMBER_LIMIT",
    "PARAMETERS_MAX_BYTES",
    "PULSE_MAX_BYTES",
    "read_int",
    "read_json",
    "undecodable",
]

#: The largest output metadata: a dtype and a shape take tens of bytes.
META_MAX_BYTES = 4096
#: Packet numbers, indices and time stamps are below this (they fit an int64).
NUMBER_LIMIT = 1 << 63
_NUMBER_DIGITS = len(str(NUMBER_LIMIT - 1))
#: The largest parameters message (JSON, or the pickle of Heron's editor): a node's few values.
PARAMETERS_MAX_BYTES = 256 * 1024
#: The largest frame of a liveness or status message (an error text included, cut to ERROR_MAX_CHARS).
CONTROL_MAX_BYTES = 64 * 1024
#: The largest frame of a pulse: b"PULSE" and a time in nanoseconds. ZeroMQ applies it to the
#: handshake's commands too: a PLAIN HELLO with the link's key is 84 bytes, a CurveZMQ INITIATE ~250.
PULSE_MAX_BYTES = 512
#: Error texts that travel in control messages are cut to this many characters.
ERROR_MAX_CHARS = 4000


def undecodable(what: str, exc: BaseException) -> DecodeError:
    """The DecodeError for a failure of any kind while reading ``what``."""
    if isinstance(exc, DecodeError):
        return exc
    if isinstance(exc, RecursionError):
        return DecodeError(f"{what} is nested too deeply")
    return DecodeError(f"{what} is unreadable ({type(exc).__name__}: {str(exc)[:120]})")


def read_json(raw: Any, what: str, max_bytes: int) -> Any:
    """The JSON value in ``raw`` of at most ``max_bytes`` bytes; DecodeError for anything else."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise DecodeError(f"{what} is not bytes but {type(raw).__name__}")
    if len(raw) > max_bytes:
        raise DecodeError(f"{what} of {len(raw)} bytes is over the {max_bytes}-byte limit")
    try:
        return json.loads(raw if type(raw) is not memoryview else raw.tobytes())
    except RecursionError as exc:
        raise DecodeError(f"{what} is nested too deeply: {bytes(raw[:40])!r}") from exc
    except Exception as exc:  # ValueError, UnicodeDecodeError: not JSON
        raise DecodeError(f"{what} is not JSON: {bytes(raw[:40])!r}") from exc


def read_int(raw: Any, what: str) -> int:
    """A non-negative ascii integer below NUMBER_LIMIT; DecodeError for anything else."""
    if type(raw) is not bytes:
        try:
            raw = memoryview(raw).tobytes()  # never bytes(n): that would make n bytes
        except Exception as exc:
            raise undecodable(what, exc) from exc
    if not raw.isdigit() or len(raw) > _NUMBER_DIGITS:
        raise DecodeError(f"{what} must be an ascii integer of at most {_NUMBER_DIGITS} digits, got {raw[:30]!r}")
    value = int(raw)
    if value >= NUMBER_LIMIT:
        raise DecodeError(f"{what} must be below 2**63, got {value}")
    return value
