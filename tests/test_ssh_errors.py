"""Errors of sockets, paramiko and fabric become ours, in one place (heron_remote.ssh.translate), without sshd."""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from invoke.exceptions import CommandTimedOut
from invoke.runners import Result

from heron_remote import ConfigError
from heron_remote.errors import HostUnreachableError, SSHError
from heron_remote.ssh import Server
from heron_remote.ssh.auth import candidate_keys, load_key
from heron_remote.ssh.translate import command_errors, reaching
from heron_remote.ssh.transport import connect

LOG = logging.LoggerAdapter(logging.getLogger("heron_remote.test"), {"host": "pc"})


def _server(port: int) -> Server:
    return Server(id="0", name="pc", host="127.0.0.1", port=port, username="lab")


def test_a_refused_connection_asks_whether_sshd_runs_on_that_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
        port = s.getsockname()[1]
        with pytest.raises(
            HostUnreachableError, match=rf"pc .* refused the connection: is sshd running there, on port {port}\?"
        ) as caught:
            connect(_server(port), "lab", attempt_timeout=2, timeout=2, log=LOG)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


@pytest.fixture
def not_sshd() -> Iterator[int]:
    """A port where something that is not sshd answers, and hangs up."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        yield listener.getsockname()[1]
        thread.join(5)


def test_a_server_that_is_not_sshd_fails_the_handshake(not_sshd: int) -> None:
    with pytest.raises(HostUnreachableError, match=r"SSH handshake with pc .* failed: "):
        connect(_server(not_sshd), "lab", attempt_timeout=2, timeout=2, log=LOG)


def test_a_key_file_that_cannot_be_used_says_why(tmp_path: Path) -> None:
    server = _server(22)
    with pytest.raises(ConfigError, match=r"key_file .*missing does not exist"):
        load_key(tmp_path / "missing", server)
    (tmp_path / "garbage").write_text("not a key\n")
    with pytest.raises(ConfigError, match=r"server 'pc': cannot read key_file .*garbage"):
        load_key(tmp_path / "garbage", server)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(tmp_path / "locked")], check=True, timeout=30
    )
    with pytest.raises(ConfigError, match=r"locked is encrypted; load it into ssh-agent"):
        load_key(tmp_path / "locked", server)


def test_command_failures_become_ssh_errors_naming_the_server() -> None:
    server = _server(22)
    with (
        pytest.raises(SSHError, match=r"command on pc .* did not finish within 2 s: sleep 9"),
        command_errors(server, "sleep 9", 2),
    ):
        raise CommandTimedOut(Result(), 2)
    with (
        pytest.raises(SSHError, match=r"cannot run a command on pc .*: Socket is closed") as caught,
        command_errors(server, "true", 1.5),
    ):
        raise OSError("Socket is closed")
    assert isinstance(caught.value.__cause__, OSError)


def test_an_encrypted_default_key_is_skipped_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    (tmp_path / ".ssh").mkdir()
    for name, passphrase in (("id_ed25519", "secret"), ("id_ecdsa", "")):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", name.removeprefix("id_"), "-N", passphrase, "-f", str(tmp_path / ".ssh" / name)],
            check=True,
            timeout=30,
        )
    keys = candidate_keys(Server(id="0", name="pc", host="127.0.0.1"))
    assert [label for label, _ in keys] == [f"key {tmp_path / '.ssh' / 'id_ecdsa'}"]  # the agent has none here


@pytest.mark.parametrize("code", [errno.EHOSTUNREACH, errno.ENETUNREACH])
def test_an_address_where_nothing_answers_says_what_to_check(code: int) -> None:
    """What a silent LAN address gives after ~3 s (ARP unanswered); the namespace case is in test_bad_input."""
    with (
        pytest.raises(HostUnreachableError, match=r"cannot reach pc .*: .*: nothing answers at that address") as caught,
        reaching(_server(22), 3),
    ):
        raise OSError(code, os.strerror(code))
    assert 'is its "IP" in the registry right (ping it)?' in str(caught.value)
