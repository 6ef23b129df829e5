"""The direct transport: CurveZMQ straight from the PC's address, SSH only to start, watch and key it.

Real sshd in network namespaces (or compose hosts), real CurveZMQ, the hosts' real firewall
(iptables, through the acq control API).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from heron_remote import (
    DecodeError,
    DirectUnreachableError,
    RestartPolicy,
    Settings,
    Source,
    StatusBoard,
    WorkerError,
)
from heron_remote._linkkeys import KEYS_PREFIX, LinkKeys
from heron_remote._threads import KeptThread
from heron_remote.examples.synthetic_camera import expected_frame, frame_header
from heron_remote.status import render
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import (
    CAMERA,
    ECHO_WORKER,
    NO_CONTROL,
    PYTHON,
    WORKERS,
    edit_registry,
    on_host,
    readme_row,
    remote_alive,
    wait_until,
)

pytestmark = pytest.mark.multihost
Hosts = AcqHosts | ExternalHosts


def _direct(acq: Hosts, settings: Settings, tmp_path: Path, transport: str = "direct", name: str = "acq1") -> dict:
    return {
        "settings": settings.replace(ssh_info=edit_registry(acq, tmp_path, name, transport=transport)),
        "host": name,
    }


def _host(acq: Hosts, name: str = "acq1"):
    return next(h for h in acq.hosts if h.name == name)


def _pc_address(acq: Hosts, name: str = "acq1") -> str:
    return socket.gethostbyname(_host(acq, name).address)


def test_frames_come_straight_from_the_pcs_address_over_curve(
    acq: Hosts, remote_settings: Settings, tmp_path: Path
) -> None:
    with Source(
        CAMERA, parameters={"shape": [64, 80], "dtype": "uint16", "fps": 200}, **_direct(acq, remote_settings, tmp_path)
    ) as cam:
        got = []
        for index, _, (frame,) in cam.frames(timeout=15):
            n, captured = frame_header(frame)
            assert n == index
            np.testing.assert_array_equal(frame, expected_frame(n, (64, 80), "uint16", captured))
            got.append(index)
            if len(got) == 100:
                break
        assert got == list(range(got[0], got[0] + 100)) and cam.gaps == 0
        launcher = cam.launcher
        assert launcher.transport == "direct" and launcher.tunnels == ()  # no SSH forward carries the data
        assert launcher.keys.mechanism == "curve" and len(launcher.ready.server_key) == 40
        # The worker listens on the PC's address, not its loopback, on the ports it reported.
        address = _pc_address(acq)
        _, out, _ = on_host(acq, "acq1", "cat /proc/net/tcp")
        listening = {
            (".".join(str(int(a[i : i + 2], 16)) for i in (6, 4, 2, 0)), int(p, 16))
            for a, p, state in (
                (line.split()[1].split(":")[0], line.split()[1].split(":")[1], line.split()[3])
                for line in out.splitlines()[1:]
            )
            if state == "0A"
        }
        assert {(address, port) for port in launcher.ready.ports.values()} <= listening
        assert cam.status().transport == "direct"
        pid = cam.stats.worker_pid
    assert not remote_alive(acq, "acq1", pid)


ATTACKER = str(WORKERS / "direct_attacker.py")


def _attack(acq: Hosts, src: Source, user: str | None) -> dict:
    """Run the attacker for 3 s: on the PC as ``user``, or (None) from this machine, a peer on the LAN."""
    ready = src.launcher.ready
    argv = [PYTHON, ATTACKER, _pc_address(acq), json.dumps(ready.ports), ready.server_key, "3"]
    if user is None:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        code, stdout, stderr = out.returncode, out.stdout, out.stderr
    else:
        code, stdout, stderr = on_host(acq, "acq1", shlex.join([*argv, user]))
    assert code == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1])


def test_another_account_on_the_pc_or_the_lan_can_neither_take_packets_nor_send_pulses_or_parameters(
    acq: Hosts, remote_settings: Settings, tmp_path: Path
) -> None:
    if not acq.can_control:
        pytest.skip(NO_CONTROL)
    user = f"hrdx{os.getpid() % 10000}"
    host = _host(acq)
    acq.add_user(host, user, f"pw-{os.urandom(8).hex()}")
    try:
        with Source(
            ECHO_WORKER,
            outputs=("Counter", "Echo"),
            parameters={"ok": True, "gain": 1},
            **_direct(acq, remote_settings, tmp_path),
        ) as src:
            frames = src.frames(timeout=15)
            indices = [next(frames).index]
            # The worker runs before its parameters arrive (their echo is None until then): wait for
            # them, so any other echo during the attacks is an injection.
            for _ in range(1000):  # 10 s of packets
                echo = next(frames)
                indices.append(echo.index)
                if echo.arrays[1] is not None and echo.arrays[1]["parameters"] is not None:
                    break
            else:
                pytest.fail("the worker never echoed its parameters")
            pid = src.stats.worker_pid
            reports: list[dict] = []
            for who in (user, None):
                attack = KeptThread.start_new(lambda who=who: reports.append(_attack(acq, src, who)), name="attack")
                echoes = []
                while attack.is_alive():
                    frame = next(frames)
                    indices.append(frame.index)
                    if frame.arrays[1] is not None:
                        echoes.append(frame.arrays[1]["parameters"])
                attack.join(1)
                assert attack.error is None, attack.error
                assert echoes and all(e == {"ok": True, "gain": 1} for e in echoes)  # no parameters injected
            print(f"attacks: {reports}; the worker refused {src.stats.worker_refused} handshakes")
            for report in reports:
                assert report["got"] == dict.fromkeys(report["got"], 0)  # not one packet, not one beacon
            # Its handshakes reached the worker and were refused there (ZAP); the com lost nothing to them.
            wait_until(lambda: src.stats.worker_refused > 0, 5, "the worker to report the refused handshakes")
            assert indices == list(range(indices[0], indices[-1] + 1)) and src.stats.lost == 0 and src.gaps == 0
            assert src.stats.worker_pid == pid and src.stats.state == "running"
    finally:
        acq.remove_user(host, user)


def test_a_firewall_on_the_pc_sends_direct_through_the_tunnel_within_seconds_and_says_why(
    acq: Hosts, remote_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if not acq.can_control:
        pytest.skip(NO_CONTROL)
    caplog.set_level(logging.INFO, logger="heron_remote")
    settings = remote_settings.replace(heartbeats_to_death=25)  # a 5 s death window: the check takes a third
    host = _host(acq)
    acq.block_inbound(host)
    try:
        started = time.monotonic()
        with Source(CAMERA, parameters={"shape": [8, 8], "fps": 100}, **_direct(acq, settings, tmp_path)) as cam:
            frames = cam.frames(timeout=30)
            got = [next(frames).index]
            took = time.monotonic() - started
            got += [next(frames).index for _ in range(50)]
            assert got == list(range(got[0], got[0] + 51)) and cam.gaps == 0
            launcher = cam.launcher
            assert launcher.transport == "tunnel (direct unreachable)" and len(launcher.tunnels) == 4
            # The tunnels lead to the worker's ports on the PC's address, still CurveZMQ.
            assert {t.remote[0] for t in launcher.tunnels} == {_pc_address(acq)} and launcher.keys.mechanism == "curve"
            assert cam.status().transport == "tunnel (direct unreachable)"
    finally:
        acq.unblock_inbound(host)
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "direct transport to acq1" in r.getMessage()
    ]
    print(f"first frame {took:.2f} s after the start, through the tunnel; {warnings[0].getMessage()}")
    message = warnings[0].getMessage()
    assert _pc_address(acq) in message and "cannot be reached" in message and "the SSH tunnel instead" in message
    assert re.search(r"let acq1 accept TCP from \S+ to " + re.escape(_pc_address(acq)), message)
    assert took < settings.death_window / 3 + settings.start_timeout


def test_direct_only_behind_a_firewall_fails_clearly_and_leaves_nothing(
    acq: Hosts, remote_settings: Settings, tmp_path: Path
) -> None:
    if not acq.can_control:
        pytest.skip(NO_CONTROL)
    host = _host(acq)
    acq.block_inbound(host)
    try:
        src = Source(CAMERA, parameters={"shape": [8, 8]}, **_direct(acq, remote_settings, tmp_path, "direct-only"))
        with pytest.raises(DirectUnreachableError) as caught, src:
            next(src.frames(timeout=30))
    finally:
        acq.unblock_inbound(host)
    message = str(caught.value)
    print(message)
    assert 'server acq1 has "transport": "direct-only" but this rig cannot reach the worker' in message
    assert _pc_address(acq) in message and "no answer within" in message
    assert readme_row(caught.value)
    pid = src.launcher.pid
    assert pid is not None and not remote_alive(acq, "acq1", pid)  # the worker it started was stopped


def test_a_short_link_cut_over_direct_is_bridged_by_the_same_worker(
    acq: Hosts, remote_settings: Settings, tmp_path: Path
) -> None:
    if not acq.can_control:
        pytest.skip(NO_CONTROL)
    settings = remote_settings.replace(heartbeat_rate=0.5, heartbeats_to_death=12, link_timeout=1.5)
    cut_s = 3.0
    host = _host(acq)
    with Source(CAMERA, parameters={"shape": [4, 4], "fps": 100}, **_direct(acq, settings, tmp_path)) as cam:
        frames = cam.frames(timeout=20)
        seen = [next(frames).index for _ in range(20)]
        pid = cam.stats.worker_pid
        acq.set_link(host, up=False)
        up = threading.Timer(cut_s, acq.set_link, args=(host,), kwargs={"up": True})
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
            acq.set_link(host, up=True)
        stats = cam.stats
        missing = set(range(seen[0], seen[-1] + 1)) - set(seen)
        print(f"direct: data back {back:.2f} s after the link returned; {len(missing)} frames lost in the cut")
        assert back < 5.0
        assert cam.launcher.transport == "direct" and cam.launcher.tunnels == ()
        assert stats.worker_pid == pid and remote_alive(acq, "acq1", pid)  # not restarted
        assert len(missing) == stats.lost + stats.malformed == cam.gaps


def test_a_direct_worker_killed_on_its_pc_is_restarted_with_new_keys(
    acq: Hosts, remote_settings: Settings, tmp_path: Path
) -> None:
    policy = RestartPolicy(mode="on-failure", max_restarts=1, backoff=0.1)
    settings = remote_settings.replace(restart=policy)
    keys = []
    src = Source(
        str(WORKERS / "flaky_worker.py"), parameters={"frames": 5, "death": "kill"}, **_direct(acq, settings, tmp_path)
    )
    indices: list[int] = []
    with pytest.raises(WorkerError, match="was killed by a signal"), src:
        for frame in src.frames(timeout=20):
            indices.append(frame.index)
            if src.launcher.ready.server_key not in keys:
                keys.append(src.launcher.ready.server_key)
            assert src.launcher.transport == "direct"
    assert indices == [*range(1, 6), *range(7, 12)] and src.stats.restarts == 1 == src.gaps
    assert len(keys) == 2  # each launch has a key of its own


def test_the_status_board_shows_each_sources_transport(acq: Hosts, remote_settings: Settings, tmp_path: Path) -> None:
    settings = remote_settings.replace(ssh_info=edit_registry(acq, tmp_path, "acq1", transport="direct"))
    with (
        Source(CAMERA, name="straight", parameters={"shape": [4, 4]}, settings=settings, host="acq1") as a,
        Source(CAMERA, name="tunnelled", parameters={"shape": [4, 4]}, settings=settings, host="acq2") as b,
        Source(CAMERA, name="here", parameters={"shape": [4, 4]}, settings=settings) as c,
        StatusBoard("127.0.0.1", settings.ports.proof_of_life_publish) as board,
    ):
        for src in (a, b, c):
            next(src.frames(timeout=15))
        wait_until(lambda: len(board.poll(0.5)) == 3, 10, "the three sources' reports")
        rows = board.sources
        assert {n: s.transport for n, s in rows.items()} == {
            "straight": "direct",
            "tunnelled": "tunnel",
            "here": "local",
        }
        lines = render(rows).splitlines()
        at = lines[0].index("via")  # the column after node and host
        screen = {line.split()[0]: line[at : at + 7].strip() for line in lines[1:]}
        assert screen == {"straight": "direct", "tunnelled": "tunnel", "here": "local"}


def test_a_direct_worker_that_finishes_delivers_every_frame_and_ends_quietly(
    acq: Hosts, remote_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its end waits for its data context, whose ZAP handler must let go: nothing hangs, nothing is lost."""
    caplog.set_level(logging.INFO, logger="heron_remote")
    with Source(str(WORKERS / "finite_worker.py"), **_direct(acq, remote_settings, tmp_path)) as src:
        assert [f.arrays[0][0, 0] for f in src.frames(timeout=15)] == list(range(1, 21))
        assert src.launcher.transport == "direct"
        assert src.launcher.returncode() == 0
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        ("short", "must be a z85 CurveZMQ key of 40 characters"),
        ("~" * 40, "is not z85"),
        (None, "must be a z85 CurveZMQ key"),
    ],
)
def test_a_curve_key_line_carries_only_the_public_key_and_a_bad_one_is_refused(client: object, reason: str) -> None:
    keys = LinkKeys.make("curve", link_timeout=3.0)
    line = keys.to_line()
    assert keys.client_secret.decode() not in line and "link_timeout" not in line
    assert LinkKeys.from_line(line).client_public == keys.client_public
    bad = KEYS_PREFIX + json.dumps({"v": 1, "mechanism": "curve", "client": client}) + "\n"
    with pytest.raises(DecodeError, match=reason):
        LinkKeys.from_line(bad)
    with pytest.raises(DecodeError, match="the worker's server key must be"):
        keys.with_server("")  # a worker too old to serve CurveZMQ reports none


