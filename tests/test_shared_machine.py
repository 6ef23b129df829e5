"""Shared machines: another account cannot make a launch end, overwrite or follow anything of ours.

Each attack is performed for real by a second local account (created here, removed after),
next to a test that the legitimate use still works.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from heron_remote import (
    ConfigError,
    ForwarderError,
    Settings,
    Source,
    UnsafePathError,
    WorkerStartError,
    _paths,
    _streams,
)
from heron_remote.heron.save_node_state import SaveNodeState
from heron_remote.relic import Relic

from .helpers import CAMERA, ECHO_WORKER, edit_registry, pid_alive

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating a second account needs root (CI runs as root)")


class Account(NamedTuple):
    name: str
    uid: int
    gid: int

    def run(self, *argv: str, cwd: str = "/") -> subprocess.CompletedProcess:
        """Run a command as this account."""
        return subprocess.run(
            list(argv), user=self.uid, group=self.gid, extra_groups=[], cwd=cwd, capture_output=True, text=True,
            timeout=30, check=True,
        )  # fmt: skip


@pytest.fixture(scope="module")
def other() -> Iterator[Account]:
    """A second local account, as another lab member has on a shared PC."""
    name = f"hr-other-{os.getpid()}"[:31]
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True, timeout=30)
    try:
        import pwd

        entry = pwd.getpwnam(name)
        yield Account(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], check=False, timeout=30)


@pytest.fixture
def world_writable() -> Iterator[Path]:
    """A folder like /tmp (world-writable, sticky), reachable by every account; removed after."""
    shared = Path(tempfile.mkdtemp(prefix="hr-shared-", dir="/tmp"))
    shared.chmod(0o1777)
    yield shared
    shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture
def shared_tmp(world_writable: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp dir this test's processes use as theirs: a world-writable one, as /tmp is."""
    monkeypatch.setenv("TMPDIR", str(world_writable))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("HERON_REMOTE_RUN_DIR", raising=False)  # the default place, not the test run's own
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    return world_writable


