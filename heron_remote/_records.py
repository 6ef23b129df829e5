"""Start records: which worker runs which node on this host, so that a new one can end a stale one.

Every worker, before it binds, takes the record of its node (its parameters topic) in
a per-user directory of the host's temp dir. If the record names a worker that still
runs -- its argv carries the record's start token, so a reused pid is never mistaken
for it -- that worker was left by an earlier run (its com was killed, the rig rebooted,
the link dropped) and holds the camera: its whole process group is ended first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ._paths import temp_root
from ._procs import cmdline, end_group, end_process

__all__ = ["StartRecord", "claim", "release", "run_dir"]

logger = logging.getLogger(__name__)

TOKEN_OPTION = "--heron-remote-token="


#: Where the records are kept, if not in the default place (a server's ``run_dir`` sets it).
RUN_DIR_ENV = "HERON_REMOTE_RUN_DIR"


def run_dir(override: str | None = None) -> Path:
    chosen = override or os.environ.get(RUN_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser()
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return temp_root() / f"run-{user}"


@dataclass(frozen=True)
class StartRecord:
    node: str
    pid: int
    pgid: int
    token: str
    started: float

    def runs(self) -> bool:
        """Whether the recorded worker still runs (same pid *and* the same token in its argv)."""
        argv = cmdline(self.pid)
        return argv is not None and any(TOKEN_OPTION + self.token in word for word in argv)


def _path(folder: Path, node: str) -> Path:
    return folder / (hashlib.sha1(node.encode()).hexdigest()[:20] + ".json")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        import fcntl
    except ImportError:  # Windows: records are written whole by one rename; good enough for one rig
        yield
        return
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def read(folder: Path, node: str) -> StartRecord | None:
    try:
        return StartRecord(**json.loads(_path(folder, node).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def claim(node: str, token: str, *, folder: Path, grace: float = 1.0) -> list[StartRecord]:
    """End what an earlier run left of ``node`` here, then record this process. Returns the reaped."""
    reaped = []
    with _locked(folder):
        old = read(folder, node)
        if old is not None and old.pid != os.getpid() and old.token != token and old.runs():
            logger.warning(
                "ending worker pid %d of node %s, left running by an earlier run (started %s)",
                old.pid,
                node,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(old.started)),
            )
            same_group = os.name != "nt" and old.pgid == os.getpgrp()
            ended = end_process(old.pid, grace) if same_group else end_group(old.pgid, grace)
            if not ended:
                logger.error("worker pid %d of node %s survived KILL", old.pid, node)
            reaped.append(old)
        pgid = os.getpid() if os.name == "nt" else os.getpgrp()  # Windows: the tree under this pid
        record = StartRecord(node, os.getpid(), pgid, token, time.time())
        path = _path(folder, node)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, path)
    return reaped


def release(node: str, token: str, *, folder: Path) -> None:
    """Remove the record of ``node`` if it is still this worker's."""
    with contextlib.suppress(OSError):
        old = read(folder, node)
        if old is not None and old.token == token:
            _path(folder, node).unlink()
