"""SourceCom: the rig-side process of a source node (Heron's seed API, same names).

The com starts the worker (here or on an acquisition PC), connects to the four
sockets the worker bound on its own loopback, pulses it, relays parameters to it,
stamps every packet it sends with an index and a time, and publishes each output
on its sending topics through the data forwarder.

The Heron way, in a com script::

    com = SourceCom(sending_topics, parameters_topic, port, worker_exec, verbose)
    com.connect_sockets()
    com.start_heartbeat_thread()
    com.start_worker_process()
    signal.signal(signal.SIGTERM, com.on_kill)
    com.start_ioloop()          # returns after on_kill

This class is a facade over :mod:`heron_remote.com`: the data path (:class:`~.com.relay.Relay`),
parameters, the heartbeat, the worker's supervisor, status and the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import zmq

from ._logging import NodeLogger
from ._verbosity import parse_verbosity
from .com.heartbeat import Heartbeat
from .com.hosted import HostedRelay, relay_kind
from .com.loop import ComLoop
from .com.parameters import ParametersRelay
from .com.relay import route_topics
from .com.sockets import ComSockets
from .com.stats import ComStats
from .com.supervisor import Supervisor, WorkerSpec
from .com.tap import FrameTap
from .compression import Compression, chosen_compression
from .errors import ConfigError, WorkerError
from .launcher import WorkerLauncher
from .settings import Settings
from .status import SourceStatus, StatusPublisher

__all__ = ["ComStats", "SourceCom"]

logger = logging.getLogger(__name__)

#: How long closing the com waits for its last status message to leave.
_LAST_WORD_LINGER_MS = 500
#: What Heron writes for "no server": the worker runs on this machine.
_NO_SERVER = ("None", None, "")


def host_of(ssh_local_server_id: str | None, ssh_remote_server_id: str | None) -> str | None:
    """Heron's pair of server ids as one host: a registry id or name, or None for this machine.

    The worker runs where the remote id says; 'None' is this machine, whatever the local id
    (Heron's editor sets it for local nodes). The rig needs no SSH server: the local id only
    told Heron how workers would reach back, and ours never do.
    """
    if ssh_remote_server_id in _NO_SERVER:
        return None
    return str(ssh_remote_server_id)


def cpu_of(cpu_to_pin: str | int | None) -> int | None:
    """Heron's cpu_to_pin ('Any', or a CPU number) as the CPU to pin the worker to, or None."""
    if cpu_to_pin is None or (isinstance(cpu_to_pin, str) and cpu_to_pin.strip() in ("", "Any", "None")):
        return None
    text = str(cpu_to_pin).strip() if isinstance(cpu_to_pin, (str, int)) and not isinstance(cpu_to_pin, bool) else ""
    if not text.isdigit():
        raise ConfigError(f"cpu_to_pin must be 'Any' or a CPU number (0, 1, ...), got {cpu_to_pin!r}")
    return int(text)


def _checked(sending_topics: object, parameters_topic: object, port: object) -> int:
    """Heron's arguments checked, each by name; the port as an int."""
    if isinstance(sending_topics, str) or not isinstance(sending_topics, (list, tuple)):
        raise ConfigError(f"sending_topics must be a list of non-empty topic names, got {sending_topics!r}")
    if not all(isinstance(t, str) and t for t in sending_topics):
        raise ConfigError(f"sending_topics must be a list of non-empty topic names, got {sending_topics!r}")
    if not isinstance(parameters_topic, str) or not parameters_topic:
        raise ConfigError(f"parameters_topic must be a non-empty string, got {parameters_topic!r}")
    try:
        number = int(port)  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"port must be an integer (0 picks free ports), got {port!r}") from exc
    if not 0 <= number <= 65532:
        raise ConfigError(f"port must be 0 or a port from 1 to 65532 (four are used), got {number}")
    return number


