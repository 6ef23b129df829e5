"""Start records: which worker holds which node on this host, and which com owns it.

Every worker, before it binds, claims its node (its parameters topic) in this account's
private folder (:func:`heron_remote._paths.private_dir`). The record names the worker
(pid, start time, start token) and the com that launched it (rig host, pid, start time).
Beside it, the worker keeps a *live file*: its mtime is the worker's last pulse from its
com, and it says ``orphaned`` once the worker knows its com is gone.

A new claim finds the node either free, or held by a worker that still runs. It ends
that worker only when it is safe to say its com no longer wants it:

- the holder was started by this very com (a restart);
- the holder knows its com is gone (its com's pipe or SSH session closed, unanswered);
- the holder has had no pulse for its whole death window (its com is gone or cut off).

Otherwise the node is held by a live com, and the launch fails with :class:`NodeHeldError`
naming the holder. The reaper acts only on a process it has identified as the recorded
worker: same account, same start time, the token as one exact argv word, and leader of
its own process group (pgid == pid > 1), so a forged or stale record can never make it
signal anything else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ._paths import open_private, private_dir, secure_dir
from ._procs import Identity, cmdline, end_group, identify
from .errors import NodeHeldError

__all__ = ["ComId", "NodeClaim", "StartRecord", "claim", "read", "run_dir"]

logger = logging.getLogger(__name__)

TOKEN_OPTION = "--heron-remote-token="
#: A start token: what :func:`secrets.token_hex` makes; never empty.
_TOKEN = re.compile(r"[0-9a-f]{8,64}")
#: Live-file states: the com's channel closed (asking it), or the com is known gone.
_CLOSED = b"closed"
_ORPHANED = b"orphaned"
_MAX_RECORD = 64 * 1024

#: Where the records are kept, if not in the default place (a server's ``run_dir`` sets it).
RUN_DIR_ENV = "HERON_REMOTE_RUN_DIR"


def run_dir(override: str | None = None) -> Path:
    """The folder of this account's start records, checked private (created if missing)."""
    chosen = override or os.environ.get(RUN_DIR_ENV)
    if chosen:
        return secure_dir(Path(chosen).expanduser())
    return private_dir("run")


@dataclass(frozen=True)
class ComId:
    """The com that owns a worker: the rig's host name, the com's pid and its start time."""

    host: str
    pid: int
    started: str

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.started}"

    @classmethod
    def parse(cls, text: str) -> ComId | None:
        host, sep, rest = text.rpartition(":")
        host, sep2, pid = host.rpartition(":")
        if not (sep and sep2 and pid.isdigit()):
            return None
        return cls(host, int(pid), rest)

    @classmethod
    def here(cls) -> ComId:
        """This process, as a com."""
        me = identify(os.getpid())
        return cls(socket.gethostname(), os.getpid(), me.started if me is not None else f"{time.time():.3f}")


@dataclass(frozen=True)
class StartRecord:
    node: str
    pid: int
    #: The worker's start time as :func:`heron_remote._procs.identify` reads it.
    started: str
    uid: int
    token: str
    #: The owning com, as ``str(ComId)`` ("" when the worker was started without one).
    com: str
    #: The worker's death window: seconds without a pulse before it ends itself.
    window: float
    since: float

    @classmethod
    def from_json(cls, raw: bytes) -> StartRecord | None:
        try:
            body = json.loads(raw)
            record = cls(**{f.name: body[f.name] for f in fields(cls)})
        except (ValueError, TypeError, KeyError, RecursionError):
            return None
        types: dict[str, type | tuple[type, ...]] = {
            "node": str, "pid": int, "started": str, "uid": int, "token": str, "com": str,
            "window": (int, float), "since": (int, float),
        }  # fmt: skip
        if not all(isinstance(getattr(record, name), kind) for name, kind in types.items()):
            return None
        return record

    def holder(self) -> Identity | None:
        """The recorded worker, if it still runs and is certainly it; None otherwise."""
        if not _TOKEN.fullmatch(self.token) or self.pid <= 1:
            return None
        me = identify(self.pid)
        if me is None or me.uid != self.uid or me.started != self.started:
            return None
        return me if TOKEN_OPTION + self.token in me.argv else None


def _path(folder: Path, node: str) -> Path:
    return folder / (hashlib.sha1(node.encode()).hexdigest()[:20] + ".json")


