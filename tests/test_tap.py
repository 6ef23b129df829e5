"""A Source's frames() takes its com's outputs from the relay (heron_remote/com/tap.py).

The tap's own behaviour with real threads, then through real Sources: two readers at once, and a
com whose relaying comes back to its own process from the forwarders' (Heron's layout).
"""

from __future__ import annotations

import subprocess
import threading
import time

import numpy as np
import pytest

from heron_remote import Settings, Source
from heron_remote.com import tap as tap_module
from heron_remote.com.tap import TAP_MESSAGES, WAKE_AT, FrameTap, Tapped

from .helpers import CAMERA, hosted_relay


def _item(index: int) -> Tapped:
    return Tapped(b"t", index, index, None, b"{}", b"")


def test_a_tap_hands_every_output_over_in_order_between_threads() -> None:
    tap = FrameTap()
    n = 100_000
    got: list[int] = []

    def read() -> None:
        while len(got) < n:
            item = tap.get(1.0)
            assert item is not None, f"nothing within 1 s after {len(got)} outputs"
            got.append(item.index)

    reader = threading.Thread(target=read)
    reader.start()
    for k in range(n):
        tap.put(_item(k), 64)
        if k % 100 == 99:
            tap.wake()  # as the relay does when it has nothing more to relay
        while len(tap) >= TAP_MESSAGES - 1:
            time.sleep(0.0005)  # under the bound: this test is about order, not drops
    tap.wake()
    reader.join(30)
    assert not reader.is_alive() and got == list(range(n)) and tap.dropped == 0


def test_a_tap_drops_the_newest_outputs_past_its_bounds_and_counts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    tap = FrameTap()
    for k in range(TAP_MESSAGES + 5):
        tap.put(_item(k), 64)
    assert len(tap) == TAP_MESSAGES and tap.dropped == 5
    assert [tap.get(0).index for _ in range(3)] == [0, 1, 2]  # type: ignore[union-attr]
    monkeypatch.setattr(tap_module, "TAP_BYTES", 10 * 1024 * 1024)
    big = FrameTap()
    for k in range(20):
        big.put(_item(k), 1024 * 1024)  # 1 MiB packets: ten of them fill the bytes' bound
    assert len(big) == 10 and big.dropped == 10


def test_a_waiting_reader_is_woken_by_a_full_burst_or_by_the_relay_and_times_out_otherwise() -> None:
    tap = FrameTap()
    assert tap.get(0.05) is None and not tap.live  # nothing: the wait ends at its timeout
    got: list[Tapped | None] = []
    reader = threading.Thread(target=lambda: got.append(tap.get(10)))
    reader.start()
    while not tap._waiting:
        time.sleep(0.001)
    for k in range(WAKE_AT - 1):
        tap.put(_item(k), 64)  # fewer than a burst: the reader sleeps on
    time.sleep(0.1)
    assert not got and tap.live
    tap.put(_item(WAKE_AT), 64)  # a burst's worth wakes it
    reader.join(5)
    assert got and got[0] is not None and got[0].index == 0
    while tap.get(0) is not None:
        pass
    reader = threading.Thread(target=lambda: got.append(tap.get(10)))
    reader.start()
    while not tap._waiting:
        time.sleep(0.001)
    tap.put(_item(99), 64)
    tap.wake()  # the relay has nothing more for now
    reader.join(5)
    assert got[-1] is not None and got[-1].index == 99


def _camera(settings: Settings) -> Source:
    return Source(CAMERA, parameters={"shape": [8, 8], "fps": 500}, settings=settings)


def test_two_readers_of_one_source_at_once_each_get_every_frame(settings: Settings) -> None:
    with _camera(settings) as cam:
        first = cam.frames(timeout=5)
        a = [next(first) for _ in range(5)]  # the first reader holds the tap
        second = [f.index for f in cam.frames(timeout=5, limit=200)]  # the second reads the forwarders
        a += [next(first) for _ in range(400)]
        assert cam._tap.live and cam.rejected == 0
    indices = [f.index for f in a]
    assert indices == list(range(indices[0], indices[0] + len(indices)))
    assert second == list(range(second[0], second[0] + len(second)))
    assert set(second) <= set(indices)  # the same frames, read twice


def test_frames_go_on_from_the_tap_when_the_forwarders_process_stops_relaying(
    outside: tuple[Settings, subprocess.Popen[str]],
) -> None:
    settings, command = outside
    with _camera(settings) as cam:
        frames = cam.frames(timeout=10)
        before = [next(frames) for _ in range(50)]
        assert hosted_relay(cam).hosted and not cam._tap.live
        command.kill()  # the com relays in its own process from now on
        command.wait(10)
        after = [next(frames) for _ in range(500)]
        assert cam._tap.live and not hosted_relay(cam).hosted
    indices = [f.index for f in before + after]
    assert indices == sorted(set(indices))  # in order, none twice across the change of reader
    assert after[-1].index - after[0].index < len(after) + 100  # a short gap at most, at the change
    for frame in after[-100:]:
        assert frame.arrays[0].shape == (8, 8) and frame.arrays[0].dtype == np.uint8