class SourceCom:
    """The com of a source node. Constructor and methods are Heron's; options follow them, by keyword."""

    def __init__(
        self,
        sending_topics: list[str],
        parameters_topic: str,
        port: int | str,
        worker_exec: str,
        verbose: str = "||",
        ssh_local_server_id: str = "None",
        ssh_remote_server_id: str = "None",
        outputs: list[str] | None = None,
        cpu_to_pin: str | int | None = "Any",
        *,
        settings: Settings | None = None,
        node_id: str | None = None,
        on_worker_error: Callable[[WorkerError], None] | None = None,
        compression: Compression | bool | None = None,
    ) -> None:
        self.port = _checked(sending_topics, parameters_topic, port)
        #: How the worker packs its arrays: None as its server in the registry says, False not at all.
        self.compression = chosen_compression(compression)
        self.sending_topics = list(sending_topics)
        self.parameters_topic = parameters_topic
        self.worker_exec = worker_exec
        self.ssh_local_server_id = ssh_local_server_id
        self.ssh_remote_server_id = ssh_remote_server_id
        self.outputs = list(outputs) if outputs else ["Output"]
        self.cpu_to_pin = cpu_to_pin
        self.verbose, self.relic = self.define_verbosity_and_relic(verbose)
        self.settings = settings or Settings.from_env()
        self.node_name = parameters_topic.split("##")[-2] if "##" in parameters_topic else parameters_topic
        #: What identifies this node on its host (the start records): by default its parameters topic.
        self.node_id = node_id or parameters_topic
        self.stats = ComStats()
        self.log = NodeLogger(logger, node=self.node_name, host="com")
        routes = route_topics(self.sending_topics, self.outputs)
        self._relay = relay_kind(self.verbose)(routes, len(self.outputs), self.stats, self.log, verbose=self.verbose)
        if isinstance(self.compression, Compression):
            self._relay.unpack_threads = self.compression.threads
        self._parameters = ParametersRelay(self.log, self.stats)
        self._supervisor = Supervisor(self._worker_spec(), self.settings, self.stats, on_error=on_worker_error)
        self._status = StatusPublisher(self.node_name, self.stats, lambda: self._supervisor.where)
        self._sockets: ComSockets | None = None
        self._heartbeat: Heartbeat | None = None
        self._loop: ComLoop | None = None
        self._owner_thread: int | None = None
        self._loop_running = threading.Event()
        self._loop_done = threading.Event()
        self._killed = False
        self._kill_lock = threading.RLock()  # on_kill may be a signal handler of the locking thread

    # -- what it is and how it goes ---------------------------------------------------
    def _worker_spec(self) -> WorkerSpec:
        """What the supervisor starts: Heron's server ids and cpu_to_pin turned into ours, once."""
        return WorkerSpec(
            worker_exec=self.worker_exec,
            node_name=self.node_name,
            node_id=self.node_id,
            host=host_of(self.ssh_local_server_id, self.ssh_remote_server_id),
            port=self.port,
            parameters_topic=self.parameters_topic,
            num_sending_topics=len(self.sending_topics),
            outputs=len(self.outputs),
            relic_dir=self.relic,
            cpu=cpu_of(self.cpu_to_pin),
            compression=self.compression,
        )

    def define_verbosity_and_relic(self, verbosity_string: str) -> tuple[int | str, str]:
        """Split ``"verbosity||relic_dir"`` into (int level or log-file name, relic dir or ``'_'``)."""
        return parse_verbosity(verbosity_string)

    @property
    def host(self) -> str | None:
        """The server the worker runs on (a registry id or name), or None for this machine."""
        return self._supervisor.spec.host

    @property
    def is_remote(self) -> bool:
        return self.host is not None

    @property
    def index(self) -> int:
        """The index of the last packet published (0 before the first)."""
        return self._relay.index

    @property
    def launcher(self) -> WorkerLauncher | None:
        """What started the worker, and stops it."""
        return self._supervisor.launcher

    @property
    def worker_error(self) -> WorkerError | None:
        """Why the worker ended or was lost, while it is not running again."""
        return self._supervisor.error

    @property
    def data_hwm(self) -> int:
        """How many packets the com's queue from its worker holds now (it follows their size)."""
        return self._relay.data_hwm

    # -- Heron's methods -----------------------------------------------------------------
    def connect_sockets(self) -> None:
        """Create the com's sockets and connect those that face the forwarders."""
        if self._sockets is not None:
            return
        self._owner_thread = threading.get_ident()
        self._sockets = sockets = ComSockets(self.settings, self.parameters_topic)
        if isinstance(self._relay, HostedRelay):
            self._relay.serve(sockets, self.settings)
        else:
            self._relay.attach(sockets.data, sockets.publish, sockets.listeners)
        sockets.on_data_worker = self._relay.read_ring_of
        self._parameters.attach(sockets.parameters_in, sockets.parameters_out)
        self._heartbeat = Heartbeat(
            sockets.context, self.settings.heartbeat_rate, self._supervisor.stopping, self.log, stats=self.stats
        )
        self._supervisor.attach(sockets, self._heartbeat)
        self._loop = ComLoop(sockets, self._relay, self._parameters, self._supervisor, self._heartbeat, self._status)

    def on_receive_data_from_worker(self, msg: list[Any]) -> bool:
        """Stamp a worker packet ``[number] + [metadata, payload] * outputs`` with index and time and
        publish each output on its topics. False for a malformed packet (dropped, counted)."""
        return self._relay.relay(msg)

    def heartbeat_loop(self) -> None:
        """Pulse the worker every ``heartbeat_rate`` seconds from this thread, until the com stops.

        :meth:`start_heartbeat_thread` runs this in a thread of its own, as the com needs it.
        """
        if self._heartbeat is None:
            raise ConfigError("call connect_sockets() before heartbeat_loop()")
        self._heartbeat.run()

    def start_heartbeat_thread(self) -> None:
        """Start the thread that pulses the worker every ``heartbeat_rate`` seconds."""
        if self._heartbeat is None:
            raise ConfigError("call connect_sockets() before start_heartbeat_thread()")
        self._heartbeat.start()

    def start_worker_process(self) -> None:
        """Start the worker and wait until it is ready on the wire (liveness received).

        Raises WorkerStartError, carrying the worker's stderr, when it exits or stays
        silent for ``settings.start_timeout`` seconds.
        """
        if self._sockets is None:
            raise ConfigError("call connect_sockets() before start_worker_process()")
        if self._supervisor.launcher is None:
            self._supervisor.launch()
            if self._supervisor.compression is not None:  # the registry's, for a server that asks for it
                self._relay.unpack_threads = self._supervisor.compression.threads

    def start_ioloop(self) -> None:
        """Receive and publish worker data until :meth:`on_kill`; then close the sockets and return.

        Raises WorkerExitedError or WorkerLostError (with the worker's stderr) if the worker
        dies on its own and the restart policy does not, or no longer may, start it again.
        """
        if self._supervisor.launcher is None or self._loop is None:
            raise ConfigError("call start_worker_process() before start_ioloop()")
        self._loop_running.set()
        try:
            self._loop.run()
        finally:
            self._supervisor.stopping.set()
            failed = self.worker_error is not None and not self._killed
            self.stats.state = "failed" if failed else "stopped"
            self.stats.stalled_since = None
            self._last_word()
            if self._heartbeat is not None:
                self._heartbeat.join(self.settings.heartbeat_rate + 1)
            self._close_sockets()
            self._loop_done.set()
        if self.worker_error is not None and not self._killed:
            raise self.worker_error

    def on_kill(self, signal: int | None = None, frame: Any = None) -> None:
        """Stop loops, stop the worker (TERM, then KILL), close sockets. Idempotent.

        Works as a signal handler (SIGTERM, SIGINT) and from any thread.
        """
        with self._kill_lock:
            first = not self._killed
            self._killed = True
        if first:
            self.log.info("stopping%s", f" on signal {signal}" if signal else "")
            try:
                self._supervisor.stop(grace=self.settings.stop_grace)
            finally:
                if self._heartbeat is not None:
                    self._heartbeat.join(self.settings.heartbeat_rate + 1)
        if self._loop_running.is_set():
            if self._owner_thread != threading.get_ident():
                self._loop_done.wait(5)
            # else: a signal handler inside the loop; the loop closes up when this returns
        elif self._owner_thread in (None, threading.get_ident()):
            self._close_sockets()  # the sockets' own thread: also after a stop from another thread

    # -- more --------------------------------------------------------------------------
    def _tap_outputs(self, tap: FrameTap) -> None:
        """Hand what this com publishes while it relays in this process also to ``tap`` (a Source's reader)."""
        self._relay.tap = tap

    def send_parameters(self, parameters: Any) -> None:
        """Send parameters (anything JSON can encode) to the worker; thread-safe."""
        self._parameters.submit(parameters)

    def status(self) -> SourceStatus:
        """This com's status now: what :meth:`publish_status` would publish (any thread)."""
        return self._status.status()

    def publish_status(self) -> SourceStatus:
        """Publish this com's status on the proof-of-life forwarder (``heron-remote status`` reads it)."""
        if self._sockets is None:
            raise ConfigError("call connect_sockets() before publish_status()")
        return self._status.publish(self._sockets.proof_of_life)

    def close(self) -> None:
        self.on_kill(None, None)

    def _last_word(self) -> None:
        """Publish the final status (``stopped`` or ``failed``), so that no board shows this com running."""
        sockets = self._sockets
        if sockets is None or sockets.closed:
            return
        sockets.proof_of_life.linger = _LAST_WORD_LINGER_MS  # delivered, though the socket closes next
        try:
            self._status.publish(sockets.proof_of_life)
        except zmq.ZMQError as exc:
            self.log.debug("the last status was not sent: %s", exc)

    def _close_sockets(self) -> None:
        sockets = self._sockets
        if sockets is None:
            return
        self._relay.close()
        heartbeat = self._heartbeat
        sockets.close(term=heartbeat is None or not heartbeat.alive)

    def __enter__(self) -> SourceCom:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
