"""Only its com may talk to a worker (issue 14, part 1: security F8).

A worker binds its four sockets on its PC's loopback, open to every account there; its tunnels
listen on the rig's loopback, open to every account there. Each attack is made for real by a
second account (made here, removed after) with Python's standard library alone
(``tests/zmtp_attack.py``), next to a test that the legitimate use still works. Where it tells
something, the same attack is made on a link without keys (the benchmarks' switch), to show
that the test would see it succeed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pwd
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from heron_remote import DecodeError, RestartPolicy, Settings, Source, WorkerStartError
from heron_remote._linkkeys import KEYS_PREFIX, MAX_LINE, LinkKeys, unauthenticated_launches
from heron_remote._protocol import EXIT_BAD_START, WorkerArgs
from heron_remote.com.heartbeat import Heartbeat
from heron_remote.ssh import HostConnection, Registry
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import (
    CAMERA,
    ECHO_WORKER,
    NO_CONTROL,
    PYTHON,
    ComScript,
    edit_registry,
    error_table,
    local_account,
    pid_alive,
    remote_alive,
    wait_until,
)

ATTACK = Path(__file__).parent / "zmtp_attack.py"
EVIL = {"ok": True, "evil": 1}
Hosts = AcqHosts | ExternalHosts


# -- the key line ----------------------------------------------------------------------------------

SECRET = "0123456789abcdef" * 4


def _line(body: object) -> bytes:
    return (KEYS_PREFIX + json.dumps(body) + "\n").encode()


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"", "stdin closed before its com sent"),
        (b"stop\n", "must start with 'HERON_REMOTE_KEYS'"),
        (SECRET.encode() + b"\n", "must start with"),
        (KEYS_PREFIX.encode() + b"{\n", "JSON cannot be read"),
        (KEYS_PREFIX.encode() + b"\xff\xfe\n", "JSON cannot be read"),
        (_line([1, "plain"]), "must hold a JSON object, got list"),
        (_line({"mechanism": "plain", "secret": SECRET}), "version None"),
        (_line({"v": True, "mechanism": "plain", "secret": SECRET}), "version True"),
        (_line({"v": 2, "mechanism": "plain", "secret": SECRET}), "version 2; this worker reads 1"),
        (_line({"v": 1, "secret": SECRET}), "mechanism None"),
        (_line({"v": 1, "mechanism": "PLAIN", "secret": SECRET}), "mechanism 'PLAIN'"),
        (_line({"v": 1, "mechanism": "plain"}), "64 lower-case hex digits"),
        (_line({"v": 1, "mechanism": "plain", "secret": SECRET[:-1]}), "64 lower-case hex digits"),
        (_line({"v": 1, "mechanism": "plain", "secret": SECRET.upper()}), "64 lower-case hex digits"),
        (_line({"v": 1, "mechanism": "plain", "secret": SECRET + "\n"}), "64 lower-case hex digits"),
        (_line({"v": 1, "mechanism": "plain", "secret": int("1" * 64)}), "64 lower-case hex digits"),
        (KEYS_PREFIX.encode() + b" " * MAX_LINE + b"\n", f"longer than {MAX_LINE} bytes"),
    ],
)
def test_the_key_line_parser_refuses_bad_input_saying_what_is_wrong(line: bytes, says: str) -> None:
    with pytest.raises(DecodeError) as caught:
        LinkKeys.from_line(line)
    assert says in str(caught.value)


def test_keys_are_fresh_for_each_launch_travel_whole_and_are_never_shown() -> None:
    first, second = LinkKeys.make(), LinkKeys.make()
    assert first.mechanism == "plain" and first.secret != second.secret
    assert LinkKeys.from_line(first.to_line()) == first
    assert LinkKeys.from_line(first.to_line().encode()) == first
    assert first.secret not in repr(first) and first.secret not in str(first)
    with unauthenticated_launches():
        assert LinkKeys.make().mechanism == "none"
    assert LinkKeys.make().mechanism == "plain"


def test_a_worker_whose_first_line_is_not_its_keys_ends_saying_why() -> None:
    args = WorkerArgs(port=0, parameters_topic="Parameters##keys##0", num_sending_topics=1, control="pipe")
    for first in ("stop\n", ""):
        out = subprocess.run(
            [PYTHON, ECHO_WORKER, *args.to_argv()], input=first, capture_output=True, text=True, timeout=30
        )
        assert out.returncode == EXIT_BAD_START, out.stderr
        assert "cannot read the key line from its com" in out.stderr and "Traceback" not in out.stderr


def test_a_worker_that_gets_no_key_fails_its_start_as_the_readme_says(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a com of another heron_remote version (one that sends no key) meets."""
    monkeypatch.setattr(LinkKeys, "to_line", lambda self: "stop\n")
    with pytest.raises(WorkerStartError) as caught, Source(CAMERA, settings=settings):
        pass
    error = caught.value
    assert error.returncode == EXIT_BAD_START and "cannot read the key line from its com" in str(error)
    rows = [patterns for kind, patterns, _, _ in error_table() if kind == "WorkerStartError"]
    assert any(len(p) > 1 and "key\\ line" in p[1].pattern and p[1].search(str(error)) for p in rows), str(error)


