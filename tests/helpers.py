"""Helpers the tests share: waiting with a bound, finding processes and listening sockets."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import select
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko

from heron_remote import ForwarderPorts, RestartPolicy, Settings, Source
from heron_remote.com.hosted import HostedRelay
from heron_remote.examples import SYNTHETIC_CAMERA

WORKERS = Path(__file__).parent / "workers"
ECHO_WORKER = str(WORKERS / "echo_worker.py")
CAMERA = SYNTHETIC_CAMERA
FREE_PORTS = ForwarderPorts.free()
_WORKER_MARK = b"--heron-remote-heartbeat-rate="


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> object:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


#: Why a test that cuts links, restarts sshd or adds users on a host is skipped (never in CI).
NO_CONTROL = "needs hosts this run controls (namespaces as root, or compose with $HERON_REMOTE_TEST_CONTROL)"


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != b"Z"


#: Set in this test run's environment, so that its local workers (and only they) can be told apart.
RUN_MARK = f"HERON_REMOTE_TEST_RUN={os.getpid()}"
os.environ["HERON_REMOTE_TEST_RUN"] = str(os.getpid())
# The heron-remote command the tests run is this interpreter's (a venv's, not one found first on PATH).
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


def killed_twice(settings: Settings) -> Source:
    """A local Source whose worker is SIGKILLed after 5 frames, started again once, and killed again:
    its frames are 1-5 and 7-11, then ``WorkerError``."""
    policy = RestartPolicy(mode="on-failure", max_restarts=1, backoff=0.1)
    parameters = {"frames": 5, "death": "kill"}
    return Source(str(WORKERS / "flaky_worker.py"), parameters=parameters, settings=settings.replace(restart=policy))


def worker_pids() -> set[int]:
    """Every live heron_remote worker this test run started on this machine (argv and environment)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if _WORKER_MARK not in f.read():
                    continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if RUN_MARK.encode() not in f.read().split(b"\0"):
                    continue
        except OSError:
            continue
        if pid_alive(int(entry)):
            found.add(int(entry))
    return found


def listening_address(port: int, net: str = "/proc/net") -> str | None:
    """The local address a TCP socket listens on for ``port`` (from /proc/net/tcp); ``net``:
    another network namespace's tables, ``/proc/<pid of a process in it>/net``."""
    for table in (f"{net}/tcp", f"{net}/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hexport = local.rsplit(":", 1)
                if state == "0A" and int(hexport, 16) == port:
                    if len(addr) == 8:
                        return ".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0))
                    return addr
    return None


def com_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment for a com script that should use ``settings``."""
    return {**os.environ, **settings.to_env(), **extra}


PYTHON = sys.executable


def edit_registry(acq: object, tmp_path: Path, name: str, **changes: object) -> str:
    """A copy of the hosts' registry (``acq.registry``) with some keys of server ``name`` changed."""
    raw = json.loads(Path(acq.registry).read_text())  # type: ignore[attr-defined]
    for entry in raw.values():
        if entry["Name"] == name:
            entry.update(changes)
    path = tmp_path / "ssh_info.json"
    path.write_text(json.dumps(raw))
    return str(path)


COM_SCRIPT = str(WORKERS / "heron_com.py")


class ComScript:
    """A Heron-style com script (``tests/workers/heron_com.py``, node ``Parameters##echo##1``) in a
    process of its own, as a rig's experiment runs it; its worker here, or on ``host``."""

    def __init__(
        self,
        settings: Settings,
        *,
        host: str | None = None,
        verbose: str = "||",
        worker: str = ECHO_WORKER,
        timeout: float = 30.0,
        **env: str,
    ) -> None:
        args = [PYTHON, COM_SCRIPT, worker, verbose] + ([host] if host else [])
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=com_env(settings, **env)
        )
        line = _readline(self.proc, timeout)
        if not line.startswith("COM READY"):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"com did not start: {line!r}\n{err}")
        self.worker_pid = int(line.split()[2])
        #: The worker's ports on its host, by channel.
        self.worker_ports: dict[str, int] = json.loads(line.split()[3])

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15) -> tuple[int, str, str]:
        """Signal the com and collect its exit status and output."""
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    """The next line of ``proc``'s stdout; "" after ``timeout`` seconds or at its end."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def on_host(acq: object, name: str, command: str) -> tuple[int, str, str]:
    """Run a command on acquisition host ``name`` (of ``acq.registry``) over SSH: real fabric, our connection."""
    from heron_remote.ssh import HostConnection, Registry

    conn = HostConnection.acquire(Registry.load(acq.registry).get(name))  # type: ignore[attr-defined]
    try:
        return conn.run(command, timeout=20)
    finally:
        conn.release()


def remote_alive(acq: object, name: str, pid: int) -> bool:
    """Whether ``pid`` runs on acquisition host ``name`` (a zombie counts as gone)."""
    _, out, _ = on_host(acq, name, f"awk '/^State/{{print $2}}' /proc/{pid}/status 2>/dev/null")
    return out.strip() not in ("", "Z")


def free_port_group(offset: int = 0) -> int:
    """The first of four free ports, below the ephemeral range (32768 on Linux) where bind(0)
    and outgoing connections take theirs; ``offset`` keeps two callers of one process apart."""
    for base in range(20000 + (os.getpid() % 400 + offset) * 20, 32000, 20):
        if all(listening_address(base + k) is None for k in range(4)):
            return base
    raise AssertionError("no free port group")


README = Path(__file__).resolve().parent.parent / "README.md"
# In the README's error table: an elision, a quoted example value, a number, the example PC.
_EXAMPLE = re.compile(r"(…|'[^']*'|\d+(?:\.\d+)?|camera-pc)")


def _pattern(text: str) -> re.Pattern[str]:
    """A message text of the README's error table as a regex: its words exactly, its examples loosely."""
    parts = []
    for piece in _EXAMPLE.split(text):
        if piece == "…":
            parts.append(".*?")
        elif piece.startswith("'") and piece.endswith("'") and len(piece) > 1:
            parts.append("'[^']*'")
        elif piece and (piece[0].isdigit()):
            parts.append(r"[\d.]+")
        elif piece == "camera-pc":
            parts.append(r"(?:this machine|\S+)")  # a local worker runs on "this machine"
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts), re.S)


