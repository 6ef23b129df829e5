"""Parameters on their way to the worker: from the parameters forwarder and from ``send_parameters``."""

from __future__ import annotations

import json
import logging
import queue
from typing import Any

import zmq

from ..errors import ConfigError

__all__ = ["ParametersRelay", "encode_parameters"]


def encode_parameters(parameters: Any) -> bytes:
    """Parameters as the worker receives them: JSON. ConfigError for what JSON cannot encode."""
    try:
        return json.dumps(parameters).encode()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"parameters must be JSON-serialisable: {exc}") from exc


class ParametersRelay:
    """Passes parameters on to the worker, and keeps the last for a worker started again.

    :meth:`submit` may be called from any thread; everything else runs in the com's thread,
    which owns the sockets.
    """

    def __init__(self, log: logging.LoggerAdapter) -> None:
        self._log = log
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
        try:
            json.loads(raw)
        except ValueError:
            self._log.error("dropped parameters that are not JSON (heron_remote never unpickles): %r", raw[:60])
            return
        self._last = raw
        assert self._to_worker is not None
        self._to_worker.send(raw)
