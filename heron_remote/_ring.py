"""A local worker's large payloads through shared memory: one copy fewer than a socket.

A local worker whose data goes over a Unix socket (:mod:`heron_remote._ipc`) also makes a ring
in ``/dev/shm`` (Linux only; the name follows its socket's). It copies each large payload into
the ring and sends a 32-byte reference in the payload's place; whoever relays its packets (the
com, or the forwarders' relay host) maps the ring and publishes the payload from there without
copying it. A frame then crosses three copies on the way to a subscriber in another process
instead of four: the hop the forwarders' relay saves in Heron's layout, the copy it could not.

Each record is released when the last reference to its memory is gone, in whichever process and
thread holds it (a ZeroMQ queue, a subscriber's array): a finaliser marks the record's state in
the ring, and the worker reuses records in order once they are released. When the ring stays
full for WAIT_S (a slow subscriber holds its frames), the worker sends the payload through the
socket as before, and waits no more until a record is released. A record no reader took for
RENEW_UNTAKEN_S (its packet was lost on the way: a relay that stopped with packets queued), or
held for RENEW_HELD_S (by a relay that died), would hold the ring for good: the worker then
starts a new ring of the same name and leaves the old one to the readers that still map it.
Records are never rewritten while anyone may read them.

Other accounts: the file is 0600 in the sticky ``/dev/shm``, so no other account can read, write,
remove or replace it; a name another account took first is never used (the worker makes the
file with ``O_EXCL``; a reader maps only a file of its own account, mode 0600). Records are
checked (offset, length, state) before a reader maps them.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
import secrets
import stat
import struct
import sys
import time
import weakref
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from ._ipc import STALE_AFTER_S, data_socket_name
from ._protocol import DATA_QUEUE_BYTES
from .errors import DecodeError

__all__ = [
    "QUEUE_BYTES",
    "REF_SIZE",
    "RENEW_HELD_S",
    "RENEW_UNTAKEN_S",
    "RING_BYTES",
    "WAIT_S",
    "RingReader",
    "RingTap",
    "RingWriter",
    "is_ref",
    "remove_ring",
    "ring_path",
    "sweep_stale_rings",
    "unshared",
]

logger = logging.getLogger(__name__)

_SHM = Path("/dev/shm")
#: Bytes of a worker's ring: room for a few camera frames in flight.
RING_BYTES = 32 * 1024 * 1024
#: Seconds the oldest record may wait untaken, or stay taken, before the worker starts a new ring.
RENEW_UNTAKEN_S = 2.0
#: Bytes the ring lets wait at most (the com's queue from its worker holds as much).
QUEUE_BYTES = DATA_QUEUE_BYTES
#: Seconds the worker waits for a full ring to free a record before the payload takes the socket.
WAIT_S = 0.005
_POLL_S = 0.0001
RENEW_HELD_S = 30.0
_MAGIC = b"HRRING01"
_REF_MAGIC = b"HRRINGRF"
_HEADER = struct.Struct("<8sQQQ")  # magic, generation, capacity, the writer's pid
_DATA_START = 4096  # the records start page-aligned
_RECORD = struct.Struct("<II")  # length, state
_ALIGN = 64
_REF = struct.Struct("<8sQQQ")  # magic, generation, offset, length
#: The size of a reference frame, which stands in for a payload in a packet.
REF_SIZE = _REF.size
# A record's states: written by the worker, taken by a reader, released once its memory is free,
# padding (the ring's end, skipped).
_FREE, _WRITTEN, _TAKEN, _RELEASED, _PADDING = 0, 1, 2, 3, 4
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NAME = re.compile(r"heron-remote-(\d+)-([0-9a-f]{16})\.ring")


def available() -> bool:
    """Whether rings can serve here: Linux with a writable ``/dev/shm``."""
    return sys.platform.startswith("linux") and os.access(_SHM, os.W_OK | os.X_OK)


def ring_path(endpoint: str) -> Path | None:
    """The ring of the local worker whose data socket is ``endpoint``, or None when it has none."""
    name = data_socket_name(endpoint)
    if name is None or not available():
        return None
    return _SHM / f"heron-remote-{os.geteuid()}-{name}.ring"


def remove_ring(endpoint: str) -> None:
    """Remove a worker's ring (a killed worker leaves it behind); only a file of this account."""
    path = ring_path(endpoint)
    if path is not None:
        with contextlib.suppress(OSError):
            if os.lstat(path).st_uid == os.geteuid():
                path.unlink()


