"""Heron's editor flow, timed: a ported Heron node started, fed and stopped as Heron's editor does it.

The node is the repository's ``tests/heron_nodes`` Counter (Heron's template shape, the import
rule applied), so this study runs from a checkout. Per run: seconds from the editor starting
the com to its proof of life and to the first data at a subscriber (parameters sent the
editor's way after the proof of life), and, on the editor's stop (TERM, KILL 0.5 s later),
seconds from the TERM until the worker had ended.
"""

from __future__ import annotations

import os
import select
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from .._threads import KeptThread
from ..forwarders import Forwarders
from ..heron.editor import HeronEditor
from ..settings import Settings
from ..ssh import HostConnection, Registry
from ..status import StatusBoard
from .links import Link
from .paths import FREE_PORTS

__all__ = ["editor_flow", "format_editor_flow"]

HERON_NODES = Path(__file__).resolve().parents[2] / "tests" / "heron_nodes" / "Heron"
_COUNTER = Path("Operations/Sources/Test/Counter")
_NODE = "Counter##0"
_TOPIC = "Count_Out##Counter##0->Data_In##Viewer##0"
_TIMEOUT_S = 30.0


def editor_flow(link: Link, *, runs: int = 5) -> dict[str, Any]:
    """Medians over ``runs`` editor flows on ``link`` (this machine, or its host)."""
    if not HERON_NODES.is_dir():
        return {"link": link.name, "error": f"needs the repository's Heron test nodes at {HERON_NODES}"}
    with tempfile.TemporaryDirectory(prefix="heron-editor-") as tmp, Forwarders(ports=FREE_PORTS) as forwarders:
        tree = Path(tmp) / "Heron"
        shutil.copytree(HERON_NODES, tree)
        (tree / "communication").mkdir()
        remote_id = "None"
        if link.host is not None and link.registry is not None:
            shutil.copy(link.registry, tree / "communication" / "ssh_info.json")
            remote_id = link.server_id
        settings = Settings(ports=forwarders.ports)
        samples = [_flow_once(tree, settings, link, remote_id, Path(tmp) / f"run{i}") for i in range(runs)]
    found: dict[str, Any] = {"link": link.name, "runs": runs, "samples": samples}
    for key in ("proof_of_life_s", "first_data_s", "worker_gone_s"):
        found[f"{key.removesuffix('_s')}_median_s"] = statistics.median(s[key] for s in samples)
    found["worker_gone_before_kill"] = sum(s["worker_gone_before_kill"] for s in samples)
    return found


def _flow_once(tree: Path, settings: Settings, link: Link, remote_id: str, run_dir: Path) -> dict[str, Any]:
    run_dir.mkdir()
    env = {k: v for k, v in settings.to_env().items() if k != "HERON_REMOTE_SSH_INFO"}
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    data = context.socket(zmq.SUB)
    data.linger = 0
    data.subscribe(_TOPIC.encode())
    data.connect(f"tcp://127.0.0.1:{settings.ports.data_publish}")
    board = StatusBoard(port=settings.ports.proof_of_life_publish)
    try:
        with HeronEditor(settings, _NODE) as editor:
            started = time.monotonic()
            editor.start(
                tree / _COUNTER / "counter_com.py",
                0,
                [_TOPIC],
                worker_exec=str(tree / _COUNTER / "counter_worker.py"),
                verbose=f"||{run_dir}",
                remote_id=remote_id,
                env={**os.environ, **env},
                log=run_dir / "com.log",
            )
            editor.wait_for_proof_of_life(_TIMEOUT_S)
            proof = time.monotonic() - started
            editor.send_parameters([False, 2, "bench"])
            if not data.poll(int(_TIMEOUT_S * 1000)):
                raise TimeoutError(f"no data within {_TIMEOUT_S:g} s; see {run_dir / 'com.log'}")
            first = time.monotonic() - started
            worker = board.poll(1.5)["Counter"].worker_pid
            assert worker is not None
            alive = _alive_check(link, worker)
            ended: list[float] = []
            watch = KeptThread(_watch, args=(alive, ended), name="bench-editor-watch")
            term = time.monotonic()
            watch.start()
            killed = editor.stop()
            watch.join(_TIMEOUT_S)
            watch.check()
            if not ended:
                raise TimeoutError(f"worker {worker} still runs {_TIMEOUT_S:g} s after the editor's stop")
    finally:
        board.close()
        data.close()
    return {
        "proof_of_life_s": proof,
        "first_data_s": first,
        "worker_gone_s": ended[0] - term,
        "worker_gone_before_kill": ended[0] <= killed,
    }


def _watch(alive: Callable[[], bool], ended: list[float]) -> None:
    """Note when the worker has ended (checked every 10 ms; remotely, each check is a command)."""
    deadline = time.monotonic() + _TIMEOUT_S
    while alive():
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)
    ended.append(time.monotonic())


def _alive_check(link: Link, pid: int) -> Callable[[], bool]:
    """Whether the worker runs. Where its host shares this machine's processes (here, or a network
    namespace), a pidfd says so the moment it ends: one blocking call, so that the editor's spin
    (which holds the interpreter lock) cannot delay the check. Elsewhere it is asked over SSH (each
    check a command, ~0.15 s)."""
    if link.host is None or link.host.netns or link.registry is None:
        return _pidfd_alive(pid)
    command = f"test -d /proc/{pid} && ! grep -q '^State:.*Z' /proc/{pid}/status"
    server = Registry.load(link.registry).get(link.server_id)

    def remote() -> bool:
        conn = HostConnection.acquire(server)
        try:
            return conn.run(command, timeout=10)[0] == 0
        finally:
            conn.release()

    return remote


def _pidfd_alive(pid: int) -> Callable[[], bool]:
    fd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(fd, select.POLLIN)

    def alive() -> bool:
        if poller.poll(_TIMEOUT_S * 1000):  # readable once the process has ended (a zombie too)
            os.close(fd)
            return False
        return True

    return alive


def format_editor_flow(sections: dict[str, dict[str, Any]]) -> str:
    """One row per link: medians of proof of life, first data and the worker's end after TERM."""
    header = f"{'editor flow':<14} {'runs':>4} {'proof s':>8} {'first data s':>13} {'worker gone s':>14} {'<KILL':>6}"
    lines = [header, "-" * len(header)]
    for name, s in sections.items():
        if "error" in s:
            lines.append(f"{name:<14} failed: {s['error'][:90]}")
            continue
        lines.append(
            f"{name:<14} {s['runs']:>4} {s['proof_of_life_median_s']:8.2f} {s['first_data_median_s']:13.2f} "
            f"{s['worker_gone_median_s']:14.2f} {s['worker_gone_before_kill']:>3}/{s['runs']}"
        )
    lines.append("(from the editor starting the com; worker gone: from the TERM, the KILL follows 0.5 s after it)")
    return "\n".join(lines)
