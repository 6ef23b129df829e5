"""The direct transport's reachability check: can this rig open the worker's ports on the PC?

A worker of a ``"direct"`` server binds its four ports on the PC's address as CurveZMQ servers.
Before the com connects there, it opens (and at once closes) a TCP connection to each: a
firewall that drops them shows as a time-out, one that rejects them as a refusal, and either
way the launch goes through the SSH tunnel instead (or fails, for ``"direct-only"``). A bare TCP
connection gives nobody anything: the worker's sockets speak only CurveZMQ, to its com's key.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable

__all__ = ["unreachable", "url"]


def url(address: str, port: int) -> str:
    """The ZeroMQ endpoint of ``address:port`` (an IPv6 address in brackets)."""
    host = f"[{address}]" if ":" in address else address
    return f"tcp://{host}:{port}"


def unreachable(address: str, ports: Iterable[int], timeout: float) -> tuple[int, str] | None:
    """None when every port of ``address`` accepts a TCP connection within ``timeout`` s in all;
    else the first port that did not and why."""
    deadline = time.monotonic() + timeout
    for port in ports:
        left = deadline - time.monotonic()
        if left <= 0:
            return port, f"no answer within {timeout:g} s"
        try:
            with socket.create_connection((address, port), timeout=left):
                pass
        except TimeoutError:
            return port, f"no answer within {timeout:g} s (a firewall that drops it?)"
        except ConnectionRefusedError:
            return port, "connection refused (a firewall that rejects it?)"
        except OSError as exc:
            return port, exc.strerror or str(exc)
    return None
