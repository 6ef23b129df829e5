"""One output's two frames, ``[metadata, payload]``: how an array or a dict travels. No pickle.

``metadata`` is ``{"data_type": "ndarray", "dtype": "uint8", "shape": [h, w]}`` with the
array's raw C-order bytes as payload, ``{"data_type": "dict"}`` with a JSON payload,
or ``{"data_type": "ignore"}`` (empty payload) for an output the com must not publish.
Worker -> com only, an ndarray's metadata may say ``"packed": "blosc2"``: its payload is packed
(:mod:`heron_remote.compression`) and the com unpacks it before publishing. Published metadata
may end with ``"captured_us": <int>``, the capture time in the rig's clock: readers ignore what
they do not know, and the cache below is keyed without it.
Parsed metadata is cached by its bytes: a camera sends the same few over and over. Metadata
is small (at most :data:`~.bounded.META_MAX_BYTES`) and the cache bounded.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np
import zmq

from ..errors import DecodeError
from .bounded import META_MAX_BYTES, NUMBER_LIMIT, read_json, undecodable

__all__ = [
    "CAPTURED_KEY",
    "IGNORE",
    "ZERO_COPY_MIN",
    "Meta",
    "check_output",
    "decode_output",
    "dtype_name",
    "encode_output",
    "parse_meta",
    "parse_published_meta",
    "split_captured",
    "with_captured",
]

#: The value a worker sends for an output that must not be published (Heron's convention).
IGNORE = "Ignore"
#: Payloads from this size on travel as zmq.Frame without copies; smaller ones are cheaper copied.
ZERO_COPY_MIN = 64 * 1024

_IGNORE_META = b'{"data_type": "ignore"}'
#: The published metadata's key for the capture time (integer microseconds, rig clock).
CAPTURED_KEY = "captured_us"
_CAPTURED_TAIL = b', "captured_us": '
#: Bytes a packed payload may have beyond the array's (blosc2's header, for data it cannot shrink).
_PACKED_OVERHEAD = 32
_DICT_META = b'{"data_type": "dict"}'


def encode_output(value: Any) -> tuple[bytes, Any]:
    """(metadata, payload) for one output: an ndarray, a dict, or ``"Ignore"``.

    A small array's payload is a copy (bytes); one of ZERO_COPY_MIN bytes or more is a
    view of the array's memory.
    """
    if isinstance(value, np.ndarray):
        meta = _META_CACHE.get((value.dtype, value.shape))
        if meta is None:
            meta = _array_meta(value)
            if meta is _IGNORE_META:
                return meta, b""
        if value.nbytes < ZERO_COPY_MIN:
            return meta, value.tobytes()
        if not value.flags.c_contiguous:
            value = np.ascontiguousarray(value)
        return meta, memoryview(value.reshape(-1).view(np.uint8))  # any dtype, datetime64 too
    if isinstance(value, str) and value == IGNORE:
        return _IGNORE_META, b""
    if isinstance(value, dict):
        return _DICT_META, json.dumps(value).encode()
    if isinstance(value, (np.generic, int, float, bool)):
        return encode_output(np.asarray(value))
    raise TypeError(f"cannot send a {type(value).__name__}: send a numpy array, a dict, or the string 'Ignore'")


#: Metadata of numeric arrays by (dtype, shape): a camera sends the same ones over and over.
_META_CACHE: dict[tuple[np.dtype, tuple[int, ...]], bytes] = {}


def _array_meta(value: np.ndarray) -> bytes:
    dtype = value.dtype
    if dtype.kind == "U" and value.size == 1 and value.reshape(-1)[0] == IGNORE:
        return _IGNORE_META
    if dtype.hasobject:
        raise TypeError("object arrays cannot be sent: send numeric arrays, or a dict for JSON data")
    meta = json.dumps({"data_type": "ndarray", "dtype": dtype_name(dtype), "shape": list(value.shape)}).encode()
    # Text arrays are not cached: one of them may be the Ignore marker.
    if dtype.kind != "U" and len(_META_CACHE) < 256:
        _META_CACHE[(dtype, value.shape)] = meta
    return meta


#: The dtype of metadata that carries no array.
_NO_DTYPE = np.dtype(np.uint8)


def dtype_name(dtype: np.dtype) -> str:
    """How the metadata spells ``dtype``: Heron's ``str(dtype)`` ("int16") wherever it names the
    dtype exactly (native byte order), numpy's ``dtype.str`` ("<i2", ">f8", "|V3") elsewhere.

    Heron's readers build arrays with ``str(dtype)`` and turn what they do not recognise into
    other types (its image decoder makes "<i2" unsigned); numpy reads both spellings.
    """
    name = str(dtype)
    try:
        if np.dtype(name) == dtype:
            return name
    except TypeError:
        pass  # structured dtypes print as a list, which np.dtype() does not read back
    return dtype.str


class Meta:
    """Parsed, validated metadata; cached by its bytes because they repeat per packet."""

    __slots__ = ("data_type", "dtype", "flat", "nbytes", "packed", "plain", "shape")

    def __init__(self, raw: bytes) -> None:
        meta = read_json(raw, "metadata", META_MAX_BYTES)
        if not isinstance(meta, dict):
            raise DecodeError(f"metadata must be a JSON object, got {type(meta).__name__}")
        self.data_type = meta.get("data_type")
        self.dtype: np.dtype = _NO_DTYPE  # data_type says whether it is used
        self.shape: tuple[int, ...] = ()
        self.nbytes = -1
        self.flat = False
        #: Whether the payload is packed (worker -> com only), and then the metadata without the mark.
        self.packed = "packed" in meta
        self.plain = raw
        if self.packed:
            if meta["packed"] != "blosc2" or self.data_type != "ndarray":
                raise DecodeError(f"only ndarray payloads are packed, with blosc2: {bytes(raw[:120])!r}")
            self.plain = json.dumps({k: v for k, v in meta.items() if k != "packed"}).encode()
        if self.data_type == "ndarray":
            self.dtype, self.shape = _array_spec(meta, raw)
            self.nbytes = self.dtype.itemsize * math.prod(self.shape)
            self.flat = len(self.shape) == 1  # np.frombuffer's own shape: no reshape needed
        elif self.data_type not in ("dict", "ignore"):
            raise DecodeError(f"unknown data_type {str(self.data_type)[:40]!r}: expected ndarray, dict or ignore")

    def decode(self, payload: Any) -> Any:
        """The ndarray or dict this metadata describes in ``payload``. Arrays are read-only views."""
        if self.packed:
            raise DecodeError("a packed payload: the com unpacks those, the published stream carries none")
        try:
            if self.data_type == "ndarray":
                size = len(payload) if type(payload) in _BYTES_LIKE else memoryview(payload).nbytes
                if size != self.nbytes:
                    raise DecodeError(
                        f"payload has {size} bytes but dtype {self.dtype.str} and shape "
                        f"{list(self.shape)} need {self.nbytes}"
                    )
                array = _frombuffer(payload, self.dtype)
                return array if self.flat else array.reshape(self.shape)
            if self.data_type == "dict":
                return read_json(memoryview(payload), "dict payload", sys.maxsize)  # data: its size is the worker's
            return IGNORE
        except Exception as exc:  # a shape numpy cannot make, a payload that is no buffer
            raise undecodable("the payload", exc) from exc


def _array_spec(meta: dict[str, Any], raw: bytes) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape of ndarray metadata; DecodeError unless numpy can make such an array."""
    spelled, shape = meta.get("dtype"), meta.get("shape")
    if not isinstance(spelled, str) or not isinstance(shape, list) or len(shape) > _MAX_DIMS:
        raise DecodeError(f"ndarray metadata needs a valid dtype and shape: {bytes(raw[:120])!r}")
    if not all(type(n) is int and n < NUMBER_LIMIT for n in shape):
        raise DecodeError(f"ndarray metadata needs a valid dtype and shape (integers): {bytes(raw[:120])!r}")
    try:
        dtype = np.dtype(spelled)
    except Exception as exc:  # numpy raises TypeError, ValueError, SyntaxError... for what it cannot read
        raise DecodeError(f"ndarray metadata needs a valid dtype and shape: {bytes(raw[:120])!r}") from exc
    if dtype.hasobject or dtype.itemsize == 0 or dtype.subdtype is not None or any(n < 0 for n in shape):
        raise DecodeError(f"ndarray metadata has an unusable dtype or shape: {bytes(raw[:120])!r}")
    return dtype, tuple(shape)


