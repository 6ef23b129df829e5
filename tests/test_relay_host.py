"""Heron's layout (a com per process, the forwarders in another): the forwarders' process relays the
com's packets, so a frame crosses two loopback hops as in a Source, not three.

Real processes: ``heron-remote forwarders`` in a process of its own, the com (a Source's) in this
one, real workers; a real second account for the relay socket.
"""

from __future__ import annotations

import logging
import pwd
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from heron_remote import Compression, RestartPolicy, Settings, Source, WorkerError
from heron_remote.bench.takeover import free_fixed_ports
from heron_remote.examples.natural_camera import NATURAL_CAMERA, frame
from heron_remote.relay_host import relay_path
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import CAMERA, NO_CONTROL, WORKERS, edit_registry, hosted_relay, wait_until
from .test_capture_time import OFFSET_S, OFFSET_WORKER, _offset_found
from .test_forwarders_shared import assert_unreachable_by, other_account  # noqa: F401


def _data_connected(src: Source) -> bool:
    assert src._com is not None and src._com._sockets is not None
    sockets = src._com._sockets
    return sockets.worker_endpoint(sockets.data) is not None


def test_the_forwarders_process_relays_for_a_com_of_another(
    outside: tuple[Settings, subprocess.Popen[str]],
) -> None:
    settings, _ = outside
    with Source(CAMERA, parameters={"shape": [64, 64], "fps": 200}, settings=settings) as cam:
        frames = list(cam.frames(timeout=10, limit=100))
        relay = hosted_relay(cam)
        assert relay.hosted and not _data_connected(cam)  # the com never pulls a packet itself
        wait_until(lambda: cam.stats.published >= frames[-1].index, 2, "the host's report")
        stats, status = cam.stats, cam.status()
    indices = [f.index for f in frames]
    assert indices == list(range(indices[0], indices[0] + 100))
    assert all(f.arrays[0].shape == (64, 64) for f in frames)
    assert stats.lost == stats.malformed == 0 and stats.received >= indices[-1]
    assert stats.bytes_received >= 100 * 64 * 64
    assert status.received >= indices[-1]  # what `heron-remote status` shows comes from the host's reports


def test_malformed_packets_relayed_there_are_counted_and_logged_by_the_com(
    outside: tuple[Settings, subprocess.Popen[str]], caplog: pytest.LogCaptureFixture
) -> None:
    settings, _ = outside
    with caplog.at_level(logging.WARNING), Source(str(WORKERS / "malformed_worker.py"), settings=settings) as src:
        frames = list(src.frames(limit=20, timeout=5))
        assert hosted_relay(src).hosted
        wait_until(lambda: src.stats.malformed >= 3 * (len(frames) - 1), 2, "the host's counts")
        stats = src.stats
    assert all(f.arrays[0].shape == (4, 4) and f.index % 4 == 1 for f in frames)
    assert stats.malformed + stats.lost >= 3 * (len(frames) - 1)
    for reason in ("expected 3 frames", "metadata is not JSON", "need 25"):
        assert reason in caplog.text  # the host's log lines come out in the com's log
    assert "@com] dropped malformed packet" in caplog.text  # with the com's node and place


def test_a_restarted_worker_is_relayed_there_too_with_the_restart_gap(
    outside: tuple[Settings, subprocess.Popen[str]],
) -> None:
    settings, _ = outside
    policy = RestartPolicy(mode="on-failure", max_restarts=2, backoff=0.1)
    src = Source(
        str(WORKERS / "flaky_worker.py"),
        parameters={"frames": 5, "death": "kill"},
        settings=settings.replace(restart=policy),
    )
    indices, hosted = [], []
    with pytest.raises(WorkerError), src:
        for f in src.frames(timeout=20):
            indices.append(f.index)
            hosted.append(hosted_relay(src).hosted)
    assert indices == [*range(1, 6), *range(7, 12), *range(13, 18)]  # three workers, five frames each
    assert all(hosted) and src.stats.skipped == 2 and src.stats.restarts == 2


def test_packed_frames_are_unpacked_there_and_capture_times_stamped(
    outside: tuple[Settings, subprocess.Popen[str]],
) -> None:
    settings, _ = outside
    shape = (240, 320)
    with Source(
        NATURAL_CAMERA,
        parameters={"shape": list(shape), "fps": 200, "count": 60},
        settings=settings,
        compression=Compression(),
    ) as cam:
        got = [f for f in cam.frames(timeout=10)]
        assert hosted_relay(cam).hosted or cam.stats.state == "stopped"
        stats = cam.stats
    assert [f.index for f in got] == list(range(1, 61))
    for f in got:
        np.testing.assert_array_equal(f.arrays[0], frame(f.index, shape))
    assert stats.packed_bytes == stats.bytes_received and stats.unpacked_bytes == 60 * shape[0] * shape[1]
    with Source(OFFSET_WORKER, parameters={"shape": [8, 8], "fps": 100}, settings=settings) as cam:
        offset = _offset_found(cam, settings)
        assert hosted_relay(cam).hosted
        captured = [f for f in cam.frames(timeout=10, limit=200) if f.captured is not None][-20:]
    assert abs(offset - OFFSET_S) < 0.001
    assert captured and all(f.captured is not None and -0.001 < f.time - f.captured < 0.5 for f in captured)


