"""Control of an acquisition host in a container: what the tests do to namespace hosts from outside.

The multi-host tests cut a host's links, kill and restart its sshd, add a user with a password,
hold a port on it and read its processes. Namespace hosts share this machine, so the tests do it
directly; a docker-compose acquisition host runs this service instead (``python -m
heron_remote.testing SOCKET``), which also runs the host's sshd. The host is the service's network
namespace: its links, and the processes in it (in a container, all of them).

It listens on a Unix socket in a volume that only the rig and the acquisition hosts mount (mode
0600, root's; peers other than root are refused), not on the network, so that it stays reachable
while the host's links are cut. One JSON request per connection, one JSON reply; ``hold`` keeps
its port bound until the client closes the connection. Secrets travel in the request, never in
an argv or the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import socketserver
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._procs import stop_child
from ._sshd import SSHD, sshd_config_text, wait_port

__all__ = ["ControlClient", "ControlServer", "firewall_commands", "main"]

_SSHD_NAMES = ("sshd", "sshd-session")


def _run(*cmd: str, stdin: str | None = None) -> None:
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")


#: Seconds an account's last processes (an SSH session still closing) have to end before it is removed.
_ACCOUNT_GONE_S = 15.0
#: userdel's status for a name that is no account (any other failure is retried: a process still
#: ending, or another test's useradd holding the account files' lock).
_USERDEL_NO_SUCH_USER = 6


def remove_account(name: str) -> None:
    """Remove account ``name``: its processes killed first, userdel retried while one still ends
    (it refuses an account with a process); RuntimeError when the account outlives the wait."""
    deadline = time.monotonic() + _ACCOUNT_GONE_S
    while True:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True, timeout=30)
        out = subprocess.run(["userdel", name], capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            return
        if out.returncode == _USERDEL_NO_SUCH_USER or time.monotonic() > deadline:
            raise RuntimeError(f"userdel {name} failed ({out.returncode}): {out.stderr.strip()}")
        time.sleep(0.2)


#: The chain of the host's firewall rules that tests add (and remove as one).
_CHAIN = "HERON_TEST_BLOCK"


def firewall_commands(*, block: bool, keep: int = 22) -> list[list[str]]:
    """iptables commands that make the host drop inbound TCP on its links but to port ``keep`` (its
    sshd), like a PC's firewall that lets SSH in and nothing else; or that remove those rules."""
    if block:
        return [
            ["iptables", "-N", _CHAIN],
            ["iptables", "-A", _CHAIN, "!", "-i", "lo", "-p", "tcp", "!", "--dport", str(keep), "-j", "DROP"],
            ["iptables", "-I", "INPUT", "-j", _CHAIN],
        ]
    return [["iptables", "-D", "INPUT", "-j", _CHAIN], ["iptables", "-F", _CHAIN], ["iptables", "-X", _CHAIN]]


