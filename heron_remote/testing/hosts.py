"""Acquisition hosts for tests and benchmarks: network namespaces with their own sshd.

Each host is a network namespace joined to this machine by a veth pair (addresses in
198.18.0.0/15, MTU 1500 like a LAN), running its own sshd with a generated host key
and accepting a generated user key. Where namespaces cannot be made (not root), each
host is an sshd on a loopback port instead. Everything is removed on close.

The hosts are written to a server registry (ssh_info.json) with the names acq1, acq2...;
tests that get their hosts from ``$HERON_REMOTE_TEST_SSH_INFO`` (docker-compose) use
that registry instead and create nothing. With ``$HERON_REMOTE_TEST_CONTROL`` too, a folder
with each host's control socket (:mod:`.control`), the tests control those hosts as they
control namespace hosts: links, sshd, users, ports, processes.

"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .._procs import stop_child
from ._sshd import SSHD, sshd_config_text, wait_port
from .control import ControlClient, firewall_commands, remove_account

__all__ = [
    "CONTROL_ENV_VAR",
    "ENV_VAR",
    "AcqHosts",
    "ExternalHosts",
    "Host",
    "acquisition_hosts",
    "namespaces_possible",
]

ENV_VAR = "HERON_REMOTE_TEST_SSH_INFO"
CONTROL_ENV_VAR = "HERON_REMOTE_TEST_CONTROL"


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


def namespaces_possible() -> bool:
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    probe = f"hr-probe-{os.getpid()}"
    try:
        _run("ip", "netns", "add", probe)
    except (subprocess.CalledProcessError, OSError):
        return False
    _run("ip", "netns", "del", probe)
    return True


@contextlib.contextmanager
def _subnet_lock() -> Iterator[None]:
    with open("/run/heron_remote_testing.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _free_subnet() -> int:
    """A /24 of 198.18.0.0/16 that no interface here uses yet."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
    used = {int(m) for m in re.findall(r"inet 198\.18\.(\d+)\.", out)}
    return next(n for n in range(10, 250) if n not in used)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class Host:
    name: str
    address: str
    port: int
    netns: str | None
    sshd: subprocess.Popen | None = None
    host_key_line: str = ""