def test_when_the_forwarders_process_dies_the_com_relays_in_its_own(
    outside: tuple[Settings, subprocess.Popen[str]], caplog: pytest.LogCaptureFixture
) -> None:
    settings, command = outside
    with (
        caplog.at_level(logging.INFO),
        Source(CAMERA, parameters={"shape": [8, 8], "fps": 200}, settings=settings) as cam,
    ):
        before = list(cam.frames(timeout=10, limit=20))
        assert hosted_relay(cam).hosted
        command.send_signal(signal.SIGKILL)
        command.wait(10)
        killed = time.monotonic()
        wait_until(lambda: not hosted_relay(cam).hosted, 5, "the com to notice")
        noticed = time.monotonic() - killed
        after = list(cam.frames(timeout=10, limit=50))
        assert _data_connected(cam)
    print(f"the com relayed itself {noticed * 1000:.0f} ms after the forwarders' process was killed")
    assert "the forwarders' process does not relay for this com: their process closed the connection" in caplog.text
    assert after[-1].index > before[-1].index and [f.index for f in after] == list(
        range(after[0].index, after[0].index + 50)
    )


def test_another_account_cannot_reach_the_relay_socket(
    outside: tuple[Settings, subprocess.Popen[str]],
    other_account: pwd.struct_passwd,  # noqa: F811
) -> None:
    settings, _ = outside
    assert_unreachable_by(other_account, relay_path(settings.ports.data_submit))


def test_a_com_whose_settings_say_no_relays_in_its_own_process(
    outside: tuple[Settings, subprocess.Popen[str]],
) -> None:
    settings, _ = outside
    mine = settings.replace(relay_in_forwarders=False)
    with Source(CAMERA, parameters={"shape": [8, 8], "fps": 200}, settings=mine) as cam:
        frames = list(cam.frames(timeout=10, limit=20))
        assert not hosted_relay(cam).hosted and _data_connected(cam)
    assert [f.index for f in frames] == list(range(frames[0].index, frames[0].index + 20))


@pytest.mark.parametrize("transport", ["tunnel", "direct"])
def test_a_remote_worker_is_relayed_there_through_a_link_cut(
    outside: tuple[Settings, subprocess.Popen[str]], acq: AcqHosts | ExternalHosts, tmp_path: Path, transport: str
) -> None:
    """The forwarders' process pulls from the tunnel's port on the rig, or from the PC's address with
    the launch's CurveZMQ keys; a cut of the link is bridged by the same worker, as in the com."""
    if not acq.can_control:
        pytest.skip(NO_CONTROL)
    settings, _ = outside
    registry = edit_registry(acq, tmp_path, "acq1", transport=transport)
    settings = settings.replace(ssh_info=registry, heartbeat_rate=0.5, heartbeats_to_death=12, link_timeout=1.5)
    host = next(h for h in acq.hosts if h.name == "acq1")
    with Source(CAMERA, parameters={"shape": [4, 4], "fps": 100}, settings=settings, host="acq1") as cam:
        frames = cam.frames(timeout=20)
        seen = [next(frames).index for _ in range(20)]
        assert hosted_relay(cam).hosted and cam.launcher is not None and cam.launcher.transport == transport
        pid = cam.stats.worker_pid
        acq.set_link(host, up=False)
        up = threading.Timer(2.0, acq.set_link, args=(host,), kwargs={"up": True})
        up.start()
        try:
            time.sleep(2.0)
            seen += [next(frames).index for _ in range(100)]
        finally:
            up.join()
            acq.set_link(host, up=True)
        assert hosted_relay(cam).hosted and cam.stats.worker_pid == pid  # the same worker, still relayed there
        wait_until(lambda: cam.stats.received >= seen[-1] - cam.stats.lost, 2, "the host's counts")
    assert seen == sorted(seen) and seen[-1] - seen[0] + 1 - len(set(seen)) == cam.stats.lost + cam.stats.malformed


