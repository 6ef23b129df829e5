"""Processes on this host: who is in a process group, and ending a group for good.

Linux reads ``/proc``; other POSIX systems can only check the group leader
(``os.kill(pid, 0)``). Zombies count as gone: they hold nothing, and their parent may
never reap them. Windows has no process groups: a worker's command line is read with
PowerShell and its process tree ended with ``taskkill /T /F`` (built and unit-tested
here, not run on a real Windows PC).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "Identity",
    "cmdline",
    "end_group",
    "end_process",
    "exit_status",
    "group_members",
    "identify",
    "stop_child",
    "write_stdin",
]

_PROC = Path("/proc")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of ``pid``, or None when it does not exist."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    fields = raw.rsplit(b")", 1)[1].split()
    return fields[0].decode(), int(fields[2])


class Identity(NamedTuple):
    """What tells one process from any other that ever had its pid: who runs it, since when, in which group."""

    pid: int
    pgid: int
    uid: int
    #: Start time in clock ticks after boot (Linux), or ps's start stamp elsewhere.
    started: str
    argv: tuple[str, ...]


def identify(pid: int) -> Identity | None:
    """The identity of live process ``pid`` (None when it does not run, is a zombie or cannot be read)."""
    if os.name == "nt" or pid <= 0:
        return None
    try:
        pgid = os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None
    if _PROC.is_dir():
        try:
            raw = (_PROC / str(pid) / "stat").read_bytes()
            uid = (_PROC / str(pid)).stat().st_uid
        except OSError:
            return None
        fields = raw.rsplit(b")", 1)[1].split()
        if fields[0] == b"Z":
            return None
        started = fields[19].decode()  # field 22 of stat: starttime, counted from the state (field 3)
    else:
        try:
            out = subprocess.run(
                ["ps", "-o", "uid=,lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        uid_text, _, started = out.stdout.strip().partition(" ")
        if not uid_text.isdigit():
            return None
        uid, started = int(uid_text), started.strip()
    argv = cmdline(pid)
    if argv is None:
        return None
    return Identity(pid, pgid, uid, started, tuple(argv))


def exit_status(proc: subprocess.Popen) -> int | None:
    """``proc.poll()``, also right when this thread is already inside ``Popen.poll`` or ``wait``.

    A signal handler (a com's SIGTERM) can interrupt this thread while it polls the worker: the
    interrupted call holds Popen's wait lock, so a poll from the handler reports a worker that has
    ended as running, for good. ``waitid`` with WNOWAIT reads the status without reaping it.
    """
    code = proc.poll()
    waitid = getattr(os, "waitid", None)  # not on Windows or macOS
    if code is not None or waitid is None:
        return code
    try:
        info = waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return proc.poll()  # reaped meanwhile, by the interrupted call
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


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


Runner = Callable[..., subprocess.CompletedProcess]


def windows_cmdline_command(pid: int) -> list[str]:
    return [
        "powershell",
        "-NoProfile",
        "-Command",
        f'(Get-CimInstance Win32_Process -Filter "ProcessId={int(pid)}").CommandLine',
    ]


def windows_end_tree_command(pid: int) -> list[str]:
    return ["taskkill", "/PID", str(int(pid)), "/T", "/F"]


def windows_cmdline(pid: int, run: Runner = subprocess.run) -> str | None:
    """The command line of ``pid`` on Windows, as one string (None when it does not run)."""
    try:
        out = run(windows_cmdline_command(pid), capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = out.stdout.strip()
    return line or None


def cmdline(pid: int) -> list[str] | None:
    """The argv of ``pid`` (None when unknown or a zombie). On Windows, one string, split on spaces."""
    if os.name == "nt":
        line = windows_cmdline(pid)
        return None if line is None else line.split()
    if not _PROC.is_dir():  # macOS, BSD: ask ps
        try:
            out = subprocess.run(
                ["ps", "-ww", "-o", "stat=,args=", "-p", str(pid)], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        stat, _, args = out.stdout.strip().partition(" ")
        return None if not stat or stat.startswith("Z") else args.split()
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


def end_group(pgid: int, grace: float, run: Runner = subprocess.run) -> bool:
    """TERM group ``pgid``, KILL what is left after ``grace`` s; True once nothing of it runs.

    On Windows ``pgid`` is the worker's pid and its process tree is ended at once.
    """
    if os.name == "nt":
        try:
            run(windows_end_tree_command(pgid), capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return windows_cmdline(pgid, run) is None
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


def write_stdin(proc: subprocess.Popen[str] | None, text: str) -> bool:
    """Write ``text`` to a child's stdin pipe; False when there is none or it is closed (the child is gone)."""
    stdin = proc.stdin if proc is not None else None
    if stdin is None:
        return False
    try:
        stdin.write(text)
        stdin.flush()
    except (OSError, ValueError):
        return False
    return True


def stop_child(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """TERM a child process, KILL it after ``grace`` s, and reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


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
