"""A worker's relic: its Parameters history and Substate rows, saved as it runs.

Two JSON Lines files per node, ``<relic_dir>/<node_name>_<node_index>/Parameters.jsonl``
(the folder name made safe: a name such as ``../x`` is percent-encoded, never a path)
and ``Substate.jsonl``; every row is a JSON object with the worker's packet ``index``
and the wall-clock ``time``, so the standard library reads them back::

    rows = [json.loads(line) for line in open(path)]

Parameters rows are flushed as they are written; Substate rows every
``flush_every`` rows and when the worker dies.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import IO, Any

from ._paths import safe_name

__all__ = ["Relic", "read_relic"]

logger = logging.getLogger(__name__)


class Relic:
    """Append-only Parameters and Substate tables of one node."""

    def __init__(
        self, relic_dir: str | os.PathLike[str], node_name: str, node_index: str, *, flush_every: int = 100
    ) -> None:
        self.folder = Path(relic_dir) / safe_name(f"{node_name}_{node_index}")
        self.flush_every = max(1, int(flush_every))
        self._files: dict[str, IO[str]] = {}
        self._pending = 0
        self._lock = threading.Lock()

    def _file(self, table: str) -> IO[str]:
        f = self._files.get(table)
        if f is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            f = self._files[table] = open(self.folder / f"{table}.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        return f

    def _write(self, table: str, index: int, row: dict[str, Any], *, flush: bool) -> None:
        line = json.dumps({"index": index, "time": time.time(), **row}, default=_jsonable)
        with self._lock:
            f = self._file(table)
            f.write(line + "\n")
            if flush:
                f.flush()

    def add_parameters(self, index: int, **parameters: Any) -> None:
        self._write("Parameters", index, parameters, flush=True)

    def add_substate(self, index: int, **variables: Any) -> None:
        self._pending += 1
        flush = self._pending >= self.flush_every
        if flush:
            self._pending = 0
        self._write("Substate", index, variables, flush=flush)

    def has(self, table: str) -> bool:
        return table in self._files

    def close(self) -> None:
        """Flush and close both files; safe to call twice and from the dying worker."""
        with self._lock:
            files, self._files = self._files, {}
        for f in files.values():
            try:
                f.flush()
                f.close()
            except OSError as exc:
                logger.error("could not save relic file %s: %s", f.name, exc)


def _jsonable(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if tolist is not None:
        return tolist()
    return repr(value)


def read_relic(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a relic file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
