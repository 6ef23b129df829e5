"""Optional compression of the worker -> com hop, for cameras that a link cannot carry raw.

The worker packs each large ndarray output with blosc2 and marks it in its metadata
(``"packed": "blosc2"``); the com unpacks it before publishing, so the published wire format
is unchanged. blosc2 is an optional extra (``pip install 'heron_remote[compression]'``), on the
rig and on each PC that compresses. A packed payload is read as hostile input: its header
must announce exactly the size the metadata's dtype and shape need, at most
:data:`PACKED_MAX_BYTES`, and anything blosc2 cannot read is a DecodeError.
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .errors import ConfigError, DecodeError

__all__ = [
    "CODECS",
    "EXTRA_HINT",
    "PACKED_MAX_BYTES",
    "PACK_MIN_BYTES",
    "SHUFFLES",
    "Compression",
    "Packer",
    "blosc2_module",
    "chosen_compression",
    "unpack",
]

#: The codecs a worker may use (blosc2's general-purpose ones).
CODECS = ("zstd", "lz4", "lz4hc", "blosclz", "zlib")
#: bit: bit-shuffle (best for camera frames with sensor noise), byte: byte-shuffle, none.
SHUFFLES = ("bit", "byte", "none")
#: Arrays smaller than this travel as they are: packing would cost more than it saves.
PACK_MIN_BYTES = 4096
#: The largest array a packed payload may unpack to (blosc2's own chunk limit is just under 2 GiB).
PACKED_MAX_BYTES = 1 << 30
#: What a user without blosc2 is told.
EXTRA_HINT = "pip install 'heron_remote[compression]'"
#: What the metadata of a packed output says.
PACKED_MARK = "blosc2"

_MAX_THREADS = 64


def blosc2_module(where: str = "this machine") -> ModuleType:
    """blosc2, imported; ConfigError naming the extra when it is not installed."""
    try:
        import blosc2
    except ImportError as exc:
        raise ConfigError(
            f"compression needs the blosc2 package, which is not installed on {where}: {EXTRA_HINT} there"
        ) from exc
    return blosc2


@dataclass(frozen=True, kw_only=True)
class Compression:
    """How a worker packs its arrays for the link to the com.

    codec: one of CODECS ("zstd" packs camera frames best, "lz4" is the fastest).
    level: 0 (no compression) to 9; 1 is fast and already close to the best ratio on noisy frames.
    threads: the worker's compression threads (and the com's for unpacking), 1 to 64.
    shuffle: "bit" (the default: sensor noise sits in the low bits), "byte" or "none".
    """

    codec: str = "zstd"
    level: int = 1
    threads: int = 1
    shuffle: str = "bit"

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ConfigError(f"Compression.codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if not _int_in(self.level, 0, 9):
            raise ConfigError(f"Compression.level must be an int from 0 to 9, got {self.level!r}")
        if not _int_in(self.threads, 1, _MAX_THREADS):
            raise ConfigError(f"Compression.threads must be an int from 1 to {_MAX_THREADS}, got {self.threads!r}")
        if self.shuffle not in SHUFFLES:
            raise ConfigError(f"Compression.shuffle must be one of {', '.join(SHUFFLES)}, got {self.shuffle!r}")

    def to_arg(self) -> str:
        """The worker's command-line form, ``codec:level:threads:shuffle`` (no secret in it)."""
        return f"{self.codec}:{self.level}:{self.threads}:{self.shuffle}"

    @classmethod
    def from_arg(cls, text: str) -> Compression:
        """Read :meth:`to_arg`'s form; ConfigError for anything else."""
        parts = text.split(":")
        if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():
            raise ConfigError(f"compression must be written codec:level:threads:shuffle, got {text!r}")
        return cls(codec=parts[0], level=int(parts[1]), threads=int(parts[2]), shuffle=parts[3])

    @classmethod
    def coerce(cls, value: Any, where: str = "compression") -> Compression | None:
        """A Compression from what a caller or the registry gives: None or false (off), true (the
        defaults), a codec name, a dict of the fields, or a Compression."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, Compression):
            return value
        if isinstance(value, str):
            return cls(codec=value)
        if isinstance(value, dict):
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = set(value) - fields
            if unknown:
                raise ConfigError(f"{where} has the unknown key {sorted(unknown)[0]!r}; the keys are {sorted(fields)}")
            try:
                return cls(**value)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        raise ConfigError(
            f'{where} must be true, false, a codec name or {{"codec": ..., "level": ..., "threads": ..., '
            f'"shuffle": ...}}, got {value!r}'
        )


def chosen_compression(value: object) -> Compression | bool | None:
    """A source's compression: None (its server's in the registry), False (off), True (the
    defaults) or a Compression; blosc2 checked now, on the rig, which unpacks."""
    if value is None or value is False:
        return value
    if value is not True and not isinstance(value, Compression):
        raise ConfigError(f"compression must be a Compression, True, False or None, got {value!r}")
    chosen = Compression() if value is True else value
    blosc2_module()
    return chosen


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


class Packer:
    """Packs arrays as ``compression`` says (the worker's side). Needs blosc2: ConfigError otherwise."""

    def __init__(self, compression: Compression) -> None:
        self.compression = compression
        blosc2 = self._blosc2 = blosc2_module(f"this PC ({platform.node() or 'unnamed'})")
        shuffle = {"bit": blosc2.Filter.BITSHUFFLE, "byte": blosc2.Filter.SHUFFLE, "none": blosc2.Filter.NOFILTER}
        self._params = {
            "codec": blosc2.Codec[compression.codec.upper()],
            "clevel": compression.level,
            "nthreads": compression.threads,
            "filters": [shuffle[compression.shuffle]],
            "filters_meta": [0],
        }
        #: Packed metadata by plain metadata: a camera sends the same few.
        self._marked: dict[bytes, bytes] = {}

    def pack(self, meta: bytes, payload: Any, itemsize: int) -> tuple[bytes, Any]:
        """(metadata, payload) packed when that makes it smaller, else as they came."""
        data = memoryview(payload)
        if data.nbytes < PACK_MIN_BYTES or data.nbytes > PACKED_MAX_BYTES:
            return meta, payload
        packed = self._blosc2.compress2(data, typesize=min(itemsize, 255), **self._params)
        if len(packed) >= data.nbytes:
            return meta, payload  # noise only: the com would unpack for nothing
        marked = self._marked.get(meta)
        if marked is None:
            marked = meta[:-1] + b', "packed": "' + PACKED_MARK.encode() + b'"}'
            if len(self._marked) < 256:
                self._marked[meta] = marked
        return marked, packed


def unpack(payload: Any, nbytes: int, threads: int = 1) -> bytearray:
    """The ``nbytes`` bytes a packed payload holds; DecodeError when its header says otherwise,
    when it is over PACKED_MAX_BYTES, or when blosc2 cannot read it (or is not installed)."""
    if nbytes > PACKED_MAX_BYTES:
        raise DecodeError(f"a packed payload may hold at most {PACKED_MAX_BYTES} bytes, its metadata says {nbytes}")
    try:
        blosc2 = blosc2_module()
    except ConfigError as exc:
        raise DecodeError(f"a packed payload came, and {exc}") from None
    try:
        announced, cbytes, _ = blosc2.get_cbuffer_sizes(payload)
    except Exception as exc:  # ValueError, TypeError: no blosc2 header
        raise DecodeError(f"a packed payload has no blosc2 header ({type(exc).__name__}: {str(exc)[:80]})") from None
    size = memoryview(payload).nbytes
    if announced != nbytes or cbytes != size:
        raise DecodeError(
            f"a packed payload of {size} bytes announces {announced} bytes in {cbytes}, but its metadata needs "
            f"{nbytes} bytes"
        )
    out = bytearray(nbytes)
    try:
        blosc2.decompress2(payload, dst=out, nthreads=threads)
    except Exception as exc:
        raise DecodeError(f"a packed payload cannot be unpacked ({type(exc).__name__}: {str(exc)[:80]})") from None
    return out
