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
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from ._logging import NodeLogger
from ._protocol import DATA_HWM_RANGE, WorkerArgs, data_hwm, parse_liveness, pulse
from ._recv import recv_message, resync
from ._verbosity import PacketLog, PacketTimer, parse_verbosity
from .errors import (
    AuthenticationError,
    ConfigError,
    HostKeyError,
    SSHError,
    WorkerError,
    WorkerLostError,
    WorkerStartError,
)
from .forwarders import endpoint as forwarder_endpoint
from .launcher import LocalLauncher, WorkerLauncher
from .settings import Settings
from .status import STATUS_TOPIC, SourceStatus, status_of
from .wire import DecodeError, check_output

__all__ = ["ComStats", "SourceCom"]

logger = logging.getLogger(__name__)

_LOCAL_IDS = ("None", None, "")
_PUB_SNDHWM = 200
#: How often the com looks at everything but data (and how long a data read waits).
_CHORES_S = 0.02
_MORE = zmq.SNDMORE
#: pyzmq's compiled send, without the Python layer over it (which only adds DRAFT-socket
#: options): a third of the cost of a small frame.
_send = zmq.backend.Socket.send
_STATUS_INTERVAL_S = 1.0


@dataclass
class ComStats:
    """Counters a com keeps; read them at any time (``com.stats``).

    ``lost`` counts packets the worker sent that never reached the com; ``malformed``
    those that arrived but did not follow the wire format (both show as index gaps).
    ``restarts`` counts workers started again under the restart policy.
    """

    received: int = 0
    lost: int = 0
    published: int = 0
    ignored: int = 0
    malformed: int = 0
    bytes_received: int = 0
    liveness_seen: int = 0
    heartbeat_rtt_s: float | None = None
    worker_pid: int | None = None
    last_error: str | None = None
    #: "starting", "running", "lost", "restarting", "stopped" or "failed".
    state: str = "starting"
    restarts: int = 0


