"""The wire format, owned here: :mod:`.codec` for one output's frames, :mod:`.frames` for whole
messages on sockets. Documented in the README so that any pyzmq client can read it."""

from .codec import IGNORE, ZERO_COPY_MIN, Meta, check_output, decode_output, encode_output, parse_meta
from .frames import (
    Packet,
    PacketError,
    check_packet,
    decode_published,
    packet_length,
    packet_number,
    parse_packet,
    parse_time,
    payload_slots,
    publish,
    read_published,
    recv_message,
    resync,
    send_packet,
)

__all__ = [
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
    "packet_length",
    "packet_number",
    "parse_meta",
    "parse_packet",
    "parse_time",
    "payload_slots",
    "publish",
    "read_published",
    "recv_message",
    "resync",
    "send_packet",
]