#: Dimensions an array may have (numpy's own limit is 64).
_MAX_DIMS = 64
#: Parsed metadata kept: a camera sends the same few over and over; a flood of others is no burden.
_CACHED = 256


def parse_meta(raw: bytes) -> Meta:
    """Validated metadata; raises DecodeError. Metadata of up to META_MAX_BYTES is kept, by its bytes
    without the capture time, at most _CACHED of them (emptied when full), so what is kept stays
    bounded whatever arrives."""
    if type(raw) is bytes:
        meta = _KNOWN.get(raw)  # what a worker sends, each packet: one look-up
        if meta is not None:
            return meta
    else:
        raw = _as_bytes(raw)
    if len(raw) > META_MAX_BYTES:
        raise DecodeError(f"metadata of {len(raw)} bytes is over the {META_MAX_BYTES}-byte limit")
    return _parsed(split_captured(raw)[0])


def with_captured(meta: bytes, captured_us: int) -> bytes:
    """Published metadata ``meta`` with the capture time (microseconds, rig clock) as its last key."""
    return meta[:-1] + _CAPTURED_TAIL + b"%d}" % captured_us  # cheaper than one format of three


def split_captured(raw: bytes) -> tuple[bytes, int | None]:
    """(metadata without a trailing capture time, that time in microseconds or None).

    The time changes with every packet; the rest is what the cache of parsed metadata is keyed by.
    """
    at = raw.rfind(_CAPTURED_TAIL)
    if at < 0 or raw[-1] != 0x7D:  # b"}"
        return raw, None
    digits = raw[at + len(_CAPTURED_TAIL) : -1]
    if not digits.isdigit() or len(digits) > 19:
        return raw, None  # not ours: the JSON reader says what is wrong with it, if anything
    value = int(digits)
    if value >= NUMBER_LIMIT:
        return raw, None
    return raw[:at] + b"}", value


