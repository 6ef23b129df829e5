"""Where a Source's forwarders listen: 127.0.0.1, whatever forwarder_host says, unless forwarder_bind
names another interface. Another LAN host (a test namespace) tries to read the frames."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
from collections.abc import Iterator

import pytest

from heron_remote import ConfigError, ForwarderPorts, Forwarders, Settings, Source
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import CAMERA, PYTHON

# Not a multi-host test: the rig's own interfaces, with a namespace as another LAN host (the venv run has them).
Hosts = AcqHosts | ExternalHosts

#: Run in a LAN host's namespace: connect to a forwarder's publish port, print the first topic heard.
_LISTEN = """
import sys, zmq
sub = zmq.Context().socket(zmq.SUB)
sub.subscribe(b"")
sub.rcvtimeo = int(float(sys.argv[2]) * 1000)
sub.connect(sys.argv[1])
try:
    print(sub.recv_multipart()[0].decode())
except zmq.Again:
    print("nothing")
"""


@pytest.fixture
def lan(acq: Hosts) -> Iterator[tuple[str, str]]:
    """(this machine's address on a test LAN, the namespace of another host on it)."""
    if not isinstance(acq, AcqHosts) or acq.mode != "namespace":
        pytest.skip("a LAN address and another host on it need the namespace hosts (CI has them)")
    host = acq.hosts[0]
    assert host.netns is not None
    yield host.address.rsplit(".", 1)[0] + ".1", host.netns


def _heard_from(netns: str, address: str, port: int, seconds: float) -> str:
    """What a subscriber on the other LAN host hears on ``address:port`` within ``seconds``."""
    out = subprocess.run(
        ["ip", "netns", "exec", netns, PYTHON, "-c", _LISTEN, f"tcp://{address}:{port}", str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 20,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _listening(port: int) -> set[str]:
    """Every local address a TCP socket listens on for ``port`` (from /proc/net/tcp)."""
    found = set()
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


def _fixed_ports() -> ForwarderPorts:
    """Six ports free now, fixed (as Heron's are), so that the Source looks for running forwarders."""
    socks = [socket.socket() for _ in range(6)]
    try:
        for s in socks:
            s.bind(("0.0.0.0", 0))
        numbers = [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
    names = ("data_submit", "data_publish", "parameters_submit", "parameters_publish")
    names += ("proof_of_life_submit", "proof_of_life_publish")
    return ForwarderPorts(**dict(zip(names, numbers, strict=True)))


@pytest.mark.parametrize("ports", ["fixed", "free"])
def test_forwarder_host_on_the_lan_never_opens_the_forwarders_to_it(
    settings: Settings, lan: tuple[str, str], ports: str
) -> None:
    address, other_host = lan
    wanted = _fixed_ports() if ports == "fixed" else ForwarderPorts.free()
    with Source(
        CAMERA, parameters={"fps": 100}, settings=settings.replace(forwarder_host=address, ports=wanted)
    ) as cam:
        assert len(list(cam.frames(timeout=10, limit=5))) == 5
        lease = cam.forwarders
        assert lease is not None
        # The other host on that LAN hears no frame, and reaches none of the ports.
        assert _heard_from(other_host, address, lease.ports.data_publish, 2) == "nothing"
        bound = [getattr(lease.ports, name) for name in dataclasses.asdict(lease.ports)]
        for port in bound:
            reach = f"import socket; socket.create_connection(({address!r}, {port}), 3)"
            refused = subprocess.run(
                ["ip", "netns", "exec", other_host, PYTHON, "-c", reach], capture_output=True, timeout=20
            )
            assert refused.returncode == 1 and b"ConnectionRefusedError" in refused.stderr
        assert all(_listening(port) == {"127.0.0.1"} for port in bound), {p: _listening(p) for p in bound}
        assert lease.running_here is not None and lease.host == "127.0.0.1"


def test_forwarder_bind_opens_them_on_that_interface_when_asked(settings: Settings, lan: tuple[str, str]) -> None:
    address, other_host = lan
    wanted = settings.replace(forwarder_bind=address, ports=_fixed_ports())
    with Source(CAMERA, parameters={"fps": 100}, settings=wanted) as cam:
        assert len(list(cam.frames(timeout=10, limit=5))) == 5
        lease = cam.forwarders
        assert lease is not None and lease.running_here is not None and lease.host == address
        assert _listening(lease.ports.data_publish) == {address}
        assert _heard_from(other_host, address, lease.ports.data_publish, 10) == cam.topics[0]


def test_forwarders_already_running_where_forwarder_host_says_are_used(
    settings: Settings, lan: tuple[str, str]
) -> None:
    address, _ = lan
    ports = _fixed_ports()
    with Forwarders(host=address, ports=ports) as running:
        with Source(
            CAMERA, parameters={"fps": 100}, settings=settings.replace(forwarder_host=address, ports=ports)
        ) as cam:
            lease = cam.forwarders
            assert lease is not None and lease.running_here is None and lease.host == address
            assert len(list(cam.frames(timeout=10, limit=5))) == 5
            assert _listening(ports.data_publish) == {address}  # none started on 127.0.0.1
        assert running.error is None


def test_the_bind_option_is_checked_and_travels_in_the_environment() -> None:
    s = Settings(forwarder_host="198.18.20.1", forwarder_bind="198.18.20.1")
    assert Settings.from_env(s.to_env()) == s
    assert Settings().forwarder_bind == "127.0.0.1"
    with pytest.raises(ConfigError, match="forwarder_bind"):
        Settings(forwarder_bind="")
