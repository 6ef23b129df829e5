"""Who listens on a TCP port of this host: address, account and, where this account may look, the process.

Linux only (``/proc/net/tcp``, ``/proc/<pid>/fd``); elsewhere nothing is known and callers say so.
The kernel's table carries the account that made each socket, so another account's
listener is told apart even when its process cannot be read.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ._procs import cmdline

__all__ = ["Listener", "account_name", "describe_process", "listeners", "socket_holders", "socket_inodes"]

_PROC = Path("/proc")
_LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket: the address it is bound to, its port, the account that made it, its inode."""

    address: str
    port: int
    uid: int
    inode: int

    @property
    def wildcard(self) -> bool:
        return self.address in ("0.0.0.0", "::")


def _address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    # The kernel prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def listeners(port: int | None = None) -> list[Listener]:
    """Listening TCP sockets of this host (IPv4 and IPv6), those on ``port`` only if given."""
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            hex_addr, hex_port = fields[1].rsplit(":", 1)
            number = int(hex_port, 16)
            if port is not None and number != port:
                continue
            found.append(Listener(_address(hex_addr), number, int(fields[7]), int(fields[9])))
    return found


def socket_inodes(pid: int) -> set[int] | None:
    """The inodes of the sockets process ``pid`` holds; None when its descriptors cannot be read."""
    inodes = set()
    try:
        fds = os.listdir(_PROC / str(pid) / "fd")
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink(_PROC / str(pid) / "fd" / fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def socket_holders(inode: int) -> list[int]:
    """The processes holding socket ``inode``, among those whose descriptors this account may read."""
    holders = []
    try:
        pids = [int(entry) for entry in os.listdir(_PROC) if entry.isdigit()]
    except OSError:
        return []
    for pid in pids:
        inodes = socket_inodes(pid)
        if inodes is not None and inode in inodes:
            holders.append(pid)
    return holders


def account_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def describe_process(pid: int) -> str:
    """``pid 4242 (nc -l 6560)``, its command line cut short."""
    argv = cmdline(pid)
    program = " ".join(argv) if argv else "?"
    if len(program) > 80:
        program = program[:77] + "..."
    return f"pid {pid} ({program})"
