"""RemoteLauncher against a FakeHost: launch, stop and a lost session, with no sshd.

The fake host runs the launcher's commands on this machine in the login shell and a new
session, as sshd would; what the launcher asks of the host (start, signal, alive) is recorded.
"""

from __future__ import annotations

import logging
import os
import signal
import textwrap
from pathlib import Path

import pytest

from heron_remote import WorkerStartError
from heron_remote._procs import group_members
from heron_remote._protocol import PID_PREFIX, WorkerArgs
from heron_remote.ssh import RemoteLauncher, Tunnel
from heron_remote.ssh.shells import PosixShell
from heron_remote.testing import FakeHost

from .helpers import pid_alive, wait_until

ARGS = WorkerArgs(port=0, parameters_topic="Parameters##cam##0", num_sending_topics=1, heartbeat_rate=0.5)
POSIX = PosixShell()

# Announces itself as a worker does, then waits. With "stubborn" it (and the helper it starts,
# which inherits the ignored signal) ignores TERM; with "fail" it exits before it is ready.
_WORKER = """
import os, signal, subprocess, sys, time
from heron_remote._protocol import CHANNELS, ReadyLine
if "fail" in sys.argv:
    print("no camera here", file=sys.stderr, flush=True)
    sys.exit(3)
if "stubborn" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen(["sleep", "30"])
print("worker starting", file=sys.stderr, flush=True)
ports = {name: 40000 + i for i, name in enumerate(CHANNELS)}
print(ReadyLine(pid=os.getpid(), ports=ports, version="x", python="3").to_line(), flush=True)
time.sleep(30)
"""


@pytest.fixture
def worker(tmp_path: Path) -> str:
    path = tmp_path / "fake_worker.py"
    path.write_text(textwrap.dedent(_WORKER))
    return str(path)


def _kill_group(pid: int) -> None:
    """What the test itself must end (a worker it abandoned)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    wait_until(lambda: not group_members(pid), 5, f"group {pid} to end")


def test_a_launch_reads_the_pid_line_and_the_ready_line_and_forwards_each_port(worker: str) -> None:
    host = FakeHost()
    launcher = RemoteLauncher(worker, node_name="cam", connection=host)
    assert launcher.where == "fake-pc" and launcher.connection is host
    launcher.start(ARGS)
    try:
        ready = launcher.wait_ready(10)
        # The shell reported its pid first, and exec handed that pid to the worker.
        assert host.started[0].startswith(f"echo {PID_PREFIX}$$; exec env PYTHONUNBUFFERED=1 ")
        assert launcher.output.pid == ready.pid == launcher.pid
        assert group_members(ready.pid) == [ready.pid]  # it leads its own group
        addresses = [launcher.address(port) for port in ready.ports.values()]
        assert addresses == [f"tcp://127.0.0.1:{port}" for port in ready.ports.values()]
        tunnels = launcher.tunnels
        assert len(tunnels) == 4 and all(isinstance(t, Tunnel) for t in tunnels)
        assert launcher.returncode() is None
    finally:
        code = launcher.stop(grace=2)
    assert code == -signal.SIGTERM
    assert "worker starting" in launcher.output.tail()
    assert launcher.connection is None and launcher.tunnels == () and all(t.closed for t in tunnels)
    assert host.releases == 1
    assert launcher.stop() == code and host.releases == 1  # idempotent: released once


def test_a_worker_that_ignores_term_gets_kill_with_its_helpers_and_is_confirmed_gone(worker: str) -> None:
    host = FakeHost()
    launcher = RemoteLauncher(f"{worker} stubborn", node_name="cam", connection=host)
    launcher.start(ARGS)
    pid = launcher.wait_ready(10).pid
    wait_until(lambda: len(group_members(pid)) == 2, 5, "the worker's helper to start")
    assert launcher.stop(grace=0.3) == -signal.SIGKILL
    assert not group_members(pid)  # the helper too
    kills = [c for c in host.commands if c.startswith("kill ")]
    assert kills == [POSIX.signal(pid, signal.SIGTERM), POSIX.signal(pid, signal.SIGKILL)]
    assert POSIX.alive(pid) in host.commands  # the group was checked on the host, not only the leader
    assert host.releases == 1


def test_a_lost_session_leaves_the_status_unknown_and_the_group_is_asked_of_the_host(
    worker: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="heron_remote")
    host = FakeHost()
    launcher = RemoteLauncher(worker, node_name="cam", connection=host)
    launcher.start(ARGS)
    pid = launcher.wait_ready(10).pid
    host.cut()
    assert launcher.returncode() is None and pid_alive(pid)  # the worker runs on without its session
    assert launcher.returncode() is None
    lost = [r for r in caplog.records if "ended with the connection" in r.getMessage()]
    assert len(lost) == 1  # said once
    host.restore()
    assert launcher.stop(grace=2) is None  # its status died with the session
    assert not pid_alive(pid)
    assert [c for c in host.commands if c.startswith("kill ")] == [POSIX.signal(pid, signal.SIGTERM)]
    assert POSIX.alive(pid) in host.commands
    assert host.releases == 1


def test_abandoning_a_worker_on_a_cut_link_frees_the_connection_without_signalling(worker: str) -> None:
    host = FakeHost()
    launcher = RemoteLauncher(worker, node_name="cam", connection=host)
    launcher.start(ARGS)
    pid = launcher.wait_ready(10).pid
    launcher.address(launcher.output.ready.ports["data"])  # type: ignore[union-attr]
    host.cut()
    try:
        launcher.abandon()
        assert host.releases == 1 and host.commands == [] and all(t.closed for t in host.tunnels)
        assert launcher.connection is None
        launcher.stop()  # after abandon: nothing more to do, nothing released twice
        assert host.releases == 1
    finally:
        _kill_group(pid)  # a real worker ends itself once the pulses stop


def test_a_worker_that_exits_before_it_is_ready_is_reported_with_its_status_and_stderr(worker: str) -> None:
    host = FakeHost()
    launcher = RemoteLauncher(f"{worker} fail", node_name="cam", connection=host)
    launcher.start(ARGS)
    with pytest.raises(WorkerStartError, match=r"(?s)on fake-pc exited with status 3 .*before it was ready.*no camera"):
        launcher.wait_ready(10)
    assert launcher.stop() == 3
    assert host.releases == 1


def test_a_stop_before_the_start_releases_the_connection_and_the_start_is_refused(worker: str) -> None:
    host = FakeHost()
    launcher = RemoteLauncher(worker, node_name="cam", connection=host)
    assert launcher.stop() is None and host.releases == 1
    with pytest.raises(WorkerStartError, match="stopped before it started"):
        launcher.start(ARGS)
    assert host.started == [] and host.releases == 1
