"""The everyday API: start a source, iterate over its frames, set parameters, stop.

>>> with Source("python -m heron_remote.examples.synthetic_camera",
...             parameters={"shape": [480, 640], "fps": 30}) as cam:
...     for index, time, arrays in cam.frames(limit=10):
...         print(index, arrays[0].shape)

A :class:`Source` runs a :class:`SourceCom` in a thread of this process, starts the
forwarders unless they are already running, and subscribes to its own topics.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import zmq

from ._recv import resync
from .errors import ConfigError, ForwarderError, HeronRemoteError, WorkerError
from .forwarders import Forwarders
from .forwarders import endpoint as forwarder_endpoint
from .settings import ForwarderPorts, Settings
from .source_com import ComStats, SourceCom
from .status import SourceStatus, status_of
from .wire import ZERO_COPY_MIN, DecodeError, parse_meta

__all__ = ["Frame", "NoDataError", "Source"]

logger = logging.getLogger(__name__)

_instances = itertools.count(1)
#: Forwarders this process started, by (host, ports), with how many Sources use them.
_shared_forwarders: dict[tuple[str, ForwarderPorts], list] = {}
_shared_lock = threading.Lock()
_NOBLOCK = zmq.NOBLOCK
#: How long frames() waits for a message before it looks at the com and its own timeout.
_IDLE_MS = 100
#: Names of the Sources running in this process: a name is a node on its PC, so it must be unique.
_running: set[str] = set()
_running_lock = threading.Lock()


class NoDataError(HeronRemoteError, TimeoutError):
    """No frame arrived within the timeout given to :meth:`Source.frames`."""


class Frame(NamedTuple):
    """One packet of a source: its index (from 1), the com's time stamp and one value per output."""

    index: int
    time: float
    arrays: tuple[Any, ...]


