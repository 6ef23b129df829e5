"""Parameters on their way to the worker: from the parameters forwarder and from ``send_parameters``.

The worker receives JSON. From the forwarder come JSON (ours) or, from Heron's editor, a
pickled list: that is read as plain data only (:mod:`.plain_pickle`: nothing named in it is
looked up or run) and passed on as JSON. Anything else is refused, said in
``stats.last_error`` and logged once for each reason.
"""

from __future__ import annotations

import json
import logging
import queue
from typing import Any

import zmq

from ..errors import ConfigError
from .plain_pickle import PlainPickleError, is_pickle, load_plain
from .stats import ComStats

__all__ = ["ParametersRelay", "encode_parameters"]


def encode_parameters(parameters: Any) -> bytes:
    """Parameters as the worker receives them: JSON. ConfigError for what JSON cannot encode."""
    try:
        return json.dumps(parameters).encode()
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"parameters must be JSON-serialisable: {exc}; send lists, dicts, numbers and strings "
            "(a numpy value: .tolist())"
        ) from exc


class ParametersRelay:
    """Passes parameters on to the worker, and keeps the last for a worker started again.

    :meth:`submit` may be called from any thread; everything else runs in the com's thread,
    which owns the sockets.
    """

    def __init__(self, log: logging.LoggerAdapter[logging.Logger], stats: ComStats) -> None:
        self._log = log
        self._stats = stats
        self._said: set[str] = set()
        self._submitted: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._last: bytes | None = None
        self._from_forwarder: zmq.Socket | None = None
        self._to_worker: zmq.Socket | None = None

    def submit(self, parameters: Any) -> None:
        """Queue ``parameters`` (anything JSON encodes) for the worker; thread-safe."""
        self._submitted.put(encode_parameters(parameters))

    def attach(self, from_forwarder: zmq.Socket, to_worker: zmq.Socket) -> None:
        self._from_forwarder, self._to_worker = from_forwarder, to_worker

    def poll(self) -> None:
        """Pass on what arrived from the forwarder or was submitted since the last call."""
        source = self._from_forwarder
        assert source is not None
        while source.poll(0):
            frames = source.recv_multipart()
            if len(frames) == 2:
                self._relay(frames[1])
        while not self._submitted.empty():
            self._relay(self._submitted.get_nowait())

    def resend_last(self) -> None:
        """Give a worker started again the parameters its predecessor had."""
        if self._last is not None and self._to_worker is not None:
            self._to_worker.send(self._last)

    def _relay(self, raw: bytes) -> None:
        message = raw if not is_pickle(raw) else self._from_pickle(raw)
        if message is None:
            return
        try:
            json.loads(message)
        except ValueError:
            self._refuse(f"parameters that are neither JSON nor a pickle of plain data: {bytes(raw[:60])!r}")
            return
        self._last = message
        assert self._to_worker is not None
        self._to_worker.send(message)

    def _from_pickle(self, raw: bytes) -> bytes | None:
        """Heron's editor pickles a list of values: read as plain data, passed on as JSON."""
        try:
            value = load_plain(raw)
        except PlainPickleError as exc:
            self._refuse(f"refused pickled parameters: {exc}")
            return None
        try:
            return json.dumps(value).encode()
        except (TypeError, ValueError) as exc:
            self._refuse(f"pickled parameters hold a value the worker cannot receive as JSON: {exc}")
            return None

    def _refuse(self, why: str) -> None:
        self._stats.last_error = why
        if why not in self._said and len(self._said) < 100:  # the editor sends the same parameters 21 times
            self._said.add(why)
            self._log.error("%s", why)
