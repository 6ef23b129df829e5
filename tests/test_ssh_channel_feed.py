"""A tunnel's bytes written by the transport thread (heron_remote/ssh/channel_feed.py): whole and in order.

Over a real sshd, from a real server on the PC: while the local reader keeps up, paramiko's
transport thread sends each packet straight into the socket; while it is behind, the bytes
wait for the tunnel's thread. Both must deliver every byte once, in order, and the window
must keep opening, also across key exchanges.
"""

from __future__ import annotations

import io
import queue
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paramiko
import pytest

from heron_remote.ssh import HostConnection, Registry
from heron_remote.ssh.channel_feed import _SocketFeed
from heron_remote.ssh.sshtunnel_backend import SSHTunnel
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import wait_until

pytestmark = pytest.mark.multihost
Hosts = AcqHosts | ExternalHosts

MIB = 1024 * 1024
#: Run on the PC: serve ``count`` MiB to the first connection once it has said something, each
#: MiB its index (8 bytes) then a fixed pattern; print the port first.
_SERVER = """
import socket, sys
count = int(sys.argv[1])
s = socket.socket()
s.settimeout(20)  # a failed test must not leave it waiting
s.bind(("127.0.0.1", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.settimeout(20)
c.recv(16)
pattern = bytes(range(256)) * 4096
for i in range(count):
    c.sendall(i.to_bytes(8, "little") + pattern[8:])
c.close()
"""
_PATTERN = (bytes(range(256)) * 4096)[8:]


class _Lines(io.StringIO):
    """A TextSink whose lines a test can wait for."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: queue.Queue[str] = queue.Queue()
        self._part = ""

    def write(self, text: str) -> int:
        self._part += text
        *whole, self._part = self._part.split("\n")
        for line in whole:
            self.lines.put(line)
        return len(text)


@contextmanager
def _served(acq: Hosts, count: int) -> Iterator[tuple[HostConnection, SSHTunnel]]:
    """A connection to acq1 and a tunnel to a server there that will send ``count`` MiB."""
    server = Registry.load(acq.registry).get("acq1")
    conn = HostConnection.acquire(server)
    try:
        out, err = _Lines(), _Lines()
        command = shlex.join([*server.python_argv, "-c", _SERVER, str(count)])
        process: Any = conn.start(command, out_stream=out, err_stream=err)
        try:
            try:
                port = int(out.lines.get(timeout=20))
            except queue.Empty:
                pytest.fail(f"the server on acq1 did not start: {err.getvalue()!r}")
            with conn.forward(port) as tunnel:
                assert isinstance(tunnel, SSHTunnel)
                yield conn, tunnel
        finally:
            process.join()
    finally:
        conn.release()


def _read_all(sock: socket.socket, count: int, pause_after: int | None = None, pause_s: float = 0.0) -> int:
    """Read ``count`` MiB, checking each; after MiB ``pause_after``, stop reading for ``pause_s``. Returns MiB read."""
    sock.settimeout(30)
    view = bytearray(MIB)
    for i in range(count):
        if i == pause_after:
            time.sleep(pause_s)
        got = 0
        while got < MIB:
            n = sock.recv_into(memoryview(view)[got:])
            assert n, f"the stream ended after {i} MiB and {got} bytes of {count} MiB"
            got += n
        assert int.from_bytes(view[:8], "little") == i, f"MiB {i} arrived out of order"
        assert view[8:] == _PATTERN, f"MiB {i} arrived changed"
    assert sock.recv(1) == b"", "bytes after the end of the stream"
    return count


def _delivered(tunnel: SSHTunnel) -> int:
    return tunnel.delivered.direct + tunnel.delivered.queued


def test_a_reader_that_falls_behind_gets_every_byte_in_order_by_both_ways(acq: Hosts) -> None:
    count = 96
    with _served(acq, count) as (_, tunnel):
        with socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=10) as sock:
            sock.sendall(b"go")
            # Keeping up at first, then 0.5 s behind (the socket fills, the rest waits in the
            # channel's pipe), then keeping up again.
            assert _read_all(sock, count, pause_after=8, pause_s=0.5) == count
        wait_until(lambda: _delivered(tunnel) == count * MIB, 10, "the tunnel to count what it delivered")
    counts = tunnel.delivered
    assert counts.direct > 0, f"the transport thread wrote nothing itself: {counts}"
    assert counts.queued > 0, f"nothing waited for the tunnel's thread while the reader was behind: {counts}"


def test_the_window_keeps_opening_across_key_exchanges_while_bytes_flow(
    acq: Hosts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # paramiko renews the keys every 512 MiB received; every 32 MiB here, so that several
    # exchanges start while a window's worth of bytes (8 MiB) is on its way, and the stream's
    # end may come during one. (Not much less: bytes already on their way during an exchange
    # would then start the next one.)
    monkeypatch.setattr(paramiko.packet.Packetizer, "REKEY_BYTES", 32 * MIB)
    count = 256
    with _served(acq, count) as (conn, tunnel):
        with socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=10) as sock:
            sock.sendall(b"go")
            assert _read_all(sock, count, pause_after=count // 2, pause_s=0.2) == count
        assert conn.is_active and conn.reconnects == 0
        wait_until(lambda: _delivered(tunnel) == count * MIB, 10, "the tunnel to count what it delivered")


class _Transport:
    """Stands in for paramiko's Transport: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def _send_user_message(self, m: paramiko.Message) -> None:
        self.sent.append(m.asbytes())

    _send_message = _send_user_message


