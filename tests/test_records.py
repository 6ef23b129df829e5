"""Start records on one host: a new worker ends only a worker whose com is gone, and only that process.

Real processes and real files; a forged record must never make the reaper signal anything else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from heron_remote import NodeHeldError, _procs, _records

from .helpers import pid_alive, wait_until

NODE = "Parameters##cam##0"
MY_COM = "rig:100:555"
OTHER_COM = "rig:200:777"


def _worker(token: str, *, own_group: bool = True, extra: str = "") -> subprocess.Popen:
    """A process that looks like a worker: the token in its argv, its own group unless told not to."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", f"{_records.TOKEN_OPTION}{token}{extra}"],
        start_new_session=own_group,
    )


def _record(folder: Path, proc_pid: int, token: str, *, com: str = OTHER_COM, window: float = 10.0, **changes):
    """Write the record a worker of ``proc_pid`` would have written (changes forge it)."""
    me = _procs.identify(proc_pid)
    assert me is not None
    record = _records.StartRecord(
        node=NODE, pid=proc_pid, started=me.started, uid=me.uid, token=token, com=com, window=window,
        since=time.time(),
    )  # fmt: skip
    record = dataclasses.replace(record, **changes)
    _records._path(folder, NODE).write_text(json.dumps(dataclasses.asdict(record)))
    live = _records._live_path(folder, NODE, token)
    live.write_bytes(b"")
    return live


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _records.run_dir(str(tmp_path / "run"))


@pytest.fixture
def started():
    procs: list[subprocess.Popen] = []

    def start(*args, **kw) -> subprocess.Popen:
        proc = _worker(*args, **kw)
        procs.append(proc)
        wait_until(lambda: _procs.cmdline(proc.pid), 5, "the worker to start")
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(5)


def test_a_worker_of_a_com_that_still_pulses_is_never_ended_and_the_launch_says_who_holds_it(folder, started) -> None:
    holder = started("aaaa1111")
    _record(folder, holder.pid, "aaaa1111")
    with pytest.raises(NodeHeldError) as caught:
        _records.claim(NODE, "bbbb2222", folder=folder, com=MY_COM)
    message = str(caught.value)
    assert f"worker pid {holder.pid}" in message and "com pid 200 on rig" in message
    assert "Nothing was ended" in message and "another name" in message
    assert pid_alive(holder.pid)
    assert _records.read(folder, NODE).token == "aaaa1111"  # the holder's record stays


@pytest.mark.parametrize(
    ("case", "how"),
    [
        ("its com gone", {"state": b"orphaned"}),
        ("its com's channel closed", {"state": b"closed"}),
        ("no pulse for its window", {"window": 0.2, "quiet": 1.0}),
        ("the same com restarting it", {"com": MY_COM}),
    ],
)
def test_a_worker_whose_com_is_gone_is_ended_and_the_claim_recorded(folder, started, case, how) -> None:
    holder = started("aaaa1111")
    live = _record(folder, holder.pid, "aaaa1111", com=how.get("com", OTHER_COM), window=how.get("window", 10.0))
    live.write_bytes(how.get("state", b""))
    if "quiet" in how:
        past = time.time() - how["quiet"]
        os.utime(live, (past, past))
    held, reaped = _records.claim(NODE, "bbbb2222", folder=folder, com=MY_COM, grace=1.0)
    assert [r.pid for r in reaped] == [holder.pid], case
    assert holder.wait(5) is not None
    mine = _records.read(folder, NODE)
    assert (mine.pid, mine.token, mine.com) == (os.getpid(), "bbbb2222", MY_COM)
    assert not live.exists()
    held.release()
    assert _records.read(folder, NODE) is None


@pytest.mark.parametrize(
    ("case", "forged"),
    [
        ("pid 1", {"pid": 1}),
        ("pid 0", {"pid": 0}),
        ("a negative pid", {"pid": -1}),
        ("an empty token", {"token": ""}),
        ("another start time (a reused pid)", {"started": "1"}),
        ("another account", {"uid": 4242}),
    ],
)
def test_a_forged_or_stale_record_makes_the_reaper_signal_nothing(folder, started, monkeypatch, case, forged) -> None:
    signalled: list[tuple] = []
    monkeypatch.setattr(_records, "end_group", lambda *a, **k: signalled.append(a) or True)
    bystander = started("aaaa1111")
    token = forged.pop("token", "aaaa1111")
    live = _record(folder, bystander.pid, token, **forged)
    live.write_bytes(b"orphaned")  # it even claims its com is gone
    _, reaped = _records.claim(NODE, "bbbb2222", folder=folder, com=MY_COM)
    assert reaped == [] and signalled == [], case
    assert pid_alive(bystander.pid)


def test_the_token_must_be_one_exact_argv_word(folder, started, monkeypatch) -> None:
    signalled: list[tuple] = []
    monkeypatch.setattr(_records, "end_group", lambda *a, **k: signalled.append(a) or True)
    bystander = started("aaaa1111", extra="ffff")  # --heron-remote-token=aaaa1111ffff
    _record(folder, bystander.pid, "aaaa1111").write_bytes(b"orphaned")
    _, reaped = _records.claim(NODE, "bbbb2222", folder=folder)
    assert reaped == [] and signalled == [] and pid_alive(bystander.pid)


def test_a_worker_that_shares_a_group_is_refused_not_its_group_killed(folder, started, monkeypatch) -> None:
    signalled: list[tuple] = []
    monkeypatch.setattr(_records, "end_group", lambda *a, **k: signalled.append(a) or True)
    member = started("aaaa1111", own_group=False)  # in this test process's group
    _record(folder, member.pid, "aaaa1111").write_bytes(b"orphaned")
    with pytest.raises(NodeHeldError, match="not the leader of its own process group"):
        _records.claim(NODE, "bbbb2222", folder=folder)
    assert signalled == [] and pid_alive(member.pid)


def test_a_record_that_is_not_a_record_is_ignored(folder) -> None:
    path = _records._path(folder, NODE)
    for junk in (b"{", b"[]", b'{"pid": "1"}', b"[" * 100000, os.urandom(256)):
        path.write_bytes(junk)
        held, reaped = _records.claim(NODE, "bbbb2222", folder=folder)
        assert reaped == []
        held.release()


def test_a_bad_token_is_refused() -> None:
    with pytest.raises(ValueError, match="hex"):
        _records.claim(NODE, "", folder=Path("/nonexistent"))


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
