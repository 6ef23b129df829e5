"""The watch that keeps a connection's transport, on fake transports: probes, reconnects, giving up, failing loudly."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from heron_remote._threads import KeptThread
from heron_remote.errors import AuthenticationError, HostUnreachableError, SSHError
from heron_remote.ssh.transport import WatchedSocket
from heron_remote.ssh.watch import LinkWatch

from .helpers import wait_until

LINK_TIMEOUT = 0.3  # the watch looks every 0.1 s


class _Transport:
    """The parts of a paramiko Transport the watch uses; ``answers``: probes get replies."""

    def __init__(self, *, answers: bool = True) -> None:
        self._ends = socket.socketpair()
        self.sock = WatchedSocket(self._ends[0])
        self.answers = answers
        self.active = True
        self.probes = 0

    def is_active(self) -> bool:
        return self.active

    def close(self) -> None:
        self.active = False
        for end in self._ends:
            end.close()

    def global_request(self, kind: str, wait: bool = True) -> object:
        self.probes += 1
        if self.answers:
            self.sock.last_received = time.monotonic()  # as the reply's bytes would
        return object()


class _Connector:
    """connect(attempt_timeout) that plays the given outcomes in turn, then new transports."""

    def __init__(self, *outcomes: BaseException | _Transport) -> None:
        self.outcomes = list(outcomes)
        self.attempts: list[float] = []

    def __call__(self, attempt_timeout: float) -> _Transport:
        self.attempts.append(time.monotonic())
        outcome = self.outcomes.pop(0) if self.outcomes else _Transport()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


@pytest.fixture
def watched() -> Iterator[Callable[[_Transport, _Connector], LinkWatch]]:
    watches: list[LinkWatch] = []

    def make(first: _Transport, connect: _Connector) -> LinkWatch:
        log = logging.LoggerAdapter(logging.getLogger("heron_remote.test"), {"host": "pc"})
        watch = LinkWatch("pc", "pc (lab@pc:22)", connect, timeout=5.0, link_timeout=LINK_TIMEOUT, log=log)
        watch.start(first)
        watches.append(watch)
        return watch

    yield make
    for watch in watches:
        old = watch.stop()
        if old is not None:
            old.close()
        watch.join()


def test_a_quiet_link_is_probed_and_kept(watched: Callable[[_Transport, _Connector], LinkWatch]) -> None:
    first = _Transport()
    watch = watched(first, _Connector())
    time.sleep(4 * LINK_TIMEOUT)
    assert first.probes >= 2 and watch.reconnects == 0 and watch.transport is first


def test_an_ended_transport_is_replaced_with_back_off_while_the_host_is_away(
    watched: Callable[[_Transport, _Connector], LinkWatch],
) -> None:
    first, second = _Transport(), _Transport()
    away = HostUnreachableError("no answer from pc")
    connect = _Connector(away, away, away, second)
    watch = watched(first, connect)
    first.active = False
    assert watch.wait_transport(5) is second
    assert watch.reconnects == 1 and watch.error is None
    gaps = [b - a for a, b in zip(connect.attempts, connect.attempts[1:], strict=False)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39  # 0.1, 0.2, 0.4 s apart


def test_a_host_that_stops_answering_is_dropped_after_the_link_timeout(
    watched: Callable[[_Transport, _Connector], LinkWatch], caplog: pytest.LogCaptureFixture
) -> None:
    first = _Transport(answers=False)
    watch = watched(first, _Connector())
    wait_until(lambda: watch.reconnects == 1, 5, "the silent link to be replaced")
    assert first.probes >= 1 and not first.active  # probed first, then closed
    assert "nothing from the host for" in caplog.text


def test_a_refused_login_on_reconnect_ends_the_watch_with_that_error(
    watched: Callable[[_Transport, _Connector], LinkWatch],
) -> None:
    first = _Transport()
    refused = AuthenticationError("pc refused to log in user 'lab'")
    watch = watched(first, _Connector(refused))
    first.active = False
    wait_until(lambda: watch.error is not None, 5, "the watch to give up")
    assert watch.error is refused
    with pytest.raises(AuthenticationError):
        watch.wait_transport(5)


def test_a_watch_that_fails_says_so_at_once_and_its_waiters_get_the_error(
    watched: Callable[[_Transport, _Connector], LinkWatch], caplog: pytest.LogCaptureFixture
) -> None:
    first = _Transport()
    watch = watched(first, _Connector(RuntimeError("a bug")))
    first.active = False
    started = time.monotonic()
    with pytest.raises(SSHError, match=r"the watch of the connection to pc \(lab@pc:22\) failed: RuntimeError"):
        watch.wait_transport(10)
    assert time.monotonic() - started < 5
    assert "watch thread of the connection to pc (lab@pc:22) failed" in caplog.text


class _Counted:
    """A socket whose receive calls are counted: the calls that reach the kernel."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.calls = 0

    def recv(self, n: int) -> bytes:
        self.calls += 1
        return self.sock.recv(n)


def test_the_transport_socket_reads_ahead_and_hands_out_every_byte_in_order() -> None:
    """paramiko's small reads (a packet's first block, then the rest) are served from one read ahead;
    what it asks for comes back in order, never more than asked, and a closed peer still reads as EOF."""
    ours, peer = socket.socketpair()
    sent = bytes(range(256)) * 4096  # 1 MiB: several reads ahead
    with ours, peer:
        kernel = _Counted(ours)
        sock = WatchedSocket(kernel)  # type: ignore[arg-type]
        before = sock.last_received

        def write() -> None:
            peer.sendall(sent)
            peer.shutdown(socket.SHUT_WR)

        writer = KeptThread.start_new(write, name="peer")
        got = bytearray()
        calls = 0
        while True:
            want = (16, 4000, 1, 33000)[calls % 4]
            data = sock.recv(want)
            calls += 1
            if not data:
                break
            assert 0 < len(data) <= want
            got += data
        writer.join(10)
        writer.check()
    assert bytes(got) == sent
    assert sock.last_received > before
    assert kernel.calls * 4 < calls, (kernel.calls, calls)  # most reads were served from memory
