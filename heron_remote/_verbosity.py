"""Heron's ``"verbosity||relic_dir"`` string and the per-packet log it can ask for."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import threading

from .errors import ConfigError

NO_RELIC = "_"


def parse_verbosity(verbosity_string: str | None) -> tuple[int | str, str]:
    """``"level||relic_dir"`` -> (int level or log-file name, relic dir or ``"_"``)."""
    if verbosity_string is None or verbosity_string == "":
        return 0, NO_RELIC
    if not isinstance(verbosity_string, str):
        raise ConfigError(f"verbose must be a string 'verbosity||relic_dir', got {verbosity_string!r}")
    parts = verbosity_string.split("||")
    if len(parts) > 2:
        raise ConfigError(f"verbose {verbosity_string!r} has more than one '||': write 'verbosity||relic_dir'")
    verbosity = parts[0].strip()
    relic = parts[1].strip() if len(parts) == 2 else ""
    relic = relic or NO_RELIC
    if verbosity == "":
        return 0, relic
    try:
        return int(verbosity), relic
    except ValueError:
        return verbosity, relic


def timestamped(file_name: str, when: _dt.datetime | None = None) -> str:
    """``packets.log`` -> ``packets_2026-11-24_20-10-00.log``."""
    stamp = (when or _dt.datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    root, ext = os.path.splitext(file_name)
    return f"{root}_{stamp}{ext}"


class PacketLog:
    """Writes ``index : time`` for each packet to a file; closed with the com."""

    def __init__(self, file_name: str) -> None:
        self.path = timestamped(file_name)
        try:
            self._file = open(self.path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise ConfigError(f"cannot open the packet log {self.path!r} named in verbose: {exc.strerror}") from exc
        self._file.write("Index of data packet : Computer Time Data Out\n")
        self._lock = threading.Lock()

    def write(self, index: int) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(f"{index} : {_dt.datetime.now()}\n")

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


class PacketTimer:
    """Logs each packet's index, time and the gap since the last one (verbosity >= 1)."""

    def __init__(self, log: logging.LoggerAdapter) -> None:
        self._log = log
        self._previous_us: int | None = None
        self._mean_us = 0.0
        self._n = 0

    def packet(self, topic: str, index: int, time_us: int) -> None:
        if self._previous_us is not None:
            dt = time_us - self._previous_us
            self._n += 1
            self._mean_us += (dt - self._mean_us) / self._n
            self._log.info(
                "packet %d on %s at %d us: %.3f ms since the last, mean %.3f ms",
                index,
                topic,
                time_us,
                dt / 1000,
                self._mean_us / 1000,
            )
        self._previous_us = time_us
