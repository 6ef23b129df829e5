"""SSH against real sshd hosts: what a lab's ssh setup or a second registry entry must not change.

Each attack (agent forwarding asked by ~/.ssh/config, a registry entry riding another's
connection, revoked host keys) is shown to fail next to the legitimate use that still works.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from heron_remote import ConfigError, Settings, Source, WorkerError
from heron_remote.errors import AuthenticationError, HostKeyError, TunnelError
from heron_remote.ssh import HostConnection, Registry
from heron_remote.ssh.check import check_server
from heron_remote.ssh.connection import pool_key
from heron_remote.ssh.openssh import OpenSSHMaster, OpenSSHTunnel
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import CAMERA, ECHO_WORKER, PYTHON, edit_registry, on_host, put_tree, wait_until

pytestmark = pytest.mark.multihost
Hosts = AcqHosts | ExternalHosts

_AGENT_SOCK = 'echo "${SSH_AUTH_SOCK:-none} ${DISPLAY:-none}"'


@pytest.fixture
def agent_on_the_rig(acq: Hosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A running ssh-agent holding the hosts' user key, and a ~/.ssh/config that forwards it everywhere."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host *\n    ForwardAgent yes\n    ForwardX11 yes\n")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(sock.exists, 10, "ssh-agent's socket")
        key = Registry.load(acq.registry).get("acq1").key_file
        assert key is not None
        env = {"SSH_AUTH_SOCK": str(sock), "PATH": "/usr/bin:/bin"}
        subprocess.run(["ssh-add", "-q", key], env=env, check=True, timeout=10, capture_output=True)
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        monkeypatch.delenv("DISPLAY", raising=False)
        yield sock
    finally:
        agent.terminate()
        agent.wait(10)


def _asked_for_the_agent(conn: HostConnection) -> str:
    """What a session that does ask for agent forwarding sees on the PC."""
    chan = conn.transport.open_session(timeout=10)
    handler = paramiko.agent.AgentRequestHandler(chan)
    try:
        chan.exec_command(_AGENT_SOCK)
        chan.settimeout(10)
        out = b""
        while data := chan.recv(4096):
            out += data
        return out.decode().strip()
    finally:
        handler.close()
        chan.close()


def test_the_rigs_agent_is_never_forwarded_even_when_ssh_config_says_so(
    acq: Hosts, remote_settings: Settings, agent_on_the_rig: Path
) -> None:
    server = Registry.load(acq.registry).get("acq1")
    conn = HostConnection.acquire(server)
    try:
        _, out, _ = conn.run(_AGENT_SOCK)
        assert out.split() == ["none", "none"]
        with Source(ECHO_WORKER, outputs=("Counter", "Echo"), settings=remote_settings, host="acq1") as src:
            next(src.frames(timeout=10))
            pid = src.stats.worker_pid
            code, environ, _ = on_host(acq, "acq1", f"tr '\\0' '\\n' < /proc/{pid}/environ")
            assert code == 0 and "PYTHONUNBUFFERED=1" in environ.split()  # the worker's own environment
            assert not [v for v in environ.split() if v.startswith(("SSH_AUTH_SOCK=", "DISPLAY="))]
        # Last (sshd keeps a forwarded agent for the connection's later sessions): the PC does
        # forward the agent to a session that asks for it, so this test can fail.
        assert _asked_for_the_agent(conn).split()[0].startswith("/")
    finally:
        conn.release()


def _odd_copies(acq: Hosts, tmp_path: Path) -> tuple[Path, Path]:
    """The hosts' known_hosts and user key, copied into a folder whose name has a space and a '%'."""
    server = Registry.load(acq.registry).get("acq1")
    assert server.known_hosts and server.key_file
    odd = tmp_path / "lab data 100%d"
    odd.mkdir()
    known, key = odd / "known hosts", odd / "id key"
    known.write_text(Path(server.known_hosts).read_text())
    key.write_bytes(Path(server.key_file).read_bytes())
    key.chmod(0o600)
    return known, key


def test_openssh_reads_a_known_hosts_and_a_key_whose_paths_have_spaces(
    acq: Hosts, tmp_path: Path, remote_settings: Settings
) -> None:
    known, key = _odd_copies(acq, tmp_path)
    reg = edit_registry(acq, tmp_path, "acq1", tunnel="openssh", known_hosts=str(known), key_file=str(key))
    settings = remote_settings.replace(ssh_info=reg)
    with Source(CAMERA, parameters={"shape": [16, 16], "fps": 200}, settings=settings, host="acq1") as cam:
        got = [f.index for f in cam.frames(timeout=10, limit=20)]
        assert got == list(range(got[0], got[0] + 20))
        assert all(isinstance(t, OpenSSHTunnel) for t in cam.launcher.tunnels)


def _lookup(acq: Hosts, name: str = "acq1") -> str:
    """The host's name in known_hosts."""
    server = Registry.load(acq.registry).get(name)
    return server.host if server.port == 22 else f"[{server.host}]:{server.port}"


