"""The wire format, owned here: :mod:`.codec` for one output's frames, :mod:`.frames` for whole
messages on sockets, :mod:`.bounded` for reading what anyone may send. Documented in the README
so that any pyzmq client can read it.

Names load on first use: :mod:`.bounded` (what a status board or the CLI needs) imports no numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .codec import (
        CAPTURED_KEY,
        IGNORE,
        ZERO_COPY_MIN,
        Meta,
        check_output,
        decode_output,
        encode_output,
        parse_meta,
        split_captured,
        with_captured,
    )
    from .frames import (
        Packet,
        PacketError,
        check_packet,
        decode_published,
        packet_captured,
        packet_length,
        packet_number,
        parse_packet,
        parse_time,
        payload_slots,
        publish,
        published_value,
        read_published,
        read_published_captured,
        recv_message,
        resync,
        send_packet,
    )

_CODEC = (
    "CAPTURED_KEY",
    "IGNORE",
    "ZERO_COPY_MIN",
    "Meta",
    "check_output",
    "decode_output",
    "encode_output",
    "parse_meta",
    "split_captured",
    "with_captured",
)
#: Where each name lives: :mod:`.codec` for these, :mod:`.frames` for the rest of ``__all__``.
_CODEC_NAMES = frozenset(_CODEC)


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'heron_remote.wire' has no attribute {name!r}")
    home = ".codec" if name in _CODEC_NAMES else ".frames"
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "CAPTURED_KEY",
    "IGNORE",
    "ZERO_COPY_MIN",
    "Meta",
    "Packet",
    "PacketError",
    "check_output",
    "check_packet",
    "decode_output",
    "decode_published",
    "encode_output",
    "packet_captured",
    "packet_length",
    "packet_number",
    "parse_meta",
    "parse_packet",
    "parse_time",
    "payload_slots",
    "publish",
    "published_value",
    "read_published",
    "read_published_captured",
    "recv_message",
    "resync",
    "send_packet",
    "split_captured",
    "with_captured",
]
