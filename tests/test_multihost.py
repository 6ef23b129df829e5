"""Remote workers on acquisition hosts: namespaces with their own sshd here, compose services elsewhere.

The hosts come from the ``acq`` fixture (heron_remote/testing/hosts.py); with $HERON_REMOTE_TEST_SSH_INFO set
they are whatever that registry names acq1 and acq2, controlled (links cut, sshd killed, users added) through
the control sockets in $HERON_REMOTE_TEST_CONTROL.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from heron_remote import RestartPolicy, Settings, Source, WorkerError, WorkerLostError
from heron_remote.examples.synthetic_camera import expected_frame, frame_header
from heron_remote.ssh import HostConnection, Registry
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import (
    CAMERA,
    ECHO_WORKER,
    NO_CONTROL,
    PYTHON,
    WORKERS,
    ComScript,
    edit_registry,
    listening_address,
    on_host,
    remote_alive,
    wait_until,
)

pytestmark = pytest.mark.multihost
Hosts = AcqHosts | ExternalHosts


def remote(settings: Settings, host: str = "acq1") -> dict:
    return {"settings": settings, "host": host}


def test_remote_frames_are_exactly_what_the_worker_sent(
    remote_settings: Settings, acq: Hosts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="heron_remote")
    started = time.monotonic()
    with Source(
        CAMERA, parameters={"shape": [64, 80], "dtype": "uint16", "fps": 200}, **remote(remote_settings)
    ) as cam:
        frames = cam.frames(timeout=10)
        first = next(frames)
        print(f"remote start to first frame at the subscriber: {time.monotonic() - started:.3f} s")
        got = [first.index]
        for index, _, (frame,) in frames:
            n, captured = frame_header(frame)
            assert n == index
            np.testing.assert_array_equal(frame, expected_frame(n, (64, 80), "uint16", captured))
            got.append(index)
            if len(got) == 100:
                break
        assert got == list(range(got[0], got[0] + 100)) and cam.gaps == 0
        pid = cam.stats.worker_pid
        assert remote_alive(acq, "acq1", pid)
        # The worker really runs on the acquisition host: in its network namespace.
        _, out, _ = on_host(acq, "acq1", f"readlink /proc/{pid}/ns/net /proc/self/ns/net")
        worker_ns, host_ns = out.split()
        assert worker_ns == host_ns
        assert worker_ns != os.readlink("/proc/self/ns/net")
        if acq.can_control:
            assert pid in acq.processes(acq.hosts[0])
        assert HostConnection.open_connections() == 1
        tunnel_ports = [t.local_port for t in cam.launcher.tunnels]
        assert len(tunnel_ports) == 4 and all(listening_address(p) == "127.0.0.1" for p in tunnel_ports)
    assert not remote_alive(acq, "acq1", pid)  # on_kill left nothing behind
    assert HostConnection.open_connections() == 0
    assert all(listening_address(p) is None for p in tunnel_ports)
    # The worker's output streamed into logging, prefixed with the node and the PC.
    assert any(
        r.getMessage().startswith("[source@acq1] stderr:") and "synthetic camera" in r.getMessage()
        for r in caplog.records
    )


def test_parameters_reach_the_remote_worker(remote_settings: Settings) -> None:
    with Source(
        ECHO_WORKER, outputs=("Counter", "Echo"), parameters={"ok": True, "gain": 3}, **remote(remote_settings, "acq2")
    ) as src:
        echo = next(e for _, _, (_, e) in src.frames(timeout=10) if e and e["initialised"])
        assert echo["parameters"] == {"ok": True, "gain": 3}
        src.set_parameters({"ok": True, "gain": 4})
        echo = next(e for _, _, (_, e) in src.frames(timeout=10) if e and e["parameters"]["gain"] == 4)
        assert echo["node_name"] == "source"


def test_sources_share_one_connection_per_host_and_ports_never_collide(remote_settings: Settings, acq: Hosts) -> None:
    # Another rig process on the same PC, and two sources here asking for the same port group.
    other_rig = ComScript(remote_settings, host="acq1")
    try:
        with (
            Source(CAMERA, name="a", parameters={"shape": [4, 4]}, port=6600, **remote(remote_settings)) as a,
            Source(CAMERA, name="b", parameters={"shape": [8, 8]}, port=6600, **remote(remote_settings)) as b,
            Source(CAMERA, name="c", parameters={"shape": [2, 2]}, **remote(remote_settings, "acq2")) as c,
        ):
            for src, shape in ((a, (4, 4)), (b, (8, 8)), (c, (2, 2))):
                assert next(f for f in src.frames(timeout=10) if f.arrays[0].shape == shape)
            assert HostConnection.open_connections() == 2  # acq1 and acq2: one each
            assert a.stats.worker_pid != b.stats.worker_pid
    finally:
        assert other_rig.stop()[0] == 0


def test_trust_on_first_use_pins_the_key_when_asked(acq: Hosts, remote_settings: Settings, tmp_path: Path) -> None:
    pinned = tmp_path / "pinned_known_hosts"
    reg = edit_registry(acq, tmp_path, "acq2", known_hosts=str(pinned), trust_on_first_use=True)
    code, out, _ = on_host(type("R", (), {"registry": reg})(), "acq2", "echo hello")
    assert (code, out.strip()) == (0, "hello")
    line = pinned.read_text().split()
    assert line[1] == "ssh-ed25519"
    server = Registry.load(acq.registry).get("acq2")
    assert line[2] in Path(server.known_hosts).read_text()  # the key the host really has


def test_check_command_reports_versions_ports_and_round_trip(acq: Hosts, tmp_path: Path) -> None:
    out = subprocess.run(
        ["heron-remote", "check", "acq1", "--ssh-info", str(acq.registry), "--port", "6600"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    for expected in (
        "host key ssh-ed25519 SHA256:",
        "SSH round trip median",
        "remote Python",
        "remote heron_remote 0.1.0 (here 0.1.0)",
        "port 6603 on the PC's 127.0.0.1: free",
        "is ready for heron_remote",
    ):
        assert expected in out.stdout
    (tmp_path / "empty").write_text("")
    reg = edit_registry(acq, tmp_path, "acq1", known_hosts=str(tmp_path / "empty"))
    out = subprocess.run(
        ["heron-remote", "check", "acq1", "--ssh-info", reg], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1 and "is not known" in out.stdout and "NOT ready" in out.stdout


def test_demo_runs_remotely(acq: Hosts) -> None:
    out = subprocess.run(
        ["heron-remote", "demo", "--remote", "acq2", "--ssh-info", str(acq.registry), "--seconds", "2"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    print(out.stdout)
    assert out.returncode == 0, out.stderr[-3000:]
    m = re.search(r"([\d.]+) frames/s, ([\d.]+) MB/s, gaps (\d+)", out.stdout)
    assert m and float(m[1]) > 50 and int(m[3]) == 0 and "(worker on acq2)" in out.stdout


def test_password_from_the_environment_logs_in_and_appears_on_no_command_line(
    acq: Hosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not acq.can_control:
        pytest.skip(NO_CONTROL)
    user, password = f"hrpw{os.getpid() % 10000}", f"pw-{os.urandom(8).hex()}"
    host = next(h for h in acq.hosts if h.name == "acq2")
    acq.add_user(host, user, password)
    try:
        acq.stop_sshd(host)
        acq.start_sshd(host, password=True)
        monkeypatch.setenv("HR_TEST_PASSWORD", password)
        monkeypatch.setenv("HOME", str(tmp_path))  # no agent or ~/.ssh keys to try first
        monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
        reg = edit_registry(acq, tmp_path, "acq2", username=user, password="env:HR_TEST_PASSWORD", key_file="None")
        conn = HostConnection.acquire(Registry.load(reg).get("acq2"))
        try:
            code, out, _ = conn.run("id -un; sleep 0.3")
            assert (code, out.strip()) == (0, user)
            # Both sides of the connection: this machine's processes and the host's.
            for where, lines in (("here", _local_cmdlines()), (host.name, acq.processes(host))):
                for pid, cmdline in lines.items():
                    assert password.encode() not in cmdline, f"password in the argv of pid {pid} {where}"
        finally:
            conn.release()
    finally:
        acq.stop_sshd(host)
        acq.start_sshd(host)
        acq.remove_user(host, user)


def _local_cmdlines() -> dict[int, bytes]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
    return found


def test_an_ssh_config_alias_connects_and_its_connection_is_released(
    acq: Hosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Registry.load(acq.registry).get("acq1")
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(f"Host camera-pc\n  HostName {real.host}\n  Port {real.port}\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    reg = edit_registry(acq, tmp_path, "acq1", IP="camera-pc", Port=22)
    conn = HostConnection.acquire(Registry.load(reg).get("acq1"))
    try:
        # The server's end of the connection, numeric: the address the host's name stands for.
        addresses = {info[4][0] for info in socket.getaddrinfo(real.host, real.port, type=socket.SOCK_STREAM)}
        assert conn.run("echo $SSH_CONNECTION")[1].split()[2] in addresses
    finally:
        conn.release()
    assert HostConnection.open_connections() == 0 and not HostConnection.pooled()


def test_a_link_cut_longer_than_the_death_window_is_reported_and_the_worker_ends_itself(
    acq: Hosts, remote_settings: Settings
) -> None:
    if not acq.can_control:
        pytest.skip(NO_CONTROL)
    host = acq.hosts[0]
    route = subprocess.run(
        ["ip", "route", "get", socket.gethostbyname(host.address)], capture_output=True, text=True, timeout=10
    ).stdout.split()
    # The host's traffic stays on the link to it (our veth, the compose network), also while it is cut.
    assert "via" not in route and (route[2].startswith("hr") or acq.mode != "namespace"), route
    with Source(CAMERA, parameters={"shape": [4, 4], "fps": 100}, **remote(remote_settings)) as cam:
        frames = cam.frames(timeout=30)
        next(frames)
        pid = cam.stats.worker_pid
        acq.set_link(host, up=False)
        cut = time.monotonic()
        try:
            with pytest.raises(WorkerLostError, match=r"nothing came from the worker .* on acq1"):
                for _ in frames:
                    pass
            noticed = time.monotonic() - cut
            time.sleep(max(0.0, remote_settings.death_window + 1 - noticed))
        finally:
            acq.set_link(host, up=True)
    print(f"link cut noticed after {noticed:.2f} s (death window {remote_settings.death_window:g} s)")
    assert noticed < remote_settings.death_window + 2
    wait_until(lambda: not remote_alive(acq, "acq1", pid), 10, "the cut-off worker to be gone")


def _link(acq: Hosts, name: str, state: str) -> None:
    acq.set_link(next(h for h in acq.hosts if h.name == name), up=state == "up")


def test_a_short_link_cut_is_bridged_on_the_same_ports_and_the_lost_frames_counted(
    acq: Hosts, remote_settings: Settings
) -> None:
    if not acq.can_control:
        pytest.skip(NO_CONTROL)
    # A 6 s death window; the link counts as dropped after 1.5 s, well inside the 3 s cut.
    settings = remote_settings.replace(heartbeat_rate=0.5, heartbeats_to_death=12, link_timeout=1.5)
    cut_s = 3.0
    with Source(CAMERA, parameters={"shape": [4, 4], "fps": 100}, **remote(settings)) as cam:
        frames = cam.frames(timeout=20)
        seen = [next(frames).index for _ in range(20)]
        pid = cam.stats.worker_pid
        launcher = cam.launcher
        ports = sorted(t.local_port for t in launcher.tunnels)
        _link(acq, "acq1", "down")
        up = threading.Timer(cut_s, _link, args=(acq, "acq1", "up"))
        up.start()
        up_at = time.monotonic() + cut_s
        try:
            for frame in frames:
                seen.append(frame.index)
                if time.monotonic() > up_at:
                    break
            back = time.monotonic() - up_at
            seen += [next(frames).index for _ in range(100)]
        finally:
            up.join()
            _link(acq, "acq1", "up")
        stats = cam.stats
        missing = set(range(seen[0], seen[-1] + 1)) - set(seen)
        print(f"data back {back:.2f} s after the link returned; {len(missing)} frames lost in the cut")
        assert back < 3.0
        assert launcher.connection.reconnects == 1
        assert sorted(t.local_port for t in launcher.tunnels) == ports
        assert stats.worker_pid == pid and remote_alive(acq, "acq1", pid)  # not restarted
        assert len(missing) == stats.lost + stats.malformed == cam.gaps
        assert stats.lost > 0  # frames were in flight on the dead connection


def test_sshd_killed_and_restarted_on_the_host_is_recovered_and_the_worker_keeps_its_output(
    acq: Hosts, remote_settings: Settings
) -> None:
    if not acq.can_control:
        pytest.skip(NO_CONTROL)
    # A 6 s death window. Its session gone with sshd, the worker cannot tell a killed sshd from a
    # killed com: it waits session_grace for its com to answer before ending itself (default 0.75 s).
    settings = remote_settings.replace(heartbeat_rate=0.5, heartbeats_to_death=12, session_grace=6.0)
    host = acq.hosts[0]
    with Source(CAMERA, parameters={"shape": [4, 4], "fps": 100}, **remote(settings)) as cam:
        frames = cam.frames(timeout=20)
        seen = [next(frames).index for _ in range(10)]
        pid = cam.stats.worker_pid
        try:
            assert acq.kill_sshd(host) >= 2  # the listener and the session of our connection
            time.sleep(1.0)
        finally:
            acq.start_sshd(host)
        restarted = time.monotonic()
        seen.append(next(frames).index)
        back = time.monotonic() - restarted
        # The worker's stderr pipe died with its session: its next log line must not end it.
        cam.set_parameters({"shape": [4, 4], "fps": 100})
        seen += [next(frames).index for _ in range(50)]
        print(f"data back {back:.2f} s after sshd restarted")
        assert back < 3.0
        assert cam.launcher.connection.reconnects == 1
        assert cam.stats.worker_pid == pid and remote_alive(acq, "acq1", pid)
        missing = set(range(seen[0], seen[-1] + 1)) - set(seen)
        assert len(missing) == cam.stats.lost == cam.gaps
        where = f"{PYTHON} -c 'from heron_remote._paths import private_dir; print(private_dir(\"logs\"))'"
        _, log, _ = on_host(acq, "acq1", f'cat "$({where})/source-{pid}.log"')
        assert "the com's pipe broke" in log and "synthetic camera" in log


def test_after_a_cut_longer_than_the_death_window_the_restart_policy_resumes_the_stream(
    acq: Hosts, remote_settings: Settings
) -> None:
    if not acq.can_control:
        pytest.skip(NO_CONTROL)
    policy = RestartPolicy(mode="on-failure", max_restarts=1, backoff=0.5, reach_timeout=30)
    settings = remote_settings.replace(restart=policy, connect_timeout=2)  # a 1 s death window
    errors: list[WorkerError] = []
    with Source(
        CAMERA, parameters={"shape": [4, 4], "fps": 50}, on_worker_error=errors.append, **remote(settings)
    ) as cam:
        frames = cam.frames(timeout=30)
        last = [next(frames).index for _ in range(10)][-1]
        old_pid = cam.stats.worker_pid
        _link(acq, "acq1", "down")
        try:
            wait_until(lambda: cam.stats.state in ("lost", "restarting"), 10, "the com to lose the worker")
            time.sleep(2.0)  # the host stays away a while after the worker is given up
        finally:
            _link(acq, "acq1", "up")
        back = time.monotonic()
        # Frames that reached this process just before the cut may still wait in the subscriber:
        # the stream has resumed when the restarted worker's packets are published.
        wait_until(lambda: cam.stats.state == "running", 30, "the restart policy to start the worker again")
        stale = cam.stats.published - 10
        wait_until(lambda: cam.stats.published > stale + 10, 15, "a packet from the restarted worker")
        print(f"stream resumed {time.monotonic() - back:.2f} s after the link returned")
        indices = [next(frames).index for _ in range(stale + 1)]
        assert indices[0] > last and indices == sorted(set(indices))  # the index goes on; nothing twice
        assert cam.stats.restarts == 1 and cam.stats.state == "running"
        assert cam.stats.worker_pid != old_pid
        assert len(errors) == 1 and isinstance(errors[0], WorkerLostError)
        assert not remote_alive(acq, "acq1", old_pid)  # the cut-off worker ended itself


def test_a_port_taken_on_the_remote_does_not_stop_the_worker(acq: Hosts, remote_settings: Settings) -> None:
    """Remote workers bind free ports: a fixed port group that is busy on the PC is no clash."""
    if not acq.can_control:
        pytest.skip(NO_CONTROL)
    port = 29810  # below the ephemeral range, where the host's own connections take ports
    with (
        acq.hold_port(acq.hosts[0], port),
        Source(CAMERA, port=port, parameters={"shape": [4, 4]}, **remote(remote_settings)) as src,
    ):
        assert next(src.frames(timeout=15)).index == 1
        assert port not in src.launcher.ready.ports.values()


def test_a_remote_worker_killed_on_its_pc_is_noticed_within_two_beats_and_restarted(
    remote_settings: Settings,
) -> None:
    policy = RestartPolicy(mode="on-failure", max_restarts=1, backoff=0.1)
    errors: list[tuple[float, WorkerError]] = []
    src = Source(
        str(WORKERS / "flaky_worker.py"),
        parameters={"frames": 5, "death": "kill"},
        on_worker_error=lambda e: errors.append((time.time(), e)),
        **remote(remote_settings.replace(restart=policy)),
    )
    indices: list[int] = []
    with pytest.raises(WorkerError, match="was killed by a signal"), src:
        indices += (f.index for f in src.frames(timeout=20))
    assert indices == [*range(1, 6), *range(7, 12)] and src.stats.restarts == 1 == src.gaps  # one skipped
    for noticed, error in errors:
        died = float(re.search(r"DYING AT (\S+)", "\n".join(error.stderr_tail)).group(1))
        print(f"remote SIGKILL noticed after {noticed - died:.3f} s")
        assert noticed - died < 2 * remote_settings.heartbeat_rate
