"""The commands a remote launch sends, per shell. POSIX is run for real here; Windows is unit-tested only."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest

from heron_remote._protocol import CHANNELS, ReadyLine, WorkerArgs
from heron_remote.ssh.launcher import RemoteLauncher
from heron_remote.ssh.link import TextSink
from heron_remote.ssh.registry import Server
from heron_remote.ssh.shells import PROBE, CmdShell, PosixShell, PowerShell, shell_from_probe
from heron_remote.ssh.tunnel import Tunnel


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


class _FakeWorker:
    """A Windows worker's RemoteProcess: ends with status 1 on the forced taskkill."""

    session_lost = False

    def __init__(self, dead: threading.Event) -> None:
        self._dead = dead

    def poll(self) -> int | None:
        return 1 if self._dead.is_set() else None

    def settle(self, timeout: float) -> None:
        pass

    def join(self) -> None:
        pass

    def send(self, text: str) -> bool:
        return False  # its stdin is gone: the stop falls back to taskkill


class _FakePC:
    """A Windows PC's side of a launch (a HostLink): records commands; the worker dies on the forced taskkill."""

    def __init__(self) -> None:
        self.server = Server(id="0", name="win-cam", host="198.18.200.2")
        self.shell = CmdShell()
        self.commands: list[str] = []
        self.dead = threading.Event()

    def run(self, command: str, *, timeout: float = 30.0) -> tuple[int, str, str]:
        self.commands.append(command)
        if command.startswith("taskkill") and command.endswith("/F"):
            self.dead.set()
            return 0, "SUCCESS", ""
        if command.startswith("taskkill"):
            return 1, "", "ERROR: The process with PID 4242 could only be terminated forcefully (/F)."
        return (1 if self.dead.is_set() else 0), "", ""  # the alive check

    def start(self, command: str, *, out_stream: TextSink, err_stream: TextSink) -> _FakeWorker:
        return _FakeWorker(self.dead)

    def forward(self, remote_port: int, remote_host: str = "127.0.0.1") -> Tunnel:
        raise AssertionError("no forwards in this test")

    def release(self) -> None:
        pass


def test_stopping_a_windows_worker_asks_then_forces_taskkill_on_its_tree() -> None:
    pc = _FakePC()
    launcher = RemoteLauncher("python grab.py", node_name="cam", connection=pc)
    launcher.start(WorkerArgs(port=0, parameters_topic="Parameters##cam##0", num_sending_topics=1))
    # No PID line on Windows: the ready line, as the worker writes it, says the pid.
    ready = ReadyLine(pid=4242, ports=dict.fromkeys(CHANNELS, 1), version="x", python="3.11")
    launcher.output.feed("stdout", ready.to_line() + "\n")
    assert launcher.pid == 4242
    assert launcher.stop(grace=0.2) == 1
    kills = [c for c in pc.commands if c.startswith("taskkill")]
    assert kills == ["taskkill /PID 4242 /T", "taskkill /PID 4242 /T /F"]


def test_posix_signals_the_group_and_falls_back_to_the_pid() -> None:
    assert PosixShell().signal(4242, signal.SIGTERM) == "kill -TERM -4242 2>/dev/null || kill -TERM 4242 2>/dev/null"
    alone = subprocess.Popen(["sleep", "30"])  # shares our group: only the pid can reach it
    try:
        subprocess.run(["sh", "-c", PosixShell().signal(alone.pid, signal.SIGKILL)], check=True, timeout=10)
        assert alone.wait(5) == -signal.SIGKILL
    finally:
        alone.kill()


@pytest.mark.parametrize("login_shell", ["dash", "bash"])
def test_posix_commands_reach_a_whole_group_in_dash_and_in_bash(login_shell: str) -> None:
    """A PC's login shell may be dash (Debian's sh) or bash: both check and end the worker's group."""
    leader = subprocess.Popen(["sh", "-c", "sleep 30 & exec sleep 30"], start_new_session=True)
    shell = PosixShell()

    def run(command: str) -> int:
        return subprocess.run([login_shell, "-c", command], timeout=10).returncode

    try:
        assert run(shell.alive(leader.pid)) == 0
        assert run(shell.signal(leader.pid, signal.SIGTERM)) == 0
        assert leader.wait(5) == -signal.SIGTERM
        deadline = time.monotonic() + 5
        while run(shell.alive(leader.pid)) == 0:  # the helper it spawned ends too
            assert time.monotonic() < deadline, "the worker's helper outlived the group signal"
            time.sleep(0.05)
    finally:
        subprocess.run(["pkill", "-KILL", "-g", str(leader.pid)], timeout=10)
        leader.kill()
