"""A local worker's large payloads cross a shared-memory ring, not its socket (heron_remote._ring).

The ring's own rules with a real mapping in /dev/shm (records reused only once released, a full
ring passed over, a lost record answered by a new ring, forged references refused); then real
processes: a Source's local worker, Heron's layout with the forwarders' relay in a process of its
own, a worker SIGKILLed mid-stream, and a second local account that tries to read a ring or plant one.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import os
import pwd
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from heron_remote import Settings, Source, WorkerError, _ring
from heron_remote._ipc import new_data_socket
from heron_remote._ring import REF_SIZE, RingTap, RingWriter, ring_path, sweep_stale_rings
from heron_remote.errors import DecodeError
from heron_remote.examples.synthetic_camera import expected_frame, frame_header

from .helpers import CAMERA, FREE_PORTS, hosted_relay, killed_twice
from .test_forwarders_shared import _as, other_account  # noqa: F401

_FAST = Settings(ports=FREE_PORTS, heartbeat_rate=0.2, heartbeats_to_death=5, start_timeout=15, stop_grace=2)
#: A frame large enough for the ring (ZERO_COPY_MIN is 64 KiB): 128 KiB.
_SHAPE = [256, 512]
_KIB = 1024


@pytest.fixture
def endpoint() -> Iterator[str]:
    """A local worker's data endpoint (nothing binds it): its ring is removed after the test."""
    found = new_data_socket()
    assert found is not None
    yield found
    path = ring_path(found)
    if path is not None and path.exists():
        path.unlink()


def _payload(n: int, seed: int) -> memoryview:
    return memoryview(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8))


def _packet(ref: bytes) -> list[object]:
    return [b"1", b"{}", zmq.Frame(ref)]


def _put_soon(writer: RingWriter, payload: memoryview) -> bytes:
    """``payload`` put in the ring once a record freed a moment ago is handed back (pyzmq frees a
    frame's memory in a thread of its own)."""
    deadline = time.monotonic() + 5
    while (ref := writer.put(payload)) is None:
        assert time.monotonic() < deadline, "no record came back within 5 s"
        time.sleep(0.01)
    return ref


def test_payloads_cross_the_ring_and_records_are_reused_only_once_released(endpoint: str) -> None:
    writer = RingWriter.create(endpoint, capacity=1024 * _KIB)
    assert writer is not None
    path = ring_path(endpoint)
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_uid == os.geteuid()
    assert path.stat().st_blocks * 512 <= 64 * _KIB  # nothing reserved before the first large payload
    tap = RingTap.of(endpoint)
    assert tap is not None
    held, sent = [], []
    for seed in range(7):  # 7 x 128 KiB of a 1 MiB ring: fits
        payload = _payload(128 * _KIB, seed)
        ref = writer.put(payload)
        assert ref is not None and len(ref) == REF_SIZE
        msg = _packet(ref)
        assert tap.resolve(msg, [2]) == 128 * _KIB
        held.append(msg[2])
        sent.append(bytes(payload))
    assert path.stat().st_blocks * 512 >= 1024 * _KIB  # reserved with the first one
    extra = [_payload(128 * _KIB, 99), _payload(128 * _KIB, 98)]
    started = time.monotonic()
    assert writer.put(extra[0]) is None  # full while every frame is held
    waited = time.monotonic() - started
    assert writer.bypassed == 1 and _ring.WAIT_S <= waited < 1.0
    started = time.monotonic()
    assert writer.put(extra[1]) is None and time.monotonic() - started < _ring.WAIT_S  # no wait again
    assert [bytes(f.buffer) for f in held] == sent  # nothing was overwritten
    del held[:3]
    gc.collect()
    for seed in range(100, 120):  # the released records come back, around the end of the ring and again
        payload = _payload(100 * _KIB + seed, seed)
        msg = _packet(_put_soon(writer, payload))
        tap.resolve(msg, [2])
        assert bytes(msg[2].buffer) == bytes(payload)
        held.append(msg[2])
        held.pop(0)
        gc.collect()
    writer.close()
    writer.close()  # idempotent
    assert not path.exists()


def test_a_record_stays_held_while_only_zeromq_holds_its_frame(endpoint: str) -> None:
    """The frame goes to a subscriber that does not read yet: no Python object refers to the record,
    only ZeroMQ's queue, and it is handed back only after the subscriber read it and let it go."""
    writer = RingWriter.create(endpoint, capacity=1024 * _KIB)
    assert writer is not None
    tap = RingTap.of(endpoint)
    assert tap is not None
    context = zmq.Context()
    pub, sub = context.socket(zmq.PUB), context.socket(zmq.SUB)
    try:
        sub.subscribe(b"")
        pub.bind("inproc://ring-held")
        sub.connect("inproc://ring-held")
        time.sleep(0.1)
        payloads = [_payload(250 * _KIB, seed) for seed in range(4)]
        for payload in payloads:  # 4 x 250 KiB of 1 MiB: a fifth fits only once one is handed back
            msg = _packet(_put_soon(writer, payload))
            tap.resolve(msg, [2, 4])  # a slot past the end is passed over
            pub.send(msg[2], copy=False)
            del msg
        gc.collect()
        time.sleep(0.3)  # time enough for any hand-back to land
        fifth = _payload(250 * _KIB, 9)
        assert writer.put(fifth) is None  # all four still held, by ZeroMQ alone
        got = [sub.recv(copy=False) for _ in payloads]
        assert [bytes(f.buffer) for f in got] == [bytes(p) for p in payloads]
        del got
        gc.collect()
        _put_soon(writer, fifth)
    finally:
        pub.close(linger=0)
        sub.close(linger=0)
        context.term()
        writer.close()


