"""Several scripts on one rig share the forwarders; they outlive the script that started them.

Real processes (``heron_remote.bench.rig_script``: a Source streaming the synthetic camera),
real sockets, a real second account for what another user could do.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from heron_remote import ForwarderError, ForwarderPorts, Forwarders, Settings, Source
from heron_remote import forwarders_hello as hello
from heron_remote.bench.takeover import Rig, free_fixed_ports

from .helpers import CAMERA, PYTHON, first_line, forwarders_command, listening_address, wait_until

_FAST = {"heartbeat_rate": 0.2, "heartbeats_to_death": 5, "start_timeout": 15, "stop_grace": 2}


def _ports_free(ports: ForwarderPorts) -> bool:
    return all(listening_address(port) is None for port in dataclasses.astuple(ports))


@pytest.mark.parametrize("how", ["term", "kill"])
def test_a_survivor_streams_on_when_the_script_that_ran_the_forwarders_stops(how: str) -> None:
    with Rig() as rig:
        left = rig.start("left")[0]
        right = rig.start("right")[0]
        assert left.owner and not right.owner  # left started them; right uses them
        assert rig.wait_streaming([right], time.monotonic()) == []
        moment = rig.stop(left, how)
        assert rig.wait_streaming([right], moment) == [], right.err_text()
        longest = max(right.survivor_gaps(), default=0.0)
        print(f"longest gap right saw after left's {how}: {longest * 1000:.0f} ms")
        said = "stopped" if how == "term" else "ended without a goodbye (killed?)"
        err = right.err_text()
        assert f"WARNING heron_remote.forwarders_share: the forwarders of pid {left.pid} " in err
        assert f"{said}; taking over: they run in this process (pid {right.pid}) now" in err
        assert "NoDataError" not in err
        rig.stop(right, "term")
        assert right.proc.returncode == 0, right.err_text()
        wait_until(lambda: right.end is not None, 5, "right's END line")
    wait_until(lambda: _ports_free(rig.ports), 5, "the forwarder ports to be free")


def test_with_two_survivors_one_takes_over_and_the_other_follows() -> None:
    with Rig() as rig:
        left = rig.start("left")[0]
        mid, right = rig.start("mid", "right")
        assert [s.owner for s in (left, mid, right)] == [True, False, False]
        moment = rig.stop(left, "kill")
        assert rig.wait_streaming([mid, right], moment) == [], mid.err_text() + right.err_text()
        took = [s for s in (mid, right) if "taking over" in s.err_text()]
        assert len(took) == 1, mid.err_text() + right.err_text()
        follower = right if took[0] is mid else mid
        assert f"now using those of pid {took[0].pid} " in follower.err_text()
        # and the follower survives the taker's clean stop too
        moment = rig.stop(took[0], "term")
        assert rig.wait_streaming([follower], moment) == [], follower.err_text()
        assert f"the forwarders of pid {took[0].pid} " in follower.err_text()
        gaps = [g for s in (mid, right) for g in s.survivor_gaps()]
        print(f"longest gap a survivor saw: {max(gaps, default=0.0) * 1000:.0f} ms")


def test_a_source_takes_over_from_theforwarders_command(caplog: pytest.LogCaptureFixture) -> None:
    ports = free_fixed_ports()
    command = forwarders_command(ports)
    try:
        assert "forwarders on 127.0.0.1" in first_line(command)
        settings = Settings(ports=ports, **_FAST)
        with Source(CAMERA, parameters={"shape": [2, 2], "fps": 100}, settings=settings) as cam:
            lease = cam.forwarders
            assert lease is not None and lease.running_here is None and lease.owner_pid == command.pid
            assert len(list(cam.frames(timeout=5, limit=5))) == 5
            with caplog.at_level(logging.WARNING, logger="heron_remote.forwarders_share"):
                command.send_signal(signal.SIGTERM)
                assert command.wait(10) == 0
                assert len(list(cam.frames(timeout=5, limit=20))) == 20
            assert lease.running_here is not None and lease.owner_pid == os.getpid()
            assert f"the forwarders of pid {command.pid} " in caplog.text
            assert "stopped; taking over" in caplog.text
    finally:
        command.kill()
        command.communicate(timeout=5)
    assert _ports_free(ports)


def test_a_port_held_by_another_program_is_an_error_naming_it() -> None:
    ports = free_fixed_ports()
    listener = subprocess.Popen(
        [
            PYTHON,
            "-c",
            "import socket, time\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('127.0.0.1', {ports.data_publish})); s.listen(); print('LISTENING', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert first_line(listener).strip() == "LISTENING"
        source = Source(CAMERA, settings=Settings(ports=ports, **_FAST))
        with pytest.raises(ForwarderError) as caught:
            source.start()
        message = str(caught.value)
        assert f"port {ports.data_publish} on 127.0.0.1 is held by pid {listener.pid} (" in message
        assert "which does not answer as heron_remote forwarders" in message
        assert "Stop it, or give every script of this rig other forwarder ports" in message
        assert source.stats.worker_pid is None  # nothing was started
        others = [p for p in dataclasses.astuple(ports) if p != ports.data_publish]
        assert all(listening_address(p) is None for p in others)  # what was bound was let go
        # the forwarders command says the same
        command = forwarders_command(ports)
        _, err = command.communicate(timeout=30)
        assert command.returncode == 2 and f"is held by pid {listener.pid} (" in err, err
    finally:
        listener.kill()
        listener.wait(5)


def test_forwarders_already_running_are_named_by_theforwarders_command() -> None:
    ports = free_fixed_ports()
    with Forwarders(ports=ports):
        command = forwarders_command(ports)
        _, err = command.communicate(timeout=30)
    assert command.returncode == 2
    assert f"heron_remote forwarders of pid {os.getpid()} (" in err
    assert "scripts of this account share them: there is nothing to start" in err


def test_a_hello_from_a_process_that_does_not_hold_the_ports_is_refused() -> None:
    """Something of this account answering on the forwarders' socket is not believed on its word."""
    ports = free_fixed_ports()
    path = hello.socket_path(ports.data_submit)
    # As the forwarders do: a file left there is a dead owner's (a killed forwarders process of an
    # earlier run whose port number came round again; CI met one).
    path.unlink(missing_ok=True)
    fake = socket.socket(socket.AF_UNIX)
    fake.bind(str(path))
    fake.listen()
    said = {"service": hello.SERVICE, "protocol": hello.PROTOCOL, "pid": os.getpid(), "version": "0", "bind": "x"}
    said["ports"] = dataclasses.asdict(ports)

    def answer() -> None:
        conn, _ = fake.accept()
        conn.sendall(json.dumps(said).encode() + b"\n")
        conn.recv(10)  # until the other side hangs up
        conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        source = Source(CAMERA, settings=Settings(ports=ports, **_FAST))
        with pytest.raises(ForwarderError, match=r"says it runs the forwarders but does not listen on port\(s\)"):
            source.start()
    finally:
        thread.join(5)
        fake.close()
        path.unlink()
    assert _ports_free(ports)


