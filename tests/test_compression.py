"""Compression of the worker -> com hop (issue 14, section 4): real workers, real blosc2, the published
frames byte for byte what the camera made; bad packed input refused; a missing extra named."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import blosc2
import numpy as np
import pytest
import zmq
from hypothesis import given
from hypothesis import settings as settings_hyp
from hypothesis import strategies as st

from heron_remote import Compression, ConfigError, DecodeError, Settings, Source, WorkerStartError
from heron_remote.compression import PACKED_MAX_BYTES, Packer, unpack
from heron_remote.examples.natural_camera import NATURAL_CAMERA, frame
from heron_remote.ssh import Registry
from heron_remote.wire import check_output, encode_output, parse_meta

from .helpers import WORKERS, ComScript, edit_registry, readme_row, wait_until

SHAPE = (240, 320)
CAMERA = {"shape": list(SHAPE), "fps": 200, "count": 150}


def _published_meta(settings: Settings, seen: list[dict], ready: threading.Event, stop: threading.Event) -> None:
    """What a plain pyzmq subscriber sees on the data forwarder: the metadata of each message."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.rcvtimeo = 100
    sub.subscribe(b"")
    sub.connect(f"tcp://127.0.0.1:{settings.ports.data_publish}")
    ready.set()
    try:
        while not stop.is_set():
            try:
                frames = sub.recv_multipart()
            except zmq.Again:
                continue
            if len(frames) == 5:
                seen.append(json.loads(frames[3]))
    finally:
        sub.close()


@pytest.mark.parametrize("compression", [Compression(), Compression(codec="lz4", threads=2)])
def test_packed_frames_are_published_as_the_camera_made_them(settings: Settings, compression: Compression) -> None:
    seen: list[dict] = []
    ready, stop = threading.Event(), threading.Event()
    reader = threading.Thread(target=_published_meta, args=(settings, seen, ready, stop))
    reader.start()
    ready.wait(5)
    try:
        with Source(NATURAL_CAMERA, parameters=CAMERA, settings=settings, compression=compression) as cam:
            got = []
            for f in cam.frames(timeout=10):
                np.testing.assert_array_equal(f.arrays[0], frame(f.index, SHAPE))
                got.append(f.index)
            stats = cam.stats
            status = cam.status()
    finally:
        stop.set()
        reader.join(5)
    assert got == list(range(1, 151)) and cam.gaps == 0 and stats.malformed == 0
    # Every frame crossed the link packed, and fewer bytes crossed it than were published.
    assert stats.packed_bytes == stats.bytes_received
    assert stats.unpacked_bytes == 150 * SHAPE[0] * SHAPE[1] == stats.bytes_unpacked
    assert stats.compression_ratio is not None and 1.1 < stats.compression_ratio < 3
    assert status.compression_ratio == round(stats.compression_ratio, 3)  # what `heron-remote status --json` says
    # The wire format published is the plain one: nothing says packed.
    assert seen and all(m["data_type"] == "ndarray" and "packed" not in m for m in seen)
    assert all(m["shape"] == list(SHAPE) and m["dtype"] == "uint8" for m in seen)


def test_without_compression_nothing_is_packed(settings: Settings) -> None:
    with Source(NATURAL_CAMERA, parameters=CAMERA, settings=settings) as cam:
        assert sum(1 for _ in cam.frames(timeout=10)) == 150
        assert cam.stats.packed_bytes == 0 and cam.stats.compression_ratio is None
        assert cam.stats.bytes_received == cam.stats.bytes_unpacked == 150 * SHAPE[0] * SHAPE[1]


def test_bad_packed_payloads_are_dropped_and_counted(settings: Settings) -> None:
    with Source(str(WORKERS / "bad_packed_worker.py"), settings=settings) as cam:
        frames = cam.frames(timeout=10)
        good = [next(frames) for _ in range(5)]
        for f in good:
            assert f.index % 4 == 1
            assert (f.arrays[0] == f.index % 256).all()
        wait_until(lambda: cam.stats.malformed >= 15, 10, "the bad packets counted")
        assert "packed payload" in (cam.stats.last_error or "")