def parse_published_meta(raw: bytes) -> tuple[Meta, int | None]:
    """``(parse_meta(raw), split_captured(raw)[1])``, splitting once: a subscriber's every message."""
    if type(raw) is not bytes or len(raw) > META_MAX_BYTES:
        return parse_meta(raw), split_captured(raw)[1]
    plain, captured = split_captured(raw)
    return _parsed(plain), captured


def _parsed(plain: bytes) -> Meta:
    """Metadata without a capture time, parsed once while it stays in the cache."""
    meta = _KNOWN.get(plain)
    if meta is None:
        meta = Meta(plain)  # a DecodeError leaves nothing in the cache
        if len(_KNOWN) >= _CACHED:
            _KNOWN.clear()
        _KNOWN[plain] = meta
    return meta


#: Parsed metadata by its bytes without the capture time.
_KNOWN: dict[bytes, Meta] = {}


def _as_bytes(raw: Any) -> bytes:
    try:
        return raw.bytes if isinstance(raw, zmq.Frame) else memoryview(raw).tobytes()
    except Exception as exc:
        raise undecodable("metadata", exc) from exc


def check_output(raw_meta: bytes, payload_len: int) -> bool:
    """Validate one output's frames; True when it is to be published, False for Ignore.

    A packed payload's size is checked here against what packing may make of the array; its
    header is checked when it is unpacked."""
    meta = parse_meta(raw_meta)
    if meta.data_type == "ignore":
        return False
    if meta.packed:
        if not 16 <= payload_len <= meta.nbytes + _PACKED_OVERHEAD:
            raise DecodeError(
                f"a packed payload of {payload_len} bytes cannot hold dtype {meta.dtype.str} and shape "
                f"{list(meta.shape)} ({meta.nbytes} bytes)"
            )
        return True
    if meta.data_type == "ndarray" and payload_len != meta.nbytes:
        raise DecodeError(
            f"payload has {payload_len} bytes but dtype {meta.dtype.str} and shape {list(meta.shape)} "
            f"need {meta.nbytes}"
        )
    return True


def decode_output(raw_meta: bytes, payload: Any) -> Any:
    """The ndarray or dict carried by (metadata, payload). Arrays are read-only views."""
    return parse_meta(raw_meta).decode(payload)


#: Payload types whose len() is their size in bytes.
_BYTES_LIKE = (bytes, zmq.Frame)
#: Called with positional arguments: numpy parses a keyword's dtype at several times the cost.
_frombuffer = np.frombuffer
