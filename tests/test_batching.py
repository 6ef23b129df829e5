"""Small packets close together travel from a worker to its com as one message (heron_remote/worker/batching.py).

The batcher over a real PUSH -> PULL pair, read as the com reads (a packet's frames one by one,
whatever message they came in); then real workers behind real Sources, with and without batching.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import zmq

from heron_remote import ConfigError, Settings, Source
from heron_remote.wire import encode_output, packet_length, payload_slots, recv_message
from heron_remote.worker.batching import BATCH_PACKETS, SMALL_BYTES, Batcher

from .helpers import CAMERA, wait_until

_WINDOW_S = 0.05


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    context = zmq.Context.instance()
    push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
    push.linger = pull.linger = 0
    pull.rcvtimeo = 5000
    port = push.bind_to_random_port("tcp://127.0.0.1")
    pull.connect(f"tcp://127.0.0.1:{port}")
    yield push, pull
    push.close()
    pull.close()


def _send(batcher: Batcher, lock: threading.Lock, number: int, nbytes: int = 8) -> None:
    meta, payload = encode_output(np.full(nbytes, number % 256, np.uint8))
    with lock:
        batcher.send(number, [meta, payload], copy=True, captured_us=None, size=nbytes)


def _read(pull: zmq.Socket, packets: int) -> tuple[list[int], int]:
    """(the packets' numbers, the messages they came in), reading as the com does."""
    numbers, messages = [], 0
    frames, slots = packet_length(1), payload_slots(1)
    for _ in range(packets):
        msg = recv_message(pull, frames, slots, wait=True)
        numbers.append(int(msg[0]))
        assert msg[2] == bytes([numbers[-1] % 256]) * (len(msg[2]))
        if not pull.get(zmq.RCVMORE):
            messages += 1
    return numbers, messages


def test_a_packet_that_comes_alone_goes_at_once(pair: tuple[zmq.Socket, zmq.Socket]) -> None:
    push, pull = pair
    lock = threading.Lock()
    batcher = Batcher(push, lock, window_s=_WINDOW_S)
    _send(batcher, lock, 1)
    assert batcher.messages == 1  # sent by the call itself, not by the batcher's thread later
    assert _read(pull, 1) == ([1], 1)
    time.sleep(_WINDOW_S * 2)
    _send(batcher, lock, 2)  # again after a pause longer than the window: alone again
    assert batcher.messages == 2 and _read(pull, 1) == ([2], 1)


def test_packets_close_together_travel_in_few_messages_in_order_and_the_last_waits_no_longer_than_the_window(
    pair: tuple[zmq.Socket, zmq.Socket],
) -> None:
    push, pull = pair
    lock = threading.Lock()
    batcher = Batcher(push, lock, window_s=_WINDOW_S)
    n = 3 * BATCH_PACKETS + 10
    for k in range(1, n + 1):
        _send(batcher, lock, k)
    numbers, messages = _read(pull, n)  # the last few arrive when the batcher's thread sends them
    assert numbers == list(range(1, n + 1))
    with lock:  # its thread counts a message after sending it, both under the lock
        sent, packets = batcher.messages, batcher.packets
    assert messages == sent and messages <= 6  # 1 alone, 3 full batches, the rest
    assert packets == n


def test_a_large_packet_ends_a_batch_and_close_sends_what_waits(pair: tuple[zmq.Socket, zmq.Socket]) -> None:
    push, pull = pair
    lock = threading.Lock()
    batcher = Batcher(push, lock, window_s=10.0)  # no thread sends within this test
    for k in range(1, 6):
        _send(batcher, lock, k)
    _send(batcher, lock, 6, nbytes=SMALL_BYTES + 1)
    assert _read(pull, 6) == ([1, 2, 3, 4, 5, 6], 2)  # the first alone, then five in one message
    _send(batcher, lock, 7)
    _send(batcher, lock, 8)
    with lock:
        batcher.close()
    assert _read(pull, 2) == ([7, 8], 1)


def test_no_window_sends_every_packet_alone(pair: tuple[zmq.Socket, zmq.Socket]) -> None:
    push, pull = pair
    lock = threading.Lock()
    batcher = Batcher(push, lock, window_s=0.0)
    for k in range(1, 51):
        _send(batcher, lock, k)
    assert _read(pull, 50) == (list(range(1, 51)), 50)


def test_settings_refuse_a_window_that_is_no_number_of_seconds_in_range() -> None:
    for bad in (-0.001, 0.5, True, "1ms"):
        with pytest.raises(ConfigError, match="batch_window"):
            Settings(batch_window=bad)  # type: ignore[arg-type]
    assert Settings.from_env({"HERON_REMOTE_BATCH_WINDOW": "0"}).batch_window == 0


@pytest.mark.parametrize("window", [0.0, 0.002])
def test_a_fast_small_stream_arrives_whole_and_in_order_with_or_without_batching(
    settings: Settings, window: float
) -> None:
    mine = settings.replace(batch_window=window)
    with Source(CAMERA, parameters={"shape": [4, 4], "fps": 20000}, settings=mine) as cam:
        frames = list(cam.frames(timeout=10, limit=3000))
        wait_until(lambda: cam.stats.worker_packets >= 3000, 5, "the worker's beacon with its counts")
        stats = cam.stats
    indices = [f.index for f in frames]
    assert indices == list(range(indices[0], indices[0] + len(indices)))
    assert stats.lost == stats.malformed == 0 and cam.gaps == 0
    per_message = stats.worker_packets / stats.worker_messages
    print(f"batch window {window * 1e3:g} ms: {per_message:.1f} packets per message")
    # (A beacon may count a packet whose message is still being sent.)
    assert per_message > 2 if window else per_message < 1.01


def test_a_packet_after_the_window_ended_ends_the_batch_without_waiting_for_the_thread(
    pair: tuple[zmq.Socket, zmq.Socket],
) -> None:
    push, pull = pair
    lock = threading.Lock()
    batcher = Batcher(push, lock, window_s=0.01)
    _send(batcher, lock, 1)
    with lock:  # the batcher's thread cannot send while the worker holds the lock
        batcher.send(2, list(encode_output(np.full(8, 2, np.uint8))), copy=True, captured_us=None, size=8)
        time.sleep(0.03)
        batcher.send(3, list(encode_output(np.full(8, 3, np.uint8))), copy=True, captured_us=None, size=8)
        assert batcher.messages == 2  # 1 alone, then 2 and 3, sent by the call itself
    assert _read(pull, 3) == ([1, 2, 3], 2)
