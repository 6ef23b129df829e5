"""The com's sockets: made, connected and closed in the thread that runs the com."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import zmq

from .._linkkeys import LinkKeys
from ..forwarders import endpoint as forwarder_endpoint
from ..forwarders import facing, subscriptions
from ..launcher import WorkerLauncher
from ..settings import Settings
from .heartbeat import back_off
from .publisher import keep_sending, open_publisher
from .relay import PUBLISH_SNDHWM

if TYPE_CHECKING:
    from .hosted import HostedRelay

__all__ = ["CHORES_S", "ComSockets"]

#: How often the com looks at everything but data (and so how long a data read waits).
CHORES_S = 0.02
#: The com's sockets that face the worker, by the worker's channel they connect to.
_WORKER_CHANNELS = (("data", "data"), ("liveness", "liveness"), ("parameters_out", "parameters"))


class ComSockets:
    """Forwarder-facing sockets (publish data, parameters in, proof of life) and worker-facing ones
    (data, liveness, parameters out). The worker's heartbeat socket belongs to the heartbeat thread."""

    def __init__(self, settings: Settings, parameters_topic: str) -> None:
        self._settings = settings
        self._parameters_topic = parameters_topic.encode()
        self.context = zmq.Context()
        self._all: list[zmq.Socket] = []
        self._worker_endpoints: list[tuple[zmq.Socket, str]] = []
        s = settings
        host = s.forwarder_host
        # A forwarder in this process is reached in-process (no copies through the kernel).
        target, shared = forwarder_endpoint(host, s.ports.data_submit)
        # Publishers that no other account's cancel can silence (publisher.py).
        self.publish = facing(self._own(open_publisher(shared or self.context)))
        self.publish.linger = 1000  # what the worker sent last still reaches the forwarder
        self.publish.sndhwm = PUBLISH_SNDHWM
        self.publish.connect(target)
        #: What that forwarder's subscribers want, when it runs in this process.
        self.listeners = subscriptions(host, s.ports.data_submit)
        # No ZMQ_MAXMSGSIZE on sockets that connect: one larger message would cut them off for good.
        self.parameters_in = facing(self._make(zmq.SUB))
        self.parameters_in.subscribe(self._parameters_topic)
        self.parameters_in.connect(f"tcp://{host}:{s.ports.parameters_publish}")
        self.proof_of_life = facing(self._own(open_publisher(self.context)))
        self.proof_of_life.connect(f"tcp://{host}:{s.ports.proof_of_life_submit}")
        self.data = self._make(zmq.PULL)
        self.data.rcvtimeo = int(CHORES_S * 1000)
        self.liveness = self._make(zmq.SUB)
        self.liveness.subscribe(b"")
        self.parameters_out = self._make(zmq.PUSH)
        for sock in (self.data, self.liveness, self.parameters_out):
            back_off(sock)
        #: The relay the forwarders' process does for this com, when it does: the data socket
        #: connects to the worker only when the com relays itself.
        self.hosted_data: HostedRelay | None = None
        #: Told each worker endpoint the data socket connects to (the relay maps that worker's ring).
        self.on_data_worker: Callable[[str], None] | None = None
        self.closed = False

    def _make(self, kind: int) -> zmq.Socket:
        return self._own(self.context.socket(kind))

    def _own(self, sock: zmq.Socket) -> zmq.Socket:
        sock.linger = 0
        self._all.append(sock)
        return sock

    def keep_proof_of_life(self) -> None:
        """What the proof-of-life forwarder passed on is read: its subscribers' cancels change nothing."""
        keep_sending(self.proof_of_life)

    def connect_worker(self, launcher: WorkerLauncher) -> str:
        """Connect to the worker's ports with the launch's keys; returns the endpoint of its heartbeat port."""
        assert launcher.ready is not None
        for name, channel in _WORKER_CHANNELS:
            sock = getattr(self, name)
            endpoint = launcher.endpoint(channel)
            if sock is self.data and self.hosted_data is not None and self.hosted_data.point(endpoint, launcher.keys):
                continue
            self._connect(sock, endpoint, launcher.keys)
        return launcher.endpoint("heartbeat")

    def connect_data(self, endpoint: str, keys: LinkKeys) -> None:
        """Connect the data socket to the worker: the com relays in its own process."""
        self._connect(self.data, endpoint, keys)

    def _connect(self, sock: zmq.Socket, endpoint: str, keys: LinkKeys) -> None:
        if sock is self.data and self.on_data_worker is not None:
            self.on_data_worker(endpoint)  # before a packet can come
        keys.apply_client(sock)  # a new connection takes the options set before it
        sock.connect(endpoint)
        self._worker_endpoints.append((sock, endpoint))

    def data_waiting(self, timeout_ms: int) -> bool:
        """Whether the worker's packets arrive within ``timeout_ms``, wherever they are relayed."""
        if self.hosted_data is not None and self.hosted_data.hosted:
            return self.hosted_data.received_soon(timeout_ms)
        return bool(self.data.poll(timeout_ms))

    def worker_endpoint(self, sock: zmq.Socket) -> str | None:
        """The worker endpoint ``sock`` was last connected to, or None."""
        found = [endpoint for s, endpoint in self._worker_endpoints if s is sock]
        return found[-1] if found else None

    def disconnect_worker(self) -> None:
        """Forget a gone worker's endpoints: a freed tunnel port may soon lead to another worker."""
        for sock, endpoint in self._worker_endpoints:
            try:
                sock.disconnect(endpoint)
            except zmq.ZMQError:
                pass  # already gone
        self._worker_endpoints.clear()
        if self.hosted_data is not None:
            self.hosted_data.unpoint()

    def proof_of_life_sent(self) -> None:
        """Heron's node editor waits for this before it sends parameters."""
        self.keep_proof_of_life()
        self.proof_of_life.send_multipart((self._parameters_topic, b"POL"))

    def close(self, *, term: bool) -> None:
        """Close every socket; ``term`` ends the context too (not while the heartbeat thread uses it)."""
        if not self.closed:
            self.closed = True
            for sock in self._all:
                sock.close()
        if term and not self.context.closed:
            self.context.term()