class AcqHosts:
    """Hosts acq1..acqN and a registry for them (``registry``: the ssh_info.json path)."""

    shares_files = True  # the hosts see this machine's files

    def __init__(self, workdir: Path, count: int = 2, *, mode: str | None = None) -> None:
        """``mode``: "namespace", "loopback", or None for namespaces where they can be made."""
        if mode not in (None, "namespace", "loopback"):
            raise ValueError(f"mode must be 'namespace', 'loopback' or None, got {mode!r}")
        self.workdir = workdir
        self.hosts: list[Host] = []
        self.mode = mode or ("namespace" if namespaces_possible() else "loopback")
        self.registry = workdir / "ssh_info.json"
        self.known_hosts = workdir / "known_hosts"
        self.user_key = workdir / "id_ed25519"
        self._tag = f"{os.getpid() % 100000}"
        try:
            self._keygen(self.user_key)
            for i in range(1, count + 1):
                self._make_host(i)
            self.known_hosts.write_text("".join(h.host_key_line for h in self.hosts))
            self.write_registry()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _keygen(path: Path) -> None:
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "heron-remote-test", "-f", str(path))

    def _make_host(self, i: int) -> Host:
        name = f"acq{i}"
        hdir = self.workdir / name
        hdir.mkdir()
        self._keygen(hdir / "host_key")
        if self.mode == "namespace":
            netns = f"hr{self._tag}-{name}"
            veth = f"hr{self._tag}a{i}"
            _run("ip", "netns", "add", netns)
            host = Host(name, "", 22, netns)
            self.hosts.append(host)  # from here on, close() removes it
            _run("ip", "link", "add", veth, "mtu", "1500", "type", "veth", "peer", "name", "eth0", "netns", netns)
            with _subnet_lock():  # tests and a benchmark may make hosts at the same time
                subnet = _free_subnet()
                rig_ip, acq_ip = f"198.18.{subnet}.1", f"198.18.{subnet}.2"
                _run("ip", "addr", "add", f"{rig_ip}/24", "dev", veth)
            host.address = acq_ip
            _run("ip", "link", "set", veth, "up")
            _run("ip", "-n", netns, "addr", "add", f"{acq_ip}/24", "dev", "eth0")
            _run("ip", "-n", netns, "link", "set", "eth0", "up")
            _run("ip", "-n", netns, "link", "set", "lo", "up")  # the worker binds 127.0.0.1 in there
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            host = Host(name, "127.0.0.1", port, None)
            self.hosts.append(host)
        self.start_sshd(host)
        pub = (hdir / "host_key.pub").read_text().split()
        lookup = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
        host.host_key_line = f"{lookup} {pub[0]} {pub[1]}\n"
        return host

    def sshd_config(self, host: Host, *, password: bool = False) -> Path:
        hdir = self.workdir / host.name
        (hdir / "authorized_keys").write_text((self.user_key.with_suffix(".pub")).read_text())
        config = hdir / "sshd_config"
        config.write_text(
            sshd_config_text(
                address=host.address,
                port=host.port,
                host_key=hdir / "host_key",
                pid_file=hdir / "sshd.pid",
                authorized_keys=hdir / "authorized_keys",
                password=password,
            )
        )
        return config

    def start_sshd(self, host: Host, *, password: bool = False) -> None:
        if not os.access(SSHD, os.X_OK):
            raise RuntimeError(f"no sshd at {SSHD}: install it (Debian: apt-get install openssh-server)")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation directory
        cmd = [SSHD, "-D", "-e", "-f", str(self.sshd_config(host, password=password))]
        if host.netns:
            cmd = ["ip", "netns", "exec", host.netns, *cmd]
        log = open(self.workdir / host.name / "sshd.log", "ab")  # noqa: SIM115 - handed to the process
        # A PC's sshd is a service of its own: nothing of this process's environment (a malloc
        # tunable, say) reaches it.
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        host.sshd = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        log.close()
        wait_port(host.address, host.port)

    def stop_sshd(self, host: Host) -> None:
        if host.sshd is not None:
            stop_child(host.sshd, grace=5)
        host.sshd = None

    def kill_sshd(self, host: Host) -> int:
        """SIGKILL every sshd of ``host``, its sessions too (a crashed SSH service); how many there were."""
        pids = [p for p in self.netns_pids(host) if _comm(p) in ("sshd", "sshd-session")]
        self.stop_sshd(host)
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        return len(pids)

    def write_registry(self, **extra: dict) -> Path:
        servers = {
            str(i): {
                "Name": h.name,
                "IP": h.address,
                "Port": h.port,
                "username": "root",
                "password": "None",
                "key_file": str(self.user_key),
                "known_hosts": str(self.known_hosts),
                # Namespace hosts share this machine's files: each keeps its start records apart.
                "run_dir": str(self.workdir / h.name / "run"),
                # They share this machine's files too: the rig's own interpreter (a venv's) runs the workers.
                "python": shlex.quote(sys.executable),
                **extra.get(h.name, {}),
            }
            for i, h in enumerate(self.hosts)
            if h.name != "void"
        }
        self.registry.write_text(json.dumps(servers, indent=2))
        return self.registry

    @property
    def can_control(self) -> bool:
        """True when the hosts' links can be cut, their sshd killed, users added and ports held."""
        return self.mode == "namespace"

    def set_link(self, host: Host, *, up: bool) -> None:
        """The host's end of its link down (a cable pulled) or up again."""
        if not host.netns:
            raise RuntimeError("cutting a link needs network namespaces")
        _run("ip", "-n", host.netns, "link", "set", "eth0", "up" if up else "down")

    def block_inbound(self, host: Host) -> None:
        """The host's firewall drops inbound TCP but to its sshd, until :meth:`unblock_inbound`."""
        if not host.netns:
            raise RuntimeError("a host's firewall needs network namespaces")
        for cmd in firewall_commands(block=True):
            _run("ip", "netns", "exec", host.netns, *cmd)

    def unblock_inbound(self, host: Host) -> None:
        if not host.netns:
            raise RuntimeError("a host's firewall needs network namespaces")
        for cmd in firewall_commands(block=False):
            _run("ip", "netns", "exec", host.netns, *cmd)

    def processes(self, host: Host) -> dict[int, bytes]:
        """The command line of each process in the host's namespace."""
        found = {}
        for pid in self.netns_pids(host):
            with contextlib.suppress(OSError):
                found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
        return found

    def add_user(self, host: Host, name: str, password: str) -> None:
        """A user with a password; namespace hosts share this machine's users."""
        _run("useradd", "-M", "-s", "/bin/sh", name)
        # chpasswd reads the secret from stdin: it never sits in an argv either.
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True, capture_output=True)

    def remove_user(self, host: Host, name: str) -> None:
        remove_account(name)

    @contextlib.contextmanager
    def hold_port(self, host: Host, port: int) -> Iterator[None]:
        """Port ``port`` of the host's loopback bound by another process, while the block runs."""
        if not host.netns:
            raise RuntimeError("holding a port on a host needs network namespaces")
        holder = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, sys.executable, "-c",
             f"import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',{port}))\ns.listen()\n"
             "print('held',flush=True)\ntime.sleep(600)"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None
            if holder.stdout.readline().strip() != "held":
                raise RuntimeError(f"could not hold port {port} on {host.name}")
            yield
        finally:
            holder.kill()
            holder.wait(5)

    def silent_address(self) -> str:
        """An address on a live link where no machine answers, like a PC that is switched off.

        Its packets stay on a veth pair into an empty namespace, whose end has no
        address: ARP gets no reply and connecting fails as it would on a lab LAN.
        """
        if self.mode != "namespace":
            raise RuntimeError("a silent address needs network namespaces")
        if not any(h.name == "void" for h in self.hosts):
            netns, veth = f"hr{self._tag}-void", f"hr{self._tag}v"
            _run("ip", "netns", "add", netns)
            void = Host("void", "", 22, netns)
            self.hosts.append(void)
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
            with _subnet_lock():
                subnet = _free_subnet()
                _run("ip", "addr", "add", f"198.18.{subnet}.1/24", "dev", veth)
            void.address = f"198.18.{subnet}.2"
            _run("ip", "link", "set", veth, "up")
            _run("ip", "-n", netns, "link", "set", "eth0", "up")
        return next(h.address for h in self.hosts if h.name == "void")

    def netns_pids(self, host: Host) -> set[int]:
        if not host.netns:
            return set()
        out = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True, timeout=10)
        return {int(p) for p in out.stdout.split()}

    def close(self) -> None:
        for host in self.hosts:
            self.stop_sshd(host)
            if host.netns:
                for pid in self.netns_pids(host):
                    try:
                        os.kill(pid, 9)
                    except ProcessLookupError:
                        pass
                subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, timeout=10)
        self.hosts = []


