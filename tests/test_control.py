"""The compose hosts' control service, run here in a network namespace of its own, as root.

In compose it runs on each acquisition PC and the multi-host tests use it there (``.ci/run``); here
each request is checked against what it should do to the host, and another local account is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from heron_remote.testing import ControlClient, namespaces_possible

from .helpers import listening_address, wait_until

pytestmark = pytest.mark.skipif(not namespaces_possible(), reason="needs root and network namespaces (CI has both)")


class Service:
    def __init__(self, netns: str, pid: int, client: ControlClient, workdir: Path) -> None:
        self.netns, self.client, self.workdir = netns, client, workdir
        self._net = f"/proc/{pid}/net"  # the namespace's tables, through a process in it

    def in_ns(self, code: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", code], capture_output=True, text=True, timeout=30
        )

    def listens(self, port: int) -> bool:
        # Read the host's listening sockets rather than connect: a probe's connection would make
        # sshd fork a process for it, one that may appear only after the probe has gone.
        return listening_address(port, self._net) is not None

    def one_sshd(self) -> None:
        """Wait until the listener has been the only sshd for three looks in a row: a session's process
        may linger a moment after it ends, and the one of a readiness probe's connection may appear
        just after a look that saw none."""
        looks: list[bool] = []

        def settled() -> bool:
            looks.append(len(self.sshd_pids()) == 1)
            return looks[-3:] == [True, True, True]

        wait_until(settled, 10, "one sshd, the listener", interval=0.1)

    def sshd_pids(self) -> list[int]:
        """The host's sshd processes (the listener retitles itself "sshd: /usr/sbin/sshd ... [listener] ...")."""
        return [pid for pid, line in self.client.processes().items() if line.startswith((b"sshd", b"/usr/sbin/sshd"))]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    netns = f"hrctl{os.getpid() % 100000}"
    # A folder others may enter, so that the socket's own mode is what keeps them out.
    folder = Path(tempfile.mkdtemp(prefix="hr-control-"))
    folder.chmod(0o755)
    sock = folder / "acq.sock"
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    (tmp_path / "authorized_keys").write_text((tmp_path / "user_key.pub").read_text())
    proc = None
    try:
        for cmd in (
            ["ip", "netns", "add", netns],
            ["ip", "-n", netns, "link", "set", "lo", "up"],
            # A link of the host's own, both ends inside: nothing of it reaches this machine's network.
            ["ip", "-n", netns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1"],
            ["ip", "-n", netns, "link", "set", "lan0", "up"],
        ):
            subprocess.run(cmd, check=True, capture_output=True, timeout=30)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "heron_remote.testing", str(sock),
             "--host-key", str(tmp_path / "host_key"), "--authorized-keys", str(tmp_path / "authorized_keys"),
             "--workdir", str(tmp_path / "work")],
        )  # fmt: skip
        service = Service(netns, proc.pid, ControlClient(sock, timeout=20), tmp_path / "work")
        wait_until(lambda: service.listens(22), 20, "the service's sshd", interval=0.2)
        service.one_sshd()
        yield service
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        for pid in subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split():
            os.kill(int(pid), 9)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30)
        shutil.rmtree(folder)


