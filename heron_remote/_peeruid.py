"""Which local account holds the other end of a loopback TCP connection (Linux: ``/proc/net/tcp``).

A port on 127.0.0.1 is open to every account of the machine. For a connection accepted on one,
the kernel's socket tables name the uid that owns the connecting socket: the row whose local
address is the peer's and whose remote address is ours. Elsewhere (Windows, macOS) there is no
such table: :func:`peer_uid` says None, and the caller relies on the worker's own check.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

__all__ = ["UNKNOWN", "is_ours", "peer_uid", "tables_readable"]

_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
#: peer_uid's answer when the system keeps no such table.
UNKNOWN = None
#: The tables write each 32-bit word of an address in the host's byte order.
_LITTLE = socket.htonl(1) != 1


def tables_readable() -> bool:
    """Whether this system names the owners of TCP sockets (Linux)."""
    return _TABLES[0].is_file()


def _hex_address(address: tuple[str, int], width: int) -> str:
    """``address`` as /proc/net/tcp{,6} writes it: the address's 32-bit words in host order, then the port."""
    ip = ipaddress.ip_address(address[0])
    if width == 32 and isinstance(ip, ipaddress.IPv4Address):
        packed = ip.packed
    elif width == 128:
        packed = (ip if isinstance(ip, ipaddress.IPv6Address) else ipaddress.IPv6Address(f"::ffff:{ip}")).packed
    else:
        raise ValueError(f"no {width}-bit form of {ip}")
    words = "".join(
        f"{int.from_bytes(packed[i : i + 4], 'little' if _LITTLE else 'big'):08X}" for i in range(0, len(packed), 4)
    )
    return f"{words}:{address[1]:04X}"


def peer_uid(conn: socket.socket) -> int | None:
    """The uid that owns the socket at the other end of ``conn`` (accepted on this machine); -1 when
    no socket of this machine is there (it closed, or it is on another machine); None where unknown."""
    if not tables_readable():
        return UNKNOWN
    try:
        ours, theirs = conn.getsockname()[:2], conn.getpeername()[:2]
    except OSError:
        return -1
    for table, width in zip(_TABLES, (32, 128), strict=True):
        try:
            want = (_hex_address(theirs, width), _hex_address(ours, width))
        except ValueError:
            continue
        try:
            with table.open() as rows:
                next(rows, None)  # the header
                for row in rows:
                    fields = row.split()
                    if len(fields) > 7 and (fields[1], fields[2]) == want:
                        return int(fields[7])
        except OSError:
            continue
    return -1


def is_ours(conn: socket.socket) -> bool:
    """Whether the peer of ``conn`` runs as this process's account (True where that cannot be known)."""
    uid = peer_uid(conn)
    return uid is UNKNOWN or uid == os.getuid()
