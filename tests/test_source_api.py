"""The everyday API: Source as a context manager, frames, parameters, errors."""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from heron_remote import ConfigError, NoDataError, RestartPolicy, Settings, Source, WorkerError, WorkerStartError
from heron_remote.examples.synthetic_camera import expected_frame, frame_header

from .helpers import CAMERA, ECHO_WORKER, FREE_PORTS, WORKERS, hosted_relay, pid_alive, wait_until, worker_pids


def test_frames_are_exactly_what_the_camera_made_and_parameters_change_it(settings: Settings) -> None:
    with Source(CAMERA, parameters={"shape": [32, 48], "dtype": "uint16", "fps": 300}, settings=settings) as cam:
        pid = cam.stats.worker_pid
        assert pid_alive(pid)
        got = []
        for index, stamp, (frame,) in cam.frames(limit=40, timeout=5):
            n, captured_us = frame_header(frame)
            assert n == index  # the worker's frame number is the com's index
            np.testing.assert_array_equal(frame, expected_frame(n, (32, 48), "uint16", captured_us))
            assert abs(stamp - time.time()) < 5
            got.append(index)
        assert got == list(range(got[0], got[0] + 40)) and cam.gaps == 0
        cam.set_parameters({"shape": [8, 8], "dtype": "float32"})
        frame = wait_until(
            lambda: next(f for f in cam.frames(timeout=5) if f.arrays[0].shape == (8, 8)), 10, "the new shape"
        )
        assert frame.arrays[0].dtype == np.float32
    assert not pid_alive(pid)  # leaving the with block stopped the worker


@pytest.mark.parametrize(
    "worker_exec",
    [
        ECHO_WORKER,
        f"{sys.executable} {ECHO_WORKER}",
        f"python {ECHO_WORKER}",
        "python -m heron_remote.examples.synthetic_camera",
    ],
    ids=["script", "interpreter+script", "python+script", "python -m module"],
)
def test_worker_exec_forms(worker_exec: str, settings: Settings) -> None:
    outputs = ("Frame",) if " -m " in worker_exec else ("Counter", "Echo")
    with Source(worker_exec, outputs=outputs, parameters={"shape": [4, 4], "ok": True}, settings=settings) as src:
        frame = next(iter(src.frames(timeout=5)))
        assert frame.index >= 1 and len(frame.arrays) == len(outputs)


def test_several_outputs_are_grouped_by_index_with_ignored_ones_as_none(settings: Settings) -> None:
    with Source(ECHO_WORKER, outputs=("Counter", "Echo"), parameters={"ok": True}, settings=settings) as src:
        for index, _, (counter, echo) in src.frames(limit=12, timeout=5):
            assert counter[0] == index
            assert (echo is None) == (index % 3 == 0)


def test_a_finite_worker_ends_the_iteration(settings: Settings) -> None:
    with Source(f"{WORKERS / 'finite_worker.py'}", settings=settings) as src:
        frames = list(src.frames(timeout=10))
    assert [f.index for f in frames] == list(range(1, 21))
    assert all(f.arrays[0][0, 0] == f.index and f.arrays[0].dtype == np.uint16 for f in frames)


def test_a_crashing_worker_is_reported_with_its_stderr(settings: Settings) -> None:
    started = time.monotonic()
    # It fails right after it announced itself: at start, or once running, depending on timing.
    with pytest.raises(WorkerError) as caught, Source(str(WORKERS / "crash_worker.py"), settings=settings) as src:
        list(src.frames(timeout=10))
    err = caught.value
    assert err.returncode == 1
    assert "camera 7 not found" in str(err) and "opening camera 7" in str(err)
    print(f"crash reported after {time.monotonic() - started:.2f} s")


def test_a_program_that_never_reports_ready_fails_the_start_in_time(settings: Settings) -> None:
    started = time.monotonic()
    with pytest.raises(WorkerStartError, match=r"did not report ready within 1\.5 s"):
        Source(str(WORKERS / "not_a_worker.py"), settings=settings.replace(start_timeout=1.5)).start()
    assert time.monotonic() - started < 5


def test_a_missing_script_is_named_before_anything_starts(settings: Settings) -> None:
    before = worker_pids()
    with pytest.raises(ConfigError, match=r"nowhere/camera\.py' does not exist"):
        Source("/nowhere/camera.py", settings=settings).start()
    with pytest.raises(ConfigError, match="'no-such-grabber' is not on PATH"):
        Source("no-such-grabber --fast", settings=settings).start()
    assert worker_pids() == before


