"""The commands a remote launch sends, per shell. POSIX is run for real here; Windows is unit-tested only."""

from __future__ import annotations

import signal
import subprocess
import threading
from types import SimpleNamespace

import pytest

from heron_remote._protocol import ReadyLine
from heron_remote.ssh.launcher import RemoteLauncher
from heron_remote.ssh.registry import Server
from heron_remote.ssh.shells import PROBE, CmdShell, PosixShell, PowerShell, shell_from_probe


@pytest.mark.parametrize(
    ("printed", "shell"),
    [
        ('"Windows_NT|$env:OS|"', CmdShell),  # cmd.exe: %OS% expanded, the rest literal, quotes kept
        ("%OS%|Windows_NT|", PowerShell),
        ("%OS%|:OS|", PosixShell),
    ],
)
def test_the_probe_tells_the_shells_apart(printed: str, shell: type) -> None:
    assert isinstance(shell_from_probe(printed), shell)


def test_a_real_posix_shell_answers_the_probe_as_posix_and_runs_the_start_command() -> None:
    probe = subprocess.run(["sh", "-c", PROBE], capture_output=True, text=True, timeout=10).stdout
    assert isinstance(shell_from_probe(probe), PosixShell)
    out = subprocess.run(
        ["sh", "-c", PosixShell().start(["python3", "-c", "import os, sys; print(os.getpid(), sys.argv[1:])", "a b"])],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.splitlines()
    reported = int(out[0].removeprefix("HERON_REMOTE_PID "))
    assert out[1] == f"{reported} ['a b']"  # exec kept the pid the shell reported


def test_windows_commands_quote_their_words_and_end_the_tree() -> None:
    argv = ["python", "C:\\lab\\grab frames.py", 'say "hi"', "it's"]
    assert CmdShell().start(argv) == 'set PYTHONUNBUFFERED=1&& python "C:\\lab\\grab frames.py" "say \\"hi\\"" it\'s'
    assert PowerShell().start(argv) == (
        "$env:PYTHONUNBUFFERED = '1'; & 'python' 'C:\\lab\\grab frames.py' 'say \"hi\"' 'it''s'"
    )
    for shell in (CmdShell(), PowerShell()):
        assert shell.signal(4242, signal.SIGTERM) == "taskkill /PID 4242 /T"
        assert shell.signal(4242, signal.SIGKILL) == "taskkill /PID 4242 /T /F"
    assert CmdShell().alive(4242) == 'tasklist /FI "PID eq 4242" /NH | find "4242" >nul'
    assert "Get-Process -Id 4242" in PowerShell().alive(4242)


class _FakePC:
    """A Windows PC's side of a launch: records commands; the worker dies on the forced taskkill."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.dead = threading.Event()
        channel = SimpleNamespace(
            status_event=self.dead,
            exit_status=1,
            get_transport=lambda: SimpleNamespace(is_active=lambda: True),
            closed=False,
            eof_received=True,
        )
        self.promise = SimpleNamespace(runner=SimpleNamespace(channel=channel), join=lambda: None)

    def run(self, command: str, *, timeout: float) -> tuple[int, str, str]:
        self.commands.append(command)
        if command.startswith("taskkill") and command.endswith("/F"):
            self.dead.set()
            return 0, "SUCCESS", ""
        if command.startswith("taskkill"):
            return 1, "", "ERROR: The process with PID 4242 could only be terminated forcefully (/F)."
        return (1 if self.dead.is_set() else 0), "", ""  # the alive check

    def close_tunnel(self, tunnel: object) -> None:
        pass

    def release(self) -> None:
        pass


def test_stopping_a_windows_worker_asks_then_forces_taskkill_on_its_tree() -> None:
    server = Server(id="0", name="win-cam", host="198.18.200.2")
    launcher = RemoteLauncher("python grab.py", node="cam", server=server)
    pc = _FakePC()
    launcher.connection, launcher._shell, launcher._promise = pc, CmdShell(), pc.promise  # type: ignore[assignment]
    launcher._spawned = True
    launcher.output.ready = ReadyLine(pid=4242, ports={}, version="x", python="3.11")  # no PID line on Windows
    assert launcher.pid == 4242
    assert launcher.stop(grace=0.2) == 1
    kills = [c for c in pc.commands if c.startswith("taskkill")]
    assert kills == ["taskkill /PID 4242 /T", "taskkill /PID 4242 /T /F"]


def test_posix_signals_the_group_and_falls_back_to_the_pid() -> None:
    assert PosixShell().signal(4242, signal.SIGTERM) == "kill -TERM -- -4242 2>/dev/null || kill -TERM 4242 2>/dev/null"
    alone = subprocess.Popen(["sleep", "30"])  # shares our group: only the pid can reach it
    try:
        subprocess.run(["sh", "-c", PosixShell().signal(alone.pid, signal.SIGKILL)], check=True, timeout=10)
        assert alone.wait(5) == -signal.SIGKILL
    finally:
        alone.kill()