# -- the attacker ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other() -> Iterator[str]:
    """A second local account, as another lab member has on a shared PC or rig."""
    with local_account("hrau") as name:
        yield name


def attack(user: str | None, port: int, mode: str, *args: object) -> dict[str, Any]:
    """``zmtp_attack.py`` against 127.0.0.1:``port`` of this machine, as ``user`` (None: this account)."""
    argv = ["/usr/bin/python3", str(ATTACK), "127.0.0.1", str(port), mode, *map(str, args)]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["uid"] == (os.getuid() if user is None else pwd.getpwnam(user).pw_uid)
    return result


def in_background(run: Callable[[], dict[str, Any]]) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(run()))
    thread.start()
    return thread, result


def evil_message() -> str:
    return json.dumps([[json.dumps(EVIL).encode().hex()]])


def echo_of(src: Source, value: dict, timeout: float = 10) -> dict:
    """Set ``value`` as the echo worker's parameters; its echo (what the worker holds)."""
    src.set_parameters(value)
    deadline = time.monotonic() + timeout
    for frame in src.frames(timeout=timeout):
        echo = frame.arrays[1]
        assert echo is None or echo["parameters"] != EVIL, "the injected parameters reached the worker"
        if echo is not None and echo["parameters"] == value:
            return echo
        assert time.monotonic() < deadline, f"the worker did not echo {value!r} within {timeout} s"
    raise AssertionError("the source ended")


def refusals_reported(src: Source, at_least: int) -> int:
    """Wait until the worker's beacons have told the com of ``at_least`` refused connections."""
    wait_until(lambda: src.stats.worker_refused >= at_least, 10, f"the com to hear of {at_least} refusals")
    return src.stats.worker_refused


# -- on the PC the worker runs on (here) -------------------------------------------------------------


def test_a_source_streams_and_takes_parameters_over_its_authenticated_link(settings: Settings) -> None:
    with Source(ECHO_WORKER, outputs=("Counter", "Echo"), settings=settings) as src:
        assert src.launcher is not None and src.launcher.keys.mechanism == "plain"
        assert echo_of(src, {"ok": True, "k": 1})["initialised"] is True
        list(src.frames(limit=100, timeout=10))
        assert echo_of(src, {"ok": True, "k": 2})["parameters"] == {"ok": True, "k": 2}
        assert src.stats.lost == 0 and src.gaps == 0
        assert src.stats.worker_refused == 0 and src.status().rejected == 0


@pytest.mark.parametrize("keys", ["per launch", "none (benchmarks only)"])
def test_another_account_cannot_take_packets_from_a_worker_on_loopback_tcp(
    settings: Settings, other: str, keys: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F8 where a worker's data is on loopback TCP (a remote worker's, or where no Unix socket can
    serve: Windows, a folder path too long). Only the launch's key keeps the other account out."""
    monkeypatch.setattr("heron_remote.launcher.new_data_socket", lambda: None)  # as on such a machine
    keyless = keys.startswith("none")
    cam = Source(CAMERA, parameters={"shape": [8, 8], "fps": 200}, settings=settings)
    with unauthenticated_launches() if keyless else contextlib.nullcontext(), cam:  # launched on entry
        frames = cam.frames(timeout=10)
        next(frames)
        assert cam.launcher is not None and cam.launcher.ready is not None
        thief, took = in_background(lambda: attack(other, cam.launcher.ready.ports["data"], "receive", 2))
        while thief.is_alive():
            next(frames)
        thief.join()
        for _ in range(20):  # the com sees a loss at the next packet that arrives
            next(frames)
        print(f"keys {keys}: the other account {took}; the com counted {cam.stats.lost} lost")
        if keyless:  # the attack works on a link without keys: this test can see it
            assert took["received"] > 0 and cam.stats.lost > 0
            return
        assert took["accepted"] == took["received"] == 0 and took["refused"] >= 1
        assert cam.stats.lost == 0 and cam.gaps == 0
        assert refusals_reported(cam, took["refused"]) == took["refused"]
        assert cam.status().rejected == took["refused"]


