"""``heron-remote check`` for a server whose data goes direct: can this rig open a port on the PC?

A probe on the PC listens on the PC's address as the rig's SSH connection reaches it (port 0,
as a worker does), says its port, and waits for one connection; the rig connects to it as a
launch would. A PC that does not have that address (NAT, a jump host) fails the bind; a
firewall shows as no answer or a refusal, with the rule to add.
"""

from __future__ import annotations

import base64
import queue
import time
from typing import TYPE_CHECKING

from .direct import unreachable

if TYPE_CHECKING:
    from .connection import HostConnection

__all__ = ["check_direct", "direct_probe_argv"]

#: Seconds the probe waits for the rig's connection (and the rig for the probe's port).
PROBE_WAIT_S = 10.0

_PROBE = r"""
import select, socket, sys
family = socket.AF_INET6 if ":" in ADDRESS else socket.AF_INET
s = socket.socket(family)
try:
    s.bind((ADDRESS, 0))
    s.listen(1)
except OSError as exc:
    print("BIND", exc.strerror or exc, flush=True)
    sys.exit(0)
print("PORT", s.getsockname()[1], flush=True)
ready, _, _ = select.select([s, sys.stdin], [], [], WAIT)  # the rig's line (or its end) says it tried
if s in ready:
    held = s.accept()  # kept open: a listener closed with the connection queued resets it on the rig
    print("ACCEPTED", flush=True)
    select.select([sys.stdin], [], [], WAIT)
else:
    print("NONE", flush=True)
"""


def direct_probe_argv(python: list[str], address: str, wait: float = PROBE_WAIT_S) -> list[str]:
    """The interpreter's command with the probe (base64: no shell changes it)."""
    code = _PROBE.replace("ADDRESS", repr(address)).replace("WAIT", repr(wait))
    encoded = base64.b64encode(code.encode()).decode()
    return [*python, "-c", f"import base64; exec(base64.b64decode('{encoded}'))"]


class _Lines:
    """A text sink that hands out whole lines."""

    def __init__(self) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *whole, self._partial = self._partial.split("\n")
        for line in whole:
            self.lines.put(line.strip())
        return len(text)

    def flush(self) -> None:
        pass

    def next(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return ""


def check_direct(conn: HostConnection, timeout: float) -> tuple[bool, str, bool]:
    """(whether a launch can stream, what to tell the user, whether that is a warning: a
    ``"direct"`` server this rig cannot reach streams through the SSH tunnel)."""
    server = conn.server
    rig, address = conn.endpoints()
    out, err = _Lines(), _Lines()
    proc = conn.start(
        conn.shell.command(direct_probe_argv(server.python_argv, address)), out_stream=out, err_stream=err
    )
    try:
        first = out.next(PROBE_WAIT_S)
        word, _, rest = first.partition(" ")
        if word == "BIND":
            return (
                False,
                f"direct transport: the PC cannot listen on {address}, the address this rig reaches it at "
                f'({rest}): through NAT or a jump host the data cannot go direct; use "transport": "tunnel"',
                False,
            )
        if word != "PORT":
            return (
                False,
                f"direct transport: the probe on the PC did not start (it said {first or err.next(0.5)!r})",
                False,
            )
        port = int(rest)
        started = time.monotonic()
        failed = unreachable(address, [port], timeout)
        if failed is None:
            took = (time.monotonic() - started) * 1000
            return True, f"direct transport: this rig reaches {address} port {port} on the PC ({took:.1f} ms)", False
        _, why = failed
        fallback = "launches fall back to the SSH tunnel" if server.transport == "direct" else "launches will fail"
        falls_back = server.transport == "direct"
        return (
            falls_back,
            (
                f"direct transport: this rig cannot reach {address} port {port} on the PC ({why}); {fallback}. "
                f"To go direct, let the PC accept TCP from {rig} to {address} on the ports its workers bind "
                "(its ephemeral range: on Linux net.ipv4.ip_local_port_range)"
            ),
            falls_back,
        )
    finally:
        proc.send("tried\n")
        proc.settle(PROBE_WAIT_S + 2)
        proc.join()