class ExternalHosts:
    """Hosts someone else runs (docker-compose): their registry, and their control sockets if given.

    ``control``: a folder with a Unix socket ``NAME.sock`` of each host's control service
    (:mod:`.control`); without it the hosts can only be used, not controlled.
    """

    mode = "external"
    shares_files = False

    def __init__(self, registry: str, control: str | None = None) -> None:
        self.registry = Path(registry)
        self.control = Path(control) if control else None
        self.hosts = [
            Host(entry["Name"], entry["IP"], int(entry.get("Port", 22)), None)
            for entry in json.loads(self.registry.read_text()).values()
        ]

    @property
    def can_control(self) -> bool:
        return self.control is not None

    def _client(self, host: Host) -> ControlClient:
        if self.control is None:
            raise RuntimeError(f"no control of {host.name}: set ${CONTROL_ENV_VAR} to its control sockets' folder")
        return ControlClient(self.control / f"{host.name}.sock")

    def set_link(self, host: Host, *, up: bool) -> None:
        self._client(host).call("link", up=up)

    def start_sshd(self, host: Host, *, password: bool = False) -> None:
        self._client(host).call("start_sshd", password=password)

    def stop_sshd(self, host: Host) -> None:
        self._client(host).call("stop_sshd")

    def kill_sshd(self, host: Host) -> int:
        return int(self._client(host).call("kill_sshd"))

    def block_inbound(self, host: Host) -> None:
        self._client(host).call("block_inbound", block=True)

    def unblock_inbound(self, host: Host) -> None:
        self._client(host).call("block_inbound", block=False)

    def processes(self, host: Host) -> dict[int, bytes]:
        return self._client(host).processes()

    def add_user(self, host: Host, name: str, password: str) -> None:
        self._client(host).call("add_user", name=name, password=password)

    def remove_user(self, host: Host, name: str) -> None:
        self._client(host).call("remove_user", name=name)

    def hold_port(self, host: Host, port: int) -> contextlib.AbstractContextManager[None]:
        return self._client(host).hold(port)

    def silent_address(self) -> str:
        """An address on the hosts' network where no machine answers, like a PC that is switched off.

        The top of the subnet this machine shares with the first host: the engine hands out
        addresses from the bottom.
        """
        target = ipaddress.ip_address(socket.gethostbyname(self.hosts[0].address))
        taken = {ipaddress.ip_address(socket.gethostbyname(h.address)) for h in self.hosts}
        out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
        for found in re.findall(r"inet (\S+)", out):
            ours = ipaddress.ip_interface(found)
            if target in ours.network:
                silent = ours.network.broadcast_address - 1
                if silent in taken or silent == ours.ip:
                    break
                return str(silent)
        raise RuntimeError(f"no free address beside {target} on this machine's links")

    def close(self) -> None:
        pass


def acquisition_hosts(workdir: Path) -> AcqHosts | ExternalHosts:
    registry = os.environ.get(ENV_VAR)
    return ExternalHosts(registry, os.environ.get(CONTROL_ENV_VAR)) if registry else AcqHosts(workdir)
