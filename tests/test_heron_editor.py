"""Heron's editor drives a heron_remote node, step by step as the editor does it.

The node (``tests/heron_nodes``) is in the shape of Heron's source template, with only the
import rule applied. :class:`~heron_remote.heron.editor.HeronEditor` does what Heron's editor
does with a node: start the com with the editor's argv in a new session, wait for the proof
of life, publish the parameters pickled (then again every 0.5 s), and stop the node with
TERM, then KILL 0.5 s later.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zmq

from heron_remote import Settings, StatusBoard
from heron_remote.heron.editor import HeronEditor
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import (
    com_env,
    free_port_group,
    get_tree,
    listening_address,
    on_host,
    pid_alive,
    put_tree,
    remote_alive,
    wait_until,
)

HERON_TREE = Path(__file__).parent / "heron_nodes" / "Heron"
COUNTER = Path("Operations/Sources/Test/Counter")
NODE = "Counter##0"
TOPIC = "Count_Out##Counter##0->Data_In##Viewer##0"


def _heron_decode(frames: list[bytes]) -> tuple[int, np.ndarray, str]:
    """A published message read as Heron's receivers read it: str(dtype) into numpy."""
    _topic, index, _time, meta, payload = frames
    md = json.loads(meta)
    return int(index), np.frombuffer(payload, dtype=md["dtype"]).reshape(md["shape"]), md["dtype"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    copy = tmp_path / "Heron"
    shutil.copytree(HERON_TREE, copy)
    (copy / "communication").mkdir()
    return copy


@pytest.fixture
def editor(settings: Settings) -> Iterator[HeronEditor]:
    with HeronEditor(settings, NODE) as e:
        yield e


def _start(editor: HeronEditor, tree: Path, port: int, relic_dir: Path, env: dict, **ids: str) -> None:
    editor.start(
        tree / COUNTER / "counter_com.py",
        port,
        [TOPIC],
        worker_exec=str(tree / COUNTER / "counter_worker.py"),
        verbose=f"||{relic_dir}",
        env=env,
        log=relic_dir.parent / "com.log",
        **ids,
    )


@pytest.mark.multihost
@pytest.mark.parametrize("where", ["local", "acq1"])
def test_the_editor_starts_feeds_and_stops_a_ported_heron_node(
    where: str, tree: Path, editor: HeronEditor, settings: Settings, acq: AcqHosts | ExternalHosts, tmp_path: Path
) -> None:
    if where == "local":
        local_id, remote_id = "0", "None"  # how the editor starts a node on the rig
    else:
        # The Heron tree's own registry, in Heron's format: the com finds it there.
        registry = json.loads(Path(acq.registry).read_text())
        (tree / "communication" / "ssh_info.json").write_text(json.dumps(registry))
        local_id, remote_id = "1", next(k for k, v in registry.items() if v["Name"] == where)
    relic_dir = tmp_path / "state"
    relic_dir.mkdir()
    if where != "local":
        # The node's files where the editor says they are, on the PC too (README: "Where it runs").
        put_tree(acq, where, tree)
        put_tree(acq, where, relic_dir)
    port = free_port_group(offset=7)
    data = zmq.Context.instance().socket(zmq.SUB)  # a downstream node, subscribed before the source starts
    data.linger = 0
    data.subscribe(TOPIC.encode())
    data.connect(f"tcp://127.0.0.1:{settings.ports.data_publish}")
    board = StatusBoard(port=settings.ports.proof_of_life_publish)
    env = com_env(settings)
    env.pop("HERON_REMOTE_SSH_INFO", None)
    try:
        started = time.monotonic()
        cpu = "1" if where == "local" else "0"
        _start(editor, tree, port, relic_dir, env, local_id=local_id, remote_id=remote_id, cpu=cpu)
        editor.wait_for_proof_of_life(30)
        proof = time.monotonic() - started
        editor.send_parameters([False, 3, "x"])
        resent = time.monotonic()
        values: list[np.ndarray] = []
        while not values or values[-1][1] != 3 * values[-1][0]:
            assert data.poll(10_000), "no data from the node within 10 s"
            index, value, dtype = _heron_decode(data.recv_multipart())
            if not values:
                first = time.monotonic() - started
            values.append(value)
            if time.monotonic() - resent > 0.5:  # the editor sends them again every 0.5 s
                editor.send_parameters([False, 3, "x"])
                resent = time.monotonic()
        print(f"{where}: proof of life {proof:.2f} s, first data {first:.2f} s after the editor started the com")
        assert dtype == "int16"  # Heron's spelling: its image decoder reads it as it is meant
        assert index >= 1 and list(values[-1][1:]) == [3 * values[-1][0], 3]  # the worker has the parameters

        status = board.poll(3)["Counter"]
        assert status.state == "running" and status.host == (where if where != "local" else "this machine")
        worker = status.worker_pid
        alive = pid_alive if where == "local" else (lambda pid: remote_alive(acq, where, pid))
        assert worker is not None and alive(worker)
        pinned = f"grep Cpus_allowed_list /proc/{worker}/status"
        if where == "local":
            allowed = subprocess.run(["sh", "-c", pinned], capture_output=True, text=True, timeout=10).stdout
        else:
            allowed = on_host(acq, where, pinned)[1]
        assert allowed.split() == ["Cpus_allowed_list:", cpu]  # Heron's cpu_to_pin, applied to the worker

        stopped = time.monotonic()
        killed = editor.stop()
        print(f"{where}: com TERMed, KILLed {killed - stopped:.2f} s later; worker alive at the KILL: {alive(worker)}")
        wait_until(lambda: not alive(worker), 5, "the worker to end")
        assert all(listening_address(port + k) is None for k in range(4)) or where != "local"
    finally:
        board.close()
        data.close()
        print((tmp_path / "com.log").read_text(errors="replace")[-3000:])

    # The saved node state, where and as Heron writes it (by the worker: on the PC).
    if where != "local":
        get_tree(acq, where, relic_dir)
    folder = relic_dir / NODE
    parameters = pd.read_pickle(folder / "Parameters.df")
    assert list(parameters.columns) == ["DateTime", "WorkerIndex", "visualisation_on", "step", "label"]
    assert parameters.iloc[0][["visualisation_on", "step", "label"]].tolist() == [False, 3, "x"]
    substate = pd.read_pickle(folder / "Substate.df")
    assert list(substate.columns) == ["DateTime", "WorkerIndex", "count", "value"]
    assert len(substate) >= 1 and (substate["value"] == 3 * substate["count"]).all()
    assert str(substate["DateTime"].dtype).startswith("datetime64")


def test_a_pickle_that_would_run_code_is_refused_and_named(
    tree: Path, editor: HeronEditor, settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    relic_dir = tmp_path / "state"
    relic_dir.mkdir()
    board = StatusBoard(port=settings.ports.proof_of_life_publish)
    try:
        _start(editor, tree, free_port_group(offset=9), relic_dir, com_env(settings), local_id="0")
        editor.wait_for_proof_of_life(30)
        for _ in range(3):  # the editor sends parameters again and again
            editor.send_parameters([False, Exploit(), "x"])
        said = wait_until(lambda: (s := board.poll(0.5).get("Counter")) is not None and s.last_error, 10, "the refusal")
        assert "refused pickled parameters" in said and "posix.system" in said, said
        editor.send_parameters([False, 2, "x"])  # plain data still goes through
        wait_until(lambda: (s := board.poll(0.5).get("Counter")) and s.received > 0, 10, "data")
        assert not marker.exists()
        editor.stop()
    finally:
        board.close()
    log = (tmp_path / "com.log").read_text(errors="replace")
    assert log.count("refused pickled parameters") == 1, log  # once, however often the editor sends it
    assert not marker.exists()
