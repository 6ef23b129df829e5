"""Send ZeroMQ messages with Python's standard library alone: what any account on a machine can do.

Tests run it as another local user (who has no pyzmq)::

    python3 zmtp_send.py HOST PORT SOCKET_TYPE < messages.json

``messages.json`` is a list of messages, each a list of hex-encoded frames. It speaks ZMTP 3.0
with the NULL mechanism (what every socket here accepts), sends every message, lingers a
moment so that they leave, and prints the uid it ran as.
"""

import json
import os
import socket
import struct
import sys
import time


def greeting() -> bytes:
    """Signature, version 3.0, mechanism NULL, not a server, filler."""
    return b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00") + b"\x00" * 32


def frame(body: bytes, *, more: bool = False, command: bool = False) -> bytes:
    flags = (1 if more else 0) | (4 if command else 0)
    if len(body) > 255:
        return bytes([flags | 2]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def ready(socket_type: str) -> bytes:
    value = socket_type.encode()
    return frame(b"\x05READY\x0bSocket-Type" + struct.pack(">I", len(value)) + value, command=True)


def read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the peer closed the connection during the handshake")
        data += chunk
    return data


def read_frame(conn: socket.socket) -> bytes:
    flags = read_exactly(conn, 1)[0]
    size = struct.unpack(">Q", read_exactly(conn, 8))[0] if flags & 2 else read_exactly(conn, 1)[0]
    return read_exactly(conn, size)


def main() -> None:
    host, port, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    messages = [[bytes.fromhex(f) for f in message] for message in json.load(sys.stdin)]
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(greeting())
        read_exactly(conn, 64)
        conn.sendall(ready(kind))
        read_frame(conn)  # the peer's READY
        for message in messages:
            last = len(message) - 1
            conn.sendall(b"".join(frame(f, more=i < last) for i, f in enumerate(message)))
        time.sleep(0.3)
    print(os.getuid(), flush=True)


if __name__ == "__main__":
    main()
