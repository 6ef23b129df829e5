"""The wire format: encoding at the worker, validation at the com, decoding downstream."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from heron_remote import IGNORE, DecodeError, decode_published
from heron_remote.wire import (
    PacketError,
    check_output,
    check_packet,
    decode_output,
    encode_output,
    packet_length,
    packet_number,
    parse_packet,
    parse_time,
    payload_slots,
    publish,
    read_published,
    recv_message,
    resync,
    send_packet,
)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.uint8).reshape(3, 4),
        np.linspace(0, 1, 7, dtype=np.float32),
        np.array(3.5),
        np.zeros((0, 4), dtype=np.int16),
        np.arange(20, dtype=">i4").reshape(4, 5)[:, ::2],  # not contiguous, big-endian
    ],
)
def test_arrays_round_trip_exactly(array: np.ndarray) -> None:
    meta, payload = encode_output(array)
    assert json.loads(meta)["data_type"] == "ndarray"
    assert check_output(meta, memoryview(payload).nbytes) is True
    out = decode_output(meta, bytes(payload))
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_dicts_travel_as_json_and_ignore_is_marked() -> None:
    meta, payload = encode_output({"a": [1, 2], "b": "x"})
    assert json.loads(meta) == {"data_type": "dict"}
    assert decode_output(meta, payload) == {"a": [1, 2], "b": "x"}
    for ignore in (IGNORE, np.array([IGNORE])):
        meta, payload = encode_output(ignore)
        assert json.loads(meta) == {"data_type": "ignore"} and payload == b""
        assert check_output(meta, 0) is False


def test_unsendable_values_are_refused_with_a_reason() -> None:
    with pytest.raises(TypeError, match="object arrays"):
        encode_output(np.array([object()]))
    with pytest.raises(TypeError, match="numpy array, a dict"):
        encode_output({1, 2})


@pytest.mark.parametrize(
    ("meta", "size", "reason"),
    [
        (b"not json", 4, "not JSON"),
        (b"[1, 2]", 4, "JSON object"),
        (b'{"data_type": "ndarray", "dtype": "<u1", "shape": [2, 2]}', 5, "need 4"),
        (b'{"data_type": "ndarray", "dtype": "nonsense", "shape": [2]}', 2, "valid dtype"),
        (b'{"data_type": "ndarray", "dtype": "|O", "shape": [2]}', 16, "unusable"),
        (b'{"data_type": "pickle"}', 4, "unknown data_type"),
        (b'{"data_type": "ndarray", "dtype": [], "shape": []}', 0, "valid dtype"),  # found by the fuzz test
        (b'{"data_type": "ndarray", "dtype": "V0", "shape": [3]}', 0, "unusable"),
    ],
)
def test_malformed_outputs_raise_decode_error(meta: bytes, size: int, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        check_output(meta, size)


def test_decode_published_reads_the_five_frames() -> None:
    meta, payload = encode_output(np.arange(6, dtype="<f8").reshape(2, 3))
    packet = decode_published([b"Frame##cam##0", b"17", b"1700000000000000", meta, bytes(payload)])
    assert (packet.topic, packet.index, packet.time_us) == ("Frame##cam##0", 17, 1700000000000000)
    np.testing.assert_array_equal(packet.value, np.arange(6.0).reshape(2, 3))
    with pytest.raises(DecodeError, match="5 frames"):
        decode_published([b"x"])
    with pytest.raises(DecodeError, match="index or time"):
        decode_published([b"t", b"seven", b"1", meta, bytes(payload)])


@settings(max_examples=1000, deadline=None)
@given(
    meta=st.one_of(
        st.binary(max_size=120),
        st.builds(
            lambda d: json.dumps(d).encode(),
            st.dictionaries(
                st.sampled_from(["data_type", "dtype", "shape", "x"]),
                st.one_of(
                    st.sampled_from(["ndarray", "dict", "ignore", "<u1", "<f8", "|O", "V3"]),
                    st.integers(-5, 5),
                    st.lists(st.integers(-3, 1 << 40), max_size=4),
                ),
            ),
        ),
    ),
    payload=st.binary(max_size=64),
)
def test_fuzzed_frames_decode_or_raise_decode_error(meta: bytes, payload: bytes) -> None:
    """Whatever a worker sends, the com either accepts it or raises DecodeError: nothing else."""
    try:
        if check_output(meta, len(payload)):
            decode_output(meta, payload)
    except DecodeError:
        pass


def test_no_module_can_unpickle() -> None:
    """No unpickling anywhere: no module imports pickle, dill or cloudpickle, and no socket uses pyzmq's
    pickling helpers; the one exception writes pickles (Heron's editor does, and the editor flow is
    emulated for tests and the bench) and calls nothing of pickle but ``dumps``."""
    import ast
    from pathlib import Path

    import heron_remote

    writes_pickles = {"heron/editor.py"}
    root = Path(heron_remote.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        where = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
                owner = node.value.id if isinstance(node.value, ast.Name) else ""
                if owner == "pickle" and where in writes_pickles and node.attr != "dumps":
                    offenders.append(f"{where}:{node.lineno} pickle.{node.attr}")
            for n in names:
                pickling = n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle") or "pyobj" in n
                if pickling and not (n == "pickle" and where in writes_pickles):
                    offenders.append(f"{where}:{node.lineno} {n}")
    assert offenders == []


# -- whole messages on real sockets: every writer against its reader ----------------------------


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    """Two connected in-process sockets: what one sends, the other reads, in order."""
    context = zmq.Context()
    writer, reader = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    writer.bind("inproc://wire-test")
    reader.connect("inproc://wire-test")
    reader.rcvtimeo = 2000
    yield writer, reader
    writer.close(linger=0)
    reader.close(linger=0)
    context.term()


def test_a_worker_packet_is_read_back_whole_and_checked(pair: tuple[zmq.Socket, zmq.Socket]) -> None:
    writer, reader = pair
    big = np.arange(1 << 17, dtype=np.uint16)  # past ZERO_COPY_MIN: sent and received without copies
    outputs = [np.eye(3), {"k": 1}, IGNORE, big]
    frames = [f for value in outputs for f in encode_output(value)]
    send_packet(writer, 7, frames, copy=False)
    msg = recv_message(reader, packet_length(4), payload_slots(4), wait=True)
    assert packet_number(msg) == 7
    publish_flags, size = check_packet(msg, packet_length(4))
    assert publish_flags == [True, True, False, True]
    assert size == sum(memoryview(f).nbytes for f in frames[1::2])
    assert isinstance(msg[8], zmq.Frame)  # the big payload was not copied on the way in
    np.testing.assert_array_equal(decode_output(msg[7], msg[8]), big)


def test_a_packet_too_long_or_too_short_is_found_and_the_reader_resyncs(pair: tuple[zmq.Socket, zmq.Socket]) -> None:
    writer, reader = pair
    meta, payload = encode_output(np.zeros(2, np.uint8))
    writer.send_multipart([b"1", meta, payload, b"extra"])  # one frame too many
    writer.send_multipart([b"2", meta])  # one too few
    writer.send_multipart([b"3", meta, payload])
    writer.send_multipart([b"4", meta])  # one too few, last: nothing follows it
    first = recv_message(reader, 3, payload_slots(1), wait=True)
    assert packet_number(first) == 1 and check_packet(first, 3) == ([True], 2)
    # The rest of the long one runs into its neighbour (read without asking where messages end),
    # fails its check, and resync() finds the next boundary: only the neighbour is lost.
    rest = recv_message(reader, 3, payload_slots(1), wait=True)
    assert rest == [b"extra", b"2", meta]
    with pytest.raises(DecodeError, match="the first frame must be the packet number"):
        packet_number(rest)
    assert resync(reader) == 0  # it ended on a boundary already
    good = recv_message(reader, 3, payload_slots(1), wait=True)
    assert packet_number(good) == 3 and check_packet(good, 3) == ([True], 2)
    short = recv_message(reader, 3, payload_slots(1), wait=True)
    assert packet_number(short) == 4
    with pytest.raises(DecodeError, match="expected 3 frames"):
        check_packet(short, 3)


@pytest.mark.parametrize("value", [np.arange(6, dtype="<i2").reshape(2, 3), {"x": [1, 2]}])
def test_a_published_message_reads_back_by_both_readers(pair: tuple[zmq.Socket, zmq.Socket], value: object) -> None:
    writer, reader = pair
    meta, payload = encode_output(value)
    for _ in range(2):
        publish(writer, b"Frame##cam##0", b"42", b"1700000000123456", meta, payload)
    assert reader.recv() == b"Frame##cam##0"
    index, seconds, got = read_published(reader.recv)
    packet = decode_published(reader.recv_multipart())
    assert (index, seconds) == (42, 1700000000.123456)
    assert (packet.topic, packet.index, packet.time_us) == ("Frame##cam##0", 42, 1700000000123456)
    for decoded in (got, packet.value):
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(decoded, value)
        else:
            assert decoded == value


def test_a_float_time_frame_is_read_as_seconds() -> None:
    assert parse_time(b"1700000000123456") == 1700000000.123456
    assert parse_time(b"12.5") == 12.5
    with pytest.raises(DecodeError, match="neither microseconds nor seconds"):
        parse_time(b"noon")


_ARRAY_META, _ARRAY_PAYLOAD = encode_output(np.zeros(4, np.uint8))
_DICT_META, _ = encode_output({"a": 1})
_IGNORE_META, _ = encode_output(IGNORE)


def _checked_one_by_one(msg: list, expected: int) -> object:
    """What parse_packet answers, from the checks it is made of (its usual packet is read inline)."""
    try:
        number = packet_number(msg)
    except Exception:
        return "no number"
    try:
        return (number, *check_packet(msg, expected))
    except Exception:
        return ("bad packet", number)


@pytest.mark.parametrize(
    "msg",
    [
        [b"7 1700000000000000", _ARRAY_META, _ARRAY_PAYLOAD],
        [b"7", _ARRAY_META, _ARRAY_PAYLOAD, _DICT_META, b'{"a": 1}'],
        [b"7", _IGNORE_META, b"", _ARRAY_META, _ARRAY_PAYLOAD],
        [b"7", _IGNORE_META, b"not empty", _DICT_META, b"{}"],
        [b"7", _ARRAY_META, b"12345", _DICT_META, b"{}"],  # the array's payload is one byte long
        [b"9223372036854775807", _ARRAY_META, _ARRAY_PAYLOAD],  # 19 digits: read by the checks
        [b"9223372036854775808", _ARRAY_META, _ARRAY_PAYLOAD],
        [b"007 12", _ARRAY_META, _ARRAY_PAYLOAD],
        [b"x 12", _ARRAY_META, _ARRAY_PAYLOAD],
        [b"7", bytearray(_ARRAY_META), _ARRAY_PAYLOAD],
        [b"7", memoryview(_ARRAY_META), zmq.Frame(_ARRAY_PAYLOAD)],
        [b"7", _ARRAY_META, 12],  # a payload with no length
        [bytearray(b"7"), _ARRAY_META, _ARRAY_PAYLOAD],
        [b"7", _ARRAY_META],
    ],
)
def test_the_usual_packet_read_inline_gets_what_the_checks_say(msg: list) -> None:
    for _ in range(2):  # the metadata unknown, then known
        expected = 3 if len(msg) <= 3 else 5
        try:
            got: object = parse_packet(msg, expected)
        except PacketError as exc:
            got = "no number" if exc.number is None else ("bad packet", exc.number)
        assert got == _checked_one_by_one(msg, expected)
