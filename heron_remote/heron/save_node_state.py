"""A Heron node's saved state, in Heron's layout: ``<path>/<Name>##<index>/Parameters.df`` and ``Substate.df``.

As Heron writes them, with pandas (``pip install heron_remote[heron]``): one DataFrame per
table, written with ``DataFrame.to_pickle``, columns ``DateTime`` (datetime64),
``WorkerIndex`` (packets the worker had sent) and then the node's own names in the order
they were first given, so a lab's analysis code (``pandas.read_pickle``) keeps working.
Without pandas, the same rows go to ``Parameters.jsonl`` and ``Substate.jsonl`` beside
them (``DateTime`` as ISO text), which is said once in the log.

Parameters rows are saved as they come; Substate rows every ``num_of_iters`` rows (Heron's
default 1000; -1 saves only when the worker ends) and when the worker ends.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path
from typing import Any

from .._paths import safe_name
from .._verbosity import NO_RELIC
from ..errors import ConfigError

__all__ = ["DEFAULT_ITERATIONS", "SaveNodeState"]

logger = logging.getLogger(__name__)

#: Heron's NUMBER_OF_ITTERATIONS_BEFORE_SAVENODESTATE_SUBSTATE_SAVE.
DEFAULT_ITERATIONS = 1000
_TABLES = ("Parameters", "Substate")
_said_no_pandas = False


def _pandas() -> Any:
    global _said_no_pandas
    try:
        import pandas
    except ImportError:
        if not _said_no_pandas:
            _said_no_pandas = True
            logger.warning(
                "pandas is not installed: the node's saved state goes to JSON Lines files (Parameters.jsonl, "
                "Substate.jsonl) instead of Heron's DataFrames; pip install 'heron_remote[heron]' for those"
            )
        return None
    return pandas


class _Table:
    """One table: its columns, all its rows, and the rows not yet on disk."""

    def __init__(self, folder: Path, name: str, columns: list[str]) -> None:
        self.folder = folder
        self.name = name
        self.columns = ["DateTime", "WorkerIndex", *columns]
        self.rows: list[list[Any]] = []
        self.saved = 0

    def add(self, worker_index: int, values: list[Any]) -> None:
        self.rows.append([dt.datetime.now(), worker_index, *values])

    def save(self) -> None:
        """Write the table (the whole DataFrame, as Heron does), or append the new JSON Lines rows."""
        if self.saved == len(self.rows):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        pandas = _pandas()
        if pandas is not None:
            frame = pandas.DataFrame(self.rows, columns=self.columns)
            frame["DateTime"] = pandas.to_datetime(frame["DateTime"])
            frame.to_pickle(self.folder / f"{self.name}.df")
        else:
            with open(self.folder / f"{self.name}.jsonl", "a", encoding="utf-8") as f:
                for row in self.rows[self.saved :]:
                    record = dict(zip(self.columns, [row[0].isoformat(), *row[1:]], strict=True))
                    f.write(json.dumps(record, default=_jsonable) + "\n")
        self.saved = len(self.rows)


class SaveNodeState:
    """The Parameters and Substate tables of one node, as Heron keeps them."""

    def __init__(self, path: str, node_name: str, node_index: str, num_of_iters: int | None = None) -> None:
        for part in (node_name, node_index):
            if any(c in part for c in "/\\") or part in ("", ".", ".."):
                raise ConfigError(f"node name {node_name!r} and index {node_index!r} must be plain names, not paths")
        self.operational = path not in ("", NO_RELIC)
        self.folder = Path(path) / safe_name(f"{node_name}##{node_index}")
        self.num_of_iters = DEFAULT_ITERATIONS if num_of_iters is None else int(num_of_iters)
        self._tables: dict[str, _Table] = {}
        self._lock = threading.Lock()
        self._warned_parameters = False

    def has(self, table: str) -> bool:
        return table in self._tables

    def create(self, table: str, worker_index: int, **values: Any) -> None:
        """Start ``table`` with one row of ``values`` (their names are its columns), saved at once."""
        if table not in _TABLES:
            raise ValueError(f"a node's saved state has the tables {_TABLES}, not {table!r}")
        if not self.operational:
            return
        with self._lock:
            new = self._tables[table] = _Table(self.folder, table, list(values))
            new.add(worker_index, list(values.values()))
            new.save()

    def update_substate(self, worker_index: int, **values: Any) -> None:
        """Append a Substate row (the table starts with the first); saved every ``num_of_iters`` rows."""
        if not self.operational:
            return
        if "Substate" not in self._tables:
            self.create("Substate", worker_index, **values)
            return
        with self._lock:
            table = self._tables["Substate"]
            table.add(worker_index, [values.get(c) for c in table.columns[2:]])
            if self.num_of_iters > 0 and len(table.rows) - table.saved >= self.num_of_iters:
                table.save()

    def update_parameters(self, worker_index: int, parameters: list[Any]) -> None:
        """Append the editor's parameters list to the Parameters table, by position (as Heron does)."""
        table = self._tables.get("Parameters")
        if not self.operational or table is None:
            return
        if not isinstance(parameters, list) or len(parameters) != len(table.columns) - 2:
            if not self._warned_parameters:
                self._warned_parameters = True
                logger.warning(
                    "parameters updates are not saved: the Parameters table has the columns %s, and the editor "
                    "sends %r (Heron saves them by position: create the table with one name per parameter)",
                    table.columns[2:],
                    parameters,
                )
            return
        with self._lock:
            table.add(worker_index, list(parameters))
            table.save()

    def close(self) -> None:
        """Save what is not saved yet (the worker is ending)."""
        with self._lock:
            for table in self._tables.values():
                try:
                    table.save()
                except OSError as exc:
                    logger.error("could not save the node's %s table in %s: %s", table.name, table.folder, exc)


def _jsonable(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    return tolist() if tolist is not None else repr(value)