def test_sshd_is_killed_with_its_sessions_and_started_again_with_passwords_when_asked(service: Service) -> None:
    assert len(service.sshd_pids()) == 1
    session = subprocess.Popen(  # a connection of a client, not yet logged in: sshd forks a process for it
        ["ip", "netns", "exec", service.netns, sys.executable, "-c",
         "import socket,time\ns=socket.create_connection(('127.0.0.1',22))\ns.recv(100)\nprint('in',flush=True)\n"
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert session.stdout is not None and session.stdout.readline() == "in\n"
        assert len(service.sshd_pids()) == 2
        assert service.client.call("kill_sshd") == 2  # the listener and the session's process
    finally:
        session.kill()
        session.wait(5)
    assert not service.listens(22) and service.sshd_pids() == []
    service.client.call("start_sshd", password=True)
    assert service.listens(22)
    service.one_sshd()
    config = (service.workdir / "sshd_config").read_text()
    assert "PasswordAuthentication yes" in config and "PermitRootLogin yes" in config
    service.client.call("start_sshd")
    assert "PasswordAuthentication no" in (service.workdir / "sshd_config").read_text()
    assert service.listens(22)
    service.one_sshd()  # the password one was stopped
    service.client.call("stop_sshd")
    assert not service.listens(22)


def test_a_link_goes_down_and_up_and_loopback_stays(service: Service) -> None:
    def flags(iface: str) -> str:
        out = subprocess.run(["ip", "-n", service.netns, "-o", "link", "show", iface], capture_output=True, text=True)
        return out.stdout.split("<", 1)[1].split(">", 1)[0]

    service.client.call("link", up=False)
    assert "UP" not in flags("lan0").split(",") and "UP" in flags("lo").split(",")
    assert service.listens(22)  # loopback still answers: only the cable is pulled
    service.client.call("link", up=True)
    assert "UP" in flags("lan0").split(",")


def test_a_port_is_held_while_the_client_holds_it(service: Service) -> None:
    bind = "import socket\ns=socket.socket()\ns.bind(('127.0.0.1',29811))"
    with service.client.hold(29811):
        assert service.listens(29811)
        assert "Address already in use" in service.in_ns(bind).stderr
    wait_until(lambda: service.in_ns(bind).returncode == 0, 5, "the port to be free again")


def test_a_user_gets_the_password_from_the_request_only(service: Service) -> None:
    user, password = f"hrct{os.getpid() % 10000}", f"pw-{os.urandom(8).hex()}"
    service.client.call("add_user", name=user, password=password)
    try:
        entry = next(line for line in Path("/etc/shadow").read_text().splitlines() if line.startswith(f"{user}:"))
        assert entry.split(":")[1].startswith("$")  # a hash is set, not the password
        assert all(password.encode() not in line for line in service.client.processes().values())
    finally:
        service.client.call("remove_user", name=user)
    assert f"\n{user}:" not in "\n" + Path("/etc/passwd").read_text()


def test_bad_requests_get_a_reason(service: Service) -> None:
    with pytest.raises(RuntimeError, match=r"refused reboot: unknown op 'reboot'"):
        service.client.call("reboot")
    with pytest.raises(RuntimeError, match=r"refused remove_user: .*userdel"):
        service.client.call("remove_user", name="hr-no-such-user")
    gone = ControlClient(service.client.socket_path.with_name("none.sock"), timeout=2)
    with pytest.raises(RuntimeError, match=r"no answer from the control service at .*none\.sock"):
        gone.call("processes")


def test_another_local_account_cannot_control_the_host(service: Service) -> None:
    python = "/usr/bin/python3"  # one the other account may run (ours may be under /root)
    assert os.access(python, os.X_OK), "needs Debian's python3 for the second account"
    user = f"hrcx{os.getpid() % 10000}"
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", user], check=True, capture_output=True, timeout=30)
    sock = str(service.client.socket_path)
    code = (
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
        "try:\n s.connect(sys.argv[1])\nexcept OSError as e:\n print('connect', e.errno); sys.exit()\n"
        's.sendall(b\'{"op": "kill_sshd"}\\n\')\nprint(s.makefile().readline())'
    )
    as_user = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", python, "-c", code, sock]
    try:
        assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
        out = subprocess.run(as_user, capture_output=True, text=True, timeout=30)
        assert out.stdout.split() == ["connect", "13"], out  # EACCES: the socket is root's alone
        os.chmod(sock, 0o666)  # even were it opened up, the service asks who is calling
        out = subprocess.run(as_user, capture_output=True, text=True, timeout=30)
        assert "only root may control this host" in json.loads(out.stdout)["error"], out
        assert len(service.sshd_pids()) == 1  # nothing was killed
    finally:
        subprocess.run(["userdel", user], capture_output=True, timeout=30)