def _cmdlines() -> dict[int, bytes]:
    """The command line of each process of this host: those in this process's network namespace."""
    ours = os.readlink("/proc/self/ns/net")
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/net") == ours:
                    found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes()
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class ControlServer:
    """The service on an acquisition host: its sshd, its links, its users, its ports."""

    def __init__(self, socket_path: Path, *, host_key: Path, authorized_keys: Path, workdir: Path) -> None:
        self.socket_path = socket_path
        self.host_key = host_key
        self.authorized_keys = authorized_keys
        self.workdir = workdir
        self._sshd: subprocess.Popen | None = None
        self._lock = threading.Lock()  # one change of sshd at a time
        self._server: socketserver.ThreadingUnixStreamServer | None = None

    # -- what the requests do

    def start_sshd(self, *, password: bool = False) -> None:
        with self._lock:
            if self._sshd is not None and self._sshd.poll() is None:
                stop_child(self._sshd, grace=5)
            config = self.workdir / "sshd_config"
            config.write_text(
                sshd_config_text(
                    address="0.0.0.0",
                    port=22,
                    host_key=self.host_key,
                    pid_file=self.workdir / "sshd.pid",
                    authorized_keys=self.authorized_keys,
                    password=password,
                )
            )
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
            self._sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL)
            wait_port("127.0.0.1", 22)

    def stop_sshd(self) -> None:
        with self._lock:
            if self._sshd is not None:
                stop_child(self._sshd, grace=5)
            self._sshd = None

    def kill_sshd(self) -> int:
        """SIGKILL the listener and every session (a crashed SSH service); how many there were."""
        pids = [pid for pid in _cmdlines() if _comm(pid) in _SSHD_NAMES]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        self.stop_sshd()  # reaps the listener
        return len(pids)

    @staticmethod
    def set_link(up: bool) -> None:
        """Every link of the host but loopback, down or up (a cable pulled, plugged back)."""
        for iface in sorted(os.listdir("/sys/class/net")):
            if iface != "lo":
                _run("ip", "link", "set", iface, "up" if up else "down")

    @staticmethod
    def block_inbound(block: bool) -> None:
        """Inbound TCP on the host's links dropped but to sshd (``block``), or let in again."""
        for cmd in firewall_commands(block=block):
            _run(*cmd)

    @staticmethod
    def add_user(name: str, password: str) -> None:
        _run("useradd", "-M", "-s", "/bin/sh", name)
        _run("chpasswd", stdin=f"{name}:{password}\n")  # from stdin: never in an argv

    @staticmethod
    def remove_user(name: str) -> None:
        remove_account(name)

    # -- serving

    def handle(self, conn: socket.socket) -> None:
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        stream = conn.makefile("rwb")
        line = stream.readline()  # read first: the client gets the refusal, not a broken pipe
        if uid != 0:
            self._reply(stream, error=f"only root may control this host (peer uid {uid})")
            return
        try:
            request = json.loads(line)
            op = request.pop("op")
        except (ValueError, KeyError, AttributeError) as exc:
            self._reply(stream, error=f"a request is one JSON object with an 'op': {exc}")
            return
        try:
            if op == "hold":
                self._hold(stream, int(request["port"]))
                return
            result: Any = None
            if op == "start_sshd":
                self.start_sshd(password=bool(request.get("password", False)))
            elif op == "stop_sshd":
                self.stop_sshd()
            elif op == "kill_sshd":
                result = self.kill_sshd()
            elif op == "link":
                self.set_link(bool(request["up"]))
            elif op == "block_inbound":
                self.block_inbound(bool(request["block"]))
            elif op == "add_user":
                self.add_user(str(request["name"]), str(request["password"]))
            elif op == "remove_user":
                self.remove_user(str(request["name"]))
            elif op == "processes":
                # latin-1 maps each byte to one character: the client gets the exact bytes back.
                result = {str(pid): line.decode("latin-1") for pid, line in _cmdlines().items()}
            else:
                raise RuntimeError(f"unknown op {op!r}")
        except RuntimeError as exc:  # ours, already saying what failed
            self._reply(stream, error=str(exc))
            return
        except Exception as exc:  # the client gets the reason; the service goes on
            self._reply(stream, error=f"{type(exc).__name__}: {exc}")
            return
        self._reply(stream, result=result)

    @staticmethod
    def _reply(stream: Any, **reply: object) -> None:
        stream.write(json.dumps(reply).encode() + b"\n")
        stream.flush()

    def _hold(self, stream: Any, port: int) -> None:
        with socket.socket() as held:
            held.bind(("127.0.0.1", port))
            held.listen()
            self._reply(stream, result="held")
            stream.read()  # until the client closes the connection

    def serve_forever(self) -> None:
        """Start sshd, then answer requests until the process ends."""
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.handle(self.request)

        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a socket the last run of this volume left
        old = os.umask(0o177)
        try:
            self._server = socketserver.ThreadingUnixStreamServer(str(self.socket_path), Handler)
        finally:
            os.umask(old)
        self._server.daemon_threads = True
        self.start_sshd()
        self._server.serve_forever()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.stop_sshd()


class ControlClient:
    """Requests to one host's :class:`ControlServer`, over its Unix socket."""

    def __init__(self, socket_path: Path, *, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _connect(self, op: str, args: dict[str, object]) -> tuple[socket.socket, Any]:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(self.timeout)
        try:
            conn.connect(str(self.socket_path))
            stream = conn.makefile("rwb")
            stream.write(json.dumps({"op": op, **args}).encode() + b"\n")
            stream.flush()
            line = stream.readline()
        except OSError as exc:
            conn.close()
            raise RuntimeError(f"no answer from the control service at {self.socket_path}: {exc}") from exc
        reply = json.loads(line) if line else {"error": "the service closed the connection"}
        if "error" in reply:
            conn.close()
            raise RuntimeError(f"the control service at {self.socket_path} refused {op}: {reply['error']}")
        return conn, reply.get("result")

    def call(self, op: str, **args: object) -> Any:
        conn, result = self._connect(op, args)
        conn.close()
        return result

    @contextlib.contextmanager
    def hold(self, port: int) -> Iterator[None]:
        """Port ``port`` of the host's loopback bound by another process, while the block runs."""
        conn, _ = self._connect("hold", {"port": port})
        try:
            yield
        finally:
            conn.close()

    def processes(self) -> dict[int, bytes]:
        return {int(pid): line.encode("latin-1") for pid, line in self.call("processes").items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m heron_remote.testing", description="Control service of a docker-compose acquisition host."
    )
    parser.add_argument("socket", type=Path, help="the Unix socket to listen on")
    parser.add_argument("--host-key", type=Path, default=Path("/etc/ssh/ssh_host_ed25519_key"))
    parser.add_argument("--authorized-keys", type=Path, default=Path("/keys/authorized_keys"))
    parser.add_argument("--workdir", type=Path, default=Path("/run/heron-remote-control"))
    args = parser.parse_args(argv)
    args.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ControlServer(
        args.socket, host_key=args.host_key, authorized_keys=args.authorized_keys, workdir=args.workdir
    ).serve_forever()
