"""What another account can try on a worker's or a tunnel's port, with Python's standard library alone.

Self-contained (tests run it as a second local user, here or on an acquisition host, where it
may arrive as program text on stdin)::

    python3 zmtp_attack.py HOST PORT receive SECONDS          # a PULL peer: take data packets
    python3 zmtp_attack.py HOST PORT send SOCKET_TYPE HEXMSGS  # send messages (JSON: lists of hex frames)
    python3 zmtp_attack.py HOST PORT pulse SECONDS             # PUSH pulses (answering probes 1..9) for SECONDS
    python3 zmtp_attack.py HOST PORT hold COUNT SECONDS        # COUNT idle connections, held SECONDS

It speaks ZMTP 3.0 with the NULL mechanism, as a socket without keys does, and prints one JSON
line: its uid, how many handshakes ZeroMQ's side accepted and refused, what it sent and received,
and how often nothing listened on the port (``unreachable``: the worker had ended).
"""

import json
import os
import socket
import struct
import sys
import time

GREETING = b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00") + b"\x00" * 32


def frame(body, more=False, command=False):
    flags = (1 if more else 0) | (4 if command else 0)
    if len(body) > 255:
        return bytes([flags | 2]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def read_exactly(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_frame(conn):
    flags = read_exactly(conn, 1)[0]
    size = struct.unpack(">Q", read_exactly(conn, 8))[0] if flags & 2 else read_exactly(conn, 1)[0]
    return flags, read_exactly(conn, size)


class Unreachable(Exception):
    """Nothing listens on the port (any more)."""


def handshake(host, port, kind):
    """A connection whose handshake ZeroMQ accepted, or None (refused: closed, or an ERROR command)."""
    try:
        conn = socket.create_connection((host, port), timeout=10)
    except OSError as exc:
        raise Unreachable() from exc
    try:
        conn.sendall(GREETING)
        read_exactly(conn, 64)
        value = kind.encode()
        conn.sendall(frame(b"\x05READY\x0bSocket-Type" + struct.pack(">I", len(value)) + value, command=True))
        flags, body = read_frame(conn)
        if not flags & 4 or not body.startswith(b"\x05READY"):
            raise ConnectionError("no READY")
        return conn
    except (OSError, ConnectionError):
        conn.close()
        return None


def main():
    host, port, mode, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    out = {"uid": os.getuid(), "accepted": 0, "refused": 0, "sent": 0, "received": 0, "unreachable": 0}
    try:
        attack(host, port, mode, rest, out)
    except Unreachable:
        out["unreachable"] += 1
    print(json.dumps(out), flush=True)


def attack(host, port, mode, rest, out):
    if mode == "hold":
        count, seconds = int(rest[0]), float(rest[1])
        held = [socket.create_connection((host, port), timeout=10) for _ in range(count)]
        time.sleep(seconds)
        out["open_at_end"] = 0
        for conn in held:
            conn.setblocking(False)
            try:
                out["open_at_end"] += conn.recv(1) != b""
            except BlockingIOError:
                out["open_at_end"] += 1  # nothing to read and not closed
            except OSError:
                pass
            conn.close()
    elif mode == "receive":
        deadline = time.monotonic() + float(rest[0])
        while time.monotonic() < deadline:
            conn = handshake(host, port, "PULL")
            if conn is None:
                out["refused"] += 1
                time.sleep(0.1)
                continue
            out["accepted"] += 1
            conn.settimeout(0.2)
            try:
                while time.monotonic() < deadline:
                    try:
                        flags, _ = read_frame(conn)
                    except TimeoutError:
                        continue
                    out["received"] += not flags & 1  # the last frame of a message
            except (OSError, ConnectionError):
                pass
            conn.close()
    elif mode == "send":
        kind, messages = rest[0], [[bytes.fromhex(f) for f in m] for m in json.loads(rest[1])]
        conn = handshake(host, port, kind)
        if conn is None:
            out["refused"] += 1
        else:
            out["accepted"] += 1
            for message in messages:
                last = len(message) - 1
                conn.sendall(b"".join(frame(f, more=i < last) for i, f in enumerate(message)))
                out["sent"] += 1
            time.sleep(0.3)
            conn.close()
    elif mode == "pulse":
        deadline = time.monotonic() + float(rest[0])
        while time.monotonic() < deadline:
            conn = handshake(host, port, "PUSH")
            if conn is None:
                out["refused"] += 1
                time.sleep(0.1)
                continue
            out["accepted"] += 1
            try:
                while time.monotonic() < deadline:
                    for probe in range(1, 10):  # a probe's number is small: answer them all
                        stamp = str(time.time_ns()).encode()
                        conn.sendall(frame(b"PULSE", more=True) + frame(stamp, more=True) + frame(b"%d" % probe))
                        out["sent"] += 1
                    time.sleep(0.2)
            except OSError:
                pass
            conn.close()
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
