"""Capture times in the rig's clock (issue 14, section 5): the worker stamps each packet, the com
estimates the worker's clock offset from the heartbeat and publishes the capture time in its own
clock, in the metadata (``captured_us``) and in ``Frame.captured``. The worker here plays a PC whose
clock is 2.5 s ahead (its clock's test hook); the estimate must find it within 1 ms."""

from __future__ import annotations

import ast
import itertools
import json
import threading
import time

import numpy as np
import pytest
import zmq

from heron_remote import Settings, Source
from heron_remote.com.clock import MIN_SAMPLES, WINDOW, ClockEstimate
from heron_remote.subscriber import Frame
from heron_remote.wire import packet_captured, packet_number, parse_meta, split_captured, with_captured

from .helpers import WORKERS, wait_until

OFFSET_WORKER = str(WORKERS / "offset_clock_worker.py")
OFFSET_S = 2.5
CAMERA = {"shape": [120, 160], "fps": 100}


def _offset_found(cam: Source, settings: Settings) -> float:
    """The estimate once the window is full of samples (so the best of WINDOW is chosen), on an
    authenticated link: the heartbeat thread's timing socket must present the launch's key too,
    or the worker refuses it and no answer is ever timed."""
    assert cam.launcher is not None and cam.launcher.keys.mechanism == "plain"
    wait_until(lambda: cam.stats.clock_offset_s is not None, 10 * settings.heartbeat_rate * MIN_SAMPLES, "an offset")
    time.sleep(settings.heartbeat_rate * (WINDOW + 1))
    offset = cam.stats.clock_offset_s
    assert offset is not None
    assert cam.stats.worker_refused == 0  # none of the com's own sockets was refused
    return offset


def _check_frames(cam: Source) -> None:
    """Frames queued before the estimate have no capture time; from the first that has one, all do."""
    frames: list[Frame] = []
    for f in cam.frames(timeout=10):
        if frames or f.captured is not None:
            frames.append(f)
        if len(frames) == 50:
            break
    for f in frames:
        assert f.captured is not None
        # Captured before the com received it, in the com's clock: by the link's delay, not by 2.5 s.
        assert -0.001 < f.time - f.captured < 0.5, (f.time, f.captured)
    assert all(b.captured > a.captured for a, b in itertools.pairwise(frames))


def test_the_offset_of_a_local_worker_s_clock_is_found_and_capture_times_are_in_the_rig_s_clock(
    settings: Settings,
) -> None:
    with Source(OFFSET_WORKER, parameters=CAMERA, settings=settings) as cam:
        offset = _offset_found(cam, settings)
        print(f"local: offset found {offset:.6f} s (error {1e6 * (offset - OFFSET_S):+.0f} us), "
              f"round trip {1e3 * cam.stats.clock_rtt_s:.3f} ms")  # fmt: skip
        assert abs(offset - OFFSET_S) < 0.001
        assert cam.status().clock_offset_ms == pytest.approx(1000 * OFFSET_S, abs=1.0)
        _check_frames(cam)


@pytest.mark.multihost
def test_the_offset_of_a_remote_worker_s_clock_is_found_within_a_millisecond(remote_settings: Settings) -> None:
    with Source(OFFSET_WORKER, parameters=CAMERA, settings=remote_settings, host="acq1") as cam:
        offset = _offset_found(cam, remote_settings)
        print(f"acq1: offset found {offset:.6f} s (error {1e6 * (offset - OFFSET_S):+.0f} us), "
              f"round trip {1e3 * cam.stats.clock_rtt_s:.3f} ms")  # fmt: skip
        assert abs(offset - OFFSET_S) < 0.001
        _check_frames(cam)


