"""Bad input through the public API: each a specific, readable error within a stated bound, nothing left behind.

Every case starts a :class:`Source` the way a user would and checks the error's type and
words, how long it took, and that no SSH connection, tunnel, listening port or worker is left.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from heron_remote import ConfigError, HeronRemoteError, Settings, Source, WorkerStartError
from heron_remote.errors import AuthenticationError, HostKeyError, HostUnreachableError
from heron_remote.ssh import HostConnection, Registry
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import CAMERA, edit_registry, readme_row

pytestmark = pytest.mark.multihost
Hosts = AcqHosts | ExternalHosts


def listening_ports() -> set[int]:
    """TCP ports this process listens on (a tunnel left open would be one)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _forged_known_hosts(acq: Hosts, tmp_path: Path) -> str:
    """acq2's key claimed for acq1: what a man in the middle, or a reinstalled PC, looks like."""
    servers = Registry.load(acq.registry)
    acq1, acq2 = servers.get("acq1"), servers.get("acq2")
    lines = Path(acq1.known_hosts).read_text().splitlines()
    acq2_key = next(line for line in lines if line.split()[0] in (acq2.host, f"[{acq2.host}]:{acq2.port}"))
    lookup = acq1.host if acq1.port == 22 else f"[{acq1.host}]:{acq1.port}"
    forged = tmp_path / "forged_known_hosts"
    forged.write_text(f"{lookup} {' '.join(acq2_key.split()[1:])}\n")
    return edit_registry(acq, tmp_path, "acq1", known_hosts=str(forged), trust_on_first_use=True)


def _stranger_key(acq: Hosts, tmp_path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    return edit_registry(acq, tmp_path, "acq1", key_file=str(tmp_path / "stranger"))


def _malformed(acq: Hosts, tmp_path: Path) -> str:
    path = tmp_path / "ssh_info.json"
    path.write_text('{"0": {"Name": "acq1", "IP": ')
    return str(path)


def _empty_known_hosts(acq: Hosts, tmp_path: Path) -> str:
    (tmp_path / "empty").write_text("")
    return edit_registry(acq, tmp_path, "acq1", known_hosts=str(tmp_path / "empty"))


def _silent(acq: Hosts, tmp_path: Path) -> str:
    if not acq.can_control:
        pytest.skip("needs hosts this run controls (namespaces as root, or compose with $HERON_REMOTE_TEST_CONTROL)")
    return edit_registry(acq, tmp_path, "acq1", IP=acq.silent_address())


# (case, registry maker, source keyword changes, error type, what the message must say, bound in s)
Case = tuple[str, Callable[[Hosts, Path], str] | None, dict, type[HeronRemoteError], str, float]
CASES: list[Case] = [
    ("unknown server id", None, {"host": "acq9"}, ConfigError, r"unknown server 'acq9'.*known are", 1),
    ("malformed ssh_info.json", _malformed, {}, ConfigError, r"ssh_info\.json is not valid JSON", 1),
    (
        "unreachable host",
        _silent,
        {},
        HostUnreachableError,
        r"no answer from acq1 .* within 3 s: is the PC on|cannot reach acq1 .*: No route to host: nothing answers at "
        r'that address on this network\. Is the PC switched on and plugged in, and is its "IP" in the registry right',
        5,
    ),
    (
        "connection refused",
        lambda acq, p: edit_registry(acq, p, "acq1", Port=1),
        {},
        HostUnreachableError,
        r"refused the connection: is sshd running there, on port 1\?",
        3,
    ),
    ("authentication failure", _stranger_key, {}, AuthenticationError, r"refused to log in user 'root'.*stranger", 3),
    (
        "wrong user",
        lambda acq, p: edit_registry(acq, p, "acq1", username="nobody"),
        {},
        AuthenticationError,
        r"refused to log in user 'nobody' \(it accepts: publickey(, \w+)*\); tried .*Check the user name",
        3,
    ),
    ("unknown host key", _empty_known_hosts, {}, HostKeyError, r"(?s)is not known.*ssh-keyscan", 3),
    ("changed host key", _forged_known_hosts, {}, HostKeyError, r"has CHANGED.*ssh-keygen -R", 3),
    (
        "worker_exec script not on the remote",
        None,
        {"worker_exec": "/nowhere/camera.py"},
        WorkerStartError,
        r"(?s)on acq1 exited with status 2 before it was ready.*can't open file '/nowhere/camera.py'",
        10,
    ),
    (
        "worker_exec script at a relative path on the remote",
        None,
        {"worker_exec": "cameras/camera.py"},
        WorkerStartError,
        r"(?s)\(command: 'cameras/camera.py'; on acq1 the relative path 'cameras/camera.py' starts from the home "
        r"directory of user 'root': give the script's full path on the PC\).*can't open file",
        10,
    ),
    (
        "worker_exec module not on the remote",
        None,
        {"worker_exec": "python -m no_such_camera_module"},
        WorkerStartError,
        r"(?s)on acq1 exited with status 1 before.*No module named no_such_camera_module",
        10,
    ),
    (
        "parameters JSON cannot encode",
        None,
        {"parameters": {"gain": object()}},
        ConfigError,
        r"parameters must be JSON-serialisable: Object of type object",
        1,
    ),
]


@pytest.mark.parametrize(("case", "registry", "changes", "error", "says", "bound"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_fast_with_a_specific_error_and_leaves_nothing(
    acq: Hosts,
    remote_settings: Settings,
    tmp_path: Path,
    case: str,
    registry: Callable[[Hosts, Path], str] | None,
    changes: dict,
    error: type[HeronRemoteError],
    says: str,
    bound: float,
) -> None:
    settings = remote_settings.replace(connect_timeout=3)
    if registry is not None:
        settings = settings.replace(ssh_info=registry(acq, tmp_path))
    kwargs = {"worker_exec": CAMERA, "host": "acq1", **changes}
    ports_before = listening_ports()
    started = time.monotonic()
    with pytest.raises(error) as caught:
        Source(kwargs.pop("worker_exec"), settings=settings, **kwargs).start()
    took = time.monotonic() - started
    print(f"{case}: {type(caught.value).__name__} after {took:.2f} s")
    assert re.search(says, str(caught.value)), str(caught.value)
    assert readme_row(caught.value), f"no row of the README's error table says: {caught.value}"
    assert took < bound
    assert HostConnection.open_connections() == 0
    assert listening_ports() <= ports_before
