"""The commands that start, signal and check a worker, in the remote PC's shell.

An acquisition PC's SSH server runs commands in a POSIX shell (Linux, macOS, a
Raspberry Pi) or, with Windows' OpenSSH server, in cmd.exe or PowerShell. One probe
tells them apart; each :class:`Shell` then builds the same three commands. On POSIX a
worker leads its own process group (sshd makes the session; ``exec`` keeps its pid);
on Windows ``taskkill /T`` ends the worker's process tree instead.

Each shell writes an argv as one command line by its own quoting rules (:meth:`Shell.command`,
Windows' in :mod:`.winquote`): the start command and ``heron-remote check`` both use it, so a
word reaches the program as that word and never runs as shell code.

Windows support is built from Microsoft's documentation and unit-tested; it has not
been run against a real Windows PC.
"""

from __future__ import annotations

import shlex
import signal
from abc import ABC, abstractmethod

from .._protocol import PID_PREFIX
from .winquote import cmd_line, powershell_line

__all__ = ["PROBE", "CmdShell", "PosixShell", "PowerShell", "Shell", "shell_from_probe"]

#: cmd expands %OS% (and !OS! where delayed expansion is on), PowerShell $env:OS, a POSIX shell none.
PROBE = 'echo "%OS%|$env:OS|!OS!|"'


class Shell(ABC):
    name: str
    #: Whether the start command reports the worker's pid before it runs (else the ready line does).
    reports_pid: bool = False

    @abstractmethod
    def command(self, argv: list[str]) -> str:
        """argv as a command line of this shell: the program ``argv[0]`` gets exactly ``argv[1:]``."""

    @abstractmethod
    def start(self, argv: list[str]) -> str:
        """Run argv unbuffered, as the session's process (or process tree) that stop() can end."""

    @abstractmethod
    def signal(self, pid: int, sig: signal.Signals) -> str:
        """Send sig to the worker's group (or tree); exit status 0 when something received it."""

    @abstractmethod
    def alive(self, pid: int) -> str:
        """Exit status 0 while anything of the worker's group (or tree) runs."""


class PosixShell(Shell):
    name = "posix"
    reports_pid = True

    def command(self, argv: list[str]) -> str:
        return shlex.join(argv)

    def start(self, argv: list[str]) -> str:
        return f"echo {PID_PREFIX}$$; exec env PYTHONUNBUFFERED=1 {self.command(argv)}"

    def signal(self, pid: int, sig: signal.Signals) -> str:
        name = sig.name.removeprefix("SIG")
        # The group first; the pid alone where the worker does not lead one (a wrapper's exec).
        # No "--": dash, Debian's sh, takes it for a pid and signals nothing.
        return f"kill -{name} -{pid} 2>/dev/null || kill -{name} {pid} 2>/dev/null"

    def alive(self, pid: int) -> str:
        # Zombies do not count: the PC's init may be slow to reap what the worker left. The
        # group first; the pid alone where the worker leads none (as signal() falls back).
        return (
            f"if command -v ps >/dev/null; then ps -e -o pid=,pgid=,stat= | awk '($1 == {pid} || $2 == {pid}) "
            f"&& $3 !~ /^Z/ {{n++}} END {{exit n ? 0 : 1}}'; else kill -0 -{pid} 2>/dev/null || "
            f"kill -0 {pid} 2>/dev/null; fi"
        )


class _WindowsShell(Shell):
    def signal(self, pid: int, sig: signal.Signals) -> str:
        # A console program has no window to close: a polite taskkill fails for it, so TERM
        # asks and KILL forces, each for the whole tree the worker started.
        force = " /F" if sig == signal.SIGKILL else ""
        return f"taskkill /PID {pid} /T{force}"


class CmdShell(_WindowsShell):
    name = "cmd"

    def __init__(self, *, delayed_expansion: bool = False) -> None:
        #: Whether this cmd expands !names! (a registry setting of the PC).
        self.delayed_expansion = delayed_expansion

    def command(self, argv: list[str]) -> str:
        return cmd_line(argv, delayed_expansion=self.delayed_expansion)

    def start(self, argv: list[str]) -> str:
        return f"set PYTHONUNBUFFERED=1&& {self.command(argv)}"

    def alive(self, pid: int) -> str:
        # tasklist prints an INFO line, not the pid, when nothing matches: find then fails.
        return f'tasklist /FI "PID eq {pid}" /NH | find "{pid}" >nul'


class PowerShell(_WindowsShell):
    name = "powershell"

    def command(self, argv: list[str]) -> str:
        return powershell_line(argv)

    def start(self, argv: list[str]) -> str:
        return "$env:PYTHONUNBUFFERED = '1'; " + self.command(argv)

    def alive(self, pid: int) -> str:
        return f"if (Get-Process -Id {pid} -ErrorAction SilentlyContinue) {{ exit 0 }} else {{ exit 1 }}"


def shell_from_probe(output: str) -> Shell:
    """The shell that printed ``output`` in answer to :data:`PROBE`."""
    text = output.strip().strip('"')
    if text.startswith("Windows_NT|"):
        return CmdShell(delayed_expansion=text.split("|")[2:3] == ["Windows_NT"])
    if text.startswith("%OS%|Windows_NT"):
        return PowerShell()
    return PosixShell()
