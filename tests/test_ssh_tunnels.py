"""Tunnels without sshd: the backend table, the Tunnel protocol, and the sshtunnel backend over a fake transport."""

from __future__ import annotations

import queue
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from heron_remote import ConfigError
from heron_remote.errors import SSHError
from heron_remote.ssh import Registry, Server, Tunnel
from heron_remote.ssh.openssh import master_argv
from heron_remote.ssh.sshtunnel_backend import SSHTunnel
from heron_remote.ssh.tunnel import BACKENDS, DEFAULT_BACKEND, BaseTunnel
from heron_remote.testing import FakeTunnel

from .helpers import listening_address, wait_until


def test_the_backend_table_names_the_backends_and_the_registry_checks_against_it() -> None:
    assert list(BACKENDS) == ["sshtunnel", "openssh"] and DEFAULT_BACKEND == "sshtunnel"
    reg = Registry.from_dict({"0": {"Name": "acq1", "IP": "a"}, "1": {"IP": "b", "tunnel": "openssh"}})
    assert reg.get("acq1").tunnel == "sshtunnel" and reg.get("1").tunnel == "openssh"
    with pytest.raises(ConfigError, match=r"acq1.*\"tunnel\" 'plink'.*\"sshtunnel\" or \"openssh\""):
        Registry.from_dict({"0": {"Name": "acq1", "IP": "a", "tunnel": "plink"}})


def test_a_tunnel_closes_once_and_is_a_context_manager() -> None:
    closed: list[int] = []

    class Counting(BaseTunnel):
        def _close(self) -> None:
            closed.append(self.local_port)

    with Counting(6000, ("127.0.0.1", 7000)) as tunnel:
        assert isinstance(tunnel, Tunnel)
        assert (tunnel.address, tunnel.remote, tunnel.closed) == ("tcp://127.0.0.1:6000", ("127.0.0.1", 7000), False)
    tunnel.close()
    assert tunnel.closed and closed == [6000]
    assert isinstance(FakeTunnel(6001), Tunnel) and FakeTunnel(6001).local_port == 6001