def test_another_account_cannot_take_packets_from_a_local_worker(settings: Settings, other: str) -> None:
    """F8: another account took 11 packets from a worker (the com counted them as lost). A local
    worker's data now leaves through a Unix socket in this account's private folder: the other
    account cannot even connect (a worker on a PC binds TCP with keys: the PC tests below)."""
    with Source(CAMERA, parameters={"shape": [8, 8], "fps": 200}, settings=settings) as cam:
        frames = cam.frames(timeout=10)
        next(frames)
        assert cam.launcher is not None and cam.launcher.ready is not None
        path = cam.launcher.ready.endpoints["data"].removeprefix("ipc://")
        connect = f"import socket; socket.socket(socket.AF_UNIX).connect({path!r}); print('CONNECTED')"
        theirs = subprocess.run(
            ["runuser", "-u", other, "--", "/usr/bin/python3", "-c", connect],
            capture_output=True,
            text=True,
            timeout=30,
        )
        mine = subprocess.run(["/usr/bin/python3", "-c", connect], capture_output=True, text=True, timeout=30)
        for _ in range(20):
            next(frames)
        print(f"the other account: {theirs.stderr.strip().splitlines()[-1:]}; this one: {mine.stdout.strip()}")
        assert theirs.returncode != 0 and "PermissionError" in theirs.stderr and "CONNECTED" not in theirs.stdout
        assert mine.stdout.strip() == "CONNECTED"  # the socket is there: only the other account is kept out
        assert cam.stats.lost == 0 and cam.gaps == 0


def test_another_account_cannot_inject_parameters_or_pulses_into_a_worker(settings: Settings, other: str) -> None:
    with Source(ECHO_WORKER, outputs=("Counter", "Echo"), settings=settings) as src:
        echo_of(src, {"ok": True, "k": 1})
        assert src.launcher is not None and src.launcher.ready is not None
        ports = src.launcher.ready.ports
        injected = attack(other, ports["parameters"], "send", "PUSH", evil_message())
        pulsed = attack(other, ports["heartbeat"], "pulse", 1)
        print(f"parameters: {injected}; pulses: {pulsed}")
        assert injected["accepted"] == pulsed["accepted"] == 0 and injected["sent"] == pulsed["sent"] == 0
        refused = injected["refused"] + pulsed["refused"]
        assert refusals_reported(src, refused) == refused
        assert echo_of(src, {"ok": True, "k": 2})["parameters"] == {"ok": True, "k": 2}  # never EVIL
        assert src.stats.worker_rejected == 0  # nothing got as far as the decoders


def test_a_restarted_worker_gets_a_new_key_and_the_stream_goes_on(settings: Settings) -> None:
    flaky = str(Path(__file__).parent / "workers" / "flaky_worker.py")
    policy = RestartPolicy(mode="on-failure", max_restarts=2, backoff=0.1)
    with Source(flaky, parameters={"frames": 5, "death": "kill"}, settings=settings.replace(restart=policy)) as src:
        keys: list[LinkKeys] = []
        for frames, _ in enumerate(src.frames(timeout=15), 1):
            assert src.launcher is not None
            if not keys or keys[-1] != src.launcher.keys:
                keys.append(src.launcher.keys)
            if src.stats.restarts == 2 and len(keys) == 3 and frames >= 11:
                break
        assert len({k.secret for k in keys}) == 3  # a key per launch
        assert src.stats.worker_refused == 0


