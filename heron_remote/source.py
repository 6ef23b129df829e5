"""The everyday API: start a source, iterate over its frames, set parameters, stop.

>>> with Source("python -m heron_remote.examples.synthetic_camera",
...             parameters={"shape": [480, 640], "fps": 30}) as cam:
...     for index, time, arrays in cam.frames(limit=10):
...         print(index, arrays[0].shape)

A :class:`Source` runs a :class:`SourceCom` in a thread of this process, starts the
forwarders unless they are already running (this account's, checked: :mod:`.forwarders_share`;
on 127.0.0.1, or ``Settings.forwarder_bind``),
and subscribes to its own topics.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import zmq

from ._threads import KeptThread
from .com.parameters import encode_parameters
from .com.stats import RateMeter
from .com.tap import FrameTap
from .compression import Compression, chosen_compression
from .errors import ConfigError, ForwarderError, NoDataError, WorkerError, WorkerStartError
from .forwarders import endpoint as forwarder_endpoint
from .forwarders import facing
from .forwarders_share import ForwarderLease, lease_forwarders
from .launcher import WorkerLauncher
from .settings import Settings
from .source_com import ComStats, SourceCom
from .status import SourceStatus, status_of
from .subscriber import IDLE_MS, Frame, Subscriber

__all__ = ["Frame", "NoDataError", "Source"]

logger = logging.getLogger(__name__)

_instances = itertools.count(1)
#: Seconds start() waits beyond the start timeout (an SSH connection, the forwarders).
_START_SLACK_S = 15.0
#: Names of the Sources running in this process: a name is a node on its PC, so it must be unique.
_running: set[str] = set()
_running_lock = threading.Lock()


class Source:
    """A source node run from Python: a com in a thread, its worker here or on ``host`` over SSH."""

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
        host: str | None = None,
        on_worker_error: Callable[[WorkerError], None] | None = None,
        compression: Compression | bool | None = None,
    ) -> None:
        if not outputs or any(not isinstance(o, str) or not o or "##" in o for o in outputs):
            raise ConfigError(f"outputs must be a non-empty tuple of output names without '##', got {outputs!r}")
        if not isinstance(name, str) or not name or "##" in name:
            raise ConfigError(f"name must be a non-empty string without '##', got {name!r}")
        if host is not None and (not isinstance(host, str) or not host or host == "None"):
            raise ConfigError(
                f"host must be a server's name or id in the registry, or None for this machine, got {host!r}"
            )
        self.name = name
        self.outputs = tuple(outputs)
        self.host = host
        self.settings = settings or Settings.from_env()
        node_index = f"{os.getpid()}-{next(_instances)}"
        self.parameters_topic = f"Parameters##{name}##{node_index}"
        self.topics = [f"{o.replace(' ', '_')}##{name}##{node_index}" for o in self.outputs]
        self._worker_exec = worker_exec
        self._port = port
        self._relic_dir = relic_dir
        self._on_worker_error = on_worker_error
        self.compression = chosen_compression(compression)  # refused now, not at start, when it cannot be
        if parameters is not None:
            encode_parameters(parameters)  # refused now, not at start, if JSON cannot encode them
        self._parameters = parameters
        self._com: SourceCom | None = None
        self._forwarders: ForwarderLease | None = None
        self._thread: KeptThread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._sub: zmq.Socket | None = None
        self._sub_thread: int | None = None
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._closed = False
        self._close_lock = threading.Lock()
        self._registered = False
        self._idle_stats = ComStats()
        self._subscriber = Subscriber(self.name, self.topics, ended=self._com_ended, last_error=self._last_error)
        #: The com's outputs, handed over in this process while it relays here (com/tap.py).
        self._tap = FrameTap()
        self._tap_lock = threading.Lock()

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
            s = self.settings
            self._forwarders = lease_forwarders(
                s.ports, find_at=s.forwarder_host, bind=s.forwarder_bind, on_failure=self._forwarders_failed
            )
            self.settings = s.replace(ports=self._forwarders.ports, forwarder_host=self._forwarders.host)
            self._com = self._make_com()
            self._sub = self._subscribe(own=True)
            self._sub_thread = threading.get_ident()
            self._thread = KeptThread.start_new(self._run_com, name=f"heron-com-{self.name}")
            wait = self.settings.start_timeout + _START_SLACK_S
            if not self._started.wait(wait):
                raise WorkerStartError(f"source {self.name!r} did not start within {wait:g} s", node=self.name)
            if self._start_error is not None:
                raise self._start_error
        except BaseException:
            self.stop()
            raise
        return self

    def _make_com(self) -> SourceCom:
        com = SourceCom(
            self.topics,
            self.parameters_topic,
            self._port,
            self._worker_exec,
            verbose=f"||{self._relic_dir or ''}",
            ssh_remote_server_id=self.host or "None",
            outputs=list(self.outputs),
            settings=self.settings,
            # The topics carry this process's id (two scripts may share forwarders); the node on a
            # host is its name, so that a rerun ends a worker its crashed predecessor left there.
            node_id=f"Source##{self.name}",
            on_worker_error=self._on_worker_error,
            compression=self.compression,
        )
        if self._parameters is not None:
            com.send_parameters(self._parameters)
        com._tap_outputs(self._tap)
        return com

    def _subscribe(self, *, own: bool = False) -> zmq.Socket:
        """A subscriber to this source's topics; ``own``: the one its first reader uses."""
        sub = facing(self._context.socket(zmq.SUB))
        sub.linger = 0
        sub.rcvtimeo = IDLE_MS
        target, shared = forwarder_endpoint(self.settings.forwarder_host, self.settings.ports.data_publish)
        # Beside its forwarders the com relays here and hands the frames over (com/tap.py): a
        # subscription would only have it send them to the forwarder as well, for good
        # (forwarders_subscriptions.py).
        if not (own and shared is not None):
            for topic in self.topics:
                sub.subscribe(topic.encode())
        sub.connect(target)
        return sub

    def _run_com(self) -> None:
        """The com's thread: start it, then relay until it stops. What ends it is kept for the owner."""
        com = self._com
        assert com is not None
        try:
            try:
                com.connect_sockets()
                com.start_heartbeat_thread()
                com.start_worker_process()
            except BaseException as exc:
                self._start_error = exc  # before start() is woken: it re-raises this
                raise
            finally:
                self._started.set()
            com.start_ioloop()
        finally:
            com.close()  # from the sockets' own thread: closes them also after a stop from another thread

    def stop(self) -> None:
        """Stop the worker and the com, close the subscriber and the forwarders we started. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._com is not None:
                self._com.close()
            if self._thread is not None:
                self._thread.join(self.settings.stop_grace + 10)
        finally:
            if self._sub is not None and self._sub_thread == threading.get_ident():
                self._sub.close()
            if self._forwarders is not None:
                self._forwarders.close()
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
        if self._com is None:
            encode_parameters(parameters)  # refused now if JSON cannot encode them
            self._parameters = parameters
            return
        self._com.send_parameters(parameters)

    @property
    def stats(self) -> ComStats:
        return self._com.stats if self._com is not None else self._idle_stats

    @property
    def launcher(self) -> WorkerLauncher | None:
        """What started the worker (here, or over SSH), once it started."""
        return self._com.launcher if self._com is not None else None

    @property
    def forwarders(self) -> ForwarderLease | None:
        """The forwarders this source publishes through, once it started."""
        return self._forwarders

    @property
    def data_hwm(self) -> int | None:
        """How many packets the com's queue from its worker holds now (it follows their size)."""
        return self._com.data_hwm if self._com is not None else None

    def status(self) -> SourceStatus:
        """This source now: host, worker pid, state, rates (over about the last two seconds, or since
        the first frame), gaps, heartbeat RTT; as ``heron-remote status`` shows it."""
        if self._com is not None:
            return self._com.status()
        return status_of(self.name, "-", self._idle_stats, RateMeter())

    @property
    def gaps(self) -> int:
        """Indices this source's subscriber never saw (frames lost on the way, or malformed)."""
        return self._subscriber.gaps

    @property
    def rejected(self) -> int:
        """Messages on this source's topics that :meth:`frames` dropped as undecodable (someone else
        published them: anyone on this machine can write to the forwarders)."""
        return self._subscriber.rejected

    @property
    def received(self) -> int:
        """Frames :meth:`frames` has yielded."""
        return self._subscriber.received

    def _last_error(self) -> str | None:
        return self.stats.last_error

    @property
    def error(self) -> BaseException | None:
        """Why the com stopped, if it stopped on an error."""
        return self._thread.error if self._thread is not None else None

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
        # One reader at a time takes the com's outputs from the tap; another reads the forwarders.
        tap = self._tap if self._tap_lock.acquire(blocking=False) else None
        own = tap is not None and self._sub_thread == threading.get_ident()
        sub = self._sub if own else self._subscribe()  # sockets stay in the thread that made them
        assert sub is not None
        try:
            yield from self._subscriber.read(sub, timeout=timeout, limit=limit, tap=tap)
        finally:
            if not own:
                sub.close()
            if tap is not None:
                self._tap_lock.release()

    def _forwarders_failed(self, error: ForwarderError) -> None:
        """The forwarders went and none replaced them: stop the com (its data must not reach whatever
        holds the ports now); :meth:`frames` raises ``error``."""
        com = self._com
        if com is not None:
            KeptThread.start_new(com.close, name=f"heron-com-stop-{self.name}")

    def _com_ended(self) -> bool:
        """Whether the com's thread has ended; raises what ended it, if it failed."""
        lease = self._forwarders
        if lease is not None and lease.error is not None:
            raise lease.error
        thread = self._thread
        if thread is None or thread.is_alive():
            return False
        thread.check()
        return True