def test_a_failing_relay_host_is_reported_and_the_forwarders_go_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the relays' thread must not take the forwarders (everyone's data) down with it."""
    import zmq

    from heron_remote import Forwarders
    from heron_remote.relay_host import RelayHost

    def broken(*args: object) -> None:
        raise RuntimeError("relay bug")

    monkeypatch.setattr(RelayHost, "_on_message", broken)
    with caplog.at_level(logging.ERROR), Forwarders(ports=free_fixed_ports()) as fw:
        path = relay_path(fw.ports.data_submit)
        assert path.is_socket()
        link = zmq.Context.instance().socket(zmq.DEALER)
        try:
            link.linger = 0
            link.connect(f"ipc://{path}")
            link.send_multipart((b"ping", b"{}"))
            wait_until(lambda: not path.exists(), 5, "the relays' thread to stop")
        finally:
            link.close()
        assert fw.error is None  # the forwarders run on
        assert "the forwarders' relays for other processes stopped (RuntimeError('relay bug'))" in caplog.text


def test_bad_requests_to_the_relay_host_are_refused_to_that_com_alone() -> None:
    """What a com cannot be relayed for is refused (it then relays itself): a wrong endpoint, a body that
    is no JSON, numbers out of range. An attach is accepted only by an ``attached`` naming it."""
    import json

    import zmq

    from heron_remote import Forwarders
    from heron_remote._linkkeys import LinkKeys

    def ask(link: zmq.Socket, verb: bytes, body: bytes) -> list[bytes]:
        """The verbs of what comes back within 0.3 s (a relay reports every 0.2 s: at most a few)."""
        link.send_multipart((verb, body))
        verbs: list[bytes] = []
        deadline = time.monotonic() + 0.3
        while (left := deadline - time.monotonic()) > 0 and link.poll(int(left * 1000) + 1):
            verbs.append(link.recv_multipart()[0])
        return verbs

    good = {
        "attach": 7,
        "endpoint": "tcp://127.0.0.1:9",
        "keys": LinkKeys.make().client_state(),
        "routes": [["Frame##x##0", 0]],
        "outputs": 1,
        "threads": 1,
        "sequence": [0] * 6,
        "counters": {},
        "offset": None,
    }
    with Forwarders(ports=free_fixed_ports()) as fw:
        link = zmq.Context.instance().socket(zmq.DEALER)
        link.linger = 0
        try:
            link.connect(f"ipc://{relay_path(fw.ports.data_submit)}")
            assert ask(link, b"ping", b"{}") == [b"unknown"]
            for bad in (
                json.dumps({**good, "endpoint": "ipc:///tmp/elsewhere"}).encode(),
                b"{not json",
                json.dumps({**good, "outputs": 1e999}).encode(),
                json.dumps({**good, "keys": {"mechanism": "curve"}}).encode(),
            ):
                assert ask(link, b"attach", bad) == [b"refused"], bad
            answers = ask(link, b"attach", json.dumps(good).encode())
            assert b"attached" in answers and b"refused" not in answers
            assert ask(link, b"detach", b"{}") == []
            assert ask(link, b"ping", b"{}") == [b"unknown"]  # detached: no more reports
        finally:
            link.close()
        assert fw.error is None and relay_path(fw.ports.data_submit).is_socket()  # the host serves on


def test_a_com_that_stops_waiting_for_a_slow_host_takes_its_worker_back_alone(
    outside: tuple[Settings, subprocess.Popen[str]], caplog: pytest.LogCaptureFixture
) -> None:
    """The forwarders' script suspended (Ctrl-Z) for 3 s: the com relays itself, and once the script runs
    again its relay lets go of the worker, so the two never share the worker's packets."""
    settings, command = outside
    with (
        caplog.at_level(logging.WARNING),
        Source(CAMERA, parameters={"shape": [8, 8], "fps": 200}, settings=settings) as cam,
    ):
        frames = cam.frames(timeout=20)
        [next(frames) for _ in range(20)]
        assert hosted_relay(cam).hosted
        command.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: not hosted_relay(cam).hosted, 5, "the com to stop waiting")
            time.sleep(1.0)
        finally:
            command.send_signal(signal.SIGCONT)
        # While it was stopped the worker shared its packets with the stopped relay's socket (lost, and
        # counted); once it runs again it reads the com's detach and lets go, publishing none of them.
        time.sleep(1.0)
        lost = cam.stats.lost
        mark = cam._com.index if cam._com is not None else 0
        seen = []
        while (index := next(frames).index) <= mark:  # what queued up at the forwarders meanwhile
            seen.append(index)
        assert seen == sorted(seen)  # nothing from the stopped relay, which was behind, came out late
        after = [index] + [next(frames).index for _ in range(199)]
        assert after == list(range(after[0], after[0] + 200))  # no packet went to the other relay
        assert cam.stats.lost == lost
    assert "they sent no report for 1.5 s; the com relays in its own process" in caplog.text


def test_a_relay_socket_left_by_killed_forwarders_is_passed_over_at_once() -> None:
    """Forwarders that were SIGKILLed leave their socket file: a com must not wait for it to answer."""
    import socket as sockets

    from heron_remote.com.hosted import offered

    settings = Settings(ports=free_fixed_ports())
    path = relay_path(settings.ports.data_submit)
    # Free ports can be ones an earlier run's killed forwarders used: their file is stale too.
    path.unlink(missing_ok=True)
    left = sockets.socket(sockets.AF_UNIX)
    left.bind(str(path))  # bound and closed, never listened on: a file that takes no connection
    left.close()
    try:
        assert path.exists()
        started = time.monotonic()
        assert offered(settings) is None
        assert time.monotonic() - started < 0.5
    finally:
        path.unlink()
    from heron_remote import Forwarders

    with Forwarders(ports=settings.ports):
        assert offered(settings) is None  # in this process: a com here reaches them in-process