def test_the_capture_time_is_published_as_a_metadata_key_that_heron_s_readers_pass_over(settings: Settings) -> None:
    seen: list[bytes] = []
    stop = threading.Event()

    def read() -> None:
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.linger, sub.rcvtimeo = 0, 100
        sub.subscribe(b"")
        sub.connect(f"tcp://127.0.0.1:{settings.ports.data_publish}")
        while not stop.is_set():
            try:
                frames = sub.recv_multipart()
            except zmq.Again:
                continue
            if b'"captured_us"' in frames[3]:
                seen.append(frames)  # type: ignore[arg-type]
        sub.close()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        with Source(OFFSET_WORKER, parameters=CAMERA, settings=settings) as cam:
            wait_until(lambda: len(seen) >= 5, 20, "published capture times")
            assert cam.stats.clock_offset_s is not None
    finally:
        stop.set()
        reader.join(5)
    _topic, _index, time_us, meta, payload = seen[-1]
    # Heron's readers: ast.literal_eval of the metadata (its image decoders), and json; both take keys by name.
    for md in (ast.literal_eval(meta.decode()), json.loads(meta)):
        array = np.frombuffer(payload, dtype=md["dtype"]).reshape(md["shape"])
        assert md["data_type"] == "ndarray" and array.shape == (120, 160)
        assert isinstance(md["captured_us"], int) and 0 < int(time_us) - md["captured_us"] < 500_000


def test_clock_estimate_takes_the_shortest_round_trip_of_its_window() -> None:
    clock = ClockEstimate()
    offset = 2_500_000_000
    t = 10**18
    for k in range(MIN_SAMPLES - 1):  # a fast link: 100 us each way; one way delayed by k ms
        assert clock.add(t, t + 100_000 + offset + k * 1_000_000, t + 150_000 + offset + k * 1_000_000, t + 250_000)
        t += 10**9
    assert clock.best() is None  # too few answers yet
    assert clock.add(t, t + 5_000_000 + offset, t + 5_050_000 + offset, t + 5_150_000)  # the answer's way slow
    found, rtt = clock.best()  # type: ignore[misc]
    assert found == pytest.approx(offset / 1e9, abs=1e-9) and rtt == pytest.approx(200e-6)
    assert not clock.add(t, t + 10, t, t + 5)  # answered before the pulse came: no exchange
    for _ in range(WINDOW):
        clock.add(t, t + 1_000_000 + offset, t + 1_000_000 + offset, t + 2_000_000)
    assert clock.best() == pytest.approx((offset / 1e9, 2e-3))  # the early samples have left the window


def test_the_capture_time_key_leaves_the_parsed_metadata_cached_and_frames_unpack_in_three() -> None:
    meta = b'{"data_type": "ndarray", "dtype": "uint8", "shape": [2, 2]}'
    stamped = with_captured(meta, 1_700_000_000_123_456)
    assert json.loads(stamped)["captured_us"] == 1_700_000_000_123_456
    assert split_captured(stamped) == (meta, 1_700_000_000_123_456)
    assert parse_meta(stamped) is parse_meta(meta)  # one cache entry, however the time changes
    assert split_captured(meta[:-1] + b', "captured_us": -5}') == (meta[:-1] + b', "captured_us": -5}', None)
    index, when, (value,) = Frame(3, 1.5, ("x",), 1.25)
    assert (index, when, value) == (3, 1.5, "x") and Frame(3, 1.5, ("x",), 1.25).captured == 1.25


def test_a_packet_s_capture_time_is_read_only_when_it_is_a_bounded_integer() -> None:
    assert packet_number([b"7 1700000000000000"]) == 7 and packet_captured(b"7 1700000000000000") == 1700000000000000
    assert packet_number([b"7"]) == 7 and packet_captured(b"7") is None  # a worker of an earlier version
    for bad in (b"7 abc", b"7 -5", b"7 " + b"9" * 30, b"7 1 2", b"7 "):
        assert packet_captured(bad) is None


def test_a_capture_time_the_work_function_gives_is_the_one_published(settings: Settings) -> None:
    with Source(str(WORKERS / "stamped_worker.py"), settings=settings) as cam:
        wait_until(lambda: cam.stats.clock_offset_s is not None, 10, "an offset")
        stamped = [f for f in itertools.islice(cam.frames(timeout=10), 200) if f.captured is not None][-20:]
    assert stamped and all(0.25 <= f.time - f.captured < 0.35 for f in stamped)  # type: ignore[operator]