def test_openssh_checks_the_host_key_in_a_known_hosts_whose_path_has_spaces(acq: Hosts, tmp_path: Path) -> None:
    known, key = _odd_copies(acq, tmp_path)
    not_the_hosts = paramiko.Ed25519Key.from_private_key_file(str(key))
    known.write_text(f"{_lookup(acq)} {not_the_hosts.get_name()} {not_the_hosts.get_base64()}\n")
    server = Registry.load(edit_registry(acq, tmp_path, "acq1", known_hosts=str(known), key_file=str(key))).get("acq1")
    master = OpenSSHMaster(server, "root", timeout=5)
    with pytest.raises(TunnelError, match=r"(?s)acq1.*HOST IDENTIFICATION HAS CHANGED"):
        master.open()


def _host_key_line(acq: Hosts) -> str:
    """acq1's line of the hosts' known_hosts."""
    known = Registry.load(acq.registry).get("acq1").known_hosts
    assert known is not None
    return next(line for line in Path(known).read_text().splitlines() if line.split()[0] == _lookup(acq))


def _connect_with(acq: Hosts, tmp_path: Path, known_hosts: str, **changes: object) -> None:
    """Connect to acq1 with this known_hosts text and run a command."""
    path = tmp_path / "known_hosts"
    path.write_text(known_hosts)
    server = Registry.load(edit_registry(acq, tmp_path, "acq1", known_hosts=str(path), **changes)).get("acq1")
    conn = HostConnection.acquire(server, timeout=5)
    try:
        assert conn.run("echo ok")[1].strip() == "ok"
    finally:
        conn.release()


def test_a_revoked_host_key_is_refused_naming_the_line(acq: Hosts, tmp_path: Path) -> None:
    line = _host_key_line(acq)
    _, ktype, key = line.split()[:3]
    revoked = f"# withdrawn\n@revoked * {ktype} {key}\n"
    with pytest.raises(HostKeyError, match=r"acq1 .*is REVOKED by .*known_hosts line 3: refusing"):
        _connect_with(acq, tmp_path, f"{line}\n{revoked}")
    # Trust on first use pins no revoked key either.
    with pytest.raises(HostKeyError, match="REVOKED"):
        _connect_with(acq, tmp_path, revoked, trust_on_first_use=True)
    assert (tmp_path / "known_hosts").read_text() == revoked
    assert HostConnection.open_connections() == 0


def test_cert_authority_lines_hashed_names_and_wildcards_still_let_the_right_key_in(acq: Hosts, tmp_path: Path) -> None:
    line = _host_key_line(acq)
    name, ktype, key = line.split()[:3]
    other = paramiko.ECDSAKey.generate()
    ca = f"@cert-authority *.lab.example {other.get_name()} {other.get_base64()}\n"
    _connect_with(acq, tmp_path, f"{ca}{line}\n")
    # A key revoked for another host does not concern this one.
    _connect_with(acq, tmp_path, f"@revoked other-pc {ktype} {key}\n{line}\n")
    # As ssh-keygen -H and a lab's wildcard write them.
    hashed = tmp_path / "hashed"
    hashed.write_text(f"{line}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(hashed)], check=True, capture_output=True, timeout=10)
    assert name not in hashed.read_text()
    _connect_with(acq, tmp_path, f"{ca}{hashed.read_text()}")
    _connect_with(acq, tmp_path, f"{name[:-1]}*,!other {ktype} {key}\n")  # 198.18.1.* or acq*


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{name} {ktype} bm90IGEga2V5", r"line 2: cannot read this line"),
        ("@trusted {name} {ktype} {key}", r"line 2: unknown marker '@trusted'"),
        ("{name} {ktype}", r"line 2: expected 'host-patterns key-type base64-key'"),
        ("|1|c2FsdA==|aGFzaA== {ktype} {key}", r"line 2: cannot read this line \(the hashed host name"),
    ],
)
def test_an_unreadable_known_hosts_line_is_a_clear_error_naming_file_and_line(
    acq: Hosts, tmp_path: Path, text: str, why: str
) -> None:
    line = _host_key_line(acq)
    name, ktype, key = line.split()[:3]
    bad = text.format(name=name, ktype=ktype, key=key)
    with pytest.raises(HostKeyError, match=rf"known_hosts file {tmp_path}/known_hosts, {why}"):
        _connect_with(acq, tmp_path, f"{line}\n{bad}\n")


def _entries_for_acq1(acq: Hosts, tmp_path: Path, **variants: dict[str, object]) -> Registry:
    """The hosts' registry plus entries for acq1's PC, each named by its keyword and changed by its dict."""
    raw = json.loads(Path(acq.registry).read_text())
    acq1 = next(e for e in raw.values() if e["Name"] == "acq1")
    for i, (name, changes) in enumerate(variants.items()):
        raw[f"v{i}"] = {**acq1, "Name": name, **changes}
    path = tmp_path / "ssh_info_variants.json"
    path.write_text(json.dumps(raw))
    return Registry.load(path)


