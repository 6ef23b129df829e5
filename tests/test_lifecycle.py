"""Worker lifecycle: the whole process group ends on stop; a rerun ends what a crashed run left."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from heron_remote import Settings, Source
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import WORKERS, ComScript, pid_alive, remote_alive, wait_until

# Each test runs a worker on a namespace host too (the acq fixture).
pytestmark = pytest.mark.multihost

Hosts = AcqHosts | ExternalHosts
SPAWNING = str(WORKERS / "spawning_worker.py")


@pytest.mark.parametrize("where", ["local", "acq1"])
def test_stop_ends_the_worker_and_the_helper_it_spawned(
    where: str, settings: Settings, remote_settings: Settings, acq: Hosts
) -> None:
    if where == "local":
        src = Source(SPAWNING, settings=settings)
        alive = pid_alive
    else:
        src = Source(SPAWNING, settings=remote_settings, host=where)
        alive = lambda pid: remote_alive(acq, where, pid)  # noqa: E731
    with src:
        first = next(src.frames(timeout=15)).arrays[0]
        worker, helper = src.stats.worker_pid, first["helper"]
        assert alive(worker) and alive(helper)
        stopping = time.monotonic()
    took = time.monotonic() - stopping
    print(f"{where}: worker and a TERM-ignoring helper ended in {took:.2f} s (grace {settings.stop_grace:g} s)")
    assert not alive(worker) and not alive(helper)


@pytest.mark.parametrize("where", ["local", "acq1"])
def test_a_relaunch_ends_the_worker_a_killed_com_left_without_waiting_for_its_heartbeat(
    where: str, settings: Settings, remote_settings: Settings, acq: Hosts
) -> None:
    # A 30 s death window: waiting it out is not what makes the relaunch work.
    slow = (settings if where == "local" else remote_settings).replace(heartbeat_rate=1.0, heartbeats_to_death=30)
    host = None if where == "local" else where
    alive = pid_alive if where == "local" else (lambda pid: remote_alive(acq, where, pid))
    crashed = ComScript(slow, host=host)
    orphan = crashed.worker_pid
    crashed.proc.kill()  # the rig's experiment dies: its worker runs on, holding the camera
    crashed.proc.wait(5)
    assert alive(orphan)
    started = time.monotonic()
    rerun = ComScript(slow, host=host)
    worker = rerun.worker_pid
    try:
        took = time.monotonic() - started
        print(f"{where}: relaunch ready in {took:.2f} s, the orphan {orphan} ended")
        assert worker != orphan and alive(worker)
        assert not alive(orphan)
        assert took < 10
    finally:
        code, _, log = rerun.stop()
    assert code == 0, log
    assert f"ended worker pid {orphan} of this node, left on" in log
    wait_until(lambda: not alive(worker), 10, "the relaunched worker to stop")


def test_status_shows_each_remote_source_live_and_as_json(remote_settings: Settings, acq: Hosts) -> None:
    port = str(remote_settings.ports.proof_of_life_publish)
    camera = "python -m heron_remote.examples.synthetic_camera"
    with (
        Source(camera, name="cam-left", parameters={"shape": [64, 64], "fps": 50}, settings=remote_settings,
               host="acq1") as left,
        Source(camera, name="cam-right", parameters={"shape": [32, 32], "fps": 20}, settings=remote_settings,
               host="acq2") as right,
    ):  # fmt: skip
        time.sleep(2.5)  # rates over whole seconds
        out = subprocess.run(
            ["heron-remote", "status", "--json", "--port", port], capture_output=True, text=True, timeout=30
        )
        screen = subprocess.run(
            ["heron-remote", "status", "--once", "--port", port], capture_output=True, text=True, timeout=30
        ).stdout
        mine = left.status()
    print(screen)
    assert out.returncode == 0, out.stderr
    rows = {row["node"]: row for row in json.loads(out.stdout)}
    assert set(rows) == {"cam-left", "cam-right"}
    for row, host, pid, fps in (
        (rows["cam-left"], "acq1", left.stats.worker_pid, 50),
        (rows["cam-right"], "acq2", right.stats.worker_pid, 20),
    ):
        assert (row["host"], row["worker_pid"], row["state"], row["gaps"]) == (host, pid, "running", 0)
        assert 0.6 * fps < row["frames_per_s"] < 1.4 * fps
        assert row["heartbeat_rtt_ms"] is not None and 0 < row["heartbeat_rtt_ms"] < 1000
    assert rows["cam-left"]["mb_per_s"] > rows["cam-right"]["mb_per_s"] > 0
    assert "cam-left" in screen and "acq2" in screen and "running" in screen
    assert mine.node == "cam-left" and mine.state == "running"


def test_streaming_sources_on_one_host_stop_together_cleanly(
    remote_settings: Settings, acq: Hosts, caplog: pytest.LogCaptureFixture
) -> None:
    """Four sources streaming 26 MB/s each through one connection, stopped at once from four threads."""
    import logging
    import threading

    caplog.set_level(logging.WARNING)
    camera = "python -m heron_remote.examples.synthetic_camera"
    sources = [
        Source(camera, name=f"cam{i}", parameters={"shape": [512, 512], "fps": 100}, settings=remote_settings,
               host="acq1")
        for i in range(4)
    ]  # fmt: skip
    try:
        for src in sources:
            src.start()
        for src in sources:
            next(src.frames(timeout=15))
        time.sleep(1.0)
    finally:
        stopping = time.monotonic()
        threads = [threading.Thread(target=s.stop) for s in sources]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    took = time.monotonic() - stopping
    print(f"four streaming sources stopped together in {took:.2f} s")
    assert took < remote_settings.stop_grace  # every worker ended on TERM
    trouble = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert trouble == []