def sweep_stale_rings() -> int:
    """Remove this account's rings whose worker is gone (ended by a SIGKILL with its com); how many."""
    if not available():
        return 0
    removed, now, uid = 0, time.time(), os.geteuid()
    for path in _SHM.glob(f"heron-remote-{uid}-*.ring"):
        try:
            st = path.lstat()
            if not _NAME.fullmatch(path.name) or st.st_uid != uid or not stat.S_ISREG(st.st_mode):
                continue
            with open(path, "rb") as f:
                head = f.read(_HEADER.size)
            pid = _HEADER.unpack(head)[3] if len(head) == _HEADER.size else 0
            if pid == 0 and now - st.st_mtime < STALE_AFTER_S:
                continue  # a worker between making the file and writing its header
            if pid == 0 or not _alive(pid):
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a process of this account (a live worker's: another account's is not ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _open_new(path: Path, capacity: int) -> int | None:
    """A new ring file at ``path`` (its size set, no memory reserved yet): its descriptor, or None
    (and why, logged) when there can be none."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | os.O_CLOEXEC
    for attempt in (1, 2):
        try:
            fd = os.open(path, flags, 0o600)
            break
        except FileExistsError:
            # An earlier ring of this worker's launch, if the file is ours: readers keep their
            # mappings of it. If it is another account's, that account took the name first.
            with contextlib.suppress(OSError):
                if attempt == 1 and os.lstat(path).st_uid == os.geteuid():
                    path.unlink()
                    continue
            logger.warning("no shared-memory ring: %s belongs to another account; data goes through the socket", path)
            return None
        except OSError as exc:
            logger.info("no shared-memory ring at %s (%s); data goes through the socket", path, exc.strerror)
            return None
    else:
        return None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.ftruncate(fd, _DATA_START + capacity)
        return fd
    except OSError as exc:
        _abandon(path, fd, exc)
        return None


def _abandon(path: Path, fd: int, exc: OSError) -> None:
    """Give up a ring just made: its file goes, the worker's payloads take the socket."""
    os.close(fd)
    with contextlib.suppress(OSError):
        path.unlink()
    logger.info("no shared-memory ring at %s (%s); data goes through the socket", path, exc.strerror)


class RingWriter:
    """The worker's end: copies payloads into records and reuses them, in order, once released.

    The file is made as the worker binds (so that its com maps it at once), but its memory is
    reserved only with the first large payload: a node that sends small data costs a page.
    """

    def __init__(self, path: Path, fd: int, capacity: int) -> None:
        self.path = path
        self.capacity = capacity
        self._fd = -1
        self._map: mmap.mmap | None = None
        #: Payloads sent through the socket instead (the ring was full, or they were too large).
        self.bypassed = 0
        #: Rings started after the first (records lost or held for good).
        self.renewed = 0
        self._start(fd, reserve=False)

    def _start(self, fd: int, *, reserve: bool) -> None:
        self._drop()
        self._fd = fd
        self._map = mmap.mmap(fd, _DATA_START + self.capacity)
        self.generation = secrets.randbits(63)
        _HEADER.pack_into(self._map, 0, _MAGIC, self.generation, self.capacity, os.getpid())
        self._reserved = False
        if reserve:
            self._reserve()
        self._head = 0  # the next record's offset
        self._tail = 0  # the oldest record's
        self._used = 0
        self._written: deque[float] = deque()  # when each record in use was written, oldest first
        self._waiting = True

    def _drop(self) -> None:
        """Let the current ring go (readers keep their mappings of it)."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _reserve(self) -> bool:
        """Reserve the ring's memory, so that a full /dev/shm (a container's is 64 MiB) fails here,
        not as a SIGBUS in a copy; on failure the ring is given up."""
        try:
            os.posix_fallocate(self._fd, 0, _DATA_START + self.capacity)
        except OSError as exc:
            logger.warning(
                "no shared-memory ring: %s cannot hold %d MiB (%s); data goes through the socket",
                _SHM,
                self.capacity >> 20,
                exc.strerror,
            )
            self.close()
            return False
        self._reserved = True
        return True

    @classmethod
    def create(cls, endpoint: str, capacity: int = RING_BYTES) -> RingWriter | None:
        """The ring of the worker whose data socket is ``endpoint``; None (and why, logged) when
        there can be none, and the worker's payloads go through its socket."""
        path = ring_path(endpoint)
        fd = _open_new(path, capacity) if path is not None else None
        if path is None or fd is None:
            return None
        try:
            return cls(path, fd, capacity)
        except OSError as exc:
            _abandon(path, fd, exc)
            return None

    def put(self, payload: Any) -> bytes | None:
        """Copy ``payload`` into a record; its reference frame, or None when it must go through the socket."""
        if self._map is None or (not self._reserved and not self._reserve()):
            return None
        mapping = self._map
        assert mapping is not None
        try:
            view = memoryview(payload).cast("B")
        except TypeError:  # not C-contiguous
            self.bypassed += 1
            return None
        n = view.nbytes
        need = _align(_RECORD.size + n)
        if need > self.capacity // 4:
            self.bypassed += 1
            return None
        self._reclaim(mapping)
        if not self._fits(need) and not self._wait(mapping, need):
            self._full()
            return None
        offset = self._head
        pad = self.capacity - offset if offset + need > self.capacity else 0
        if pad:
            _RECORD.pack_into(mapping, _DATA_START + offset, pad, _PADDING)
            self._used += pad
            self._written.append(0.0)  # padding is never waited for
            offset = 0
        at = _DATA_START + offset
        mapping[at + _RECORD.size : at + _RECORD.size + n] = view
        _RECORD.pack_into(mapping, at, n, _WRITTEN)  # after the bytes: a reader checks the state
        self._head = (offset + need) % self.capacity
        self._used += need
        self._written.append(time.monotonic())
        return _REF.pack(_REF_MAGIC, self.generation, offset, n)

    def _fits(self, need: int) -> bool:
        """Room for a record of ``need`` bytes, with no more than QUEUE_BYTES waiting before it: the
        ring must not let a com fall further behind its worker than its socket's queue would."""
        pad = self.capacity - self._head if self._head + need > self.capacity else 0  # too near the end: start at 0
        return self._used < QUEUE_BYTES and self._used + pad + need <= self.capacity

    def _wait(self, mapping: mmap.mmap, need: int) -> bool:
        """Wait up to WAIT_S for records to be released, as a socket's sender waits for its queue;
        not again once a wait was in vain, until a record is released (a slow subscriber that holds
        its frames must not slow the worker down)."""
        if not self._waiting:
            return False
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            time.sleep(_POLL_S)
            self._reclaim(mapping)
            if self._fits(need):
                return True
        self._waiting = False
        return False

    def _full(self) -> None:
        """A payload the full ring cannot take; a new ring when the oldest record is lost or held for good."""
        self.bypassed += 1
        assert self._map is not None
        _, state = _RECORD.unpack_from(self._map, _DATA_START + self._tail)
        age = time.monotonic() - self._written[0]
        if (state == _WRITTEN and age > RENEW_UNTAKEN_S) or (state == _TAKEN and age > RENEW_HELD_S):
            why = "never taken (its packet was lost)" if state == _WRITTEN else "still held"
            logger.info("a new shared-memory ring: the oldest record was %s for %.0f s", why, age)
            self.renewed += 1
            self._drop()
            fd = _open_new(self.path, self.capacity)
            if fd is None:
                self.close()
            else:
                try:
                    self._start(fd, reserve=True)
                except OSError as exc:
                    logger.warning("no new shared-memory ring (%s); data goes through the socket", exc.strerror)
                    self.close()
        elif self.bypassed == 1:
            logger.info("the shared-memory ring is full (its frames are still held): this one goes through the socket")

    def _reclaim(self, mapping: mmap.mmap) -> None:
        """Take back the oldest records, as long as their readers released them."""
        while self._used:
            at = _DATA_START + self._tail
            length, state = _RECORD.unpack_from(mapping, at)
            if state == _PADDING:
                size = length
            elif state == _RELEASED:
                size = _align(_RECORD.size + length)
            else:
                return
            _RECORD.pack_into(mapping, at, 0, _FREE)
            self._tail = (self._tail + size) % self.capacity
            self._used -= size
            self._written.popleft()
            self._waiting = True

    def close(self) -> None:
        """Unmap the ring and remove its file (readers keep their mappings). Idempotent."""
        if self._map is None and self._fd < 0:
            return
        self._drop()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def __enter__(self) -> RingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Address ranges of the rings this process maps, while they are mapped (by the mapping's id).
_MAPPED: dict[int, tuple[int, int]] = {}


def _mapped(mapping: mmap.mmap) -> None:
    view = np.frombuffer(mapping, np.uint8)
    start = view.__array_interface__["data"][0]
    del view  # no export left: the mapping can close
    key = id(mapping)
    _MAPPED[key] = (start, start + len(mapping))
    weakref.finalize(mapping, _MAPPED.pop, key, None).atexit = False


def unshared(value: Any) -> Any:
    """``value``, copied if it is an array over a ring this process maps: what reaches a subscriber
    in the relay's own process (a ``Source``'s) must not hold a record for as long as it is kept."""
    if _MAPPED and isinstance(value, np.ndarray) and value.nbytes:
        address = value.__array_interface__["data"][0]
        for start, end in _MAPPED.values():
            if start <= address < end:
                return value.copy()
    return value


def is_ref(frame: Any) -> bool:
    """Whether a payload frame (a zmq.Frame, as large payloads arrive) is a ring reference."""
    return type(frame) is zmq.Frame and len(frame) == REF_SIZE and frame.bytes[:8] == _REF_MAGIC


def _release(mapping: mmap.mmap, at: int) -> None:
    # Runs wherever the record's last reference went (a ZeroMQ thread's hand-back, a subscriber):
    # the mapping may be closed by then, if the reader was dropped.
    with contextlib.suppress(ValueError, BufferError):
        _RECORD.pack_into(mapping, at, _RECORD.unpack_from(mapping, at)[0], _RELEASED)


class RingReader:
    """A relay's end of one ring: payloads out of records, each released when its memory is free."""

    def __init__(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDWR | _NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise DecodeError(f"the worker's shared-memory ring {path} cannot be opened: {exc.strerror}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise DecodeError(
                    f"refusing the shared-memory ring {path}: not a file of this account with mode 0600 "
                    f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})"
                )
            if st.st_size <= _DATA_START:
                raise DecodeError(f"the shared-memory ring {path} is too short ({st.st_size} bytes)")
            self._map = mmap.mmap(fd, st.st_size)
        except OSError as exc:  # out of address space or memory: the packets say so, the relay goes on
            raise DecodeError(f"the worker's shared-memory ring {path} cannot be mapped: {exc.strerror}") from exc
        finally:
            os.close(fd)
        magic, self.generation, self.capacity, _ = _HEADER.unpack_from(self._map, 0)
        if magic != _MAGIC or _DATA_START + self.capacity != len(self._map):
            raise DecodeError(f"{path} is no shared-memory ring of a worker")
        self.path = path
        _mapped(self._map)

    def take(self, ref: Any) -> zmq.Frame:
        """The payload a reference frame points to, as a frame that holds its record until freed."""
        magic, generation, offset, length = _REF.unpack(ref.bytes if isinstance(ref, zmq.Frame) else ref)
        if magic != _REF_MAGIC or generation != self.generation:
            raise DecodeError("a ring reference of another ring (an earlier worker's?)")
        if offset % _ALIGN or offset + _align(_RECORD.size + length) > self.capacity:
            raise DecodeError(f"a ring reference out of the ring: offset {offset}, length {length}")
        at = _DATA_START + offset
        recorded, state = _RECORD.unpack_from(self._map, at)
        if state != _WRITTEN or recorded != length:
            raise DecodeError(f"a ring reference to a record that is not waiting (state {state}, {recorded} bytes)")
        _RECORD.pack_into(self._map, at, length, _TAKEN)  # a second reference to it is refused
        payload = np.frombuffer(self._map, np.uint8, length, at + _RECORD.size)
        weakref.finalize(payload, _release, self._map, at).atexit = False
        return zmq.Frame(payload, copy=False)


class RingTap:
    """A relay's view of the ring of the worker at one endpoint: mapped at its first reference,
    mapped again when the worker was started again (a new ring of the same name)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: RingReader | None = None

    @classmethod
    def of(cls, endpoint: str | None) -> RingTap | None:
        """The tap of the worker at ``endpoint``; None when it can have no ring. Its ring is mapped
        now if it is there: a worker that sends its last frames and ends removes the file."""
        path = ring_path(endpoint) if endpoint else None
        if path is None:
            return None
        tap = cls(path)
        with contextlib.suppress(DecodeError):  # none yet, or one the packets will report
            tap._reader = RingReader(path)
        return tap

    def resolve(self, msg: list[Any], slots: Iterable[int]) -> int:
        """Put the payloads in place of the references among ``msg``'s payload frames; their bytes.
        DecodeError when a reference is bad."""
        taken = 0
        for k in slots:
            if k < len(msg) and is_ref(msg[k]):
                reader = self._reader
                if reader is None or _REF.unpack(msg[k].bytes)[1] != reader.generation:
                    reader = self._reader = RingReader(self.path)
                msg[k] = reader.take(msg[k])
                taken += len(msg[k])
        return taken