def test_an_entry_with_its_own_known_hosts_or_key_never_rides_another_entrys_connection(
    acq: Hosts, tmp_path: Path
) -> None:
    name, _, _ = _host_key_line(acq).split()[:3]
    wrong_key = tmp_path / "not_authorised"  # an ed25519 key, as the host's: only its bytes differ
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)], check=True, timeout=10)
    wrong_known = tmp_path / "wrong_known_hosts"
    ktype, key = wrong_key.with_suffix(".pub").read_text().split()[:2]
    wrong_known.write_text(f"{name} {ktype} {key}\n")
    reg = _entries_for_acq1(
        acq,
        tmp_path,
        pinned_elsewhere={"known_hosts": str(wrong_known)},
        other_key={"key_file": str(wrong_key)},
    )
    first = HostConnection.acquire(reg.get("acq1"))
    try:
        with pytest.raises(HostKeyError, match=r"pinned_elsewhere .*(CHANGED|knows only)"):
            HostConnection.acquire(reg.get("pinned_elsewhere"), timeout=5)
        with pytest.raises(AuthenticationError, match=r"other_key .*refused to log in"):
            HostConnection.acquire(reg.get("other_key"), timeout=5)
        assert HostConnection.pooled() == (first,)
        assert first.run("echo ok")[1].strip() == "ok"
    finally:
        first.release()
    assert HostConnection.open_connections() == 0


def test_entries_with_the_same_settings_share_one_connection_and_a_tunnel_backend_gets_its_own(
    acq: Hosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HR_TEST_UNUSED_PASSWORD", "s3cret-never-in-a-key")
    reg = _entries_for_acq1(
        acq,
        tmp_path,
        same_pc={},
        through_openssh={"tunnel": "openssh"},
        with_password={"password": "s3cret-never-in-a-key"},
    )
    first = HostConnection.acquire(reg.get("acq1"))
    try:
        second = HostConnection.acquire(reg.get("same_pc"))
        assert second is first  # one connection for one PC, whatever the entry is called
        second.release()
        third = HostConnection.acquire(reg.get("through_openssh"))
        try:
            assert third is not first
            with third.forward(9) as tunnel, first.forward(9) as plain:
                assert isinstance(tunnel, OpenSSHTunnel) and not isinstance(plain, OpenSSHTunnel)
        finally:
            third.release()
        fourth = HostConnection.acquire(reg.get("with_password"))
        try:
            assert fourth is not first and HostConnection.open_connections() == 2
            assert "s3cret" not in repr(pool_key(reg.get("with_password")))
        finally:
            fourth.release()
    finally:
        first.release()
    assert HostConnection.open_connections() == 0


@pytest.mark.parametrize(
    "python",
    [
        "{py}; touch {mark} #",
        "{py} $(touch {mark})",
        "{py} `touch {mark}`",
        "{py} -V && touch {mark} #",
        "{py} | touch {mark}",
    ],
)
def test_shell_code_in_the_registrys_python_runs_neither_in_check_nor_at_launch(
    acq: Hosts, tmp_path: Path, remote_settings: Settings, python: str
) -> None:
    mark = tmp_path / "injected"
    reg = edit_registry(acq, tmp_path, "acq1", python=python.format(py=shlex.quote(PYTHON), mark=mark))
    injected = f"test -e {shlex.quote(str(mark))}"
    report = check_server("acq1", ssh_info=reg)
    assert on_host(acq, "acq1", injected)[0] == 1  # nothing ran
    assert not report.ok
    assert any(line.startswith('FAIL "python"') for line in report.lines), report
    with (
        pytest.raises(WorkerError, match="acq1"),
        Source(ECHO_WORKER, settings=remote_settings.replace(ssh_info=reg, start_timeout=10), host="acq1"),
    ):
        pass
    assert on_host(acq, "acq1", injected)[0] == 1
    assert HostConnection.open_connections() == 0


def test_an_interpreter_with_options_and_a_path_with_spaces_passes_check_and_launches(
    acq: Hosts, tmp_path: Path, remote_settings: Settings
) -> None:
    wrapper = tmp_path / "lab python" / "python"  # a venv's interpreter needs its own folder: exec it
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(PYTHON)} "$@"\n')
    wrapper.chmod(0o755)
    put_tree(acq, "acq1", wrapper.parent)  # where the PC has its own files (compose), it is put there
    on_host(acq, "acq1", f"chmod 755 {shlex.quote(str(wrapper))}")
    reg = edit_registry(acq, tmp_path, "acq1", python=f"{shlex.quote(str(wrapper))} -X dev")
    report = check_server("acq1", ssh_info=reg)
    assert report.ok, report
    settings = remote_settings.replace(ssh_info=reg)
    with Source(ECHO_WORKER, outputs=("Counter", "Echo"), settings=settings, host="acq1") as src:
        next(src.frames(timeout=10))
        _, argv, _ = on_host(acq, "acq1", f"tr '\\0' '\\n' < /proc/{src.stats.worker_pid}/cmdline")
        assert argv.splitlines()[1:3] == ["-X", "dev"]


def test_a_python_value_that_is_not_words_is_refused_when_the_registry_is_read(acq: Hosts, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server '\d+': \"python\" .* \(no closing quotation\)"):
        Registry.load(edit_registry(acq, tmp_path, "acq1", python="'/opt/lab venv/bin/python -X dev"))