def test_when_something_else_takes_the_ports_in_between_the_source_stops_with_that_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Rig() as rig:
        left = rig.start("left")[0]
        source = Source(CAMERA, parameters={"shape": [2, 2], "fps": 100}, settings=Settings(ports=rig.ports, **_FAST))
        with source:
            assert source.forwarders is not None and source.forwarders.owner_pid == left.pid
            assert len(list(source.frames(timeout=5, limit=5))) == 5
            intruder = socket.socket()
            try:
                # Holding the lock keeps the survivor waiting while the port changes hands.
                with hello.lock(rig.ports.data_submit, 10):
                    rig.stop(left, "kill")
                    wait_until(lambda: listening_address(rig.ports.data_submit) is None, 5, "the port to be free")
                    intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    intruder.bind(("127.0.0.1", rig.ports.data_submit))
                    intruder.listen()
                with pytest.raises(ForwarderError) as caught:
                    list(source.frames(timeout=10))
                message = str(caught.value)
                assert f"the forwarders of pid {left.pid} " in message and "none could replace them" in message
                assert f"port {rig.ports.data_submit} on 127.0.0.1 is held by pid {os.getpid()} (" in message
                # its com stops: its data must not go to whatever holds the port now
                wait_until(lambda: not source._thread.is_alive(), 10, "the source's com to stop")  # type: ignore[union-attr]
                assert "none could replace them" in caplog.text
            finally:
                intruder.close()


