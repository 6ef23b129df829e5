"""The OpenSSH tunnel backend ("tunnel": "openssh"): streams, refuses what it must, leaves no ssh behind."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from heron_remote import ConfigError, Settings, Source
from heron_remote.errors import HostKeyError, TunnelError
from heron_remote.ssh import HostConnection, Registry, openssh
from heron_remote.ssh.openssh import OpenSSHMaster, OpenSSHTunnel, master_of
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import CAMERA, edit_registry, listening_address, pid_alive, wait_until

pytestmark = pytest.mark.multihost
Hosts = AcqHosts | ExternalHosts


def ssh_children(parent: int | None = None) -> set[int]:
    """Live ssh processes whose parent is this process (or ``parent``)."""
    parent = os.getpid() if parent is None else parent
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if comm == "ssh" and ppid == parent and pid_alive(int(entry)):
            found.add(int(entry))
    return found


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def remote(settings: Settings) -> dict:
    return {"settings": settings, "host": "acq1"}


@pytest.fixture
def openssh_registry(acq: Hosts, tmp_path: Path) -> str:
    return edit_registry(acq, tmp_path, "acq1", tunnel="openssh")


def test_a_source_streams_through_one_ssh_master_that_ends_with_it(
    remote_settings: Settings, openssh_registry: str
) -> None:
    before = ssh_children()
    settings = remote_settings.replace(ssh_info=openssh_registry)
    with Source(CAMERA, parameters={"shape": [64, 64], "fps": 200}, **remote(settings)) as cam:
        got = [f.index for f in cam.frames(timeout=10, limit=50)]
        assert got == list(range(got[0], got[0] + 50)) and cam.gaps == 0
        launcher = cam.launcher
        tunnels = list(launcher.tunnels)
        assert len(tunnels) == 4 and all(isinstance(t, OpenSSHTunnel) for t in tunnels)
        ports = [t.local_port for t in tunnels]
        assert all(listening_address(p) == "127.0.0.1" for p in ports)
        master = master_of(launcher.connection)
        assert master is not None and master.forwards == 4
        assert ssh_children() - before == {master.pid}  # one ssh for all four forwards
        argv = cmdline(master.pid)
        for option in ("StrictHostKeyChecking=yes", "BatchMode=yes", "ExitOnForwardFailure=yes"):
            assert option in argv
        assert HostConnection.open_connections() == 1
        pid = master.pid
    wait_until(lambda: not pid_alive(pid), 5, "the ssh master to end")
    assert ssh_children() == before
    assert all(listening_address(p) is None for p in ports)
    assert not master.control_path.parent.exists()
    assert HostConnection.open_connections() == 0


def test_an_unknown_tunnel_backend_is_refused_naming_the_server(
    acq: Hosts, tmp_path: Path, remote_settings: Settings
) -> None:
    reg = edit_registry(acq, tmp_path, "acq1", tunnel="plink")
    with pytest.raises(ConfigError, match=r"acq1.*\"tunnel\" 'plink'.*\"sshtunnel\" or \"openssh\""):
        Registry.load(reg)
    with (
        pytest.raises(ConfigError, match="plink"),
        Source(
            CAMERA,
            settings=remote_settings.replace(ssh_info=reg),
            host="acq1",
        ),
    ):
        pass


def test_a_password_only_server_is_refused_before_any_ssh_starts(acq: Hosts, tmp_path: Path) -> None:
    reg = edit_registry(acq, tmp_path, "acq1", tunnel="openssh", key_file="None", password="env:HR_NOT_USED")
    server = Registry.load(reg).get("acq1")
    before = ssh_children()
    with pytest.raises(ConfigError, match=r"acq1.*only a password.*needs a key"):
        OpenSSHMaster(server, "root")
    assert ssh_children() == before


def test_an_unknown_host_key_is_refused_naming_the_host(acq: Hosts, tmp_path: Path, remote_settings: Settings) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    reg = edit_registry(acq, tmp_path, "acq1", tunnel="openssh", known_hosts=str(empty))
    server = Registry.load(reg).get("acq1")
    before = ssh_children()
    # ssh itself refuses: the master checks the key, whatever the paramiko connection did.
    master = OpenSSHMaster(server, "root", timeout=5)
    with pytest.raises(TunnelError, match=r"(?s)acq1.*Host key verification failed"):
        master.open()
    # Through a Source, the paramiko connection, opened first, refuses it with the same policy.
    with (
        pytest.raises((HostKeyError, TunnelError), match="acq1"),
        Source(
            CAMERA,
            settings=remote_settings.replace(ssh_info=reg),
            host="acq1",
        ),
    ):
        pass
    assert ssh_children() == before
    assert empty.read_text() == ""  # nothing was pinned


def test_a_forward_is_checked_open_and_closing_twice_is_harmless(acq: Hosts, openssh_registry: str) -> None:
    before = ssh_children()
    server = Registry.load(openssh_registry).get("acq1")
    conn = HostConnection.acquire(server)
    try:
        # To the host's own sshd, which greets first: proof that bytes came through the forward.
        with conn.forward(server.port, server.host) as first, conn.forward(server.port, server.host) as second:
            assert isinstance(first, OpenSSHTunnel) and first.local_port != second.local_port
            master = master_of(conn)
            assert master is not None and master.forwards == 2
            with socket.create_connection(("127.0.0.1", first.local_port), timeout=5) as s:
                assert s.recv(64).startswith(b"SSH-2.0-")  # reached the remote port through ssh
            first.close()
            first.close()
            assert master.forwards == 1 and listening_address(first.local_port) is None
            assert pid_alive(master.pid)
        wait_until(lambda: not pid_alive(master.pid), 5, "the master to end with its last forward")
        assert master_of(conn) is None
    finally:
        conn.release()
    assert ssh_children() == before


def test_a_local_port_taken_before_ssh_binds_it_is_replaced_by_another(
    acq: Hosts, openssh_registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Registry.load(openssh_registry).get("acq1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = iter([taken.getsockname()[1]])
        real = openssh._free_port
        monkeypatch.setattr(openssh, "_free_port", lambda: next(ports, None) or real())
        conn = HostConnection.acquire(server)
        try:
            with conn.forward(server.port, server.host) as tunnel:
                assert tunnel.local_port != taken.getsockname()[1]
                with socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=5) as s:
                    assert s.recv(64).startswith(b"SSH-2.0-")
        finally:
            conn.release()


def test_a_killed_master_comes_back_with_the_same_ports(acq: Hosts, openssh_registry: str) -> None:
    server = Registry.load(openssh_registry).get("acq1")
    conn = HostConnection.acquire(server)
    try:
        tunnel = conn.forward(server.port, server.host)
        master = master_of(conn)
        assert master is not None
        old = master.pid
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: master.restarts == 1, 15, "the master to be started again")
        assert master.pid != old

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=2) as s:
                    return s.recv(64).startswith(b"SSH-2.0-")
            except OSError:
                return False

        wait_until(answers, 10, "the forward to answer again on its port")
        new = master.pid
    finally:
        conn.release()
    wait_until(lambda: not pid_alive(new), 5, "the restarted master to end")


def test_the_master_ends_when_its_process_is_killed(acq: Hosts, openssh_registry: str, tmp_path: Path) -> None:
    if not Path("/usr/bin/setpriv").exists() and not any(
        Path(d, "setpriv").exists() for d in os.environ.get("PATH", "").split(os.pathsep)
    ):
        pytest.skip("needs setpriv (util-linux) for the parent-death signal")
    script = tmp_path / "holder.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        from heron_remote.ssh import HostConnection, Registry
        from heron_remote.ssh.openssh import master_of
        conn = HostConnection.acquire(Registry.load({openssh_registry!r}).get("acq1"))
        tunnel = conn.forward(conn.server.port, conn.server.host)
        print(master_of(conn).pid, master_of(conn).control_path.parent, flush=True)
        time.sleep(60)
        """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert len(line) == 2 and line[0].isdigit(), line
        ssh_pid, control_dir = int(line[0]), Path(line[1])
        assert pid_alive(ssh_pid)
    finally:
        proc.kill()
        proc.wait(5)
    wait_until(lambda: not pid_alive(ssh_pid), 5, "the ssh master of a killed process to end")
    shutil.rmtree(control_dir)  # what only the killed process could have removed
