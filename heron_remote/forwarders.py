"""The three forwarders (data, parameters, proof of life): XSUB -> XPUB proxies.

Publishers connect to a forwarder's submit port, subscribers to its publish port. The
XSUB side subscribes to everything, as Heron's forwarders do: topics are filtered here,
on the way out, so a subscriber that joins sees the next message any publisher sends. (A com
in this process learns what the subscribers want and sends only that:
:mod:`.forwarders_subscriptions`.)
Each proxy runs in a thread of its own, which creates, binds and closes its sockets;
a TERMINATE on its control socket stops it. They bind 127.0.0.1 unless another
interface is asked for. Once bound they say who they are to whoever asks
(:mod:`.forwarders_hello`), so that scripts of this account can share them and take them
over (:mod:`.forwarders_share`), and relay for coms of this account in other processes
(:mod:`.relay_host`).

Each port is also bound in-process (``inproc://``) on the process's shared ZeroMQ
context: a com or a subscriber in the same process (a :class:`~heron_remote.Source`)
reaches the forwarder through :func:`endpoint` without TCP, so a camera frame is not
copied through the kernel twice more on its way to a subscriber beside it.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import zmq

from . import forwarders_hello
from ._threads import KeptThread
from ._version import __version__
from .errors import ForwarderError
from .forwarders_subscriptions import Subscriptions
from .relay_host import RelayHost
from .settings import ForwarderPorts

__all__ = ["Forwarders", "endpoint", "facing", "subscriptions"]

logger = logging.getLogger(__name__)

_NAMES = ("data", "parameters", "proof_of_life")
# Messages queued per peer before a slow subscriber starts losing them (seen as index
# gaps downstream): enough for bursts of small packets, bounded for camera frames.
HWM = 200


#: An XSUB socket's subscription message for every topic.
_SUBSCRIBE_ALL = b"\x01"
_LOOPBACK = ("127.0.0.1", "localhost", "0.0.0.0")
_ids = itertools.count(1)
#: Ports this process's forwarders serve, with their in-process endpoints.
_in_process: dict[int, str] = {}
#: The data forwarders' subscription watchers, by submit port.
_watchers: dict[int, Subscriptions] = {}
_in_process_lock = threading.Lock()


def _alias(port: int) -> str:
    """The in-process endpoint of this process's forwarder port ``port``."""
    return f"inproc://heron-remote-forwarder-{port}"


def endpoint(host: str, port: int) -> tuple[str, zmq.Context | None]:
    """Where to connect for a forwarder port: its inproc endpoint and the shared context when a
    forwarder of this process serves it on loopback, else ``tcp://host:port`` and None."""
    if host in _LOOPBACK:
        with _in_process_lock:
            inproc = _in_process.get(port)
        if inproc is not None:
            return inproc, zmq.Context.instance()
    return f"tcp://{host}:{port}", None


def subscriptions(host: str, port: int) -> Subscriptions | None:
    """What the subscribers want of the data forwarder at (``host``, ``port``), when this process runs it."""
    if host not in _LOOPBACK:
        return None
    with _in_process_lock:
        return _watchers.get(port)


#: A socket that faces a forwarder tries again this soon after losing it (forwarders taken over by
#: another script bind again within milliseconds), backing off to the maximum while none answer.
RECONNECT_MS = 10
RECONNECT_MAX_MS = 100


def facing(sock: zmq.Socket) -> zmq.Socket:
    """Set up ``sock``, which connects to a forwarder, to find it again soon after a takeover."""
    sock.reconnect_ivl = RECONNECT_MS
    sock.reconnect_ivl_max = RECONNECT_MAX_MS
    return sock