def test_forwarders_of_a_suspended_script_are_named_not_waited_for() -> None:
    with Rig() as rig:
        left = rig.start("left")[0]
        assert left.owner  # it runs the forwarders
        left.proc.send_signal(signal.SIGSTOP)  # Ctrl-Z
        try:
            wait_until(lambda: _state(left.pid) == "T", 5, "the script to be stopped")  # a signal takes a moment
            source = Source(CAMERA, settings=Settings(ports=rig.ports, **_FAST))
            try:
                with pytest.raises(ForwarderError) as caught:
                    source.start()
            finally:
                source.close()  # should it have started, its name must not outlive this test
            message = str(caught.value)
            assert f"the forwarders of pid {left.pid} (" in message and "did not say who they are within" in message
            assert "is that script suspended (Ctrl-Z)? Let it run again (fg), or end it" in message
        finally:
            left.proc.send_signal(signal.SIGCONT)
            rig.stop(left, "kill")


def _state(pid: int) -> str:
    """A process's state letter, as ps shows it (T: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


# -- another account ---------------------------------------------------------------------------


@pytest.fixture
def other_account() -> Iterator[pwd.struct_passwd]:
    """A second local account, removed again (with its processes and private folder) after the test."""
    if os.geteuid() != 0:
        pytest.skip("needs root to add an account (CI runs as root)")
    name = f"hrfw{os.getpid() % 100000}"
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True, capture_output=True)
    account = pwd.getpwnam(name)
    try:
        yield account
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(Path(tempfile.gettempdir()) / f"heron-remote-{account.pw_uid}", ignore_errors=True)


def _as(account: pwd.struct_passwd, code: str, **popen: object) -> subprocess.Popen[str]:
    """Python ``code`` run by ``account``. The interpreter and the modules load first (this machine keeps
    them under /root, which the account may not enter), then the process drops to the account."""
    prelude = (
        "import os, socket, sys, heron_remote.cli, heron_remote.forwarders_share\n"
        f"os.setgroups([]); os.setgid({account.pw_gid}); os.setuid({account.pw_uid})\n"
        "os.environ.pop('XDG_RUNTIME_DIR', None); os.environ['HOME'] = '/nonexistent'; os.chdir('/')\n"
    )
    return subprocess.Popen(  # type: ignore[call-overload]
        [PYTHON, "-c", prelude + code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def test_forwarders_of_another_account_on_the_ports_are_never_used(other_account: pwd.struct_passwd) -> None:
    ports = free_fixed_ports()
    argv = ["forwarders", "--data", str(ports.data_submit), str(ports.data_publish)]
    argv += ["--parameters", str(ports.parameters_submit), str(ports.parameters_publish)]
    argv += ["--proof-of-life", str(ports.proof_of_life_submit), str(ports.proof_of_life_publish)]
    theirs = _as(other_account, f"sys.exit(heron_remote.cli.main({argv!r}))")
    try:
        assert "forwarders on 127.0.0.1" in first_line(theirs)
        source = Source(CAMERA, settings=Settings(ports=ports, **_FAST))
        with pytest.raises(ForwarderError) as caught:
            source.start()
        message = str(caught.value)
        name, uid = other_account.pw_name, other_account.pw_uid
        assert f"port {ports.data_submit} on 127.0.0.1 is held by another account ({name}, uid {uid}; " in message
        assert f"pid {theirs.pid} (" in message
        assert "Forwarders of another account are never used: they would see this account's data" in message
        assert source.stats.worker_pid is None
    finally:
        theirs.send_signal(signal.SIGTERM)
        theirs.communicate(timeout=10)


def assert_unreachable_by(account: pwd.struct_passwd, path: Path) -> None:
    """``path``, a unix socket in this account's private folder, cannot be connected to by ``account``."""
    assert path.is_socket() and (path.parent.stat().st_mode & 0o777) == 0o700
    probe = _as(account, f"s = socket.socket(socket.AF_UNIX); s.connect({str(path)!r}); print('CONNECTED')")
    out, err = probe.communicate(timeout=30)
    assert probe.returncode != 0 and "CONNECTED" not in out
    assert "PermissionError" in err, err


def test_another_account_cannot_reach_the_forwarders_hello(other_account: pwd.struct_passwd) -> None:
    with Forwarders(ports=free_fixed_ports()) as fw:
        assert_unreachable_by(other_account, hello.socket_path(fw.ports.data_submit))


def test_a_private_folder_that_is_not_private_is_refused(
    other_account: pwd.struct_passwd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another account made the folder first (in a shared temp dir): it is not trusted."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"heron-remote-{os.getuid()}"
    planted.mkdir(mode=0o700)
    os.chown(planted, other_account.pw_uid, other_account.pw_gid)
    with pytest.raises(ForwarderError, match=rf"refusing to use {planted}: it belongs to another account \(uid "):
        Forwarders(ports=free_fixed_ports()).start()
