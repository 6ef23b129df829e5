"""SourceCom run the Heron way, as a com script in its own process, with real workers and sockets."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from heron_remote import Settings

from .helpers import ECHO_WORKER, ComScript, free_port_group, pid_alive, wait_until

TOPIC = b"Parameters##echo##1"


@pytest.fixture
def com(settings: Settings, tmp_path: Path) -> Iterator[ComScript]:
    c = ComScript(settings, HERON_TEST_MARKER=str(tmp_path / "marker"))
    yield c
    if c.proc.poll() is None:
        c.stop()


def _sub(port: int, *topics: bytes) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    for t in topics:
        sock.subscribe(t)
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def _recv(sock: zmq.Socket, timeout: float = 5) -> list[bytes]:
    assert sock.poll(int(timeout * 1000)), f"nothing received within {timeout} s"
    return sock.recv_multipart()


def _send_parameters(settings: Settings, value: object, until: callable, timeout: float = 10) -> object:
    """Publish [topic, JSON] on the parameters forwarder (as Heron's editor does) until ``until()``."""
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.linger = 0
    pub.connect(f"tcp://127.0.0.1:{settings.ports.parameters_submit}")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pub.send_multipart([TOPIC, json.dumps(value).encode()])
            result = until()
            if result:
                return result
        raise AssertionError(f"parameters {value!r} had no effect within {timeout} s")
    finally:
        pub.close()


def _echo(sub: zmq.Socket) -> dict:
    """The next Echo output, decoded with plain json (no heron_remote)."""
    while True:
        frames = _recv(sub)
        if frames[0].startswith(b"Echo"):
            assert json.loads(frames[3]) == {"data_type": "dict"}
            return json.loads(frames[4])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_worker_and_the_com_exits_0(com: ComScript, sig: signal.Signals, tmp_path: Path) -> None:
    assert pid_alive(com.worker_pid)
    code, out, err = com.stop(sig)
    assert code == 0, err
    assert "COM EXIT" in out
    assert not pid_alive(com.worker_pid)
    assert f"end_of_life {com.worker_pid}" in (tmp_path / "marker").read_text()


def test_sigkill_of_the_com_ends_its_worker_at_once_with_its_end_of_life(
    com: ComScript, settings: Settings, tmp_path: Path
) -> None:
    com.proc.kill()
    killed = time.monotonic()
    com.proc.wait(5)
    wait_until(lambda: not pid_alive(com.worker_pid), settings.death_window + 2, "the orphaned worker to end")
    took = time.monotonic() - killed
    print(f"worker ended {took:.2f} s after its com was SIGKILLed (window {settings.death_window:g} s)")
    assert took < settings.death_window * 0.8  # its pipe from the com closed: no waiting for the pulses
    assert f"end_of_life {com.worker_pid}" in (tmp_path / "marker").read_text()


def test_a_plain_pyzmq_subscriber_decodes_the_wire_format(com: ComScript, settings: Settings) -> None:
    sub = _sub(settings.ports.data_publish, b"Counter##echo##1", b"Echo##echo##1")
    try:
        seen: dict[bytes, list[int]] = {b"Counter##echo##1": [], b"Echo##echo##1": []}
        values = {}
        while len(seen[b"Counter##echo##1"]) < 30:
            frames = _recv(sub)
            assert len(frames) == 5
            topic, index, time_us, meta, payload = frames
            assert abs(int(time_us) / 1e6 - time.time()) < 5
            seen[topic].append(int(index))
            if topic == b"Counter##echo##1":
                meta = json.loads(meta)
                assert meta == {"data_type": "ndarray", "dtype": "int64", "shape": [1]}  # as Heron spells it
                values[int(index)] = np.frombuffer(payload, dtype=meta["dtype"]).reshape(meta["shape"])[0]
        counters = seen[b"Counter##echo##1"]
        assert counters == list(range(counters[0], counters[0] + len(counters)))  # one by one, no gap
        assert all(values[i] == i for i in counters)  # index is the worker's packet number
        echoes = seen[b"Echo##echo##1"]
        assert echoes and all(i % 3 != 0 for i in echoes)  # "Ignore" outputs are not published
    finally:
        sub.close()


def test_parameters_reach_the_worker_and_initialisation_is_retried(com: ComScript, settings: Settings) -> None:
    sub = _sub(settings.ports.data_publish, b"Echo##echo##1")
    try:
        echo = _send_parameters(settings, {"ok": False}, lambda: (e := _echo(sub))["parameters"] and e)
        assert echo["parameters"] == {"ok": False} and echo["initialised"] is False
        echo = _send_parameters(
            settings, {"ok": True, "gain": [1, 2.5]}, lambda: (e := _echo(sub))["initialised"] and e
        )
        assert echo["parameters"] == {"ok": True, "gain": [1, 2.5]}
        assert (echo["node_name"], echo["node_index"]) == ("echo", "1")
    finally:
        sub.close()


def test_proof_of_life_reaches_the_proof_of_life_forwarder(com: ComScript, settings: Settings) -> None:
    sub = _sub(settings.ports.proof_of_life_publish, TOPIC)
    try:
        assert _recv(sub, timeout=3) == [TOPIC, b"POL"]
    finally:
        sub.close()


def test_verbose_file_logs_every_packet_with_a_timestamped_name(settings: Settings, tmp_path: Path) -> None:
    c = ComScript(settings, verbose=f"{tmp_path / 'packets.log'}||")
    time.sleep(0.5)
    code, _, err = c.stop()
    assert code == 0, err
    (log,) = tmp_path.glob("packets_*.log")
    lines = log.read_text().splitlines()
    assert lines[0] == "Index of data packet : Computer Time Data Out"
    indices = [int(line.split(" : ")[0]) for line in lines[1:]]
    assert len(indices) >= 10 and indices == list(range(1, len(indices) + 1))


def test_verbose_level_logs_packet_timing(settings: Settings) -> None:
    c = ComScript(settings, verbose="1||")
    time.sleep(0.5)
    code, _, err = c.stop()
    assert code == 0, err
    timing = [line for line in err.splitlines() if "ms since the last" in line]
    assert len(timing) >= 10, err[-2000:]


def test_relic_saves_parameters_history_and_substate(settings: Settings, tmp_path: Path) -> None:
    relic_dir = tmp_path / "relics"
    c = ComScript(settings, verbose=f"||{relic_dir}")
    sub = _sub(settings.ports.data_publish, b"Echo##echo##1")
    try:
        _send_parameters(settings, {"ok": True, "gain": 7}, lambda: _echo(sub)["initialised"])
        time.sleep(0.3)
    finally:
        sub.close()
    code, _, err = c.stop()
    assert code == 0, err
    folder = relic_dir / "echo_1"
    params = [json.loads(line) for line in (folder / "Parameters.jsonl").read_text().splitlines()]
    assert params[0]["ok"] is True and params[0]["gain"] == 7 and "time" in params[0] and "index" in params[0]
    substate = [json.loads(line) for line in (folder / "Substate.jsonl").read_text().splitlines()]
    assert len(substate) >= 5  # fewer than flush_every rows: they were flushed at death
    assert all(row["square"] == row["n"] ** 2 for row in substate)
    assert [row["n"] for row in substate] == sorted(row["n"] for row in substate)


def test_fixed_port_group_and_a_clash_names_the_port(settings: Settings) -> None:
    from heron_remote import Source, WorkerStartError

    base = free_port_group()
    with Source(ECHO_WORKER, name="first", outputs=("Counter", "Echo"), port=base, settings=settings) as first:
        assert first.launcher.ready.ports == {  # the data on a Unix socket, the others on the group's ports
            "data": 0,
            "heartbeat": base + 1,
            "parameters": base + 2,
            "liveness": base + 3,
        }
        assert first.launcher.ready.endpoints["data"].startswith("ipc://")
        second = Source(ECHO_WORKER, name="second", outputs=("Counter", "Echo"), port=base, settings=settings)
        with pytest.raises(WorkerStartError, match=r"cannot bind the \w+ socket on 127\.0\.0\.1:(\d+)") as caught:
            second.start()
        port = re.search(r"127\.0\.0\.1:(\d+)", str(caught.value))
        assert port is not None and base + 1 <= int(port.group(1)) <= base + 3


def test_packets_lost_before_the_com_are_counted_and_seen_as_gaps(settings: Settings) -> None:
    """The index is the worker's packet number: a packet lost on the way is a gap, and counted."""
    from heron_remote import SourceCom
    from heron_remote.wire import encode_output

    meta, payload = encode_output(np.zeros(2, dtype=np.uint8))
    sub = _sub(settings.ports.data_publish, b"Frame##x##0")
    with SourceCom(["Frame##x##0"], "Parameters##x##0", 0, "unused.py", settings=settings) as com:
        com.connect_sockets()
        time.sleep(0.3)  # let the subscription reach the forwarder
        for seq in (1, 2, 5, 6, 1, 2):  # 3 and 4 lost; then a new worker numbering from 1
            com.on_receive_data_from_worker([b"%d" % seq, meta, bytes(payload)])
        assert com.stats.lost == 2
        indices = [int(_recv(sub)[1]) for _ in range(6)]
    sub.close()
    assert indices == [1, 2, 5, 6, 7, 8]
