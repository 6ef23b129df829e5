"""Processes on this host: who is in a process group, and ending a group for good.

Linux reads ``/proc``; elsewhere only the group leader can be checked (``os.kill(pid, 0)``).
Zombies count as gone: they hold nothing, and their parent may never reap them.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

__all__ = ["cmdline", "end_group", "end_process", "group_members"]

_PROC = Path("/proc")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of ``pid``, or None when it does not exist."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    fields = raw.rsplit(b")", 1)[1].split()
    return fields[0].decode(), int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of group ``pgid``."""
    if os.name == "nt":
        return []  # no process groups; os.kill(pid, 0) would even send CTRL+C there
    if not _PROC.is_dir():
        try:
            os.kill(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in os.listdir(_PROC):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[1] == pgid and st[0] != "Z":
                members.append(int(entry))
    return members


def cmdline(pid: int) -> list[str] | None:
    """The argv of ``pid`` (None when unknown, a zombie, or not Linux)."""
    st = _stat(pid)
    if st is None or st[0] == "Z":
        return None
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1]


def _wait_empty(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def end_group(pgid: int, grace: float) -> bool:
    """TERM group ``pgid``, KILL what is left after ``grace`` s; True once nothing of it runs."""
    if pgid == os.getpgrp():
        raise ValueError("refusing to end this process's own group")
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        if _wait_empty(pgid, wait):
            return True
    return False


def end_process(pid: int, grace: float) -> bool:
    """The same for one process, where its group is not its own (it shares ours)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while cmdline(pid) is not None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        else:
            return True
    return False