def _released(host: str, port: int, timeout: float) -> bool:
    """Wait until (host, port) can be bound again, as ZeroMQ binds (SO_REUSEADDR)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host if host != "*" else "0.0.0.0", port))
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
        time.sleep(0.01)


@dataclass
class _Proxy:
    name: str
    submit: int
    publish: int
    thread: KeptThread | None = None
    error: BaseException | None = None
    control: str = ""
    bound: list[int] = field(default_factory=list)
    #: The data forwarder's: which topics its subscribers want (:mod:`.forwarders_subscriptions`).
    subscriptions: Subscriptions | None = None


class Forwarders:
    """Run the data, parameters and proof-of-life forwarders in this process.

    >>> with Forwarders() as fw:          # Heron's ports 6560/6561, 6563/6564, 6569/6570
    ...     print(fw.ports.data_publish)

    Pass ``ports=ForwarderPorts(data_submit=0, ...)`` for free ports and read the bound
    ones from :attr:`ports`; ``host="0.0.0.0"`` exposes them on every interface.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        ports: ForwarderPorts | None = None,
    ) -> None:
        self.host = host
        self._requested = ports or ForwarderPorts()
        self._proxies: list[_Proxy] = []
        self._lock = threading.Lock()
        self._closed = False
        self._hello: forwarders_hello.HelloServer | None = None
        self._relays: RelayHost | None = None
        self.ports: ForwarderPorts = self._requested

    def start(self) -> Forwarders:
        """Bind all three forwarders; raises ForwarderError naming the port that failed."""
        if self._proxies:
            return self
        req = self._requested
        wanted = {
            "data": (req.data_submit, req.data_publish),
            "parameters": (req.parameters_submit, req.parameters_publish),
            "proof_of_life": (req.proof_of_life_submit, req.proof_of_life_publish),
        }
        try:
            for name in _NAMES:
                proxy = _Proxy(name, *wanted[name], subscriptions=Subscriptions() if name == "data" else None)
                ready = threading.Event()
                proxy.thread = KeptThread(self._run, args=(proxy, ready), name=f"heron-forwarder-{name}")
                self._proxies.append(proxy)
                proxy.thread.start()
                ready.wait(10)
                if proxy.error is not None:
                    raise proxy.error
            p = {x.name: x for x in self._proxies}
            self.ports = ForwarderPorts(
                data_submit=p["data"].submit,
                data_publish=p["data"].publish,
                parameters_submit=p["parameters"].submit,
                parameters_publish=p["parameters"].publish,
                proof_of_life_submit=p["proof_of_life"].submit,
                proof_of_life_publish=p["proof_of_life"].publish,
            )
            if forwarders_hello.AVAILABLE:
                hello = forwarders_hello.Hello(pid=os.getpid(), version=__version__, bind=self.host, ports=self.ports)
                self._hello = forwarders_hello.HelloServer(hello)
                if self.host in _LOOPBACK:  # coms of this account in other processes relay here
                    self._relays = RelayHost(
                        self.ports.data_submit, _alias(self.ports.data_submit), p["data"].subscriptions
                    )
        except BaseException:
            self.close()
            raise
        logger.info("forwarders on %s: %s", self.host, self.ports)
        return self

    @property
    def users(self) -> int:
        """Processes that use these forwarders through their hello (other scripts, usually)."""
        return self._hello.users if self._hello is not None else 0

    def _bind(self, sock: zmq.Socket, port: int, proxy: _Proxy, role: str) -> int:
        try:
            if port == 0:
                return sock.bind_to_random_port(f"tcp://{self.host}")
            sock.bind(f"tcp://{self.host}:{port}")
        except zmq.ZMQError as exc:
            hint = (
                " Another program, or forwarders already running (heron-remote forwarders), hold it: "
                "stop them, use theirs, or choose other ports."
                if exc.errno == zmq.EADDRINUSE
                else ""
            )
            raise ForwarderError(
                f"the {proxy.name} forwarder cannot bind its {role} port {port} on {self.host}: {exc.strerror}.{hint}"
            ) from exc
        return port

    def _run(self, proxy: _Proxy, ready: threading.Event) -> None:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        frontend = context.socket(zmq.XSUB)
        backend = context.socket(zmq.XPUB)
        control = context.socket(zmq.REP)
        for sock in (frontend, backend, control):
            sock.linger = 0
            sock.sndhwm = sock.rcvhwm = HWM
        aliases = []
        try:
            try:
                # Subscribed to everything, as Heron's forwarders are: a publisher sends all it has
                # from the moment it connects, and a new subscriber's subscription needs to reach
                # only this forwarder, not travel on to every publisher. Without it the first
                # messages after a subscriber joined were lost more often than with Heron's.
                frontend.send(_SUBSCRIBE_ALL)
                if proxy.subscriptions is not None:  # connected before any subscriber can subscribe
                    frontend.bind(proxy.subscriptions.endpoint)
                    proxy.subscriptions.start()
                proxy.submit = self._bind(frontend, proxy.submit, proxy, "submit")
                proxy.bound.append(proxy.submit)
                proxy.publish = self._bind(backend, proxy.publish, proxy, "publish")
                proxy.bound.append(proxy.publish)
                if self.host in _LOOPBACK:
                    for sock, port in ((frontend, proxy.submit), (backend, proxy.publish)):
                        alias = _alias(port)
                        sock.bind(alias)
                        aliases.append((port, alias))
                proxy.control = f"inproc://heron-remote-forwarder-control-{next(_ids)}"
                control.bind(proxy.control)
                with _in_process_lock:  # before start() returns: a Source made next finds them
                    _in_process.update(aliases)
                    if proxy.subscriptions is not None and aliases:
                        _watchers[proxy.submit] = proxy.subscriptions
            except BaseException as exc:
                proxy.error = exc
                return
            finally:
                ready.set()
            try:
                zmq.proxy_steerable(frontend, backend, None, control)  # returns on TERMINATE
            except zmq.ZMQError as exc:
                proxy.error = exc
                logger.error("the %s forwarder stopped: %s", proxy.name, exc)
        finally:
            if proxy.subscriptions is not None:
                proxy.subscriptions.close()
            with _in_process_lock:
                for port, _ in aliases:
                    _in_process.pop(port, None)
                if proxy.subscriptions is not None and _watchers.get(proxy.submit) is proxy.subscriptions:
                    del _watchers[proxy.submit]
            for sock in (frontend, backend, control):
                sock.close()

    @property
    def error(self) -> BaseException | None:
        """The first error a forwarder thread hit while running, if any."""
        for proxy in self._proxies:
            error = proxy.error or (proxy.thread.error if proxy.thread is not None else None)
            if error is None and proxy.subscriptions is not None:
                error = proxy.subscriptions.error
            if error is not None:
                return error
        return None  # a failed relay host is reported, and its coms relay themselves (relay_host.py)

    def close(self) -> None:
        """Stop the proxies and release their ports. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._relays is not None:  # first: their publishers connect to the data forwarder
            self._relays.close()
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        for proxy in self._proxies:
            if proxy.control and proxy.thread is not None and proxy.thread.is_alive():
                stop = context.socket(zmq.REQ)
                stop.linger = 1000
                stop.connect(proxy.control)
                stop.send(b"TERMINATE")
                stop.close()
            if proxy.thread is not None:
                proxy.thread.join(5)
                if proxy.thread.is_alive():
                    logger.error("the %s forwarder did not stop within 5 s", proxy.name)
        # ZeroMQ closes listeners in its I/O thread, a moment after close(): wait, so that the
        # ports can be bound again when this returns.
        for proxy in self._proxies:
            for port in proxy.bound:
                if not _released(self.host, port, timeout=2.0):
                    logger.warning("port %d on %s still in use after its forwarder stopped", port, self.host)
        # Last: the goodbye tells the users to take over, and the ports are free by now.
        if self._hello is not None:
            self._hello.close()

    def __enter__(self) -> Forwarders:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Forwarders {self.host} {self.ports}>"