def test_over_direct_arrays_come_packed_and_the_pcs_clock_offset_is_found(
    acq: Hosts, remote_settings: Settings, tmp_path: Path
) -> None:
    """Compression and capture times ride the direct transport as they ride the tunnel: the
    heartbeat thread's timing socket presents the launch's curve key, and packed frames unpack."""
    from heron_remote import Compression
    from heron_remote.com.clock import MIN_SAMPLES, WINDOW
    from heron_remote.examples.natural_camera import NATURAL_CAMERA, frame

    from .test_capture_time import OFFSET_S, OFFSET_WORKER

    direct = _direct(acq, remote_settings, tmp_path)
    settings = direct["settings"]
    with Source(OFFSET_WORKER, parameters={"shape": [120, 160], "fps": 100}, **direct) as cam:
        assert cam.launcher.transport == "direct" and cam.launcher.keys.mechanism == "curve"
        wait_until(lambda: cam.stats.clock_offset_s is not None, 10 * settings.heartbeat_rate * MIN_SAMPLES, "offset")
        time.sleep(settings.heartbeat_rate * (WINDOW + 1))
        assert abs(cam.stats.clock_offset_s - OFFSET_S) < 0.001 and cam.stats.worker_refused == 0
    packing = Compression(codec="zstd", level=1, threads=2)
    shape = (240, 320)
    camera = {"shape": list(shape), "fps": 200, "count": 150}
    with Source(NATURAL_CAMERA, parameters=camera, compression=packing, **direct) as cam:
        assert cam.launcher.transport == "direct"
        got = [f.index for f in cam.frames(timeout=15) if np.array_equal(f.arrays[0], frame(f.index, shape))]
        stats = cam.stats
    assert got == list(range(1, 151))
    assert stats.packed_bytes == stats.bytes_received and stats.compression_ratio and stats.compression_ratio > 1.1


