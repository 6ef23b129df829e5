"""A channel's bytes written into its local socket by the transport thread itself.

paramiko's transport thread puts each packet it receives into the channel's pipe, and a tunnel
thread wakes, takes it and writes it to the local socket: a thread wake-up and an interpreter-lock
hand-off per packet and per channel. With many sources on a link those hand-offs, not the
bytes, were the rig's load: 8 sources x 26 MB/s over two hosts, 590-750 of 800 frames/s
delivered at 103-132 % of a CPU for the rig process, its backlog growing to a second; writing
from the transport thread, 781-829 frames/s at 92-111 %, latency under 160 ms.

:func:`forward_channel` does that: the transport thread sends each packet to the local socket
when the socket takes it at once (``MSG_DONTWAIT``). What the socket does not take -- the com is
behind -- waits in the pipe, and the tunnel thread writes it blocking; the transport thread
sends nothing directly while anything waits or is being written, so the bytes stay in order.

The channel's window opens for bytes the socket has taken, as ``Channel.recv`` would, so a com
that falls behind still holds the PC back through SSH's flow control. The tunnel thread sends
every window adjustment, woken for it once per tenth of the window: during a key exchange a
message must wait for the exchange to end, which the transport thread, running the exchange,
cannot. (It tried once: sshd had a window's worth of data queued ahead of its reply to our new
keys, every adjustment for it was put off, and with the window shut nothing came later to carry
them -- the stream stopped at the first renewal of the keys, 512 MiB in.)

This builds on paramiko's private names (``Channel.in_buffer``, ``_check_add_window``,
``BufferedPipe``'s fields), pinned by ``tests/test_ssh_paramiko_pins.py``.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

import paramiko
from paramiko.buffered_pipe import BufferedPipe
from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST
from paramiko.message import Message

__all__ = ["FeedCounts", "forward_channel"]

#: Where the system cannot send without blocking per call (Windows), the tunnel thread writes all.
_SEND_FLAGS = getattr(socket, "MSG_DONTWAIT", 0) | getattr(socket, "MSG_NOSIGNAL", 0)
_CAN_FEED = hasattr(socket, "MSG_DONTWAIT")
#: Bytes the tunnel thread reads at once from a channel it empties itself.
_READ_CHUNK = 1024 * 1024


@dataclass
class FeedCounts:
    """Bytes a tunnel's channels delivered: written by the transport thread, or queued for the tunnel thread."""

    direct: int = 0
    queued: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, other: FeedCounts) -> None:
        with self._lock:
            self.direct += other.direct
            self.queued += other.queued


def _adjust_window(chan: paramiko.Channel, n: int) -> None:
    """Tell the PC it may send ``n`` bytes more on ``chan`` (waits out a key exchange)."""
    m = Message()
    m.add_byte(cMSG_CHANNEL_WINDOW_ADJUST)
    m.add_int(chan.remote_chanid)
    m.add_int(n)
    chan.transport._send_user_message(m)


class _SocketFeed(BufferedPipe):
    """A channel's receive pipe that the transport thread empties straight into a socket.

    Not made, but put in place of the channel's own pipe (its class changed): the transport
    thread may be feeding that very object, under its lock, at the moment of the change.
    """

    _sock: socket.socket
    _chan: paramiko.Channel
    _writing: bool
    _detached: bool
    _window: int
    counts: FeedCounts

    @classmethod
    def install(cls, chan: paramiko.Channel, sock: socket.socket) -> _SocketFeed:
        pipe = chan.in_buffer
        with pipe._lock:
            pipe._sock, pipe._chan, pipe.counts = sock, chan, FeedCounts()
            pipe._writing = pipe._detached = False
            pipe._window = 0
            pipe.__class__ = cls
        return pipe

    def feed(self, data: bytes) -> None:  # the transport thread
        sent = 0
        with self._lock:
            if not (self._buffer or self._writing or self._detached or self._closed or self._event is not None):
                try:
                    sent = self._sock.send(data, _SEND_FLAGS)
                except OSError:
                    sent = 0  # full, or gone: the tunnel thread meets it and ends the forward
                self.counts.direct += sent
        if sent < len(data):
            super().feed(data[sent:])
        # Outside the pipe's lock: paramiko takes the channel's lock, then this one, when it closes.
        window = self._chan._check_add_window(sent) if sent else 0
        if window:
            with self._lock:
                self._window += window
                self._cv.notify_all()

    def take(self) -> tuple[bytes, int] | None:
        """What waits to be written and the window to open, once there is either; None once closed and empty."""
        with self._lock:
            while not (self._buffer or self._window or self._closed):
                self._cv.wait()
            if self._closed and not self._buffer:
                return None  # a closed channel's window is no one's concern
            out = self._buffer.tobytes()
            del self._buffer[:]
            window, self._window = self._window, 0
            self._writing = bool(out)
            # Counted here, not as it is fed: a feed under way when the pipe was put in place
            # still runs paramiko's own method.
            self.counts.queued += len(out)
            return out, window

    def written(self) -> None:
        with self._lock:
            self._writing = False

    def detach(self) -> None:
        """Send to the socket no more: its owner is about to close it, and its number may then be reused."""
        with self._lock:
            self._detached = True


def forward_channel(chan: paramiko.Channel, sock: socket.socket, counts: FeedCounts) -> None:
    """Deliver what ``chan`` receives to ``sock`` until the channel closes; add what was delivered to ``counts``.

    Raises OSError when ``sock`` fails. Where the system cannot send without blocking, or the
    channel has no paramiko pipe, the calling thread reads the channel and writes it all.
    """
    if not (_CAN_FEED and isinstance(getattr(chan, "in_buffer", None), BufferedPipe)):
        written = FeedCounts()
        try:
            while data := chan.recv(_READ_CHUNK):
                sock.sendall(data)
                written.queued += len(data)
        finally:
            counts.add(written)
        return
    feed = _SocketFeed.install(chan, sock)
    try:
        while (taken := feed.take()) is not None:
            data, window = taken
            if data:
                try:
                    sock.sendall(data)
                finally:
                    feed.written()
                window += chan._check_add_window(len(data))
            if window:
                _adjust_window(chan, window)
    finally:
        feed.detach()
        counts.add(feed.counts)