class Source:
    """A source node run from Python: a com in a thread, its worker here or over SSH."""

    def __init__(
        self,
        worker_exec: str,
        *,
        name: str = "source",
        outputs: tuple[str, ...] = ("Frame",),
        parameters: Any = None,
        port: int = 0,
        relic_dir: str | None = None,
        settings: Settings | None = None,
        ssh_local_server_id: str = "None",
        ssh_remote_server_id: str = "None",
        on_worker_error: Callable[[WorkerError], None] | None = None,
    ) -> None:
        if not outputs or any(not isinstance(o, str) or not o or "##" in o for o in outputs):
            raise ConfigError(f"outputs must be a non-empty tuple of output names without '##', got {outputs!r}")
        if not isinstance(name, str) or not name or "##" in name:
            raise ConfigError(f"name must be a non-empty string without '##', got {name!r}")
        self.name = name
        self.outputs = tuple(outputs)
        self.settings = settings or Settings.from_env()
        node_index = f"{os.getpid()}-{next(_instances)}"
        self.parameters_topic = f"Parameters##{name}##{node_index}"
        self.topics = [f"{o.replace(' ', '_')}##{name}##{node_index}" for o in self.outputs]
        self._com = SourceCom(
            self.topics,
            self.parameters_topic,
            port,
            worker_exec,
            verbose=f"||{relic_dir or ''}",
            ssh_local_server_id=ssh_local_server_id,
            ssh_remote_server_id=ssh_remote_server_id,
            outputs=list(self.outputs),
        )
        self._com.on_worker_error = on_worker_error
        # The topics carry this process's id (two scripts may share forwarders); the node on a
        # host is its name, so that a rerun ends a worker its crashed predecessor left there.
        self._com.node_key = f"Source##{name}"
        self._initial_parameters = parameters
        if parameters is not None:
            self._com.send_parameters(parameters)  # fails now, not later, if not JSON
        self._forwarders_key: tuple[str, ForwarderPorts] | None = None
        self._own_forwarders: Forwarders | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._sub: zmq.Socket | None = None
        self._sub_thread: int | None = None
        self._context = zmq.Context.instance()
        self._closed = False
        self._close_lock = threading.Lock()
        self.gaps = 0
        self.received = 0
        self._last_index: int | None = None
        self._registered = False
        self._status_mark: tuple[float, int, int] | None = None

    # -- life cycle ----------------------------------------------------------------
    def start(self) -> Source:
        """Start forwarders (if none run), the com and the worker; returns once data can flow."""
        if self._thread is not None:
            return self
        with _running_lock:
            if self.name in _running:
                raise ConfigError(
                    f"a Source named {self.name!r} already runs in this process: give each source its own name "
                    "(on its PC the name identifies the node, and a new worker of a node ends the old one)"
                )
            _running.add(self.name)
            self._registered = True
        try:
            self._ensure_forwarders()
            self._com.settings = self.settings
            self._sub = self._subscribe()
            self._sub_thread = threading.get_ident()
            self._thread = threading.Thread(target=self._run_com, name=f"heron-com-{self.name}", daemon=True)
            self._thread.start()
            if not self._started.wait(self.settings.start_timeout + 15):
                raise WorkerError(f"source {self.name!r} did not start within {self.settings.start_timeout + 15:g} s")
            if self._error is not None:
                raise self._error
        except BaseException:
            self.stop()
            raise
        return self

    def _ensure_forwarders(self) -> None:
        key = (self.settings.forwarder_host, self.settings.ports)
        if 0 not in dataclasses.astuple(self.settings.ports):
            with _shared_lock:  # another Source of this process runs them: share, counted
                shared = _shared_forwarders.get(key)
                if shared is not None:
                    shared[1] += 1
                    self._forwarders_key = key
                    return
        fw = Forwarders(host=self.settings.forwarder_host, ports=self.settings.ports)
        try:
            fw.start()
        except ForwarderError as exc:
            cause = exc.__cause__
            if (
                isinstance(cause, zmq.ZMQError)
                and cause.errno == errno.EADDRINUSE
                and 0
                not in (
                    self.settings.ports.data_submit,
                    self.settings.ports.data_publish,
                )
            ):
                logger.info("forwarders already run on %s; using them", self.settings.forwarder_host)
                return
            raise
        self.settings = self.settings.replace(ports=fw.ports)
        if 0 in dataclasses.astuple(key[1]):
            self._own_forwarders = fw  # free ports: nobody else can ask for these
            return
        with _shared_lock:
            _shared_forwarders[key] = [fw, 1]
        self._forwarders_key = key

    def _release_forwarders(self) -> None:
        own, self._own_forwarders = self._own_forwarders, None
        if own is not None:
            own.close()
        key, self._forwarders_key = self._forwarders_key, None
        if key is None:
            return
        with _shared_lock:
            entry = _shared_forwarders[key]
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _shared_forwarders[key]
        entry[0].close()

    def _subscribe(self) -> zmq.Socket:
        sub = self._context.socket(zmq.SUB)
        sub.linger = 0
        sub.rcvtimeo = _IDLE_MS
        for topic in self.topics:
            sub.subscribe(topic.encode())
        sub.connect(forwarder_endpoint(self.settings.forwarder_host, self.settings.ports.data_publish)[0])
        return sub

    def _run_com(self) -> None:
        com = self._com
        try:
            try:
                com.connect_sockets()
                com.start_heartbeat_thread()
                com.start_worker_process()
            except BaseException as exc:
                self._error = exc  # before start() is woken: it re-raises this
                raise
            finally:
                self._started.set()
            com.start_ioloop()
        except BaseException as exc:  # kept for the owner: start(), frames() and stop() re-raise it
            self._error = self._error or exc
            com.close()
            if com._context is not None:
                # A stop() from another thread during the start closed nothing: these sockets are ours.
                com._close_sockets()

    def stop(self) -> None:
        """Stop the worker and the com, close the subscriber and the forwarders we started. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._com.close()
            if self._thread is not None:
                self._thread.join(self.settings.stop_grace + 10)
        finally:
            if self._sub is not None and self._sub_thread == threading.get_ident():
                self._sub.close()
            self._release_forwarders()
            if self._registered:
                with _running_lock:
                    _running.discard(self.name)
        logger.info("source %s stopped: %s", self.name, self.stats)

    close = stop

    def __enter__(self) -> Source:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- use ---------------------------------------------------------------------
    def set_parameters(self, parameters: Any) -> None:
        """Send new parameters (anything JSON encodes) to the worker."""
        self._com.send_parameters(parameters)

    @property
    def stats(self) -> ComStats:
        return self._com.stats

    def status(self) -> SourceStatus:
        """This source now: host, worker pid, state, rates since the last call, gaps, heartbeat RTT."""
        status, self._status_mark = status_of(self._com, self._status_mark)
        return status

    @property
    def error(self) -> BaseException | None:
        """Why the com stopped, if it stopped on an error."""
        return self._error

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self, *, timeout: float | None = None, limit: int | None = None) -> Iterator[Frame]:
        """Yield frames as they arrive.

        Ends when the worker finishes normally or after ``limit`` frames; raises
        WorkerExitedError if the worker dies, NoDataError after ``timeout`` seconds
        without a frame.
        """
        if self._thread is None:
            raise ConfigError("start the source first (Source.start(), or use it in a with block)")
        own = self._sub_thread == threading.get_ident()
        sub = self._sub if own else self._subscribe()  # sockets stay in the thread that made them
        recv = sub.recv
        topic_output = {t.encode(): k for k, t in enumerate(self.topics)}
        n_out = len(self.outputs)
        single = n_out == 1
        pending: list[Any] = [None] * n_out
        pending_index: int | None = None
        pending_time = 0.0
        yielded = 0
        last_frame = time.monotonic()
        try:
            while limit is None or yielded < limit:
                try:
                    topic = recv()  # waits up to _IDLE_MS
                except zmq.Again:
                    topic = None
                if topic is None:
                    if pending_index is not None:  # the rest of the outputs were ignored
                        yield Frame(pending_index, pending_time, tuple(pending))
                        yielded += 1
                        pending, pending_index = [None] * n_out, None
                        continue
                    if self._thread is not None and not self._thread.is_alive():
                        if self._error is not None:
                            raise self._error
                        return
                    if timeout is not None and time.monotonic() - last_frame > timeout:
                        said = self.stats.last_error
                        raise NoDataError(
                            f"no frame from source {self.name!r} for {timeout:g} s"
                            + (f"; last error: {said}" if said else "")
                        )
                    continue
                # [topic, index, time_us, metadata, payload], read without asking where it ends
                # (see heron_remote._recv); a message of another length fails here and resync()
                # finds the next one.
                try:
                    output = topic_output[topic]
                    index = int(recv(_NOBLOCK))
                    stamp = int(recv(_NOBLOCK)) / 1e6
                    meta = parse_meta(recv(_NOBLOCK))
                    value = meta.decode(recv(_NOBLOCK, copy=meta.nbytes < ZERO_COPY_MIN))
                except KeyError:  # another node whose topic starts like ours
                    resync(sub)
                    continue
                except (zmq.Again, DecodeError, ValueError) as exc:
                    resync(sub)
                    reason = "it ended early" if isinstance(exc, zmq.Again) else exc
                    logger.warning("dropped an undecodable message from %s: %s", self.name, reason)
                    continue
                last_frame = time.monotonic()
                if single:
                    self._count(index)
                    yield Frame(index, stamp, (value,))
                    yielded += 1
                    continue
                if pending_index is not None and index != pending_index:
                    yield Frame(pending_index, pending_time, tuple(pending))
                    yielded += 1
                    pending = [None] * n_out
                    if limit is not None and yielded >= limit:
                        return
                if index != pending_index:
                    self._count(index)
                pending_index, pending_time = index, stamp
                pending[output] = value
                if all(v is not None for v in pending):
                    yield Frame(index, stamp, tuple(pending))
                    yielded += 1
                    pending, pending_index = [None] * n_out, None
        finally:
            if not own:
                sub.close()

    def _count(self, index: int) -> None:
        self.received += 1
        if self._last_index is not None and index > self._last_index + 1:
            missed = index - self._last_index - 1
            self.gaps += missed
            logger.warning(
                "source %s: %d frame(s) missed before index %d (%d in all)", self.name, missed, index, self.gaps
            )
        self._last_index = index