def test_a_ring_that_cannot_be_reserved_is_given_up(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full /dev/shm (a container's is 64 MiB): the first large payload finds out, not a SIGBUS."""

    def no_space(*_: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    writer = RingWriter.create(endpoint, capacity=1024 * _KIB)
    assert writer is not None and writer.path.exists()
    assert writer.put(_payload(128 * _KIB, 0)) is None and writer.put(_payload(128 * _KIB, 1)) is None
    assert not writer.path.exists()


def test_a_reader_refuses_forged_repeated_or_foreign_references(endpoint: str) -> None:
    writer = RingWriter.create(endpoint, capacity=1024 * _KIB)
    assert writer is not None
    tap = RingTap.of(endpoint)
    assert tap is not None
    ref = writer.put(_payload(100 * _KIB, 1))
    assert ref is not None
    magic, generation, offset, length = _ring._REF.unpack(ref)
    forged = {
        "of another ring": _ring._REF.pack(magic, generation + 1, offset, length),
        "out of the ring": _ring._REF.pack(magic, generation, 2048 * _KIB, length),
        "not waiting": _ring._REF.pack(magic, generation, offset + 64 * 1024, length),  # no record starts there
    }
    for why, bad in forged.items():
        with pytest.raises(DecodeError, match=why):
            tap.resolve(_packet(bad), [2])
    second = writer.put(_payload(100 * _KIB, 2))
    assert second is not None
    msg = [b"1", b"{}", zmq.Frame(ref), b"{}", zmq.Frame(second)]  # two outputs, a payload each
    assert tap.resolve(msg, [2, 4]) == 200 * _KIB
    assert bytes(msg[2].buffer) == bytes(_payload(100 * _KIB, 1))
    assert bytes(msg[4].buffer) == bytes(_payload(100 * _KIB, 2))
    with pytest.raises(DecodeError, match="not waiting"):  # the same record twice: refused
        tap.resolve(_packet(ref), [2])
    writer.close()


def test_a_record_no_reader_took_gets_a_new_ring_and_the_old_frames_stay_intact(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_ring, "RENEW_UNTAKEN_S", 0.05)
    writer = RingWriter.create(endpoint, capacity=1024 * _KIB)
    assert writer is not None
    tap = RingTap.of(endpoint)
    assert tap is not None
    lost = writer.put(_payload(128 * _KIB, 0))  # its packet never reaches a reader
    assert lost is not None
    kept = _packet(writer.put(_payload(128 * _KIB, 1)) or b"")
    tap.resolve(kept, [2])
    while writer.put(_payload(128 * _KIB, 2)) is not None:
        pass
    old = writer.generation
    time.sleep(0.1)
    assert writer.put(_payload(128 * _KIB, 3)) is None and writer.renewed == 1 and writer.generation != old
    fresh = _packet(writer.put(_payload(128 * _KIB, 4)) or b"")
    assert tap.resolve(fresh, [2]) == 128 * _KIB  # the reader maps the new ring
    assert bytes(fresh[2].buffer) == bytes(_payload(128 * _KIB, 4))
    assert bytes(kept[2].buffer) == bytes(_payload(128 * _KIB, 1))  # the old ring is still mapped, unchanged
    writer.close()


def _ring_of(src: Source) -> Path:
    assert src.launcher is not None and src.launcher.ready is not None
    path = ring_path(src.launcher.ready.endpoints["data"])
    assert path is not None
    return path


def _check(frames: list, shape: list[int]) -> None:
    assert [f.index for f in frames] == list(range(frames[0].index, frames[0].index + len(frames)))
    for f in frames:
        header = frame_header(f.arrays[0])
        assert header is not None and header[0] == f.index
        np.testing.assert_array_equal(f.arrays[0], expected_frame(f.index, tuple(shape), "uint8", header[1]))


def test_a_local_source_takes_large_frames_from_its_workers_ring_intact() -> None:
    with Source(CAMERA, parameters={"shape": _SHAPE, "fps": 2000}, settings=_FAST) as cam:
        frames = [f for f in cam.frames(timeout=10, limit=600)]
        path = _ring_of(cam)
        st = path.stat()
        stats = cam.stats
    assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o600
    # 600 x 128 KiB kept: more than twice the ring. What reaches this process's subscriber is a copy,
    # so keeping it holds no record, and the frames after the ring's first round came through it too.
    _check(frames, _SHAPE)
    assert stats.shared_bytes >= 500 * _SHAPE[0] * _SHAPE[1] and stats.lost == stats.malformed == 0
    assert all(_ring.unshared(f.arrays[0]) is f.arrays[0] for f in frames)
    assert not path.exists()  # the worker removed it as it ended


def test_heron_layout_publishes_from_the_ring_in_the_forwarders_process(
    outside: tuple[Settings, subprocess.Popen[str]],
) -> None:
    settings, _ = outside
    with Source(CAMERA, parameters={"shape": _SHAPE, "fps": 2000}, settings=settings) as cam:
        frames = list(cam.frames(timeout=10, limit=300))
        assert hosted_relay(cam).hosted
        deadline = time.monotonic() + 5
        while cam.stats.shared_bytes < 200 * _SHAPE[0] * _SHAPE[1] and time.monotonic() < deadline:
            time.sleep(0.05)  # the host's counters come with its reports
        stats = cam.stats
    _check(frames, _SHAPE)
    assert stats.shared_bytes >= 200 * _SHAPE[0] * _SHAPE[1] and stats.lost == stats.malformed == 0


def test_the_ring_of_a_killed_worker_is_removed_by_its_com_and_orphans_are_swept(endpoint: str) -> None:
    src = killed_twice(_FAST)
    rings: set[Path] = set()
    with pytest.raises(WorkerError), src:
        for _ in src.frames(timeout=20):
            rings.add(_ring_of(src))
    assert len(rings) == 2 and not any(p.exists() for p in rings)  # two workers, a ring each
    # What a worker SIGKILLed with its com leaves: a ring whose writer is gone. A live one stays.
    writer = RingWriter.create(endpoint, capacity=64 * _KIB)
    assert writer is not None
    assert sweep_stale_rings() == 0 and writer.path.exists()
    gone = subprocess.Popen(["true"])
    gone.wait(10)
    with open(writer.path, "r+b") as f:  # the header's last field: the writer's pid
        f.seek(_ring._HEADER.size - 8)
        f.write(gone.pid.to_bytes(8, "little"))
    assert sweep_stale_rings() == 1 and not writer.path.exists()
    writer.close()


def test_another_account_can_neither_read_a_ring_nor_plant_one(
    other_account: pwd.struct_passwd,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Source(CAMERA, parameters={"shape": _SHAPE, "fps": 500}, settings=_FAST) as cam:
        next(iter(cam.frames(timeout=10, limit=1)))
        path = _ring_of(cam)
        probe = _as(other_account, f"open({str(path)!r}, 'rb').read(16); print('READ')")
        out, err = probe.communicate(timeout=30)
    assert "READ" not in out and "PermissionError" in err, err
    # The ring's name follows the data socket's, which any account sees on the worker's command
    # line: another account makes the file first. The worker must not use it, the com must not
    # map it, and the frames still come, through the socket.
    chosen = new_data_socket()
    assert chosen is not None
    planted = ring_path(chosen)
    assert planted is not None
    maker = _as(
        other_account,
        f"f = open({str(planted)!r}, 'wb'); f.write(b'HRRING01' + bytes(8192)); f.close(); "
        f"os.chmod({str(planted)!r}, 0o666); print('PLANTED')",
    )
    assert "PLANTED" in maker.communicate(timeout=30)[0]
    before = hashlib.sha256(planted.read_bytes()).hexdigest()
    monkeypatch.setattr("heron_remote.launcher.new_data_socket", lambda: chosen)
    try:
        with Source(CAMERA, parameters={"shape": _SHAPE, "fps": 500}, settings=_FAST) as cam:
            frames = list(cam.frames(timeout=10, limit=50))
            stats = cam.stats
        _check(frames, _SHAPE)
        assert stats.shared_bytes == 0 and stats.malformed == 0
        assert planted.stat().st_uid == other_account.pw_uid
        assert hashlib.sha256(planted.read_bytes()).hexdigest() == before
    finally:
        planted.unlink()


def test_payloads_too_large_for_the_ring_go_through_the_socket_and_the_com_counts_them() -> None:
    # Over a quarter of the 32 MiB ring: never copied into it.
    shape = [3072, 3072]
    with Source(CAMERA, parameters={"shape": shape, "fps": 20}, settings=_FAST) as cam:
        frames = [f for f in cam.frames(timeout=10, limit=5)]
        deadline = time.monotonic() + 5
        while cam.stats.worker_ring_bypassed < 5 and time.monotonic() < deadline:
            time.sleep(0.05)  # the count comes with the worker's next beacon
        stats = cam.stats
    _check(frames, shape)
    assert stats.worker_ring_bypassed >= 5 and stats.worker_ring_renewed == 0
    assert stats.shared_bytes == 0 and stats.lost == stats.malformed == 0
