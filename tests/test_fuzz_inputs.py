"""Fuzzing every input socket with arbitrary multipart messages over real ZeroMQ sockets (issue 12, F6).

The com (its parameters input from the forwarder, its data and liveness inputs from a worker),
``Source.frames()`` (the data forwarder), a real worker (its pulse and parameters ports) and the
status board each take whatever hypothesis makes, and after every message must still pass a good
one on; their process's memory stays bounded.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heron_remote import NoDataError, Settings, Source, StatusBoard
from heron_remote._linkkeys import LinkKeys
from heron_remote.status import STATUS_TOPIC, SourceStatus, render
from heron_remote.wire import encode_output

from .helpers import ECHO_WORKER, WORKERS, hosted_relay, pid_alive

FUZZ = settings(
    max_examples=int(os.environ.get("HR_FUZZ_EXAMPLES", "60")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Growth of a process's resident memory allowed over a whole fuzz run.
RSS_GROWTH_MIB = 64

STATUS = json.loads(
    SourceStatus(
        node="n",
        host="h",
        worker_pid=1,
        state="running",
        frames_per_s=1.0,
        mb_per_s=0.1,
        received=1,
        gaps=0,
        restarts=0,
        heartbeat_rtt_ms=None,
        last_error=None,
        time=1.0,
    ).to_json()
)
#: Frames that broke, or came close to breaking, a reader before.
NASTY = [
    b"",
    b"1" * 5000,
    b"9" * 20,
    str((1 << 63) - 1).encode(),
    str(1 << 62).encode(),
    b"-1",
    b"nan",
    b"1e999",
    b"[" * 3000,
    b"[" * 100_000,
    b'{"a":' * 20_000,
    b"\x80\x04}" + b")" + b"\x85" * 100_000 + b"Ns.",
    b"\x80\x04]\x8c\x08builtins\x8c\x07complex\x93a.",
    b'{"data_type": "dict"}',
    b'{"data_type": "ignore"}',
    b'{"data_type": "ndarray", "dtype": "<u1", "shape": [2]}',
    b'{"data_type": "ndarray", "dtype": "(2,)i4", "shape": [1]}',
    b'{"data_type": "ndarray", "dtype": "<u1", "shape": [' + b"1, " * 64 + b"1]}",
    b'{"data_type": "dict", "x": "' + b"a" * 5000 + b'"}',
    b"PULSE",
    b"LIVE",
    b'{"pid": 1, "seq": 1, "echo_ns": ' + b"9" * 4000 + b"}",
    b'{"error": ' + json.dumps("e" * 70_000).encode() + b"}",
    json.dumps({**STATUS, "node": ["n"]}).encode(),
    json.dumps({**STATUS, "frames_per_s": "fast"}).encode(),
    json.dumps({**STATUS, "node": "\x1b[2J"}).encode(),
    STATUS_TOPIC + b"n",
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
FRAME = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(NASTY),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=-(1 << 70), max_value=1 << 70).map(lambda n: str(n).encode()),
)
FRAMES = st.lists(FRAME, min_size=1, max_size=6)


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def until(found: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not found():
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"


def _connected(kind: int, port: int, keys: LinkKeys | None = None) -> zmq.Socket:
    """A socket connected to this machine's ``port``; with ``keys`` (a launch's) for a worker's port."""
    sock = zmq.Context.instance().socket(kind)
    sock.linger = 0
    sock.sndtimeo = 1000
    if keys is not None:
        keys.apply_client(sock)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


# -- the com and Source.frames() --------------------------------------------------------------------


