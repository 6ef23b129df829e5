"""The commands a remote launch sends, per shell. POSIX is run for real here; Windows is unit-tested only."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heron_remote import ConfigError
from heron_remote._protocol import CHANNELS, ReadyLine, WorkerArgs
from heron_remote.ssh.launcher import RemoteLauncher
from heron_remote.ssh.link import TextSink
from heron_remote.ssh.registry import Server
from heron_remote.ssh.shells import PROBE, CmdShell, PosixShell, PowerShell, shell_from_probe
from heron_remote.ssh.tunnel import Tunnel

from .windows_shells import PS_QUOTES, BrokenCommand, msvcrt_argv, powershell_words, through_cmd


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
    assert CmdShell().start(argv) == (
        'set PYTHONUNBUFFERED=1&& python ^"C:\\lab\\grab frames.py^" ^"say \\^"hi\\^"^" it\'s'
    )
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


# -- Windows quoting, against models of cmd.exe, the C runtime and PowerShell (tests/windows_shells.py) ----

#: A Windows PC's environment as cmd expands it, with names that the arguments below contain.
WINDOWS_ENV = {"PATH": "C:\\Windows", "OS": "Windows_NT", "R": "1", "D": "2", "a": "A", "b": "B", "0": "zero"}
NASTY = [
    "Parameters##R&D##0",
    "%PATH%",
    "100%",
    "%R%%D%",
    "a^b",
    "x|y",
    "<in> out",
    'say "hi"',
    "wow!",
    "",
    "trailing\\",
    "C:\\dir with space\\",
    '\\\\"',
    "(a) & (b)",
    "^%OS^%",
]
WORD = st.text(alphabet=st.sampled_from([*"ab0RD %!^&|<>()\"\\'\t=#$`;", *PS_QUOTES, "é"]), max_size=12)


def test_the_c_runtime_model_reads_back_what_pythons_list2cmdline_writes() -> None:
    assert msvcrt_argv(subprocess.list2cmdline(NASTY)) == NASTY


@given(st.lists(WORD, max_size=5))
def test_the_c_runtime_model_agrees_with_list2cmdline_on_any_words(words: list[str]) -> None:
    assert msvcrt_argv(subprocess.list2cmdline(words)) == words


def test_cmd_would_split_a_plainly_quoted_topic_and_expand_percents() -> None:
    """What the model catches: the C runtime's quoting alone is not enough for cmd."""
    with pytest.raises(BrokenCommand, match="'&'"):
        through_cmd("python " + subprocess.list2cmdline(["Parameters##R&D##0"]), WINDOWS_ENV)
    assert through_cmd("python " + subprocess.list2cmdline(["%PATH%"]), WINDOWS_ENV) == ["python", "C:\\Windows"]


@pytest.mark.parametrize("word", NASTY)
def test_cmd_passes_each_special_character_to_python_as_it_is(word: str) -> None:
    argv = ["C:\\Program Files\\R&D (x86)\\python.exe", "-u", word, "Parameters##R&D##0"]
    line = CmdShell().command(argv)
    assert through_cmd(line, WINDOWS_ENV) == argv
    start = CmdShell().start(argv)
    assert start == "set PYTHONUNBUFFERED=1&& " + line


@given(st.lists(WORD, max_size=5))
def test_cmd_passes_any_words_exactly(words: list[str]) -> None:
    argv = ["python", *words]
    assert through_cmd(CmdShell().command(argv), WINDOWS_ENV) == argv


def test_cmd_refuses_what_no_quoting_can_pass() -> None:
    with pytest.raises(ConfigError, match=r"program 'C:\\\\100%\\\\python.exe'.*'%'"):
        CmdShell().command(["C:\\100%\\python.exe", "x"])
    with pytest.raises(ConfigError, match="line break"):
        CmdShell().command(["python", "a\r\nb"])
    with pytest.raises(ConfigError, match="line break"):
        PowerShell().command(["python", "a\nb"])


def test_the_probe_tells_whether_cmd_expands_exclamation_marks_and_such_words_are_refused_there() -> None:
    plain = shell_from_probe('"Windows_NT|$env:OS|!OS!|"')
    delayed = shell_from_probe('"Windows_NT|$env:OS|Windows_NT|"')
    assert isinstance(plain, CmdShell) and isinstance(delayed, CmdShell)
    assert (plain.delayed_expansion, delayed.delayed_expansion) == (False, True)
    assert through_cmd(plain.command(["python", "wow!"]), WINDOWS_ENV) == ["python", "wow!"]
    assert through_cmd(delayed.command(["python", "Parameters##R&D##0"]), WINDOWS_ENV)[1] == "Parameters##R&D##0"
    with pytest.raises(ConfigError, match=r"expands !names!.*'wow!'"):
        delayed.command(["python", "wow!"])


def test_powershell_would_end_a_string_at_a_typographic_quote_if_only_ascii_ones_were_doubled() -> None:
    """What the model catches: the old quoting let a word close its string and run code."""
    word = "it\u2019s; Remove-Item C:\\data -Recurse; \u2018"
    # The string ends at U+2019: "s" joins it, and "; Remove-Item ..." would run as a statement.
    with pytest.raises(AssertionError, match="ends inside a word, at 15"):
        powershell_words("& 'python' '" + word.replace("'", "''") + "'")
    assert powershell_words(PowerShell().command(["python", word])) == ["python", word]


@pytest.mark.parametrize("word", ["it's", "it\u2019s", "\u2018q\u2019", "\u201ab\u201b", "''", "$env:PATH `n", ""])
def test_powershell_passes_every_quote_character_literally(word: str) -> None:
    argv = ["C:\\Python 3\\python.exe", word]
    assert powershell_words(PowerShell().command(argv)) == argv
    assert PowerShell().start(argv) == "$env:PYTHONUNBUFFERED = '1'; " + PowerShell().command(argv)


@given(st.lists(WORD, max_size=5))
def test_powershell_passes_any_words_exactly(words: list[str]) -> None:
    argv = ["python", *words]
    assert powershell_words(PowerShell().command(argv)) == argv