class _Channel:
    """One end of a socket pair, with the paramiko Channel methods the pump uses."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, n: int) -> bytes:
        return self._sock.recv(n)

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def shutdown_write(self) -> None:
        self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._sock.close()


class _Host:
    """A TunnelHost whose "transport" opens channels to socket pairs; ``down`` plays a reconnect."""

    server = Server(id="0", name="pc", host="198.18.0.2")
    username = "lab"
    timeout = link_timeout = 1.0

    def __init__(self) -> None:
        self.far_ends: queue.Queue[tuple[tuple[str, int], socket.socket]] = queue.Queue()
        self.down = False

    def wait_transport(self, timeout: float) -> _Host:
        if self.down:
            raise SSHError("the connection to pc is down")
        return self

    def open_channel(self, kind: str, dest_addr: tuple[str, int], src_addr: object, timeout: float) -> _Channel:
        assert kind == "direct-tcpip"
        near, far = socket.socketpair()
        self.far_ends.put((dest_addr, far))
        return _Channel(near)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n and (chunk := sock.recv(n - len(data))):
        data += chunk
    return data


def test_the_sshtunnel_backend_pumps_both_ways_until_either_side_closes() -> None:
    host = _Host()
    tunnel = SSHTunnel(host, 5555)
    try:
        assert listening_address(tunnel.local_port) == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=5) as client:
            payload = bytes(range(256)) * 8192  # 2 MiB: more than one read each way
            # The client speaks first, as a ZeroMQ peer does: a channel is opened once it has.
            sender = threading.Thread(target=client.sendall, args=(payload,))
            sender.start()
            dest, far = host.far_ends.get(timeout=5)
            far.settimeout(5)
            assert dest == ("127.0.0.1", 5555)
            assert _recv_exactly(far, len(payload)) == payload
            sender.join(5)
            far.sendall(b"reply")
            assert _recv_exactly(client, 5) == b"reply"
            client.shutdown(socket.SHUT_WR)
            assert far.recv(1) == b""  # the local side's end reached the channel
            far.close()
            assert client.recv(1) == b""  # and the channel's end reached the local side
    finally:
        tunnel.close()
    tunnel.close()
    assert tunnel.closed and listening_address(tunnel.local_port) is None


def test_a_client_of_a_tunnel_whose_connection_is_down_is_closed_and_the_tunnel_serves_on() -> None:
    host = _Host()
    with SSHTunnel(host, 5556) as tunnel:
        host.down = True
        with socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=5) as client:
            client.sendall(b"\xff")  # a ZeroMQ greeting starts so
            assert client.recv(1) == b""  # ZeroMQ would connect again
        host.down = False
        with socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=5) as client:
            client.sendall(b"back")
            _, far = host.far_ends.get(timeout=5)
            far.settimeout(5)
            assert _recv_exactly(far, 4) == b"back"
            far.close()
    wait_until(lambda: listening_address(tunnel.local_port) is None, 5, "the forward server to close")


def test_the_openssh_master_command_checks_host_keys_strictly_and_needs_a_key(tmp_path: Path) -> None:
    keyed = Server(id="0", name="acq1", host="198.18.0.2", port=2222, key_file="/k", known_hosts="/kh")
    argv = master_argv("/usr/bin/ssh", keyed, "lab", tmp_path / "ctl", 10.0, 3.0)
    ssh = argv.index("/usr/bin/ssh")
    assert argv[ssh : ssh + 3] == ["/usr/bin/ssh", "-F", "/dev/null"]
    assert "-a" in argv and "-x" in argv  # the agent and X11 never forwarded
    assert argv[-6:] == ["-p", "2222", "-l", "lab", "--", "198.18.0.2"]
    for option in (
        "StrictHostKeyChecking=yes",
        "BatchMode=yes",
        'UserKnownHostsFile="/kh"',
        "GlobalKnownHostsFile=/dev/null",
        f'ControlPath="{tmp_path / "ctl"}"',
        "ForwardAgent=no",
        "ForwardX11=no",
        "ServerAliveInterval=1",
        "ConnectTimeout=10",
    ):
        assert option in argv, option
    password_only = Server(id="0", name="acq1", host="198.18.0.2", password="env:PW")
    with pytest.raises(ConfigError, match=r"acq1.*only a password.*needs a key"):
        master_argv("/usr/bin/ssh", password_only, "lab", tmp_path / "ctl", 10.0, 3.0)
    with pytest.raises(ConfigError, match="needs the ssh program"):
        master_argv(None, keyed, "lab", tmp_path / "ctl", 10.0, 3.0)


def test_ssh_itself_reads_the_paths_of_the_master_command_exactly(tmp_path: Path) -> None:
    """A lab's paths hold spaces (and worse): ssh's own parser (``ssh -G``) reads back each file whole."""
    ssh = shutil.which("ssh")
    assert ssh is not None, "the openssh client is needed (apt-get install openssh-client)"
    odd = tmp_path / 'lab "data" 100%d \\ files'
    odd.mkdir()
    known, key = odd / "known hosts", odd / "id key"
    known.write_text("")
    key.write_text("")
    server = Server(id="0", name="acq1", host="198.18.0.2", key_file=str(key), known_hosts=str(known))
    argv = master_argv(ssh, server, "lab", odd / "ctl %h", 10.0, 3.0)
    argv = argv[argv.index(ssh) :]
    printed = subprocess.run([ssh, "-G", *argv[1:]], capture_output=True, text=True, timeout=10)
    config = [line.split(" ", 1) for line in printed.stdout.splitlines()]
    assert ["userknownhostsfile", str(known)] in config
    assert ["controlpath", str(odd / "ctl %h")] in config
    # Key files are expanded after -G prints them: one whole word, its "%" escaped for that expansion.
    assert [value for name, value in config if name == "identityfile"] == [str(key).replace("%", "%%")]
    assert ["forwardagent", "no"] in config and ["forwardx11", "no"] in config
    with pytest.raises(ConfigError, match=r"acq1.*known_hosts .*'\$\{'.*rename the file"):
        master_argv(ssh, Server(id="0", name="acq1", host="h", key_file="/k", known_hosts="/a/${HOME}"), "l", odd, 1, 1)
