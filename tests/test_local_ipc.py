"""A local worker's data goes through a Unix socket in this account's private folder, not a port.

Real processes and real ZeroMQ sockets: a ``Source`` launching the synthetic camera on this
machine, a second local account for the attack, a worker SIGKILLed mid-stream.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from heron_remote import Settings, Source, WorkerError, WorkerStartError
from heron_remote._ipc import (
    STALE_AFTER_S,
    is_private_endpoint,
    new_data_socket,
    sweep_stale,
    usable_socket_path,
)
from heron_remote._paths import private_dir
from heron_remote._protocol import CHANNELS, ReadyLine, WorkerArgs
from heron_remote.examples.synthetic_camera import expected_frame, frame_header
from heron_remote.launcher import LocalLauncher

from .helpers import CAMERA, FREE_PORTS, killed_twice
from .test_forwarders_shared import assert_unreachable_by, other_account  # noqa: F401

_FAST = Settings(ports=FREE_PORTS, heartbeat_rate=0.2, heartbeats_to_death=5, start_timeout=15, stop_grace=2)


def _data_path(src: Source) -> Path:
    assert src.launcher is not None and src.launcher.ready is not None
    endpoint = src.launcher.ready.endpoints["data"]
    assert endpoint.startswith("ipc://") and src.launcher.ready.ports["data"] == 0
    return Path(endpoint[len("ipc://") :])


def test_a_local_worker_streams_through_a_unix_socket_in_the_private_folder_and_removes_it() -> None:
    with Source(CAMERA, parameters={"shape": [32, 48], "fps": 300}, settings=_FAST) as cam:
        frames = list(cam.frames(timeout=10, limit=50))
        path = _data_path(cam)
        assert path.parent == private_dir("sockets") and path.is_socket()
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        worker_pid = cam.stats.worker_pid
    assert re.fullmatch(r"data-[0-9a-f]{16}\.sock", path.name) and worker_pid
    assert [f.index for f in frames] == list(range(frames[0].index, frames[0].index + 50))
    for f in frames:
        header = frame_header(f.arrays[0])
        assert header is not None and header[0] == f.index
        np.testing.assert_array_equal(f.arrays[0], expected_frame(f.index, (32, 48), "uint8", header[1]))
    assert not path.exists()


def test_another_account_cannot_connect_to_a_local_workers_data_socket(
    other_account: pwd.struct_passwd,  # noqa: F811
) -> None:
    with Source(CAMERA, parameters={"shape": [8, 8], "fps": 100}, settings=_FAST) as cam:
        next(iter(cam.frames(timeout=10, limit=1)))
        assert_unreachable_by(other_account, _data_path(cam))


def test_the_socket_of_a_killed_local_worker_is_removed_by_its_com() -> None:
    """ZeroMQ removes the file at a clean end; after a SIGKILL the com does, as it restarts the node."""
    src = killed_twice(_FAST)
    paths: set[Path] = set()
    indices = []
    with pytest.raises(WorkerError), src:
        for f in src.frames(timeout=20):
            indices.append(f.index)
            paths.add(_data_path(src))
    assert indices == [*range(1, 6), *range(7, 12)] and len(paths) == 2  # two workers, a socket each
    assert not any(p.exists() for p in paths)


def test_where_no_unix_socket_fits_the_worker_binds_loopback_tcp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / ("r" * 100)  # a private folder whose socket paths would pass sun_path's limit
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert new_data_socket() is None
    with LocalLauncher(CAMERA, node_name="long") as launcher:
        launcher.start(WorkerArgs(port=0, parameters_topic="long", num_sending_topics=1))
        ready = launcher.wait_ready(15)
        assert ready.endpoints == {} and ready.ports["data"] > 0
        assert launcher.endpoint("data") == f"tcp://127.0.0.1:{ready.ports['data']}"


def test_a_worker_binds_only_a_data_socket_name_in_a_private_folder_of_its_account(tmp_path: Path) -> None:
    """The path comes on the worker's command line: anything else there gets loopback TCP."""
    good = new_data_socket()
    assert good is not None and usable_socket_path(good.removeprefix("ipc://"))
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    for path in (
        str(shared / "data-0123456789abcdef.sock"),  # a folder other accounts can enter
        str(private_dir("sockets") / "relay-5555.sock"),  # not a data socket's name
        str(private_dir("sockets") / "data-0123456789abcdef.sock\0x"),
    ):
        assert not usable_socket_path(path), path
    with LocalLauncher(CAMERA, node_name="shared") as launcher:
        launcher._data_socket = f"ipc://{shared}/data-0123456789abcdef.sock"  # as if the com had named it
        launcher.start(WorkerArgs(port=0, parameters_topic="shared", num_sending_topics=1))
        ready = launcher.wait_ready(15)
        assert ready.endpoints == {} and ready.ports["data"] > 0
        assert launcher.endpoint("data") == f"tcp://127.0.0.1:{ready.ports['data']}"
    assert not (shared / "data-0123456789abcdef.sock").exists()


def test_a_worker_whose_com_is_gone_removes_its_socket_as_it_ends() -> None:
    """An orphan ends itself (its stdin, the com's pipe, closed), with os._exit: it removes the file."""
    with LocalLauncher(CAMERA, node_name="orphan") as launcher:
        launcher.start(WorkerArgs(port=0, parameters_topic="orphan", num_sending_topics=1))
        ready = launcher.wait_ready(15)
        path = Path(ready.endpoints["data"].removeprefix("ipc://"))
        assert path.is_socket()
        assert launcher._proc is not None and launcher._proc.stdin is not None
        launcher._proc.stdin.close()  # what the com's death does to it
        launcher._proc.wait(timeout=15)
        assert not path.exists()