def test_the_packed_payload_reader_refuses_what_is_not_the_array_its_metadata_says() -> None:
    array = frame(1, SHAPE)
    packed = blosc2.compress2(array.tobytes(), typesize=1)
    assert bytes(unpack(packed, array.nbytes)) == array.tobytes()
    with pytest.raises(DecodeError, match="no blosc2 header"):
        unpack(b"\x00" * 8, array.nbytes)
    with pytest.raises(DecodeError, match=r"cannot be unpacked|announces"):
        unpack(b"\x02\x01" + b"\xff" * 200, array.nbytes)
    with pytest.raises(DecodeError, match="needs 10 bytes"):
        unpack(packed, 10)  # the header announces another size: no allocation of what it says
    with pytest.raises(DecodeError, match="announces"):
        unpack(packed[:-10], array.nbytes)  # truncated
    with pytest.raises(DecodeError, match="at most"):
        unpack(packed, PACKED_MAX_BYTES + 1)
    meta, _ = encode_output(array)
    marked = meta[:-1] + b', "packed": "blosc2"}'
    assert check_output(marked, len(packed)) is True
    with pytest.raises(DecodeError, match="cannot hold"):
        check_output(marked, array.nbytes + 1000)  # more than packing can ever add
    with pytest.raises(DecodeError, match="only ndarray"):
        parse_meta(b'{"data_type": "dict", "packed": "blosc2"}')
    with pytest.raises(DecodeError, match="only ndarray"):
        parse_meta(meta[:-1] + b', "packed": "zip"}')
    with pytest.raises(DecodeError, match="the com unpacks"):
        parse_meta(marked).decode(packed)  # the published stream carries no packed payload


def test_packing_leaves_small_and_incompressible_arrays_as_they_are() -> None:
    packer = Packer(Compression())
    small = np.arange(100, dtype=np.uint8)
    meta, payload = encode_output(small)
    assert packer.pack(meta, payload, 1) == (meta, payload)
    noise = np.random.default_rng(1).integers(0, 256, 1 << 17, dtype=np.uint8)
    meta, payload = encode_output(noise)
    assert packer.pack(meta, payload, 1) == (meta, payload)
    meta, payload = encode_output(frame(3, SHAPE))
    marked, packed = packer.pack(meta, payload, 1)
    assert parse_meta(marked).packed and len(packed) < SHAPE[0] * SHAPE[1]


def test_compression_settings_are_checked_with_clear_errors() -> None:
    with pytest.raises(ConfigError, match="codec must be one of zstd"):
        Compression(codec="gzip")
    with pytest.raises(ConfigError, match="level must be an int from 0 to 9"):
        Compression(level=12)
    with pytest.raises(ConfigError, match="threads must be an int from 1 to 64"):
        Compression(threads=0)
    with pytest.raises(ConfigError, match="shuffle must be one of bit"):
        Compression(shuffle="bits")
    assert Compression.from_arg(Compression(codec="lz4", level=3, threads=2).to_arg()) == Compression(
        codec="lz4", level=3, threads=2
    )
    with pytest.raises(ConfigError, match="compression must be a Compression"):
        Source("x.py", compression="zstd")  # type: ignore[arg-type]


def test_the_registry_sets_compression_per_server_and_names_a_bad_key(tmp_path: Path) -> None:
    def registry(value: object) -> Registry:
        return Registry.from_dict({"0": {"Name": "cam-pc", "IP": "10.0.0.2", "compression": value}})

    assert registry(True).get("cam-pc").compression == Compression()
    assert registry({"codec": "lz4", "threads": 2}).get("0").compression == Compression(codec="lz4", threads=2)
    assert registry(False).get("0").compression is None
    with pytest.raises(ConfigError, match=r"server '0' \(cam-pc\)'s \"compression\" has the unknown key 'lvl'"):
        registry({"lvl": 3})
    with pytest.raises(ConfigError, match=r"server '0' \(cam-pc\)'s \"compression\": Compression.level"):
        registry({"level": 99})


