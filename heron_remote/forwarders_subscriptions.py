"""Which topics anyone subscribes to at a data forwarder of this process.

The forwarder's submit side subscribes to everything (see :mod:`.forwarders`), so a publisher
is sent every message whoever listens, and the forwarder drops, on its way out, what no
subscriber asked for. For a com beside it whose only reader takes its frames in-process (a
:class:`~heron_remote.Source`'s ``frames()``), that was most of the com's and the forwarder's
work at small packets: measured at 64 B, the forwarder's thread alone took a quarter of a core.

The forwarder's XSUB does pass every subscription its subscribers make on to each publisher
connected to it. A :class:`Subscriptions` watcher is one more such publisher, connected
in-process before the forwarder's publish side is bound, that never publishes: it reads them all
from the start, and a relay in this process sends only the outputs somebody subscribed to. A
subscriber that joins is heard once the watcher's thread has read its subscription (measured:
median 0.5 ms from ``subscribe()``), later by up to the interpreter's switch interval (5 ms)
while the com's thread holds the interpreter lock.

A topic once subscribed to stays heard until the forwarder stops: cancels are not believed.
Anyone on the machine can connect to the forwarder and send it the cancel of a subscription it
never made, and ZeroMQ passes that on like a real one (measured: such cancels from another
account silenced a topic its real subscriber still wanted). So the saving is for topics nobody
subscribed to since the forwarder started, which is what a ``Source`` read by its own
``frames()`` is; a :class:`~heron_remote.Source` beside its forwarders does not subscribe for
itself. A subscription to every topic makes every topic heard; a forwarder that stopped, or a
watcher whose thread failed, leaves every topic heard.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Sequence

import zmq

from ._threads import KeptThread

__all__ = ["MAX_PREFIXES", "Subscriptions"]

logger = logging.getLogger(__name__)

_SUBSCRIBE = 1
#: Prefixes kept at most; past them every topic counts as heard (a rig has a few dozen topics, and
#: whoever floods the forwarder with subscriptions must not grow this process without bound).
MAX_PREFIXES = 1024
_POLL_MS = 100
_ids = itertools.count(1)


class Subscriptions:
    """The prefixes a data forwarder's subscribers subscribe to, read by a thread of its own.

    :meth:`heard` says which topics reach somebody; :attr:`version` changes whenever that may
    have changed, so that a relay asks again only then.
    """

    def __init__(self) -> None:
        #: The endpoint the forwarder's XSUB binds, before its publish side, for the watcher.
        self.endpoint = f"inproc://heron-remote-forwarder-subscriptions-{next(_ids)}"
        self.version = 0
        self._prefixes: frozenset[bytes] = frozenset()
        self._policy_seen = False  # the forwarder's own subscription to everything, sent first
        self._everything = False
        self._stopped = False
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: KeptThread | None = None

    def start(self) -> None:
        """Start the watcher and wait until it is connected (call once the XSUB bound :attr:`endpoint`)."""
        self._thread = KeptThread.start_new(self._run, name="heron-forwarder-subscriptions", on_error=self._failed)
        if not self._connected.wait(10):
            raise RuntimeError("the forwarder's subscription watcher did not connect within 10 s")

    def heard(self, topics: Sequence[bytes]) -> list[bool]:
        """For each topic, whether a subscriber of the forwarder may want it."""
        if self._everything or self._stopped or not self._policy_seen:
            return [True] * len(topics)
        prefixes = self._prefixes  # replaced whole by the watcher, never changed in place
        return [any(topic.startswith(p) for p in prefixes) for topic in topics]

    def _run(self) -> None:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = context.socket(zmq.XPUB)
        try:
            sock.linger = 0
            # No bound on what waits for it: the forwarder drops what a full pipe cannot take, and a
            # subscription lost here would leave a subscriber without its frames.
            sock.rcvhwm = 0
            # Every subscription, even one to a prefix this pipe already sent (a second one to everything).
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)
            sock.connect(self.endpoint)
            self._connected.set()
            while not self._stop.is_set():
                if sock.poll(_POLL_MS):
                    while sock.poll(0):
                        self._take(sock.recv())
        finally:
            sock.close()
            self._connected.set()

    def _failed(self, exc: BaseException) -> None:
        self._stopped = True
        self.version += 1
        logger.error("the data forwarder's subscription watcher stopped (every topic is published now): %r", exc)

    def _take(self, message: bytes) -> None:
        if not message or message[0] != _SUBSCRIBE:
            return  # a cancel may be anyone's, for a subscription they never made: not believed
        prefix = message[1:]
        if not prefix:
            # The first is the forwarder's own, sent as the watcher connected; any later one is a
            # subscriber's.
            self._everything = self._policy_seen
            self._policy_seen = True
            self.version += 1
        elif self._everything or prefix in self._prefixes:
            return
        elif len(self._prefixes) >= MAX_PREFIXES:
            self._everything = True
            self.version += 1
            logger.warning("over %d topic prefixes subscribed at the data forwarder: every topic is sent", MAX_PREFIXES)
        else:
            self._prefixes = self._prefixes | {prefix}  # replaced whole: heard() reads it unlocked
            self.version += 1
            logger.debug("subscribed at the data forwarder: %r", prefix)

    def close(self) -> None:
        """Stop the watcher; every topic counts as heard from now on. Idempotent."""
        self._stopped = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.version += 1  # after the watcher's last change: a relay asks again, and hears all

    @property
    def error(self) -> BaseException | None:
        """What stopped the watcher's thread, if anything did."""
        return self._thread.error if self._thread is not None else None

    def __enter__(self) -> Subscriptions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