def test_a_wrong_key_or_an_earlier_launchs_key_is_refused(settings: Settings) -> None:
    with Source(CAMERA, parameters={"shape": [4, 4], "fps": 100}, settings=settings) as first:
        next(first.frames(timeout=10))
        assert first.launcher is not None
        earlier = first.launcher.keys
    with Source(CAMERA, parameters={"shape": [4, 4], "fps": 100}, settings=settings) as cam:
        frames = cam.frames(timeout=10)
        next(frames)
        assert cam.launcher is not None and cam.launcher.ready is not None and cam.launcher.keys != earlier
        context = zmq.Context.instance()
        for keys in (earlier, LinkKeys.make()):
            thief = context.socket(zmq.PULL)
            thief.linger = 0
            keys.apply_client(thief)
            thief.connect(cam.launcher.endpoint("data"))  # this account's Unix socket: only the key keeps it out
            try:
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    next(frames)
                    assert not thief.poll(0), "a wrong key took a packet"
            finally:
                thief.close()
        # ZeroMQ tries a refused connection again (after its back-off): at least once per key.
        assert refusals_reported(cam, 2) >= 2
        for _ in range(20):
            next(frames)
        assert cam.stats.lost == 0


def _saw(monitor: zmq.Socket, event: int, timeout: float) -> bool:
    """Whether the socket ``monitor`` watches sees ``event`` within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if monitor.poll(int(left * 1000) + 1) and recv_monitor_message(monitor)["event"] == event:
            return True
    return False


def _bind_at(made: list[zmq.Socket], context: zmq.Context, kind: int, endpoint: str = "") -> tuple[str, zmq.Socket]:
    """A socket bound on a fresh loopback port or on ``endpoint``, and a monitor of its connections
    made before it binds (so none is missed); both kept in ``made``, to close."""
    sock = context.socket(kind)
    sock.linger = 0
    monitor = sock.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
    made += [monitor, sock]
    if not endpoint:
        return f"tcp://127.0.0.1:{sock.bind_to_random_port('tcp://127.0.0.1')}", monitor
    deadline = time.monotonic() + 5
    while True:  # a socket closed just now lets go of its port a moment later (in ZeroMQ's I/O thread)
        try:
            sock.bind(endpoint)
            return endpoint, monitor
        except zmq.ZMQError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_the_heartbeat_thread_forgets_a_gone_worker_s_ports() -> None:
    """Both of the com heartbeat thread's sockets (its pulses, and the liveness socket on which it
    times the answers for the clock offset) leave a gone worker's ports when the com forgets it: a
    program that binds them next gets no connection, so neither the gone launch's key nor a say in
    the clock estimate. Without the forget, it would get both connections (shown first)."""
    context = zmq.Context()
    stopping = threading.Event()
    heartbeat = Heartbeat(context, 0.05, stopping, logging.LoggerAdapter(logging.getLogger(__name__), {}))
    keys = LinkKeys("none")  # NULL on both ends: handshakes succeed, so a connection ends only when closed
    heartbeat.start()
    made: list[zmq.Socket] = []

    def bind_both(pulses_at: str = "", beacons_at: str = "") -> tuple[str, str, list[zmq.Socket]]:
        pulses_at, pulses = _bind_at(made, context, zmq.PULL, pulses_at)
        beacons_at, beacons = _bind_at(made, context, zmq.PUB, beacons_at)
        return pulses_at, beacons_at, [pulses, beacons]

    def close_all() -> None:
        for sock in made:
            if sock.type != zmq.PAIR:
                sock.disable_monitor()
            sock.close()
        made.clear()

    try:
        pulses_at, beacons_at, monitors = bind_both()
        heartbeat.aim(pulses_at, keys, liveness=beacons_at)
        assert [_saw(m, zmq.EVENT_ACCEPTED, 5) for m in monitors] == [True, True]
        close_all()
        # A program binds the gone worker's ports while the com still points at them: both reconnect.
        monitors = bind_both(pulses_at, beacons_at)[2]
        assert [_saw(m, zmq.EVENT_ACCEPTED, 5) for m in monitors] == [True, True]
        heartbeat.forget()
        assert [_saw(m, zmq.EVENT_DISCONNECTED, 5) for m in monitors] == [True, True]
        close_all()
        # Another program binds them once forgotten: nothing comes, within more than the longest back-off.
        monitors = bind_both(pulses_at, beacons_at)[2]
        assert [_saw(m, zmq.EVENT_ACCEPTED, 3) for m in monitors] == [False, False]
        assert heartbeat.alive and heartbeat.error is None
    finally:
        stopping.set()
        heartbeat.join(5)
        close_all()
        context.term()


# -- on the rig: the tunnel ports ----------------------------------------------------------------------


def _tunnels(src: Source) -> dict[str, Any]:
    """The source's tunnels on the rig, by the worker's channel they lead to."""
    assert src.launcher is not None and src.launcher.ready is not None
    by_port = {t.remote[1]: t for t in src.launcher.tunnels}  # type: ignore[attr-defined]
    return {channel: by_port[port] for channel, port in src.launcher.ready.ports.items()}


def _threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


@pytest.mark.multihost
def test_another_account_on_the_rig_gets_nothing_through_the_tunnel_ports(
    remote_settings: Settings, other: str
) -> None:
    with Source(ECHO_WORKER, outputs=("Counter", "Echo"), settings=remote_settings, host="acq1") as src:
        echo_of(src, {"ok": True, "k": 1})
        tunnels = _tunnels(src)
        thief, took = in_background(lambda: attack(other, tunnels["data"].local_port, "receive", 2))
        frames = src.frames(timeout=10)
        while thief.is_alive():
            next(frames)
        thief.join()
        injected = attack(other, tunnels["parameters"].local_port, "send", "PUSH", evil_message())
        pulsed = attack(other, tunnels["heartbeat"].local_port, "pulse", 1)
        print(f"through the tunnels: data {took}; parameters {injected}; pulses {pulsed}")
        for result in (took, injected, pulsed):
            assert result["accepted"] == result["received"] == result["sent"] == 0 and result["refused"] >= 1
        refused = took["refused"] + injected["refused"] + pulsed["refused"]
        # Closed by the tunnel at once: not one reached the PC.
        assert sum(t.refused for t in tunnels.values()) == refused
        assert echo_of(src, {"ok": True, "k": 2})["parameters"] == {"ok": True, "k": 2}
        assert src.stats.lost == 0 and src.stats.worker_refused == 0


@pytest.mark.multihost
def test_idle_connections_to_the_tunnel_ports_cost_the_rig_no_threads(remote_settings: Settings, other: str) -> None:
    """F8: idle connections to a tunnel port cost the rig a thread each (27 -> 145 threads in 9 s)."""
    with Source(CAMERA, parameters={"shape": [8, 8], "fps": 100}, settings=remote_settings, host="acq1") as cam:
        frames = cam.frames(timeout=10)
        baseline, deadline = 0, time.monotonic() + 1.0
        while time.monotonic() < deadline:
            next(frames)
            baseline = max(baseline, _threads())
        port = _tunnels(cam)["data"].local_port
        theirs = 40
        holder, held = in_background(lambda: attack(other, port, "hold", theirs, 3))
        peak, streamed = 0, 0
        while holder.is_alive():
            next(frames)
            streamed += 1
            peak = max(peak, _threads())
        holder.join()
        print(
            f"threads: {baseline} before, at most {peak} while {theirs} idle connections of another account were held"
        )
        assert held["open_at_end"] == 0  # closed at once, every one
        assert peak <= baseline + 2  # a thread each would be 40 more
        assert streamed > 100 and cam.stats.lost == 0
        # This account's own idle connections are closed too, after the greeting time (2 s).
        ours = attack(None, port, "hold", 5, 3)
        assert ours["open_at_end"] == 0


# -- on an acquisition PC: another account there ---------------------------------------------------------


class PCAttacker:
    """A second account on acquisition host acq1, logged in with its password over SSH."""

    def __init__(self, acq: Hosts, tmp: Path) -> None:
        self.acq = acq
        self.host = next(h for h in acq.hosts if h.name == "acq1")
        self.user, password = f"hrpc{os.getpid() % 10000}", f"pw-{os.urandom(8).hex()}"
        acq.add_user(self.host, self.user, password)
        self._restarted = False
        os.environ["HR_TEST_ATTACKER_PASSWORD"] = password
        try:
            acq.stop_sshd(self.host)
            self._restarted = True
            acq.start_sshd(self.host, password=True)
            registry = edit_registry(
                acq, tmp, "acq1", username=self.user, password="env:HR_TEST_ATTACKER_PASSWORD", key_file="None"
            )
            self.server = Registry.load(registry).get("acq1")
        except BaseException:
            self.close()
            raise
        self.script = ATTACK.read_text()

    def attack(self, port: int, mode: str, *args: object) -> dict[str, Any]:
        """``zmtp_attack.py`` on the PC, as this account, against the PC's 127.0.0.1:``port``."""
        words = " ".join(f"'{a}'" for a in (port, mode, *args))
        command = f"python3 - 127.0.0.1 {words} <<'HR_ATTACK'\n{self.script}\nHR_ATTACK\n"
        conn = HostConnection.acquire(self.server)
        try:
            code, out, err = conn.run(command, timeout=60)
        finally:
            conn.release()
        assert code == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert result["uid"] != 0
        return result

    def close(self) -> None:
        os.environ.pop("HR_TEST_ATTACKER_PASSWORD", None)
        if self._restarted:
            self.acq.stop_sshd(self.host)
            self.acq.start_sshd(self.host)
        self.acq.remove_user(self.host, self.user)  # waits for its last SSH session to end
        assert not (self.acq.mode == "namespace" and _user_exists(self.user)), self.user