def _feeding(transport: _Transport, buffer_bytes: int = 0) -> tuple[paramiko.Channel, _SocketFeed, socket.socket]:
    """A real paramiko channel whose pipe feeds one end of a socket pair; the other end is returned."""
    chan = paramiko.Channel(7)
    chan.transport = transport
    chan.remote_chanid = 9
    chan.active = True
    chan._set_window(1000, 1000)  # a window adjustment per 100 bytes taken
    near, far = socket.socketpair()
    if buffer_bytes:
        near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)
        far.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
    chan._far, chan._near = far, near  # kept open with the channel
    return chan, _SocketFeed.install(chan, near), far


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(5)
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, f"the socket closed after {len(out)} of {n} bytes"
        out += chunk
    return bytes(out)


def _packet(data: bytes) -> paramiko.Message:
    m = paramiko.Message()
    m.add_string(data)
    m.rewind()
    return m


def test_the_transport_thread_writes_into_the_socket_and_leaves_the_window_to_the_tunnel_thread() -> None:
    transport = _Transport()
    chan, feed, far = _feeding(transport)
    try:
        chan._feed(_packet(b"x" * 60))  # as paramiko's transport thread does
        chan._feed(_packet(b"y" * 60))
        assert _recv_exactly(far, 120) == b"x" * 60 + b"y" * 60
        # Never a message from the transport thread: it may be running a key exchange.
        assert transport.sent == [] and feed.counts.direct == 120 and feed.counts.queued == 0
        assert feed.take() == (b"", 120)  # the tunnel thread's turn to open the window
    finally:
        chan._near.close()
        far.close()


def test_what_the_socket_does_not_take_waits_in_order_behind_what_it_took() -> None:
    chan, feed, far = _feeding(_Transport(), buffer_bytes=4096)
    try:
        big = bytes(range(256)) * 4096
        chan._feed(_packet(big))  # more than the socket takes: the rest waits
        assert 0 < feed.counts.direct < len(big) and len(feed) == len(big) - feed.counts.direct
        chan._feed(_packet(b"after"))  # something waits: this must wait behind it, even with room
        taken = feed.take()
        assert taken is not None and taken[0] == big[feed.counts.direct :] + b"after"
        assert feed.counts.queued == len(taken[0])
        chan._feed(_packet(b"while writing"))  # the tunnel thread has not written yet: waits too
        expected = big + b"after" + b"while writing" + b"then direct"
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.append(_recv_exactly(far, len(expected))), daemon=True)
        reader.start()
        feed._sock.sendall(taken[0])  # what forward_channel does with what it took
        feed.written()
        assert feed.take() == (b"while writing", 0)
        feed._sock.sendall(b"while writing")
        feed.written()
        direct = feed.counts.direct
        chan._feed(_packet(b"then direct"))  # nothing waits any more: straight in
        assert feed.counts.direct == direct + len(b"then direct")
        reader.join(10)
        assert received == [expected]
    finally:
        chan._near.close()
        far.close()
