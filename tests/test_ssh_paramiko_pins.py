"""The private names of paramiko that heron_remote/ssh/channel_feed.py and transport.py build on.

The transport thread writes a tunnel's bytes itself through a channel's receive pipe, and the
tunnel's thread opens the channel's window as ``Channel.recv`` would; the transport holds what
its own thread would send during a key exchange. A release that renames or reshapes those must
fail here, saying what changed, before a user's tunnel meets it.
"""

from __future__ import annotations

import array
import socket
import threading

import paramiko
import pytest
from paramiko.buffered_pipe import BufferedPipe

_WHAT_TO_DO = (
    "heron_remote/ssh/channel_feed.py and transport.py build on these private paramiko names: adapt "
    "them to this release, or pin paramiko below it in pyproject.toml."
)


def _check(problems: list[str]) -> None:
    if problems:
        pytest.fail(f"paramiko {paramiko.__version__} changed: " + "; ".join(problems) + ". " + _WHAT_TO_DO)


def test_a_channel_feeds_what_it_receives_to_a_buffered_pipe_whose_class_can_be_changed() -> None:
    chan = paramiko.Channel(1)
    pipe = chan.in_buffer
    problems = []
    if not isinstance(pipe, BufferedPipe):
        _check([f"Channel.in_buffer is a {type(pipe).__name__}, not a BufferedPipe"])
    for name, kind in (("_lock", type(threading.Lock())), ("_cv", threading.Condition), ("_buffer", array.array)):
        if not isinstance(getattr(pipe, name, None), kind):
            problems.append(f"BufferedPipe.{name} is not a {kind.__name__}")
    for name in ("_closed", "_event"):
        if not hasattr(pipe, name):
            problems.append(f"BufferedPipe has no {name}")
    _check(problems)

    fed: list[bytes] = []

    class Seen(BufferedPipe):
        def feed(self, data: bytes) -> None:
            fed.append(data)

    pipe.__class__ = Seen
    m = paramiko.Message()
    m.add_string(b"bytes")
    m.rewind()
    chan._feed(m)
    if fed != [b"bytes"]:
        _check([f"Channel._feed no longer hands a packet's bytes to in_buffer.feed (it gave {fed!r})"])


def test_a_channel_counts_its_window_as_we_acknowledge_it() -> None:
    chan = paramiko.Channel(1)
    problems = [
        f"Channel has no {name}"
        for name in ("lock", "in_window_sofar", "remote_chanid", "transport", "active", "_check_add_window")
        if not hasattr(chan, name)
    ]
    _check(problems)
    chan.active = True
    chan._set_window(1000, 1000)
    if chan._check_add_window(50) != 0 or chan.in_window_sofar != 50:
        problems.append("Channel._check_add_window no longer keeps bytes below a tenth of the window")
    if chan._check_add_window(100) != 150 or chan.in_window_sofar != 0:
        problems.append("Channel._check_add_window no longer returns all it kept once past a tenth")
    if not isinstance(paramiko.common.cMSG_CHANNEL_WINDOW_ADJUST, bytes):
        problems.append("paramiko.common.cMSG_CHANNEL_WINDOW_ADJUST is gone")
    _check(problems)


def test_a_transport_tells_when_it_may_send_and_sends_inside_or_outside_its_own_thread() -> None:
    left, right = socket.socketpair()
    try:
        transport = paramiko.Transport(left)
        problems = []
        if not isinstance(getattr(transport, "clear_to_send", None), threading.Event):
            problems.append("Transport.clear_to_send is not an Event")
        if not hasattr(getattr(transport, "clear_to_send_lock", None), "acquire"):
            problems.append("Transport.clear_to_send_lock is not a lock")
        for name in ("_send_message", "_send_user_message"):
            if not callable(getattr(transport, name, None)):
                problems.append(f"Transport.{name} is gone")
        if not isinstance(transport, threading.Thread) or not isinstance(getattr(transport, "active", None), bool):
            problems.append("Transport is no longer the thread that reads its messages, with an 'active' flag")
        _check(problems)
    finally:
        left.close()
        right.close()