def _user_exists(name: str) -> bool:
    """Whether this machine (and so a namespace host) has account ``name``."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def pc_attacker(acq: Hosts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PCAttacker]:
    if not acq.can_control:
        pytest.skip(NO_CONTROL)
    attacker = PCAttacker(acq, tmp_path_factory.mktemp("attacker"))
    try:
        yield attacker
    finally:
        attacker.close()


@pytest.mark.multihost
def test_another_account_on_the_pc_cannot_take_packets_or_inject_parameters(
    remote_settings: Settings, pc_attacker: PCAttacker
) -> None:
    with Source(ECHO_WORKER, outputs=("Counter", "Echo"), settings=remote_settings, host="acq1") as src:
        echo_of(src, {"ok": True, "k": 1})
        assert src.launcher is not None and src.launcher.ready is not None
        ports = src.launcher.ready.ports
        thief, took = in_background(lambda: pc_attacker.attack(ports["data"], "receive", 2))
        frames = src.frames(timeout=20)
        while thief.is_alive():
            next(frames)
        thief.join()
        injected = pc_attacker.attack(ports["parameters"], "send", "PUSH", evil_message())
        print(f"on the PC: data {took}; parameters {injected}")
        for result in (took, injected):
            assert result["accepted"] == result["received"] == result["sent"] == 0 and result["refused"] >= 1
        refused = took["refused"] + injected["refused"]
        assert refusals_reported(src, refused) == refused
        assert echo_of(src, {"ok": True, "k": 2})["parameters"] == {"ok": True, "k": 2}
        for _ in range(20):
            next(frames)
        assert src.stats.lost == 0


def _alive(acq: Hosts) -> Callable[[int], bool]:
    if acq.mode == "namespace":
        return pid_alive
    return lambda pid: remote_alive(acq, "acq1", pid)


@pytest.mark.multihost
@pytest.mark.parametrize("com", ["lives", "is SIGKILLed"])
def test_another_account_on_the_pc_cannot_keep_an_orphaned_worker_alive_with_pulses(
    remote_settings: Settings, pc_attacker: PCAttacker, acq: Hosts, com: str
) -> None:
    """F8: another account kept an orphan alive 20 s after its com was SIGKILLed (death window 10 s)."""
    slow = remote_settings.replace(heartbeat_rate=0.5, heartbeats_to_death=10)  # a 5 s death window
    script = ComScript(slow, host="acq1")
    alive = _alive(acq)
    try:
        worker = script.worker_pid
        pulser, pulsed = in_background(lambda: pc_attacker.attack(script.worker_ports["heartbeat"], "pulse", 9))
        time.sleep(1.5)  # the attacker at work, the pulses of the com flowing
        assert alive(worker)
        if com == "lives":
            time.sleep(6)  # past the death window: the com's own pulses keep it
            assert alive(worker)
        else:
            script.proc.kill()
            killed = time.monotonic()
            wait_until(lambda: not alive(worker), 4, "the orphan to end")
            print(f"the orphan ended {time.monotonic() - killed:.2f} s after its com was SIGKILLed")
        pulser.join(30)
        print(f"the other account's pulses: {pulsed}")
        assert pulsed["accepted"] == pulsed["sent"] == 0 and pulsed["refused"] >= 1
    finally:
        if script.proc.poll() is None:
            code, _, log = script.stop()
            assert code == 0, log
            assert "refused" in log  # the com said that its worker refused connections
        script.proc.wait(10)
