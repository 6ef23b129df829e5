"""Parameters on their way to the worker: from the parameters forwarder and from ``send_parameters``.

The worker receives JSON. From the forwarder come JSON (ours) or, from Heron's editor, a
pickled list: that is read as plain data only (:mod:`.plain_pickle`: nothing named in it is
looked up or run) and passed on as JSON. Anything else (anyone on the machine can publish on
the forwarder) is refused, counted in ``stats.rejected``, said in ``stats.last_error`` and
logged once for each reason. Parameters are at most PARAMETERS_MAX_BYTES, both ways.
"""

from __future__ import annotations

import json
import logging
import queue
from typing import Any

import zmq

from ..errors import ConfigError, DecodeError
from ..wire.bounded import PARAMETERS_MAX_BYTES, read_json
from .plain_pickle import PlainPickleError, is_pickle, load_plain
from .stats import ComStats

__all__ = ["ParametersRelay", "decode_parameters", "encode_parameters"]


def encode_parameters(parameters: Any) -> bytes:
    """Parameters as the worker receives them: JSON. ConfigError for what JSON cannot encode."""
    try:
        message = json.dumps(parameters).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(
            f"parameters must be JSON-serialisable: {exc}; send lists, dicts, numbers and strings "
            "(a numpy value: .tolist())"
        ) from exc
    if len(message) > PARAMETERS_MAX_BYTES:
        raise ConfigError(
            f"parameters are {len(message)} bytes as JSON, over the {PARAMETERS_MAX_BYTES}-byte limit: "
            "send a few values (a file name, not the file's contents)"
        )
    return message


def decode_parameters(raw: bytes) -> bytes:
    """Parameters from the forwarder (JSON, or the pickle of Heron's editor) as the worker
    receives them: JSON. DecodeError for anything else."""
    if not is_pickle(raw):
        try:
            read_json(raw, "parameters", PARAMETERS_MAX_BYTES)
        except DecodeError as exc:
            raise DecodeError(f"parameters that are neither JSON nor a pickle of plain data: {exc}") from None
        return raw
    try:
        value = load_plain(raw)
    except PlainPickleError as exc:
        raise DecodeError(f"refused pickled parameters: {exc}") from None
    try:
        return encode_parameters(value)
    except ConfigError as exc:
        raise DecodeError(f"pickled parameters hold a value the worker cannot receive as JSON: {exc}") from None


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
            else:
                self._refuse(f"a parameters message has 2 frames (topic, parameters), got {len(frames)}")
        while not self._submitted.empty():
            self._send(self._submitted.get_nowait())

    def resend_last(self) -> None:
        """Give a worker started again the parameters its predecessor had."""
        if self._last is not None and self._to_worker is not None:
            self._to_worker.send(self._last)

    def _relay(self, raw: bytes) -> None:
        try:
            message = decode_parameters(raw)
        except DecodeError as exc:
            self._refuse(str(exc))
            return
        self._send(message)

    def _send(self, message: bytes) -> None:
        self._last = message
        assert self._to_worker is not None
        self._to_worker.send(message)

    def _refuse(self, why: str) -> None:
        self._stats.rejected += 1
        self._stats.last_error = why
        if why not in self._said and len(self._said) < 100:  # the editor sends the same parameters 21 times
            self._said.add(why)
            self._log.error("%s", why)