def _live_path(folder: Path, node: str, token: str) -> Path:
    return _path(folder, node).with_suffix(f".{token}.live")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: records are written whole by one rename; good enough for one rig
        yield
        return
    fd = open_private(folder / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_file(path: Path) -> bytes | None:
    try:
        fd = open_private(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, _MAX_RECORD)
    finally:
        os.close(fd)


def read(folder: Path, node: str) -> StartRecord | None:
    raw = _read_file(_path(folder, node))
    return None if raw is None else StartRecord.from_json(raw)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")  # O_EXCL, 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _why_end(old: StartRecord, com: str, folder: Path, now: float) -> str | None:
    """Why ``old``'s worker may be ended for a launch by ``com``; None when its com still wants it."""
    if old.com and old.com == com:
        return "it was started by this same com"
    live = _live_path(folder, old.node, old.token)
    state = _read_file(live)
    if state is not None and state.startswith((_ORPHANED, _CLOSED)):
        return "its com is gone (its pipe or SSH session closed)"
    try:
        quiet = now - os.lstat(live).st_mtime
    except OSError:
        quiet = now - old.since
    if quiet > old.window:
        return f"it has had no pulse from its com for {quiet:.1f} s (its window: {old.window:g} s)"
    return None


def _held_error(old: StartRecord, reason: str) -> NodeHeldError:
    owner = ComId.parse(old.com)
    by = f"com pid {owner.pid} on {owner.host}" if owner else "a com that did not say who it is"
    return NodeHeldError(
        f"node {old.node!r} on {socket.gethostname()} is held by worker pid {old.pid} of {by}, "
        f"running since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(old.since))}: {reason}. "
        "Nothing was ended. Stop that script first, or give this node another name",
        node=old.node,
    )


def _end(old: StartRecord, holder: Identity, reason: str, grace: float) -> None:
    if holder.pgid != holder.pid:
        raise _held_error(old, "it is not the leader of its own process group, so it cannot be ended safely")
    logger.warning("ending worker pid %d of node %s: %s", old.pid, old.node, reason)
    if not end_group(holder.pid, grace):
        logger.error("worker pid %d of node %s survived KILL", old.pid, old.node)


class NodeClaim:
    """This worker's hold on its node: its record and live file, until :meth:`release`."""

    def __init__(self, folder: Path, record: StartRecord) -> None:
        self.folder = folder
        self.record = record
        self._live = _live_path(folder, record.node, record.token)
        self._fd: int | None = open_private(self._live, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        self._state = b""

    def pulse(self) -> None:
        """A pulse came from the com: the live file's mtime says when (and the com is there)."""
        fd = self._fd
        if fd is not None:
            with contextlib.suppress(OSError):
                os.utime(fd) if os.utime in os.supports_fd else os.utime(self._live)
            if self._state == _CLOSED:
                self._mark(b"")

    def closed(self) -> None:
        """The com's channel closed: until a pulse says otherwise, a new launch may end this worker."""
        self._mark(_CLOSED)

    def orphaned(self) -> None:
        """The com is gone: say so, so that a new launch ends this worker at once."""
        self._mark(_ORPHANED)

    def _mark(self, state: bytes) -> None:
        fd = self._fd
        if fd is not None:
            self._state = state
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, state, 0)

    def release(self) -> None:
        """Remove the record (if still this worker's) and the live file. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        os.close(fd)
        with contextlib.suppress(OSError), _locked(self.folder):
            os.unlink(self._live)
            old = read(self.folder, self.record.node)
            if old is not None and old.token == self.record.token:
                os.unlink(_path(self.folder, self.record.node))


def claim(
    node: str, token: str, *, folder: Path, com: str = "", window: float = 10.0, grace: float = 1.0
) -> tuple[NodeClaim, list[StartRecord]]:
    """Take ``node`` for this process, ending a holder whose com is gone; (the claim, the ended).

    Raises NodeHeldError, ending nothing, when a worker whose com still wants it holds the node.
    """
    if not _TOKEN.fullmatch(token):
        raise ValueError("a start token is 8 to 64 lowercase hex digits")
    me = identify(os.getpid())
    reaped = []
    with _locked(folder):
        old = read(folder, node)
        if old is not None and old.token != token and old.pid != os.getpid():
            if os.name == "nt":
                if _windows_runs(old):
                    end_group(old.pid, grace)
                    reaped.append(old)
            elif (holder := old.holder()) is not None:
                reason = _why_end(old, com, folder, time.time())
                if reason is None:
                    raise _held_error(old, "its com still runs and pulses it")
                _end(old, holder, reason, grace)
                reaped.append(old)
            with contextlib.suppress(OSError):
                os.unlink(_live_path(folder, old.node, old.token))
        record = StartRecord(
            node=node,
            pid=os.getpid(),
            started=me.started if me is not None else "",
            uid=me.uid if me is not None else -1,
            token=token,
            com=com,
            window=float(window),
            since=time.time(),
        )
        held = NodeClaim(folder, record)
        _write_atomically(_path(folder, node), json.dumps(asdict(record)).encode())
    return held, reaped


def _windows_runs(old: StartRecord) -> bool:
    argv = cmdline(old.pid)
    return argv is not None and TOKEN_OPTION + old.token in argv
