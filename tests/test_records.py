"""Start records on one host: a new worker of a node ends the one an earlier run left, and only that one."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from heron_remote import _procs, _records

from .helpers import pid_alive, wait_until


def _stale_worker(token: str) -> subprocess.Popen:
    """A process that looks like a worker of an earlier run: its own group, the token in its argv."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", f"{_records.TOKEN_OPTION}{token}"],
        start_new_session=True,
    )


def _record(folder: Path, node: str, proc: subprocess.Popen, token: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = _records.StartRecord(node, proc.pid, proc.pid, token, 0.0)
    _records._path(folder, node).write_text(json.dumps(dataclasses.asdict(record)))


def test_a_claim_ends_the_stale_worker_of_its_node_and_records_itself(tmp_path: Path) -> None:
    stale = _stale_worker("aaaa")
    try:
        wait_until(lambda: _procs.cmdline(stale.pid), 5, "the stale worker to start")
        _record(tmp_path, "Parameters##cam##0", stale, "aaaa")
        reaped = _records.claim("Parameters##cam##0", "bbbb", folder=tmp_path, grace=1.0)
        assert [r.pid for r in reaped] == [stale.pid]
        assert stale.wait(5) is not None and not pid_alive(stale.pid)
        mine = _records.read(tmp_path, "Parameters##cam##0")
        assert (mine.pid, mine.token) == (os.getpid(), "bbbb")
        _records.release("Parameters##cam##0", "bbbb", folder=tmp_path)
        assert _records.read(tmp_path, "Parameters##cam##0") is None
    finally:
        stale.kill()
        stale.wait(5)


def test_a_reused_pid_or_another_node_is_never_ended(tmp_path: Path) -> None:
    bystander = _stale_worker("cccc")  # same pid as the record, but not the record's token
    try:
        wait_until(lambda: _procs.cmdline(bystander.pid), 5, "the bystander to start")
        _record(tmp_path, "Parameters##cam##0", bystander, "dddd")
        assert _records.claim("Parameters##cam##0", "eeee", folder=tmp_path) == []
        _record(tmp_path, "Parameters##other##0", bystander, "cccc")
        assert _records.claim("Parameters##cam##0", "ffff", folder=tmp_path) == []
        assert pid_alive(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait(5)


def test_windows_reap_commands(monkeypatch) -> None:
    assert _procs.windows_end_tree_command(4242) == ["taskkill", "/PID", "4242", "/T", "/F"]
    assert _procs.windows_cmdline_command(4242)[-1] == (
        '(Get-CimInstance Win32_Process -Filter "ProcessId=4242").CommandLine'
    )
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        gone = any(c[0] == "taskkill" for c in calls)
        return SimpleNamespace(stdout="" if gone else "python worker.py --heron-remote-token=abc", returncode=0)

    assert _procs.windows_cmdline(4242, run) == "python worker.py --heron-remote-token=abc"
    monkeypatch.setattr(_procs.os, "name", "nt")
    assert _procs.end_group(4242, 1.0, run) is True
    assert calls[-2:] == [_procs.windows_end_tree_command(4242), _procs.windows_cmdline_command(4242)]


def test_without_proc_the_command_line_comes_from_ps(monkeypatch) -> None:
    """macOS and the BSDs have no /proc: ps tells a stale worker's argv."""
    sleeper = _stale_worker("gggg")
    try:
        wait_until(lambda: _procs.cmdline(sleeper.pid), 5, "the process to start")
        monkeypatch.setattr(_procs, "_PROC", Path("/nonexistent-proc"))
        argv = _procs.cmdline(sleeper.pid)
        assert argv is not None and f"{_records.TOKEN_OPTION}gggg" in argv
    finally:
        sleeper.kill()
        sleeper.wait(5)
    assert _procs.cmdline(sleeper.pid) is None