class SourceCom:
    """The com of a source node. Constructor and methods are Heron's."""

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
    ) -> None:
        if isinstance(sending_topics, str) or not all(isinstance(t, str) and t for t in sending_topics):
            raise ConfigError(f"sending_topics must be a list of non-empty topic names, got {sending_topics!r}")
        if not isinstance(parameters_topic, str) or not parameters_topic:
            raise ConfigError(f"parameters_topic must be a non-empty string, got {parameters_topic!r}")
        try:
            self.port = int(port)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"port must be an integer (0 picks free ports), got {port!r}") from exc
        if not 0 <= self.port <= 65532:
            raise ConfigError(f"port must be 0 or a port from 1 to 65532 (four are used), got {self.port}")
        self.sending_topics = list(sending_topics)
        self.parameters_topic = parameters_topic
        self.worker_exec = worker_exec
        self.ssh_local_server_id = ssh_local_server_id
        self.ssh_remote_server_id = ssh_remote_server_id
        self.outputs = list(outputs) if outputs else ["Output"]
        self.verbose, self.relic = self.define_verbosity_and_relic(verbose)
        self.settings = Settings.from_env()
        self.index = 0
        self._index_base = 0
        self._last_seq = 0
        self.stats = ComStats()
        self.worker_error: WorkerError | None = None
        #: Called (from the com's thread) with each WorkerError, also those a restart recovers from.
        self.on_worker_error: Callable[[WorkerError], None] | None = None

        self.node_name = parameters_topic.split("##")[-2] if "##" in parameters_topic else parameters_topic
        #: What identifies this node on a host for the start records: a new worker of the same
        #: node ends one an earlier run left there.
        self.node_key = parameters_topic
        self.log = NodeLogger(logger, node=self.node_name, host="com")
        self._routes = self._route_topics()
        self._packet_frames = 1 + 2 * len(self.outputs)
        self._payload_slots = frozenset(range(2, self._packet_frames, 2))
        self.launcher: WorkerLauncher | None = None

        self._context: zmq.Context | None = None
        self._sockets: dict[str, zmq.Socket] = {}
        self._publish: zmq.Socket | None = None
        self._size_class = -1
        self._data_hwm = DATA_HWM_RANGE[1]
        self._endpoints: list[tuple[str, str]] = []
        self._owner_thread: int | None = None
        self._heartbeat_target: str | None = None
        self._heartbeat_thread: threading.Thread | None = None
        self._heartbeat_error: BaseException | None = None
        self._parameters: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._last_parameters: bytes | None = None
        self._stopping = threading.Event()
        self._loop_running = threading.Event()
        self._loop_done = threading.Event()
        self._last_heard = 0.0
        self._killed = False
        self._kill_lock = threading.RLock()  # on_kill may be a signal handler of the locking thread
        self._packet_log: PacketLog | None = None
        self._packet_timer: PacketTimer | None = None
        self._warned_malformed = 0
        self._next_status = 0.0
        self._status_mark: tuple[float, int, int] | None = None

    # -- configuration helpers ---------------------------------------------------
    def define_verbosity_and_relic(self, verbosity_string: str) -> tuple[int | str, str]:
        """Split ``"verbosity||relic_dir"`` into (int level or log-file name, relic dir or ``'_'``)."""
        return parse_verbosity(verbosity_string)

    def _route_topics(self) -> list[tuple[bytes, int]]:
        """Which output each sending topic carries: Heron matches the output's name in the topic."""
        routes = []
        for topic in self.sending_topics:
            head = topic.split("##")[0]
            match = [k for k, name in enumerate(self.outputs) if name.replace(" ", "_") in head]
            if not match and len(self.outputs) > 1:
                raise ConfigError(
                    f"sending topic {topic!r} names none of the outputs {self.outputs}: a topic starts "
                    "with the name of the output it carries"
                )
            try:
                routes.append((topic.encode("ascii"), match[0] if match else 0))
            except UnicodeEncodeError as exc:
                raise ConfigError(f"sending topic {topic!r} must be ASCII") from exc
        return routes

    @property
    def is_remote(self) -> bool:
        return self.ssh_remote_server_id not in _LOCAL_IDS

    def _make_launcher(self) -> WorkerLauncher:
        if not self.is_remote:
            if self.ssh_local_server_id not in _LOCAL_IDS:
                raise ConfigError(
                    f"ssh_local_server_id is {self.ssh_local_server_id!r} but ssh_remote_server_id is 'None': "
                    "set the remote server id to run the worker over SSH, or both to 'None' to run it here"
                )
            return LocalLauncher(self.worker_exec, node=self.node_name)
        # The rig needs no SSH server: only the remote id matters, the local one is Heron's legacy.
        from .ssh import Registry, RemoteLauncher

        server = Registry.load(self.settings.ssh_info).get(self.ssh_remote_server_id)
        return RemoteLauncher(self.worker_exec, node=self.node_name, server=server, settings=self.settings)

    # -- sockets -------------------------------------------------------------------
    def connect_sockets(self) -> None:
        """Create the com's sockets and connect those that face the forwarders."""
        if self._context is not None:
            return
        self._context = zmq.Context()
        self._owner_thread = threading.get_ident()
        s = self.settings
        host = s.forwarder_host

        def make(kind: int, name: str) -> zmq.Socket:
            sock = self._context.socket(kind)  # type: ignore[union-attr]
            sock.linger = 0
            self._sockets[name] = sock
            return sock

        # A forwarder in this process is reached in-process (no copies through the kernel).
        target, shared = forwarder_endpoint(host, s.ports.data_submit)
        pub = (shared or self._context).socket(zmq.PUB)
        pub.linger = 1000  # what the worker sent last still reaches the forwarder
        pub.sndhwm = _PUB_SNDHWM
        self._sockets["publish"] = self._publish = pub
        pub.connect(target)
        params_in = make(zmq.SUB, "parameters_in")
        params_in.subscribe(self.parameters_topic.encode())
        params_in.connect(f"tcp://{host}:{s.ports.parameters_publish}")
        pol = make(zmq.PUB, "proof_of_life")
        pol.connect(f"tcp://{host}:{s.ports.proof_of_life_submit}")
        data = make(zmq.PULL, "data")
        # Deep for small packets (ZeroMQ then wakes the sending side once per 128 packets read, not
        # per four); lowered to about DATA_QUEUE_BYTES once the packets turn out to be big.
        data.rcvhwm = self._data_hwm
        data.rcvtimeo = int(_CHORES_S * 1000)
        live = make(zmq.SUB, "liveness")
        live.subscribe(b"")
        make(zmq.PUSH, "parameters_out")
        for name in ("data", "liveness", "parameters_out"):
            _back_off(self._sockets[name])

        if isinstance(self.verbose, str):
            self._packet_log = PacketLog(self.verbose)
        elif self.verbose > 0:
            self._packet_timer = PacketTimer(self.log)

    def _connect_worker(self) -> None:
        assert self.launcher is not None and self.launcher.ready is not None
        ports = self.launcher.ready.ports
        for name, channel in (("data", "data"), ("liveness", "liveness"), ("parameters_out", "parameters")):
            endpoint = self.launcher.address(ports[channel])
            self._sockets[name].connect(endpoint)
            self._endpoints.append((name, endpoint))
        self._heartbeat_target = self.launcher.address(ports["heartbeat"])
        self.stats.worker_pid = self.launcher.ready.pid

    def _disconnect_worker(self) -> None:
        """Forget a gone worker's endpoints: a freed tunnel port may soon lead to another worker."""
        for name, endpoint in self._endpoints:
            try:
                self._sockets[name].disconnect(endpoint)
            except zmq.ZMQError:
                pass  # already gone
        self._endpoints.clear()

    # -- data path -------------------------------------------------------------
    def on_receive_data_from_worker(self, msg: list[Any]) -> bool:
        """Stamp a worker packet with index and time; publish each output on its topics.

        ``msg`` is ``[packet number] + [metadata, payload] * outputs``. The index is the
        worker's packet number, so a packet lost between worker and com is a gap downstream
        and is counted here (``stats.lost``); a worker that starts its numbering again
        (a new worker) continues the index where it stood. Returns False for a malformed
        packet, which is dropped and counted (``stats.malformed``); one whose first frame is
        not a number is the rest of a packet too long, and takes no index.
        """
        stats = self.stats
        stats.received += 1
        try:
            first = msg[0] if msg else b""
            if type(first) is not bytes:
                first = _bytes(first)
            if not first.isdigit():
                # Not a packet but the rest of one too long (or a broken worker): it takes no index.
                raise DecodeError("the first frame must be the packet number (an ascii integer)")
            seq = int(first)
            if seq == self._last_seq + 1:  # the usual case, without a call
                self._last_seq = seq
                self.index = self._index_base + seq
            else:
                self._number_packet(seq)
            if len(msg) != self._packet_frames:
                n = len(self.outputs)
                raise DecodeError(
                    f"expected {1 + 2 * n} frames (packet number, then {n} outputs x [metadata, payload]), "
                    f"got {len(msg)}"
                )
            publish = []
            size = 0
            for k in range(1, len(msg), 2):
                meta, payload_len = msg[k], len(msg[k + 1])
                size += payload_len
                publish.append(check_output(meta if type(meta) is bytes else _bytes(meta), payload_len))
        except DecodeError as exc:
            self._malformed(exc)
            return False
        stats.bytes_received += size
        if size.bit_length() != self._size_class:
            self._size_class = size.bit_length()
            self._lower_data_queue(data_hwm(1 << self._size_class))
        time_us = time.time_ns() // 1000
        index_b = b"%d" % self.index
        time_b = b"%d" % time_us
        pub = self._publish
        for topic, k in self._routes:
            if publish[k]:
                # Frame by frame: cheaper than send_multipart for small packets; a large payload
                # arrived as a zmq.Frame and goes on without a copy.
                _send(pub, topic, _MORE)
                _send(pub, index_b, _MORE)
                _send(pub, time_b, _MORE)
                _send(pub, msg[1 + 2 * k], _MORE)
                _send(pub, msg[2 + 2 * k])
                stats.published += 1
                if self._packet_timer is not None:
                    self._packet_timer.packet(topic.decode(), self.index, time_us)
            else:
                stats.ignored += 1
        if self._packet_log is not None:
            self._packet_log.write(self.index)
        return True

    def _lower_data_queue(self, hwm: int) -> None:
        """Hold about DATA_QUEUE_BYTES of these packets. Only ever lowered: ZeroMQ wakes a blocked
        sender each time half the high-water mark has been read, so raising it while the worker
        waits could leave the worker waiting for a wake-up that never comes."""
        if hwm < self._data_hwm:
            self._data_hwm = hwm
            self._sockets["data"].rcvhwm = hwm

    def _number_packet(self, seq: int) -> None:
        if seq <= self._last_seq:
            self.log.info("the worker numbers its packets from %d again: the index goes on from %d", seq, self.index)
            self._index_base = self.index
        elif seq > self._last_seq + 1:
            missed = seq - self._last_seq - 1
            self.stats.lost += missed
            self.log.warning(
                "%d packet(s) from the worker never reached the com (before packet %d; %d in all)",
                missed,
                seq,
                self.stats.lost,
            )
        self._last_seq = seq
        self.index = self._index_base + seq

    def _malformed(self, exc: DecodeError) -> None:
        self.stats.malformed += 1
        self.stats.last_error = f"malformed packet {self.index}: {exc}"
        # Log the first few and then every 1000th, so a broken worker cannot flood the log.
        if self._warned_malformed < 5 or self.stats.malformed % 1000 == 0:
            self._warned_malformed += 1
            self.log.warning("dropped malformed packet %d (%d so far): %s", self.index, self.stats.malformed, exc)

    # -- heartbeat --------------------------------------------------------------
    def heartbeat_loop(self) -> None:
        """Send PULSE to the worker every heartbeat_rate seconds until the com stops."""
        sock = None
        target = None
        try:
            while not self._stopping.is_set():
                if self._heartbeat_target != target and self._heartbeat_target is not None:
                    if sock is not None:
                        sock.close()
                    target = self._heartbeat_target
                    sock = self._context.socket(zmq.PUSH)  # type: ignore[union-attr]
                    sock.linger = 0
                    sock.sndhwm = 1
                    _back_off(sock)
                    sock.connect(target)
                if sock is not None:
                    try:
                        sock.send_multipart(pulse(), zmq.NOBLOCK)
                    except zmq.Again:
                        pass  # the pipe is full or not up yet: a late pulse is useless, drop it
                self._stopping.wait(self.settings.heartbeat_rate if sock is not None else 0.02)
        except BaseException as exc:
            self._heartbeat_error = exc
            self.log.error("heartbeat thread failed: %r", exc)
            raise
        finally:
            if sock is not None:
                sock.close()

    def start_heartbeat_thread(self) -> None:
        """Start the daemon thread that runs :meth:`heartbeat_loop`."""
        if self._heartbeat_thread is not None:
            return
        if self._context is None:
            raise ConfigError("call connect_sockets() before start_heartbeat_thread()")
        self._heartbeat_thread = threading.Thread(target=self.heartbeat_loop, name="heron-com-heartbeat", daemon=True)
        self._heartbeat_thread.start()

    # -- worker ----------------------------------------------------------------
    def start_worker_process(self) -> None:
        """Start the worker and wait until it is ready on the wire (liveness received).

        Raises WorkerStartError, carrying the worker's stderr, when it exits or stays
        silent for ``settings.start_timeout`` seconds.
        """
        if self._context is None:
            raise ConfigError("call connect_sockets() before start_worker_process()")
        if self.launcher is not None:
            return
        self._launch()

    def _launch(self) -> None:
        with self._kill_lock:
            if self._killed:
                raise WorkerStartError(f"node {self.node_name!r} was stopped before its worker started")
            self.launcher = self._make_launcher()
        self.log = NodeLogger(logger, node=self.node_name, host=self.launcher.where)
        args = WorkerArgs.from_settings(
            port=self.port,
            parameters_topic=self.parameters_topic,
            num_sending_topics=len(self.sending_topics),
            relic_dir=self.relic,
            settings=self.settings,
            token=secrets.token_hex(8),
            node=self.node_key,
            outputs=len(self.outputs),
        )
        started = time.monotonic()
        try:
            self.launcher.start(args)
            self.launcher.wait_ready(self.settings.start_timeout)
            self._connect_worker()
            self._wait_first_liveness(started + self.settings.start_timeout)
        except BaseException:
            self.launcher.stop(grace=1.0)
            raise
        self.stats.state = "running"
        self.log.info("worker running, ready after %.3f s", time.monotonic() - started)
        for pid in self.launcher.ready.reaped if self.launcher.ready else ():
            self.log.warning("ended worker pid %d of this node, left on %s by an earlier run", pid, self.launcher.where)
        if self._last_parameters is not None:
            self._sockets["parameters_out"].send(self._last_parameters)

    def _wait_first_liveness(self, deadline: float) -> None:
        """Ready means something arrived over ZeroMQ: a liveness message, or data already."""
        assert self.launcher is not None
        live, data = self._sockets["liveness"], self._sockets["data"]
        poller = zmq.Poller()
        poller.register(live, zmq.POLLIN)
        poller.register(data, zmq.POLLIN)
        while True:
            events = dict(poller.poll(50))
            if live in events:
                self._on_liveness(live.recv_multipart())
                return
            if data in events:
                return  # a worker quick enough to send before its first beacon got through
            code = self.launcher.returncode()
            if code is not None:
                if data.poll(200):
                    return  # it sent its data and ended: the loop publishes it
                raise self.launcher.exit_error(code, starting=True)
            if time.monotonic() > deadline:
                raise WorkerStartError(
                    f"worker of node {self.node_name!r} on {self.launcher.where} announced its ports but "
                    f"nothing it sent reached the com within {self.settings.start_timeout:g} s",
                    node=self.node_name,
                    stderr_tail=self.launcher.output.tail(),
                )

    def _on_liveness(self, frames: list[bytes]) -> None:
        body = parse_liveness(frames)
        if body is None:
            self.log.warning("ignored a malformed liveness message")
            return
        self.stats.liveness_seen += 1
        self._last_heard = time.monotonic()
        echo = body.get("echo_ns")
        if isinstance(echo, int) and echo > 0:
            self.stats.heartbeat_rtt_s = (time.time_ns() - echo) / 1e9
        error = body.get("error")
        if isinstance(error, str):
            self.stats.last_error = f"worker: {error}"
            self.log.error("%s", error)
        # Heron's node editor waits for this before it sends parameters.
        self._sockets["proof_of_life"].send_multipart((self.parameters_topic.encode(), b"POL"))

    # -- parameters ----------------------------------------------------------------
    def send_parameters(self, parameters: Any) -> None:
        """Send parameters (anything JSON can encode) to the worker; thread-safe."""
        try:
            raw = json.dumps(parameters).encode()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"parameters must be JSON-serialisable: {exc}") from exc
        self._parameters.put(raw)

    def _relay_parameters(self, raw: bytes) -> None:
        try:
            json.loads(raw)
        except ValueError:
            self.log.error("dropped parameters that are not JSON (heron_remote never unpickles): %r", raw[:60])
            return
        self._last_parameters = raw
        self._sockets["parameters_out"].send(raw)

    # -- event loop ------------------------------------------------------------
    def start_ioloop(self) -> None:
        """Receive and publish worker data until :meth:`on_kill`; then close the sockets and return.

        Raises WorkerExitedError or WorkerLostError (with the worker's stderr) if the worker
        dies on its own and the restart policy does not, or no longer may, start it again.
        """
        if self.launcher is None:
            raise ConfigError("call start_worker_process() before start_ioloop()")
        self._loop_running.set()
        try:
            while not self._stopping.is_set():
                self._serve()
                if self.worker_error is None or self._stopping.is_set() or not self._relaunch():
                    break
        finally:
            self._stopping.set()
            self.stats.state = "failed" if self.worker_error is not None and not self._killed else "stopped"
            hb = self._heartbeat_thread
            if hb is not None:
                hb.join(self.settings.heartbeat_rate + 1)
            self._close_sockets()
            self._loop_done.set()
        if self.worker_error is not None and not self._killed:
            raise self.worker_error

    def _serve(self) -> None:
        """Relay until the com stops, or the worker ends or is lost (then ``worker_error`` says why).

        Data is read as it comes; everything else (liveness, parameters, the worker's exit,
        status) is looked at every _CHORES_S. Polling all sockets for every packet cost
        more than relaying the packet.
        """
        assert self.launcher is not None
        self._last_heard = time.monotonic()
        # A worker that pulses do not reach ends itself after the death window; a beat later, so does hope.
        lost_after = self.settings.death_window + self.settings.heartbeat_rate
        while not self._stopping.is_set():
            if self._chores(lost_after):
                return
            self._relay_data(until=time.monotonic() + _CHORES_S)

    def _chores(self, lost_after: float) -> bool:
        """Liveness, parameters, status and the worker's state; True when the worker ended or was lost."""
        assert self.launcher is not None
        s = self._sockets
        if time.monotonic() >= self._next_status:
            self.publish_status()
        while s["liveness"].poll(0):
            self._on_liveness(s["liveness"].recv_multipart())
        while s["parameters_in"].poll(0):
            frames = s["parameters_in"].recv_multipart()
            if len(frames) == 2:
                self._relay_parameters(frames[1])
        while not self._parameters.empty():
            self._relay_parameters(self._parameters.get_nowait())
        if self._stopping.is_set():
            return False
        code = self.launcher.returncode()
        if code is not None:
            self._worker_ended(code)
            return True
        if time.monotonic() - self._last_heard > lost_after:
            self._worker_lost(lost_after)
            return True
        return False

    def publish_status(self) -> SourceStatus:
        """Publish this com's status on the proof-of-life forwarder (``heron-remote status`` reads it)."""
        status, self._status_mark = status_of(self, self._status_mark)
        self._next_status = time.monotonic() + _STATUS_INTERVAL_S
        self._sockets["proof_of_life"].send_multipart((STATUS_TOPIC + self.node_name.encode(), status.to_json()))
        return status

    def _relaunch(self) -> bool:
        """Start the worker again if the restart policy allows; False leaves ``worker_error`` to raise."""
        policy = self.settings.restart
        while policy.enabled and self.stats.restarts < policy.max_restarts and not self._stopping.is_set():
            self.stats.restarts += 1
            self.stats.state = "restarting"
            self.publish_status()
            delay = policy.delay(self.stats.restarts)
            self.log.warning(
                "restarting the worker in %.1f s (restart %d of %d)", delay, self.stats.restarts, policy.max_restarts
            )
            if self._stopping.wait(delay):
                return False
            self._disconnect_worker()
            # The new worker numbers its packets from 1: the index goes on where it stood.
            self._index_base, self._last_seq = self.index, 0
            try:
                self._launch_when_reachable(policy.reach_timeout)
            except WorkerError as exc:
                if self._stopping.is_set():
                    return False  # stopped on request while it started: no failure to report
                self._report(exc)
                continue
            except SSHError as exc:
                self.stats.last_error = f"gave up restarting: {exc}"
                self.log.error("gave up restarting: %s", exc)
                return False
            self.worker_error = None
            self.log.warning("worker restarted (pid %s); index goes on from %d", self.stats.worker_pid, self.index)
            return True
        return False

    def _launch_when_reachable(self, reach_timeout: float) -> None:
        """:meth:`_launch`, retried while the host cannot be reached, for up to ``reach_timeout`` s."""
        deadline = time.monotonic() + reach_timeout
        while True:
            try:
                self._launch()
                return
            except (HostKeyError, AuthenticationError):
                raise  # retrying cannot help
            except SSHError as exc:  # unreachable, or the link dropped again while starting
                if time.monotonic() >= deadline or self._stopping.is_set():
                    raise
                self.log.info("%s; trying again", exc)
                if self._stopping.wait(1.0):
                    raise

    def _relay_data(self, until: float) -> int:
        """Relay packets until ``until`` (monotonic), or until none came for the data socket's RCVTIMEO."""
        data = self._sockets["data"]
        receive, frames, slots = recv_message, self._packet_frames, self._payload_slots
        monotonic = time.monotonic
        n = 0
        try:
            while True:
                if not self.on_receive_data_from_worker(receive(data, frames, slots, wait=True)):
                    resync(data)
                n += 1
                if monotonic() >= until:
                    break
        except zmq.Again:
            pass
        if n:
            self._last_heard = monotonic()
        return n

    def _worker_ended(self, code: int) -> None:
        assert self.launcher is not None
        # What the worker sent before it ended is still queued: publish it.
        while self._sockets["data"].poll(100):
            self._relay_data(until=time.monotonic() + _CHORES_S)
        if code == 0:
            self.log.info("worker finished (status 0) after %d packets", self.stats.received)
        else:
            self._report(self.launcher.exit_error(code))  # first: the user hears of it at once
        self.launcher.stop(grace=0.5)  # reaps anything its group left behind

    def _report(self, error: WorkerError) -> None:
        self.worker_error = error
        self.stats.last_error = str(error)
        self.log.error("%s", error)
        if self.on_worker_error is not None:
            try:
                self.on_worker_error(error)
            except Exception:
                self.log.exception("the on_worker_error callback raised")

    def _worker_lost(self, silent_for: float) -> None:
        assert self.launcher is not None
        self.stats.state = "lost"
        self.publish_status()
        self.launcher.abandon()
        self._report(
            WorkerLostError(
                f"nothing came from the worker of node {self.node_name!r} on {self.launcher.where} for "
                f"{silent_for:g} s: the link or the PC is down. The worker ends itself after "
                f"{self.settings.death_window:g} s without pulses.",
                node=self.node_name,
                stderr_tail=self.launcher.output.tail(),
            )
        )

    # -- shutdown --------------------------------------------------------------
    def on_kill(self, signal: int | None = None, frame: Any = None) -> None:
        """Stop loops, stop the worker (TERM, then KILL), close sockets. Idempotent.

        Works as a signal handler (SIGTERM, SIGINT) and from any thread.
        """
        with self._kill_lock:
            if self._killed:
                return
            self._killed = True
        self.log.info("stopping%s", f" on signal {signal}" if signal else "")
        self._stopping.set()
        try:
            if self.launcher is not None:
                self.launcher.stop(grace=self.settings.stop_grace)
        finally:
            hb = self._heartbeat_thread
            if hb is not None and hb.ident != threading.get_ident():
                hb.join(self.settings.heartbeat_rate + 1)
            if self._loop_running.is_set():
                if self._owner_thread != threading.get_ident():
                    self._loop_done.wait(5)
                # else: called from a signal handler inside the loop; it closes up when this returns
            elif self._owner_thread in (None, threading.get_ident()):
                self._close_sockets()

    def close(self) -> None:
        self.on_kill(None, None)

    def _close_sockets(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        if self._packet_log is not None:
            self._packet_log.close()
        hb = self._heartbeat_thread
        if self._context is not None and (hb is None or not hb.is_alive()):
            self._context.term()
            self._context = None

    def __enter__(self) -> SourceCom:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _back_off(sock: zmq.Socket) -> None:
    """Reconnect to a worker that is gone with a growing interval, not ten times a second."""
    sock.reconnect_ivl = 100
    sock.reconnect_ivl_max = 2000


def _bytes(frame: Any) -> bytes:
    return frame.bytes if isinstance(frame, zmq.Frame) else bytes(frame)