def test_without_blosc2_on_the_rig_asking_for_compression_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "blosc2", None)  # import blosc2 raises ImportError, as when it is missing
    with pytest.raises(ConfigError, match=r"pip install 'heron_remote\[compression\]'") as caught:
        Source(NATURAL_CAMERA, compression=True)
    assert readme_row(caught.value), str(caught.value)


def test_without_blosc2_on_the_pc_the_start_fails_naming_the_extra(settings: Settings) -> None:
    source = Source(str(WORKERS / "no_blosc2_worker.py"), settings=settings, compression=True)
    with pytest.raises(WorkerStartError) as caught:
        source.start()
    assert "heron_remote[compression]" in str(caught.value)
    assert readme_row(caught.value), str(caught.value)


@pytest.mark.multihost
def test_a_server_s_compression_in_the_registry_packs_its_workers_frames(
    remote_settings: Settings, acq: object, tmp_path: Path
) -> None:
    reg = edit_registry(acq, tmp_path, "acq1", compression={"codec": "zstd", "level": 1, "threads": 2})
    settings = remote_settings.replace(ssh_info=reg)
    with Source(NATURAL_CAMERA, parameters=CAMERA, settings=settings, host="acq1") as cam:
        got = [f.index for f in cam.frames(timeout=15) if np.array_equal(f.arrays[0], frame(f.index, SHAPE))]
        stats = cam.stats
    assert got == list(range(1, 151))
    assert stats.packed_bytes == stats.bytes_received and stats.compression_ratio and stats.compression_ratio > 1.1
    # A source may turn it off for itself.
    with Source(NATURAL_CAMERA, parameters=CAMERA, settings=settings, host="acq1", compression=False) as cam:
        assert sum(1 for _ in cam.frames(timeout=15)) == 150
        assert cam.stats.packed_bytes == 0


@pytest.mark.multihost
def test_a_heron_com_script_s_worker_on_a_pc_packs_as_the_registry_says(
    remote_settings: Settings, acq: object, tmp_path: Path
) -> None:
    """Heron's way: a com script with SourceCom, its worker on acq1, whose registry entry asks for
    compression; a plain pyzmq subscriber reads the frames as they were made, metadata plain."""
    reg = edit_registry(acq, tmp_path, "acq1", compression=True)
    settings = remote_settings.replace(ssh_info=reg)
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"Counter##echo##1")
    sub.connect(f"tcp://127.0.0.1:{settings.ports.data_publish}")
    com = ComScript(settings, host="acq1", worker=str(WORKERS / "natural_pair_worker.py"))
    try:
        checked = 0
        while checked < 30:
            assert sub.poll(10_000), "no frame within 10 s"
            _topic, index, _time, meta, payload = sub.recv_multipart()
            md = json.loads(meta)
            assert "packed" not in md and md["shape"] == [120, 160]
            np.testing.assert_array_equal(
                np.frombuffer(payload, md["dtype"]).reshape(md["shape"]), frame(int(index), (120, 160))
            )
            checked += 1
        code, _out, err = com.stop()
        assert code == 0, err
        # The worker was told to pack: its command line on the PC said so (never a secret).
        assert "--heron-remote-compression=zstd:1:1:bit" in err
    finally:
        if com.proc.poll() is None:
            com.stop()
        sub.close()


@settings_hyp(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), nbytes=st.integers(0, 1 << 20))
def test_any_bytes_as_a_packed_payload_unpack_to_the_size_asked_or_a_decode_error(data: bytes, nbytes: int) -> None:
    try:
        out = unpack(data, nbytes)
    except DecodeError:
        return
    assert len(out) == nbytes


def test_a_forged_blosc2_header_cannot_make_the_com_unpack_more_than_the_metadata_says() -> None:
    good = blosc2.compress2(bytes(1 << 16), typesize=1)
    forged = bytearray(good)
    forged[4:8] = (1 << 30).to_bytes(4, "little")  # nbytes in the header: 1 GiB
    with pytest.raises(DecodeError):
        unpack(bytes(forged), 1 << 16)
