"""Every decoder of an input socket, attacked and used as meant: the attack is a DecodeError and
nothing else, the legitimate message still decodes. (Issue 12, F6 and F7.)"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest

from heron_remote import ConfigError, DecodeError
from heron_remote._drops import Drops
from heron_remote._protocol import liveness, parse_liveness, parse_pulse, pulse
from heron_remote.com.parameters import decode_parameters, encode_parameters
from heron_remote.com.plain_pickle import MAX_DEPTH, PlainPickleError, load_plain
from heron_remote.com.sequence import INDEX_JUMP_LIMIT, PacketSequence
from heron_remote.status import STATUS_TOPIC, SourceStatus, _status_in, render
from heron_remote.wire import (
    PacketError,
    decode_published,
    encode_output,
    packet_number,
    parse_meta,
    parse_packet,
    parse_time,
)
from heron_remote.wire.bounded import META_MAX_BYTES, PARAMETERS_MAX_BYTES, read_int, read_json
from heron_remote.wire.codec import _KNOWN

DEEP_JSON = b"[" * 100_000
DIGITS_5000 = b"1" * 5000
#: A dict whose key is a tuple nested 200 000 deep: hashing it overflowed the C stack.
DEEP_TUPLE_KEY_PICKLE = b"\x80\x04}" + b")" + b"\x85" * 200_000 + b"Ns."
META, PAYLOAD = encode_output(np.arange(6, dtype=np.uint16).reshape(2, 3))


# -- bounded readers --------------------------------------------------------------------------


def test_read_json_refuses_deep_nesting_and_oversize_and_reads_json() -> None:
    with pytest.raises(DecodeError, match="nested too deeply"):
        read_json(DEEP_JSON, "x", 1 << 20)
    with pytest.raises(DecodeError, match="over the 10-byte limit"):
        read_json(b'"' + b"a" * 20 + b'"', "x", 10)
    with pytest.raises(DecodeError, match="not JSON"):
        read_json(b"\xff\xfe", "x", 100)
    assert read_json(b'{"a": [1, 2.5]}', "x", 100) == {"a": [1, 2.5]}


@pytest.mark.parametrize("raw", [DIGITS_5000, str(1 << 63).encode(), b"-1", b"", b"1e3", b" 1"])
def test_read_int_refuses_what_is_no_bounded_integer(raw: bytes) -> None:
    with pytest.raises(DecodeError, match="index"):
        read_int(raw, "the index")


def test_read_int_reads_integers_up_to_2_63() -> None:
    assert read_int(b"0", "n") == 0 and read_int(str((1 << 63) - 1).encode(), "n") == (1 << 63) - 1


# -- worker -> com packets ----------------------------------------------------------------------


@pytest.mark.parametrize("number", [DIGITS_5000, str(1 << 63).encode(), b"99999999999999999999"])
def test_a_packet_number_that_is_no_bounded_integer_is_a_packet_error(number: bytes) -> None:
    with pytest.raises(PacketError) as caught:
        parse_packet([number, META, PAYLOAD], 3)
    assert caught.value.number is None


def test_a_packet_with_an_int64_number_is_read() -> None:
    assert parse_packet([b"9223372036854775807", META, PAYLOAD], 3) == ((1 << 63) - 1, [True], 12)
    assert packet_number([b"7"]) == 7


@pytest.mark.parametrize(
    "meta",
    [
        b"[" * 3000,  # deep, within the size limit
        b'{"data_type": "ndarray", "dtype": "<u1", "shape": ' + json.dumps([1] * 65).encode() + b"}",
        b'{"data_type": "ndarray", "dtype": "(2,)<u1", "shape": [3]}',  # a sub-array dtype
        b'{"data_type": "ndarray", "dtype": "<u1", "shape": [' + DIGITS_5000[:4000] + b"]}",
        b'{"data_type": "ndarray", "dtype": "<u1", "shape": [2.5]}',
        b'{"data_type": ["ndarray"]}',
    ],
    ids=["deep", "65 dims", "sub-array", "4000 digits", "float dim", "list type"],
)
def test_metadata_that_breaks_numpy_or_json_is_a_packet_error_with_its_number(meta: bytes) -> None:
    with pytest.raises(PacketError) as caught:
        parse_packet([b"5", meta, PAYLOAD], 3)
    assert caught.value.number == 5


def test_metadata_over_4_kib_is_refused_unparsed() -> None:
    big = b'{"data_type": "dict", "x": "' + b"a" * META_MAX_BYTES + b'"}'
    with pytest.raises(DecodeError, match=r"over the 4096-byte limit"):
        parse_meta(big)


def test_small_metadata_is_parsed_once_and_kept() -> None:
    assert parse_meta(META) is parse_meta(bytes(META))  # the cache: one parse per distinct metadata


def test_the_sequence_refuses_a_number_that_takes_the_index_past_2_62() -> None:
    seq = PacketSequence()
    assert seq.advance(1) == 1
    with pytest.raises(DecodeError, match="past 2"):
        seq.advance(INDEX_JUMP_LIMIT)
    assert (seq.advance(2), seq.lost) == (2, 0)  # nothing changed
    assert seq.advance(INDEX_JUMP_LIMIT - 10) == INDEX_JUMP_LIMIT - 10


# -- com -> subscribers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames",
    [
        [b"t", DIGITS_5000, b"1", META, PAYLOAD],
        [b"t", b"1", DIGITS_5000, META, PAYLOAD],
        [b"t", b"1", b"nan", META, PAYLOAD],
        [b"t", b"1", b"1" * 40 + b".5", META, PAYLOAD],
        [b"t", b"1", b"1", b'{"data_type": "dict"}', DEEP_JSON],
        [b"t", b"1", b"1", b"[" * 3000, PAYLOAD],
        [b"\xff", b"1", b"1", META, PAYLOAD],
        [b"t", b"1", b"1", META, PAYLOAD[:-1]],
    ],
    ids=["index digits", "time digits", "nan time", "long float time", "deep dict", "deep meta", "topic", "size"],
)
def test_a_published_message_that_breaks_the_format_is_a_decode_error(frames: list[bytes]) -> None:
    with pytest.raises(DecodeError):
        decode_published(frames)


def test_a_published_message_is_read() -> None:
    packet = decode_published([b"t", b"3", b"1700000000.5", META, PAYLOAD])
    assert (packet.index, packet.time_us) == (3, 1700000000500000)
    np.testing.assert_array_equal(packet.value, np.arange(6, dtype=np.uint16).reshape(2, 3))
    assert parse_time(b"1700000000123456") == 1700000000.123456


# -- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (DEEP_JSON, "nested too deeply"),
        (DIGITS_5000, "not JSON"),
        (b"x" * (PARAMETERS_MAX_BYTES + 1), "over the"),
        (DEEP_TUPLE_KEY_PICKLE, "nests tuples more than"),
        (b"\x80\x04" + b"]" * 3000 + b"a" * 2999 + b".", "nests values more than"),
        (pickle.dumps({"big": 10**5000}, protocol=4), "cannot receive as JSON"),
    ],
    ids=["deep JSON", "5000 digits", "oversize", "deep tuple key", "deep lists", "huge int"],
)
def test_parameters_from_the_forwarder_that_break_the_format_are_decode_errors(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_parameters(raw)


def test_parameters_from_the_forwarder_are_passed_on_as_json() -> None:
    assert json.loads(decode_parameters(b'{"gain": 2}')) == {"gain": 2}
    assert json.loads(decode_parameters(pickle.dumps([False, 3, "x"], protocol=4))) == [False, 3, "x"]
    nested: object = 1
    for _ in range(MAX_DEPTH - 1):
        nested = [nested]
    assert json.loads(decode_parameters(pickle.dumps(nested, protocol=4))) == nested  # as deep as allowed


def test_a_self_holding_pickle_is_refused() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(PlainPickleError, match="nests values"):
        load_plain(pickle.dumps(loop, protocol=4))


def test_parameters_too_large_for_the_worker_are_refused_when_sent() -> None:
    with pytest.raises(ConfigError, match="over the 262144-byte limit"):
        encode_parameters({"table": "x" * PARAMETERS_MAX_BYTES})
    assert json.loads(encode_parameters({"table": "x" * 1000})) == {"table": "x" * 1000}


# -- pulses and liveness -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames",
    [
        [b"PULSE", DIGITS_5000],
        [b"PULSE", b"-1"],
        [b"PULSE"],
        [b"LIVE", b"1"],
        [],
        [b"PULSE", b"1", b"x"],
        [b"PULSE", b"1", DIGITS_5000],
        [b"PULSE", b"1", b"2", b"3"],
    ],
)
def test_what_is_no_pulse_is_a_decode_error(frames: list[bytes]) -> None:
    with pytest.raises(DecodeError, match="pulse"):
        parse_pulse(frames)


def test_a_pulse_carries_its_time_and_may_answer_a_probe() -> None:
    frames = pulse()
    assert parse_pulse(frames) == (int(frames[1]), None)
    frames = pulse(answer=7)
    assert parse_pulse(frames) == (int(frames[1]), 7)


@pytest.mark.parametrize(
    "frames", [[b"LIVE", b"[" * 60_000], [b"LIVE", b"[1]"], [b"LIVE"], [b"PULSE", b"{}"], [b"LIVE", b"{" * 70_000]]
)
def test_what_is_no_liveness_message_is_a_decode_error(frames: list[bytes]) -> None:
    with pytest.raises(DecodeError, match="liveness"):
        parse_liveness(frames)


def test_a_liveness_message_carries_the_worker_s_count_and_a_bounded_error() -> None:
    body = parse_liveness(liveness(12, 3, 99, "x" * 100_000, rejected=4))
    assert (body["pid"], body["echo_ns"], body["rejected"], len(body["error"])) == (12, 99, 4, 4000)


# -- status ------------------------------------------------------------------------------------

GOOD_STATUS = SourceStatus(
    node="cam",
    host="acq1",
    worker_pid=42,
    state="running",
    frames_per_s=30.0,
    mb_per_s=1.5,
    received=100,
    gaps=0,
    restarts=0,
    heartbeat_rtt_ms=0.8,
    last_error=None,
    time=1700000000.0,
)


def _status(**changes: object) -> bytes:
    body = json.loads(GOOD_STATUS.to_json())
    body.update(changes)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "raw",
    [
        DEEP_JSON,
        _status(node=["cam"]),
        _status(frames_per_s="fast"),
        _status(received=True),
        _status(received=10**30),
        _status(last_error=7),
        b'{"node": "cam"}',
        json.dumps({**json.loads(GOOD_STATUS.to_json()), "time": "now"}).encode(),
    ],
    ids=["deep", "node a list", "rate a string", "count a bool", "count huge", "error a number", "missing", "time"],
)
def test_a_status_message_that_breaks_the_format_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        _status_in([STATUS_TOPIC + b"cam", raw])
    assert SourceStatus.from_json(raw) is None


def test_a_status_message_is_read_and_one_without_the_newer_count_too() -> None:
    assert _status_in([STATUS_TOPIC + b"cam", GOOD_STATUS.to_json()]) == GOOD_STATUS
    body = json.loads(GOOD_STATUS.to_json())
    del body["rejected"]  # a com of an earlier version
    assert SourceStatus.decode(json.dumps(body).encode()) == GOOD_STATUS
    with pytest.raises(DecodeError, match="came on topic"):
        _status_in([STATUS_TOPIC + b"other", GOOD_STATUS.to_json()])


def test_every_status_field_has_a_kind_checked() -> None:
    from dataclasses import fields

    from heron_remote.status import _KINDS

    assert set(_KINDS) == {f.name for f in fields(SourceStatus)}  # a new field without one would fail every read


def test_render_shows_no_terminal_escapes_from_a_status() -> None:
    raw = _status(node="\x1b[2Jcam", last_error="\x1b]0;owned\x07oops")
    table = render({"x": SourceStatus.decode(raw)})
    assert "\x1b" not in table and "\x07" not in table and "?[2Jcam" in table


# -- dropping: counted, logged a few times -----------------------------------------------------


def test_drops_are_counted_and_logged_five_times_then_every_thousandth(caplog: pytest.LogCaptureFixture) -> None:
    drops = Drops(logging.getLogger("test.drops"), "a test message")
    with caplog.at_level(logging.WARNING, logger="test.drops"):
        for _ in range(2500):
            drops("bad")
    assert drops.count == 2500 and drops.last == "bad"
    assert len(caplog.records) == 5 + 2  # the 1000th and the 2000th


# -- F7: the metadata cache stays small --------------------------------------------------------


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_a_thousand_injected_1_mib_metadata_leave_memory_as_it_was() -> None:
    """F7: 1024 distinct 1 MiB metadata took a Source from 38 MB to 1061 MB, for good."""
    filler = b"a" * (1 << 20)
    before = _rss_mib()
    for k in range(1100):
        raw = b'{"data_type": "dict", "k": %d, "x": "' % k + filler + b'"}'
        with pytest.raises(DecodeError, match="over the 4096-byte limit"):
            parse_meta(raw)
    after = _rss_mib()
    print(f"RSS before {before:.1f} MiB, after 1100 x 1 MiB metadata {after:.1f} MiB")
    assert after - before < 32


def test_the_cache_holds_at_most_256_metadata_the_latest_kept() -> None:
    for k in range(1000):
        parse_meta(b'{"data_type": "ndarray", "dtype": "<u1", "shape": [%d]}' % k)
    assert len(_KNOWN) <= 256
    recent = b'{"data_type": "ndarray", "dtype": "<u1", "shape": [999]}'
    kept = _KNOWN.get(recent)
    assert kept is not None and parse_meta(recent) is kept  # recent: still there, not parsed again
