"""The ``ssh`` command lines of the OpenSSH tunnel backend, and how a file name is written in them.

ssh reads an ``-o`` value as a list split at spaces (double quotes and backslashes as in its
config files), and expands ``%`` tokens and ``${VAR}`` in file names such as known_hosts, the
control path and key files: a lab's paths, with spaces in them, are written so that ssh reads
exactly that file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import ConfigError
from .registry import Server

__all__ = ["CIPHERS", "control_argv", "master_argv", "option_path", "path_argument"]

#: Fastest first where the CPU has AES-NI (``ssh -L`` measured ~1.5x chacha20-poly1305, OpenSSH's
#: first choice, here); the ``^`` (OpenSSH 8.1+) puts them ahead of its own list instead of replacing it.
CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"


def path_argument(path: str, what: str) -> str:
    """``path`` as a whole argument of its own (``-S``): its ``%`` kept from token expansion."""
    if "${" in path:
        raise ConfigError(
            f"{what} {path!r} holds '${{', which ssh expands as an environment variable with no way to "
            'escape it: rename the file, or use "tunnel": "sshtunnel"'
        )
    return path.replace("%", "%%")


def option_path(path: str, what: str) -> str:
    """``path`` as an ``-o Option=value`` value: one quoted word, so that a space does not split it."""
    escaped = path_argument(path, what).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def master_argv(
    ssh: str | None, server: Server, username: str, control_path: Path, timeout: float, link_timeout: float
) -> list[str]:
    """The command line of a control master to ``server``; ConfigError where this backend cannot work."""
    s = server
    if os.name == "nt":
        raise ConfigError(
            f'server {s.name!r}: the "openssh" tunnel needs ssh control masters, which Windows\' OpenSSH '
            'lacks; use "tunnel": "sshtunnel"'
        )
    if ssh is None:
        raise ConfigError(f'server {s.name!r}: the "openssh" tunnel needs the ssh program, which is not on PATH')
    if s.key_file is None and s.password is not None:
        raise ConfigError(
            f'server {s.name!r} has only a password, and the "openssh" tunnel needs a key (ssh takes '
            'passwords only from a prompt): give it a "key_file", or use "tunnel": "sshtunnel"'
        )
    known = s.known_hosts or str(Path("~/.ssh/known_hosts").expanduser())
    where = f"server {s.name!r}:"
    options = {
        "BatchMode": "yes",  # never a prompt: a password or passphrase question fails instead
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": option_path(known, f"{where} known_hosts"),
        "UpdateHostKeys": "no",  # known_hosts is written by our policy only (trust on first use)
        "ExitOnForwardFailure": "yes",
        # The PC gets no credential of the rig's, whatever a config or the environment says.
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "ServerAliveInterval": str(max(1, round(link_timeout / 3))),
        "ServerAliveCountMax": "3",
        "ConnectTimeout": str(max(1, round(timeout))),
        "ControlMaster": "yes",
        "ControlPath": option_path(str(control_path), f"{where} the control socket"),
        "ControlPersist": "no",
        "Ciphers": CIPHERS,
    }
    if s.known_hosts:  # as paramiko's check: the server's file alone when it names one
        options["GlobalKnownHostsFile"] = "/dev/null"
    argv = [ssh, "-F", "/dev/null", "-N", "-T", "-a", "-x"]
    for key, value in options.items():
        argv += ["-o", f"{key}={value}"]
    if s.key_file:
        # Not -i: ssh checks an -i file by its name before expanding tokens, so "%%" would not be found.
        key = option_path(s.key_file, f"{where} key_file")
        argv += ["-o", "IdentitiesOnly=yes", "-o", f"IdentityFile={key}"]
    argv += ["-p", str(s.port), "-l", username, "--", s.host]
    setpriv = shutil.which("setpriv")
    if setpriv and os.uname().sysname == "Linux":
        argv = [setpriv, "--pdeathsig", "TERM", *argv]  # ends with this process, however it dies
    return argv


def control_argv(ssh: str | None, control_path: Path) -> list[str]:
    """The start of an ``ssh -O`` command line to the master at ``control_path``."""
    control = path_argument(str(control_path), "the control socket")
    return [ssh or "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-S", control]