def test_parameters_that_json_cannot_encode_are_refused(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        Source(CAMERA, parameters={"when": object()}, settings=settings)
    with Source(CAMERA, parameters={"shape": [2, 2]}, settings=settings) as cam:
        with pytest.raises(ConfigError, match="JSON-serialisable"):
            cam.set_parameters(np.zeros(3))
        assert next(iter(cam.frames(timeout=5))).index >= 1  # and the source runs on


def test_no_data_within_the_timeout_is_an_error(settings: Settings) -> None:
    with Source(CAMERA, parameters={"shape": [2, 2], "fps": 0.2}, settings=settings) as cam:
        it = cam.frames(timeout=0.5)
        next(it)  # the first frame comes at once, the next one 5 s later
        with pytest.raises(NoDataError, match=r"no frame from source 'source' for 0\.5 s"):
            next(it)


def test_stop_is_idempotent_and_iterating_before_start_is_refused(settings: Settings) -> None:
    src = Source(CAMERA, settings=settings)
    with pytest.raises(ConfigError, match="start the source first"):
        next(iter(src.frames()))
    src.start()
    src.stop()
    src.stop()
    assert not pid_alive(src.stats.worker_pid)


def test_forwarders_already_running_are_used(settings: Settings) -> None:
    # The settings fixture's forwarders already hold these ports: the source uses them.
    with Source(CAMERA, parameters={"shape": [2, 2]}, settings=settings) as cam:
        assert cam.forwarders is not None and cam.forwarders.running_here is None
        assert next(iter(cam.frames(timeout=5))).index >= 1


def test_malformed_packets_are_dropped_counted_and_the_com_runs_on(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with Source(str(WORKERS / "malformed_worker.py"), settings=settings) as src:
        frames = list(src.frames(limit=20, timeout=5))
        assert all(f.arrays[0].shape == (4, 4) and f.index % 4 == 1 for f in frames)
        assert all(f.arrays[0][0, 0] == f.index % 256 for f in frames)
        stats = src.stats
        assert src.gaps == 3 * (len(frames) - 1)  # each dropped packet shows downstream as a gap
    # A short packet read into the one after it also costs that one (then counted as lost).
    assert stats.malformed + stats.lost >= 3 * (len(frames) - 1) and stats.published >= len(frames)
    for reason in ("expected 3 frames", "metadata is not JSON", "need 25"):
        assert reason in caplog.text


def test_packets_too_long_or_too_short_back_to_back_cost_only_their_neighbours(settings: Settings) -> None:
    # The com reads a packet's frames without asking where it ends; a wrong length shows up
    # as a malformed read, after which it finds the next boundary.
    with Source(str(WORKERS / "misaligned_worker.py"), settings=settings) as src:
        frames = list(src.frames(limit=40, timeout=5))
        stats = src.stats
        assert [f for f in frames if f.arrays[0].shape != (4, 4) or f.arrays[0][0, 0] != f.index % 256] == []
        assert stats.malformed >= 2 * (frames[-1].index - frames[0].index) // 6 > 0
        # Every packet that did not come out is counted by the com (which has gone on since).
        assert 0 < src.gaps <= stats.lost + stats.malformed
        assert src.gaps + len(frames) == frames[-1].index - frames[0].index + 1


def test_frames_reads_on_past_messages_too_long_or_too_short_on_its_topic(
    outside: tuple[Settings, subprocess.Popen[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In Heron's layout frames() reads the forwarders, where anyone may publish on its topics."""
    import zmq

    from heron_remote.wire import encode_output

    settings, _ = outside
    meta, payload = encode_output(np.zeros((2, 2), np.uint8))
    with Source(CAMERA, parameters={"shape": [16, 16], "fps": 200}, settings=settings) as cam:
        topic = cam.topics[0].encode()
        assert hosted_relay(cam).hosted
        bad = [
            [topic, b"1"],  # too short
            [topic, b"2", b"3", meta, payload, b"extra"],  # too long
            [topic, b"x", b"3", meta, payload],  # no index
            [topic, b"4", b"5", meta, b"short"],  # payload does not match its metadata
        ]
        pub = zmq.Context.instance().socket(zmq.PUB)
        pub.linger = 0
        pub.connect(f"tcp://127.0.0.1:{settings.ports.data_submit}")
        frames = cam.frames(timeout=5)
        next(frames)
        time.sleep(0.3)  # the publisher's subscriptions arrive
        for _ in range(20):
            for message in bad:
                pub.send_multipart(message)
        pub.close(linger=1000)
        # A message too long whose first five frames make sense is read as those five; the
        # frames after it are dropped up to the next message.
        good = list(itertools.islice((f for f in frames if f.arrays[0].shape == (16, 16)), 100))
        assert len(good) == 100
        for frame in good:
            n, captured_us = frame_header(frame.arrays[0])
            np.testing.assert_array_equal(frame.arrays[0], expected_frame(n, (16, 16), "uint8", captured_us))
    assert "dropped an undecodable message" in caplog.text


def test_frames_flow_as_their_size_changes_and_the_com_queue_stays_as_it_was(settings: Settings) -> None:
    """The com's queue from its worker is never resized mid-stream: lowered once 2 MiB frames came
    after small ones, it left the worker blocked for good on a queue the com had emptied."""
    from heron_remote._protocol import DATA_HWM

    def shape_arrives(cam: Source, shape: list[int]) -> None:
        cam.set_parameters({"shape": shape, "fps": 100})
        wait_until(lambda: any(f.arrays[0].shape == tuple(shape) for f in cam.frames(limit=5, timeout=5)), 10, shape)

    with Source(CAMERA, parameters={"shape": [8, 8], "fps": 100}, settings=settings) as cam:
        next(iter(cam.frames(timeout=5)))
        assert cam.data_hwm == DATA_HWM
        shape_arrives(cam, [1024, 2048])  # 2 MiB frames
        shape_arrives(cam, [8, 8])
        shape_arrives(cam, [1024, 2048])
        assert cam.data_hwm == DATA_HWM and cam.error is None


def test_a_worker_sending_more_outputs_than_its_node_has_is_stopped_saying_so(settings: Settings) -> None:
    # The echo worker sends two outputs; this node declares one.
    # Its first packet may end it before it counts as started, or after.
    said = r"send_data_to_com got 2 output\(s\) but node 'source' has 1"
    with pytest.raises(WorkerError, match=said), Source(ECHO_WORKER, parameters={"ok": True}, settings=settings) as src:
        list(src.frames(timeout=5))


def test_a_frozen_worker_is_reported_lost_and_stopped(settings: Settings) -> None:
    import os
    import signal

    from heron_remote import WorkerLostError

    with Source(CAMERA, parameters={"shape": [2, 2], "fps": 100}, settings=settings) as cam:
        frames = cam.frames(timeout=30)
        next(frames)
        pid = cam.stats.worker_pid
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(WorkerLostError, match="nothing came from the worker"):
            for _ in frames:
                pass
        assert time.monotonic() - started < settings.death_window + 2
    wait_until(lambda: not pid_alive(pid), 5, "the frozen worker to be killed")


@pytest.mark.parametrize("death", ["kill", "raise"])
def test_a_dying_worker_is_noticed_within_two_beats_and_restarted_by_the_policy(settings: Settings, death: str) -> None:
    """Each death reaches the callback with its status and stderr; the index goes on, skipping one at each
    restart (a gap every subscriber sees, counted in the stats with the hole's length); the last one is raised."""
    policy = RestartPolicy(mode="on-failure", max_restarts=2, backoff=0.1)
    errors: list[tuple[float, WorkerError]] = []
    src = Source(
        str(WORKERS / "flaky_worker.py"),
        parameters={"frames": 5, "death": death},
        settings=settings.replace(restart=policy),
        on_worker_error=lambda e: errors.append((time.time(), e)),
    )
    indices = []
    with pytest.raises(WorkerError) as caught, src:
        for frame in src.frames(timeout=20):
            indices.append(frame.index)
    assert indices == [*range(1, 6), *range(7, 12), *range(13, 18)]  # three workers, five frames each
    stats = src.stats
    assert stats.restarts == 2 and stats.state == "failed"
    assert src.gaps == stats.skipped == stats.gaps == src.status().gaps == 2
    assert stats.down_s > 2 * 0.1  # two holes, each at least its back-off long
    assert len(errors) == 3 and caught.value is errors[-1][1]
    for noticed, error in errors:
        if death == "kill":
            assert error.returncode == -signal.SIGKILL and "killed by signal 9" in str(error)
        else:
            assert error.returncode == 1 and "RuntimeError: sensor unplugged" in str(error)
        died = float(re.search(r"DYING AT (\S+)", "\n".join(error.stderr_tail)).group(1))
        print(f"death ({death}) noticed after {noticed - died:.3f} s")
        assert noticed - died < 2 * settings.heartbeat_rate


def test_a_worker_raising_in_its_initialisation_is_reported_and_retried_with_new_parameters(
    settings: Settings,
) -> None:
    with Source(str(WORKERS / "init_error_worker.py"), parameters={"ok": False}, settings=settings) as src:
        started = time.monotonic()
        wait_until(lambda: src.stats.last_error, 2, "the com to hear of the initialisation error")
        print(f"initialisation error reported after {time.monotonic() - started:.2f} s")
        assert "initialisation function raised RuntimeError: camera 7 not found" in src.stats.last_error
        with pytest.raises(NoDataError, match="camera 7 not found"):
            next(src.frames(timeout=0.5))
        src.set_parameters({"ok": True})
        assert next(src.frames(timeout=10)).arrays[0].shape == (4,)


def test_sources_share_the_forwarders_one_of_them_started(settings: Settings) -> None:
    """Stopping the Source that started them leaves them running for the other (counted)."""
    from heron_remote import Forwarders

    with Forwarders(ports=FREE_PORTS) as probe:
        fixed = probe.ports  # free a moment ago; the sources ask for them by number
    first = Source(CAMERA, name="first", parameters={"shape": [2, 2]}, settings=settings.replace(ports=fixed))
    second = Source(CAMERA, name="second", parameters={"shape": [3, 3]}, settings=settings.replace(ports=fixed))
    with first, second:
        assert first.forwarders.running_here is second.forwarders.running_here is not None
        first.stop()
        shapes = {f.arrays[0].shape for f in second.frames(timeout=5, limit=5)}
        assert shapes == {(3, 3)}