@pytest.fixture(params=["in-process", "heron-layout"])
def puppet(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Source, zmq.Socket]]:
    """A Source whose worker is a puppet: what the test sends to ``orders`` reaches the real com
    as the worker's data or liveness. ``in-process``: the com relays in this process and frames()
    takes its packets from it; ``heron-layout``: the forwarders' process relays them and frames()
    reads the forwarders."""
    if request.param == "in-process":
        settings: Settings = request.getfixturevalue("settings")
    else:
        settings = request.getfixturevalue("outside")[0]
    orders = zmq.Context.instance().socket(zmq.PUSH)
    orders.linger = 0
    orders.sndtimeo = 2000
    port = orders.bind_to_random_port("tcp://127.0.0.1")
    monkeypatch.setenv("HERON_TEST_PUPPET", f"tcp://127.0.0.1:{port}")
    try:
        with Source(str(WORKERS / "puppet_worker.py"), settings=settings) as src:
            yield src, orders
    finally:
        orders.close()


def test_the_com_and_frames_pass_good_messages_on_after_any_input(puppet: tuple[Source, zmq.Socket]) -> None:
    src, orders = puppet
    heron_layout = hosted_relay(src).hosted
    ports = src.settings.ports
    parameters, published = _connected(zmq.PUB, ports.parameters_submit), _connected(zmq.PUB, ports.data_submit)
    numbers = iter(range(1, 1 << 30))

    def good_packet_arrives() -> None:
        # After a packet too short the com reads on into the next one, which is lost: send again.
        def send() -> int:
            k = next(numbers)
            meta, payload = encode_output(np.array([k], np.int64))
            orders.send_multipart([b"data", b"%d" % k, meta, payload])
            return k

        _sent_until_seen(src, send, lambda value, k: _is(value[0], k))

    def good_parameters_arrive() -> None:
        k = next(numbers)

        def send() -> int:  # the first may go before the publisher is connected: send again
            parameters.send_multipart([src.parameters_topic.encode(), json.dumps({"k": k}).encode()])
            return k

        _sent_until_seen(src, send, lambda value, k: _is(value[0], {"parameters": {"k": k}}))

    good_parameters_arrive()
    good_packet_arrives()
    if heron_layout:  # frames() reads the forwarders: they pass what `published` sends on to it
        published_reaches_frames(published, src, good_packet_arrives)
    rejected = src.rejected
    before = rss_mib()
    targets = {
        "worker data": lambda fs: orders.send_multipart([b"data", *fs]),
        "worker liveness": lambda fs: orders.send_multipart([b"live", *fs]),
        "parameters": lambda fs: parameters.send_multipart([src.parameters_topic.encode(), *fs]),
        "published": lambda fs: published.send_multipart([src.topics[0].encode(), *fs]),
    }

    @FUZZ
    @given(target=st.sampled_from(sorted(targets)), fuzz=FRAMES)
    def survives(target: str, fuzz: list[bytes]) -> None:
        targets[target](fuzz)
        (good_parameters_arrive if target == "parameters" else good_packet_arrives)()

    started = time.monotonic()
    try:
        survives()
    finally:
        parameters.close()
        published.close()
    after = rss_mib()
    print(f"com + frames(): {time.monotonic() - started:.1f} s, RSS {before:.1f} -> {after:.1f} MiB")
    stats = src.stats
    assert src.error is None and stats.state == "running" and pid_alive(stats.worker_pid)
    assert stats.malformed > 0 and stats.rejected > 0  # the fuzz did reach the com's readers
    if heron_layout:
        assert src.rejected > rejected  # and frames(), reading the forwarders
    else:
        assert src._tap.live  # frames() took the com's packets: nothing published reached it
    assert after - before < RSS_GROWTH_MIB


def published_reaches_frames(published: zmq.Socket, src: Source, good_packet_arrives: Callable[[], None]) -> None:
    """Send ``src``'s topic with nothing after it on ``published`` until ``frames()`` rejects one (5 s):
    a publisher's first messages are lost until the forwarder's subscription reaches it."""
    deadline = time.monotonic() + 5
    while src.rejected == 0:
        assert time.monotonic() < deadline, "no message published on the forwarder reached frames()"
        published.send(src.topics[0].encode())
        good_packet_arrives()  # frames() reads up to it, and so past the bad message if it came