def test_the_check_probe_holds_the_rigs_connection_until_the_rig_says_it_tried() -> None:
    """The probe keeps the connection it accepted until the rig's line: a listener that exited
    with it still queued reset it, and a busy rig read that reset as "cannot reach"."""
    import sys

    from heron_remote.ssh.check_direct import direct_probe_argv

    probe = subprocess.Popen(
        direct_probe_argv([sys.executable], "127.0.0.1", wait=10.0),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert probe.stdout is not None and probe.stdin is not None
        word, port = probe.stdout.readline().split()
        assert word == "PORT"
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as conn:
            assert probe.stdout.readline().strip() == "ACCEPTED"
            time.sleep(0.3)  # a probe that had gone would have reset or ended the connection by now
            conn.settimeout(0.2)
            with pytest.raises(TimeoutError):
                conn.recv(1)
            assert probe.poll() is None
        probe.stdin.write("tried\n")
        probe.stdin.flush()
        assert probe.wait(timeout=5) == 0
    finally:
        probe.kill()
        probe.wait(timeout=5)


def test_check_tells_whether_this_rig_reaches_the_pc_for_the_direct_transport(acq: Hosts, tmp_path: Path) -> None:
    """``heron-remote check`` on a direct server opens a port on the PC's address as a worker does
    and connects to it: ok when it can, and behind a firewall the rule to add (a FAIL only for
    "direct-only", since "direct" falls back to the tunnel)."""
    from heron_remote.ssh.check import check_server

    if not acq.can_control:
        pytest.skip(NO_CONTROL)
    address = _pc_address(acq)
    direct = edit_registry(acq, tmp_path, "acq1", transport="direct")
    report = check_server("acq1", ssh_info=direct)
    said = "\n".join(report.lines)  # whole, for a failure to say why
    assert report.ok, said
    reached = rf"ok   direct transport: this rig reaches {re.escape(address)} port \d+"
    assert any(re.match(reached, s) for s in report.lines), said
    host = _host(acq)
    acq.block_inbound(host)
    try:
        fallback = check_server("acq1", ssh_info=direct)
        only = check_server("acq1", ssh_info=edit_registry(acq, tmp_path, "acq1", transport="direct-only"))
    finally:
        acq.unblock_inbound(host)
    print(fallback)
    assert fallback.ok, fallback
    line = next(s for s in fallback.lines if "direct transport" in s)
    assert (
        line.startswith("WARN ")
        and f"cannot reach {address} port" in line
        and "fall back to the SSH tunnel" in line
        and "accept TCP" in line
    )
    assert not only.ok
    assert any(s.startswith("FAIL direct transport") and "launches will fail" in s for s in only.lines), only
    # The probe ended on the PC either way: nothing of it listens any more.
    _, out, _ = on_host(acq, "acq1", "ps -eo args")
    assert "base64.b64decode" not in out