def error_table() -> list[tuple[str, list[re.Pattern[str]], str, str]]:
    """The README's table of errors: (error class, its message texts as patterns, meaning, advice)."""
    text = README.read_text()
    section = text.split("## When things go wrong", 1)[1].split("| --- | --- | --- |", 1)[1]
    rows = []
    for line in section.strip().splitlines():
        if not line.startswith("| `"):
            break
        error, meaning, advice = (cell.strip() for cell in line.strip("|").split(" | "))
        spans = re.findall(r"`([^`]*)`", error)
        kind, first = spans[0].split(": ", 1)
        rows.append((kind, [_pattern(t) for t in (first, *spans[1:])], meaning, advice))
    return rows


def readme_row(error: BaseException) -> str | None:
    """The advice of the README's row for this error (its class and message), or None if no row says it."""
    for kind, patterns, _, advice in error_table():
        if kind == type(error).__name__ and any(p.search(str(error)) for p in patterns):
            return advice
    return None


def put_tree(acq: object, name: str, path: Path) -> None:
    """The files under ``path`` at the same path on host ``name`` (over sftp), as a user copies a node's
    files to the PC; nothing to do for hosts that share this machine's files (namespaces)."""
    if getattr(acq, "shares_files", True):
        return
    with _sftp(acq, name) as sftp:
        for folder, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for i in range(2, len(Path(folder).parts) + 1):
                with contextlib.suppress(OSError):  # there already
                    sftp.mkdir(str(Path(*Path(folder).parts[:i])))
            for file in files:
                sftp.put(os.path.join(folder, file), os.path.join(folder, file))


def get_tree(acq: object, name: str, path: Path) -> None:
    """The files under ``path`` on host ``name`` copied to the same path here (what its worker wrote there);
    nothing to do for hosts that share this machine's files."""
    if getattr(acq, "shares_files", True):
        return
    with _sftp(acq, name) as sftp:
        pending = [str(path)]
        while pending:
            folder = pending.pop()
            Path(folder).mkdir(parents=True, exist_ok=True)
            for entry in sftp.listdir_attr(folder):
                remote = f"{folder}/{entry.filename}"
                if stat.S_ISDIR(entry.st_mode or 0):
                    pending.append(remote)
                else:
                    sftp.get(remote, remote)


@contextlib.contextmanager
def _sftp(acq: object, name: str) -> Iterator[paramiko.SFTPClient]:
    """An SFTP session on host ``name`` (of ``acq.registry``), over our connection to it."""
    from heron_remote.ssh import HostConnection, Registry

    conn = HostConnection.acquire(Registry.load(acq.registry).get(name))  # type: ignore[attr-defined]
    try:
        sftp = paramiko.SFTPClient.from_transport(conn.wait_transport(10))
        try:
            yield sftp
        finally:
            sftp.close()
    finally:
        conn.release()


ZMTP_SEND = str(Path(__file__).parent / "zmtp_send.py")


def send_as(user: str, port: int, kind: str, messages: list[list[bytes]]) -> None:
    """``messages`` sent to 127.0.0.1:``port`` from a ``kind`` socket by ``user``, who has no pyzmq."""
    out = subprocess.run(
        ["runuser", "-u", user, "--", "/usr/bin/python3", ZMTP_SEND, "127.0.0.1", str(port), kind],
        input=json.dumps([[f.hex() for f in m] for m in messages]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == pwd.getpwnam(user).pw_uid != os.getuid()


@contextlib.contextmanager
def local_account(prefix: str) -> Iterator[str]:
    """A second account on this machine, as another lab member has on a shared PC or rig: made
    with no home and no login shell, its processes killed and the account removed afterwards."""
    assert os.geteuid() == 0, "these tests add a local user: run them as root (CI does)"
    name = f"{prefix}{os.getpid() % 100000}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True, capture_output=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True, timeout=30)
        subprocess.run(["userdel", name], check=True, capture_output=True, timeout=30)


def forwarders_command(ports: ForwarderPorts, **popen: object) -> subprocess.Popen[str]:
    """``heron-remote forwarders`` on ``ports`` in a process of its own, as Heron's editor runs them."""
    argv = [PYTHON, "-m", "heron_remote", "forwarders"]
    argv += ["--data", str(ports.data_submit), str(ports.data_publish)]
    argv += ["--parameters", str(ports.parameters_submit), str(ports.parameters_publish)]
    argv += ["--proof-of-life", str(ports.proof_of_life_submit), str(ports.proof_of_life_publish)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)  # type: ignore[call-overload]


def first_line(proc: subprocess.Popen[str]) -> str:
    """The first line ``proc`` prints (its stderr in the failure when there is none)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else ""
    return line


def hosted_relay(src: Source) -> HostedRelay:
    """The relay of ``src``'s com: ``.hosted`` says whether the forwarders' process relays its packets."""
    relay = src._com._relay if src._com is not None else None
    assert isinstance(relay, HostedRelay)
    return relay