def _sent_until_seen(src: Source, send: Callable[[], int], seen: Callable[[tuple, int], bool]) -> None:
    """``send()`` again every 0.3 s until ``src`` yields a frame that ``seen``; fail after 5 s."""
    deadline = time.monotonic() + 5
    while True:
        k = send()
        resend = time.monotonic() + 0.3
        try:
            for frame in src.frames(timeout=0.3):
                if seen(frame.arrays, k):
                    return
                if time.monotonic() > resend:
                    break
        except NoDataError:
            pass
        assert time.monotonic() < deadline, f"nothing of {k} came through within 5 s"


def _is(value: object, wanted: object) -> bool:
    if isinstance(value, np.ndarray):
        return isinstance(wanted, int) and value.shape == (1,) and value.dtype == np.int64 and value[0] == wanted
    return value == wanted


# -- the worker's pulse and parameters ports -------------------------------------------------------


def test_a_worker_passes_good_parameters_on_after_any_input(settings: Settings) -> None:
    with Source(ECHO_WORKER, outputs=("Counter", "Echo"), settings=settings) as src:
        assert src.launcher is not None and src.launcher.ready is not None
        ports, pid = src.launcher.ready.ports, src.stats.worker_pid
        # With the launch's keys: what the fuzz tests is the worker's decoders, behind its key check.
        sockets = {name: _connected(zmq.PUSH, ports[name], src.launcher.keys) for name in ("heartbeat", "parameters")}
        numbers = iter(range(1, 1 << 30))

        def good_parameters_arrive() -> None:
            k = next(numbers)

            def send() -> int:  # fuzzed parameters that are JSON may come in after ours: send again
                src.set_parameters({"k": k})
                return k

            _sent_until_seen(src, send, lambda value, k: value[1] is not None and value[1]["parameters"] == {"k": k})

        good_parameters_arrive()
        before = rss_mib(pid)

        @FUZZ
        @given(port=st.sampled_from(sorted(sockets)), fuzz=FRAMES)
        def survives(port: str, fuzz: list[bytes]) -> None:
            try:
                sockets[port].send_multipart(fuzz, zmq.NOBLOCK)
            except zmq.Again:
                pass  # cut off by the port's size cap, and not yet back: the worker is what matters
            good_parameters_arrive()

        started = time.monotonic()
        try:
            survives()
        finally:
            for sock in sockets.values():
                sock.close()
        after = rss_mib(pid)
        print(f"worker: {time.monotonic() - started:.1f} s, RSS {before:.1f} -> {after:.1f} MiB")
        assert pid_alive(pid) and src.stats.state == "running" and src.stats.restarts == 0
        until(lambda: src.stats.worker_rejected > 0, 3, "the worker's count of what it dropped")
        assert after - before < RSS_GROWTH_MIB


# -- the status board ------------------------------------------------------------------------------


def test_the_status_board_takes_good_statuses_after_any_input(settings: Settings) -> None:
    board = StatusBoard(port=settings.ports.proof_of_life_publish)
    pub = _connected(zmq.PUB, settings.ports.proof_of_life_submit)
    numbers = iter(range(1 << 30))

    def good_status_arrives() -> None:
        node = f"good-{next(numbers)}"
        message = [STATUS_TOPIC + node.encode(), json.dumps({**STATUS, "node": node}).encode()]
        deadline = time.monotonic() + 5
        while node not in board.sources:  # the first may go before the publisher is connected
            pub.send_multipart(message)
            board.poll(0.01)
            assert time.monotonic() < deadline, f"status of {node} did not arrive"
        render(board.sources)

    good_status_arrives()
    before = rss_mib()

    @FUZZ
    @given(suffix=FRAME, fuzz=FRAMES)
    def survives(suffix: bytes, fuzz: list[bytes]) -> None:
        pub.send_multipart([STATUS_TOPIC + suffix, *fuzz])
        good_status_arrives()

    started = time.monotonic()
    try:
        survives()
    finally:
        pub.close()
        board.close()
    after = rss_mib()
    print(f"status board: {time.monotonic() - started:.1f} s, RSS {before:.1f} -> {after:.1f} MiB, pid {os.getpid()}")
    assert board.rejected > 0 and after - before < RSS_GROWTH_MIB