def _victims(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """What the attacker aims at: a process of the lab account in its own group, and two of its files."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    first, second = tmp_path / "data.csv", tmp_path / "notes.txt"
    first.write_text("precious data\n")
    second.write_text("precious notes\n")
    return proc, first, second


def test_f1_a_planted_private_folder_is_refused_and_nothing_is_ended_or_overwritten(
    settings: Settings, other: Account, shared_tmp: Path, tmp_path: Path
) -> None:
    # settings first: its forwarders (made before the attack) keep their folder in the usual temp dir.
    victim, data, notes = _victims(tmp_path)
    try:
        ours = shared_tmp / f"heron-remote-{os.getuid()}"
        run = ours / "run"
        # The attacker creates our folder first, 0777, and plants a record and two symlinks in it.
        other.run("mkdir", "-m", "777", str(ours), str(run))
        node = "Source##cam"
        record = {
            "node": node, "pid": victim.pid, "started": "0", "uid": 0, "token": "0123456789abcdef", "com": "",
            "window": 0.0, "since": 0.0, "pgid": victim.pid,
        }  # fmt: skip
        digest = hashlib.sha1(node.encode()).hexdigest()[:20]
        other.run("sh", "-c", f"echo '{json.dumps(record)}' > {run}/{digest}.json")
        other.run("ln", "-s", str(data), str(run / "lock"))
        other.run("ln", "-s", str(notes), str(run / f"{digest}.tmp"))
        src = Source(CAMERA, name="cam", parameters={"shape": [4, 4], "fps": 10}, settings=settings)
        # Refused where the launch first uses the folder: the forwarders' hello, or the worker's start record.
        with pytest.raises((ForwarderError, WorkerStartError)) as caught, src:
            pass
        message = str(caught.value)
        print(message)
        assert f"refusing to use {ours}" in message and "belongs to another account" in message
        assert "remove it" in message
        assert pid_alive(victim.pid)
        assert data.read_text() == "precious data\n" and notes.read_text() == "precious notes\n"
    finally:
        victim.kill()
        victim.wait(5)


def test_f1_our_folder_as_a_symlink_to_the_attackers_is_refused(other: Account, shared_tmp: Path) -> None:
    theirs = shared_tmp / "theirs"
    other.run("mkdir", "-m", "700", str(theirs))
    other.run("ln", "-s", str(theirs), str(shared_tmp / f"heron-remote-{os.getuid()}"))
    with pytest.raises(UnsafePathError, match="is a symbolic link"):
        _paths.private_dir("run")


def test_f1_a_folder_open_to_others_is_refused_even_when_ours(shared_tmp: Path) -> None:
    ours = shared_tmp / f"heron-remote-{os.getuid()}"
    ours.mkdir(mode=0o755)
    ours.chmod(0o755)
    with pytest.raises(UnsafePathError, match="open to other accounts"):
        _paths.private_dir()


def test_f1_f3_each_account_gets_its_own_private_folder_and_launches_whoever_came_first(
    other: Account, shared_tmp: Path, settings: Settings
) -> None:
    # The other account has run first: it made the old shared folder (0755) and its own private one.
    other.run("mkdir", "-m", "755", str(shared_tmp / _paths.TEMP_DIR))
    other.run("mkdir", "-m", "700", str(shared_tmp / f"heron-remote-{other.uid}"))
    with Source(CAMERA, name="cam", parameters={"shape": [4, 4], "fps": 50}, settings=settings) as src:
        assert next(src.frames(timeout=15)).arrays[0].shape == (4, 4)
    ours = shared_tmp / f"heron-remote-{os.getuid()}"
    for folder in (ours, ours / "run"):
        st = os.lstat(folder)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700


def test_the_login_runtime_folder_is_used_when_it_is_the_accounts_own(
    other: Account, shared_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert _paths.private_dir() == runtime / _paths.TEMP_DIR
    # Somebody else's runtime folder (a stale variable) is not used.
    os.chown(runtime, other.uid, other.gid)
    assert _paths.private_dir() == shared_tmp / f"heron-remote-{os.getuid()}"


def test_a_servers_run_dir_planted_by_another_account_fails_the_remote_launch_clearly(
    other: Account, acq, tmp_path: Path, world_writable: Path, remote_settings: Settings
) -> None:
    planted = world_writable / "run"
    other.run("mkdir", "-m", "777", str(planted))
    registry = edit_registry(acq, tmp_path, "acq1", run_dir=str(planted))
    src = Source(CAMERA, parameters={"shape": [4, 4], "fps": 10}, settings=remote_settings.replace(ssh_info=registry),
                 host="acq1")  # fmt: skip
    with pytest.raises(WorkerStartError) as caught, src:
        pass
    assert f"refusing to use {planted}" in str(caught.value)
    assert "belongs to another account" in str(caught.value)


def test_f5_the_fallback_log_is_private_and_never_follows_a_symlink(shared_tmp: Path, tmp_path: Path) -> None:
    fallback = _streams._Fallback("cam")
    with fallback.open() as log:
        log.write("a line\n")
    st = os.lstat(fallback.path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and fallback.path.parent == _paths.private_dir("logs")
    # A symlink where the log goes (only this account could put it there) is not followed.
    target = tmp_path / "precious.txt"
    target.write_text("precious\n")
    fallback.path.unlink()
    fallback.path.symlink_to(target)
    with fallback.open() as log:
        log.write("must not reach the target\n")
    assert target.read_text() == "precious\n"


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "..\\x", "cam\x00", "R&D %s"])
def test_f11_a_node_name_becomes_one_safe_file_name(name: str) -> None:
    safe = _paths.safe_name(name)
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert safe not in ("", ".", "..") and not safe.startswith(".")


def test_f11_a_node_called_dotdot_gets_no_heron_state_folder_and_its_log_stays_inside(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be plain names, not paths"):
        SaveNodeState(str(tmp_path / "relics"), "../../escaped", "0")
    assert _streams._Fallback("../../escaped").path.parent == _paths.private_dir("logs")
    relic = Relic(tmp_path / "relics", "../..", "escaped")
    relic.add_parameters(0, gain=1)
    relic.close()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(tmp_path / "relics" in p.parents for p in written), written


def test_f11_a_source_named_dotdot_writes_its_relic_inside_the_relic_dir(tmp_path: Path, settings: Settings) -> None:
    relic_dir = tmp_path / "relics"
    relic_dir.mkdir()
    with Source(
        ECHO_WORKER, name="../../evil", relic_dir=str(relic_dir), outputs=["Counter", "Echo"],
        parameters={"ok": True, "gain": 2}, settings=settings,
    ) as src:  # fmt: skip
        next(src.frames(timeout=15))
        time.sleep(0.3)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(relic_dir in p.parents for p in written), written
