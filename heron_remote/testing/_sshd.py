"""An sshd for a test host: its configuration, and waiting for it to listen."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

__all__ = ["SSHD", "sshd_config_text", "wait_port"]

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def sshd_config_text(
    *, address: str, port: int, host_key: Path, pid_file: Path, authorized_keys: Path, password: bool = False
) -> str:
    """A whole sshd_config: one host key, one authorized_keys file; passwords (and root's) only when asked."""
    return (
        f"ListenAddress {address}\nPort {port}\nHostKey {host_key}\n"
        f"PidFile {pid_file}\nAuthorizedKeysFile {authorized_keys}\n"
        f"PermitRootLogin {'yes' if password else 'prohibit-password'}\n"
        f"PasswordAuthentication {'yes' if password else 'no'}\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "MaxSessions 100\nMaxStartups 100\nLogLevel INFO\nSubsystem sftp internal-sftp\n"
        # The key logs in root only, as on a PC where only the lab account has it: any other user
        # (a test's wrong user name, a test's password user) is refused the key.
        "Match User *,!root\n    AuthorizedKeysFile none\n"
    )


def wait_port(host: str, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"sshd on {host}:{port} did not come up within {timeout} s") from None
            time.sleep(0.05)