def test_sockets_left_by_killed_workers_are_swept_and_live_young_or_busy_ones_kept() -> None:
    """Only old files with nothing listening go; a worker between its bind and its listen (a young
    file) stays, and a frozen worker's full queue neither blocks the sweep nor loses its file."""
    import socket
    import threading

    folder = private_dir("sockets")
    dead, young, live, busy = (folder / f"data-00000000000000{k}.sock" for k in ("aa", "ab", "ac", "ad"))
    old = time.time() - STALE_AFTER_S - 5
    for path in (dead, young, live, busy):
        path.unlink(missing_ok=True)  # what an interrupted run of this test left
    with (
        socket.socket(socket.AF_UNIX) as gone,
        socket.socket(socket.AF_UNIX) as binding,
        socket.socket(socket.AF_UNIX) as listening,
        socket.socket(socket.AF_UNIX) as frozen,
    ):
        gone.bind(str(dead))  # bound, never listening: refuses as a dead worker's file does
        binding.bind(str(young))
        listening.bind(str(live))
        listening.listen(1)
        frozen.bind(str(busy))
        frozen.listen(0)  # never accepts: its queue fills
        queued = [socket.socket(socket.AF_UNIX) for _ in range(2)]
        for q in queued:
            q.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                q.connect(str(busy))
        for path in (dead, live, busy):
            os.utime(path, (old, old))
        try:
            swept = threading.Thread(target=sweep_stale, daemon=True)
            swept.start()
            swept.join(10)
            assert not swept.is_alive(), "the sweep blocked on a full queue"
            assert not dead.exists() and young.exists() and live.exists() and busy.exists()
        finally:
            for q in queued:
                q.close()
            for path in (dead, young, live, busy):
                path.unlink(missing_ok=True)


def test_a_data_socket_removed_after_the_worker_bound_it_is_a_start_error() -> None:
    """The com would connect to a path nobody listens on and wait for data for ever: it says so."""
    with LocalLauncher(CAMERA, node_name="removed") as launcher:
        launcher.start(WorkerArgs(port=0, parameters_topic="removed", num_sending_topics=1))
        ready = launcher.wait_ready(15)
        Path(ready.endpoints["data"].removeprefix("ipc://")).unlink()
        with pytest.raises(WorkerStartError, match="is gone: something removed it from this account's private folder"):
            launcher.endpoint("data")


def test_a_ready_line_cannot_point_a_local_com_outside_the_private_folder() -> None:
    """Only Unix sockets named as a worker's, in this account's folder of them, are connected to."""
    import socket

    ports = dict.fromkeys(CHANNELS, 40000)
    inside = f"ipc://{private_dir('sockets')}/data-0123456789abcdef.sock"
    Path(inside.removeprefix("ipc://")).unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX) as bound:
        bound.bind(inside.removeprefix("ipc://"))  # the worker's socket, there
        try:
            for endpoint, expected in (
                (inside, inside),
                ("ipc:///tmp/data-0123456789abcdef.sock", "tcp://127.0.0.1:40000"),
                (f"ipc://{private_dir('sockets')}/data-fedcba9876543210.sock", "tcp://127.0.0.1:40000"),
                (f"ipc://{private_dir()}/relay-5555.sock", "tcp://127.0.0.1:40000"),
            ):
                line = ReadyLine(pid=1, ports=ports, version="0", python="3", endpoints={"data": endpoint}).to_line()
                ready = ReadyLine.find(line)
                assert ready is not None
                launcher = LocalLauncher(CAMERA, node_name="n")
                launcher._data_socket = inside  # the one this com named
                launcher.ready = ready
                assert launcher.endpoint("data") == expected
                assert launcher.endpoint("heartbeat") == "tcp://127.0.0.1:40000"
        finally:
            Path(inside.removeprefix("ipc://")).unlink(missing_ok=True)
    tcp = ReadyLine(pid=1, ports=ports, version="0", python="3", endpoints={"data": "tcp://10.0.0.1:1"}).to_line()
    found = ReadyLine.find(tcp)
    assert found is not None and found.endpoints == {}  # a ready line names Unix sockets only
    assert not is_private_endpoint("tcp://127.0.0.1:1")


def test_every_local_launch_asks_for_the_unix_socket_and_no_remote_one() -> None:
    args = WorkerArgs(port=0, parameters_topic="t", num_sending_topics=1)
    launcher = LocalLauncher(CAMERA, node_name="n")
    local = launcher.argv(args)
    assert local[:3] == [sys.executable, "-m", "heron_remote.examples.synthetic_camera"]
    named = WorkerArgs.parse(local[3:]).data_ipc
    assert f"ipc://{named}" == launcher._data_socket and usable_socket_path(named)
    assert not WorkerArgs.parse(args.to_argv()).data_ipc  # what a remote launch passes
    heron = WorkerArgs(port=41000, parameters_topic="t", num_sending_topics=1)  # the editor gives a port group
    assert WorkerArgs.parse(LocalLauncher(CAMERA, node_name="n").argv(heron)[3:]).data_ipc
