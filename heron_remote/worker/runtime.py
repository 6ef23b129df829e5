"""SourceWorker: what a work function holds. Sends data to the com, receives parameters.

Every socket binds on this host's 127.0.0.1 and the com connects, so an SSH forward
from the rig is all a remote worker needs. A worker its com started accepts only that com
(:meth:`SourceWorker.use_keys`, :mod:`heron_remote._linkkeys`). With the direct transport
(:meth:`SourceWorker.bind_on`) they bind on the PC's LAN address instead, as CurveZMQ servers.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import zmq

from .._drops import Drops
from .._ipc import usable_socket_path
from .._linkkeys import Gate, LinkKeys
from .._protocol import DATA_HWM, EXIT_BAD_START, EXIT_WORK_FAILED, ReadyLine
from .._ring import RingWriter
from .._threads import KeptThread
from .._verbosity import NO_RELIC
from .._version import __version__
from ..compression import Compression, Packer
from ..errors import DecodeError
from ..relic import Relic
from ..settings import DEFAULT_BATCH_WINDOW
from ..wire import encode_output
from ..wire.bounded import PARAMETERS_MAX_BYTES, read_json
from . import clock
from .batching import Batcher
from .control import ComControl
from .heartbeat import WorkerHeartbeat
from .life import WorkerLife, remove_at_exit

__all__ = ["SourceWorker"]

logger = logging.getLogger("heron_remote.worker")

_CHANNEL_OFFSET = {"data": 0, "heartbeat": 1, "parameters": 2, "liveness": 3}
#: How often wait_initialised looks: a frame's time at 200 frames/s.
_INITIALISED_POLL_S = 0.005


class SourceWorker:
    """The worker's side of a source: sends data to the com, receives parameters.

    Attributes a work function uses: ``parameters`` (the last parameters, decoded
    JSON; None until the first arrive), ``initialised``, ``node_name``,
    ``node_index``, ``index`` (packets sent so far). The work function starts at once,
    as in Heron; :meth:`wait_initialised` holds it until the initialisation succeeded.
    """

    def __init__(
        self,
        port: int | str,
        parameters_topic: str,
        initialisation_function: Callable[[SourceWorker], bool] | None,
        end_of_life_function: Callable[[], Any] | None,
        num_sending_topics: int | str = 1,
        relic_path: str = NO_RELIC,
        *,
        heartbeat_rate: float = 1.0,
        heartbeats_to_death: int = 10,
    ) -> None:
        self.port = int(port)
        self.parameters_topic = parameters_topic
        parts = parameters_topic.split("##")
        self.node_name = parts[-2] if len(parts) >= 2 else parameters_topic
        self.node_index = parts[-1] if len(parts) >= 2 else "0"
        self.initialisation_function = initialisation_function
        self.end_of_life_function = end_of_life_function
        self.num_sending_topics = int(num_sending_topics)
        #: Outputs per packet, when the com said (send_data_to_com then checks); 0: not said.
        self.num_outputs = 0
        self.relic_path = None if relic_path in ("", NO_RELIC, None) else relic_path
        self.heartbeat_rate = float(heartbeat_rate)
        self.heartbeats_to_death = int(heartbeats_to_death)
        #: Substate rows between two flushes of the relic's Substate file.
        self.num_of_iters_to_update_relics_substate = 100

        self.parameters: Any = None
        self.initialised = False
        self.index = 0

        self._life = WorkerLife(f"{self.node_name}##{self.node_index}", end_of_life_function)
        self._drops = Drops(logger, "an undecodable message on the worker's pulse or parameters port")
        self._heartbeat = WorkerHeartbeat(
            self.heartbeat_rate, self.heartbeats_to_death, self._bind, self._die, self._drops
        )
        self._heartbeat.refused = lambda: self.refused
        self._heartbeat.ring_counts = self._ring_counts
        self._heartbeat.sent_counts = self._sent_counts
        self._context = zmq.Context()
        self._data_context: zmq.Context | None = None
        self._gate: Gate | None = None
        self._data: zmq.Socket | None = None
        self._batcher: Batcher | None = None
        #: Seconds a small packet waits for the ones after it (Settings.batch_window; 0: none).
        self.batch_window = DEFAULT_BATCH_WINDOW
        self._send_lock = threading.Lock()
        self._ports: dict[str, int] = {}
        self._ports_lock = threading.Lock()
        self._threads: dict[str, KeptThread] = {}
        self._reaped: tuple[int, ...] = ()
        self._relic: Relic | None = None
        self._address = "127.0.0.1"
        self._data_path: Path | None = None
        #: Where large payloads go on a Unix socket (the com maps it): one copy fewer.
        self._ring: RingWriter | None = None
        self._endpoints: dict[str, str] = {}
        self._packer: Packer | None = None

    @property
    def compression(self) -> Compression | None:
        """How arrays are packed for the link to the com (its com says), or None."""
        return self._packer.compression if self._packer is not None else None

    @compression.setter
    def compression(self, value: Compression | None) -> None:
        self._packer = Packer(value) if value is not None else None

    # -- what tests and tools may read --------------------------------------------
    @property
    def ports(self) -> dict[str, int]:
        """The ports bound so far, by channel (data, heartbeat, parameters, liveness)."""
        with self._ports_lock:
            return dict(self._ports)

    @property
    def rejected(self) -> int:
        """Messages on the pulse and parameters ports dropped as undecodable (anyone on the PC can
        write there); each beacon tells the com (``stats.worker_rejected``)."""
        return self._drops.count

    @property
    def refused(self) -> int:
        """Connections to the worker's ports refused for not carrying its com's key (another program
        on the PC tried them); each beacon tells the com (``stats.worker_refused``)."""
        return self._gate.refused if self._gate is not None else 0

    def _sent_counts(self) -> tuple[int, int] | None:
        batcher = self._batcher
        return None if batcher is None else (batcher.packets, batcher.messages)

    def _ring_counts(self) -> tuple[int, int] | None:
        ring = self._ring
        return None if ring is None else (ring.bypassed, ring.renewed)

    @property
    def data_socket(self) -> zmq.Socket | None:
        """The data socket, for tools that must send what :meth:`send_data_to_com` refuses (tests)."""
        return self._data

    def wait_initialised(self, timeout: float | None = None) -> bool:
        """Wait until ``initialised`` is True: the initialisation function returned True (it is
        tried with each parameters update; without one, the first parameters do). False after
        ``timeout`` seconds. It looks at the attribute itself, which Heron's nodes may also set."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.initialised:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_INITIALISED_POLL_S)
        return True

    # -- start record ----------------------------------------------------------
    def claim_node(self, node_id: str, token: str, run_dir: str = "", *, com: str = "") -> None:
        """Take ``node_id`` on this host, ending a worker an earlier run left (NodeHeldError if a live com holds it)."""
        window = self.heartbeat_rate * self.heartbeats_to_death
        self._reaped = self._life.claim(node_id, token, run_dir, com=com, window=window)
        self._heartbeat.on_pulse = self._life.pulse

    def start_control(self, mode: str, session_grace: float) -> None:
        """Read the com's control channel (stdin): ``stop``, and its end (the com is gone)."""
        if not mode:
            return
        self._life.controlled = True
        ComControl(
            mode,
            self._heartbeat,
            session_grace=session_grace,
            stop=self._life.stop_from_com,
            gone=self._life.orphaned,
            closed=self._life.channel_closed,
        ).start()

    def bind_on(self, address: str) -> None:
        """Bind on ``address`` (the PC's, as its com reaches it) instead of 127.0.0.1: the direct
        transport, whose curve keys :meth:`use_keys` then takes. Call before any socket binds."""
        assert not self._ports, "bind_on() comes before the sockets bind"
        self._address = address

    def data_on_unix_socket(self, path: str) -> None:
        """Bind the data socket on the Unix socket ``path`` its local com named, in this account's
        private folder; where that cannot be, on loopback TCP as usual (the com then uses the port)."""
        assert not self._ports, "data_on_unix_socket() comes before the sockets bind"
        if usable_socket_path(path):
            self._data_path = Path(path)
            remove_at_exit(path)  # the worker ends with os._exit: ZeroMQ would leave the file
        else:
            logger.warning("data on loopback TCP: %r is no data socket in a private folder of this account", path)

    def use_keys(self, keys: LinkKeys) -> None:
        """Accept only the com that holds ``keys`` on every socket (call before any binds)."""
        assert not self._ports, "use_keys() comes before the sockets bind"
        if self._data_context is None:
            self._data_context = zmq.Context()
        self._gate = Gate(keys)
        self._gate.start({self._context: ("heartbeat", "parameters", "liveness"), self._data_context: ("data",)})

    # -- sockets ---------------------------------------------------------------
    def _bind(self, sock: zmq.Socket, channel: str) -> None:
        port = self.port + _CHANNEL_OFFSET[channel] if self.port else 0
        if self._gate is not None:
            self._gate.watch(sock, channel)
        if channel == "data" and self._data_path is not None:
            endpoint = f"ipc://{self._data_path}"
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                logger.warning("data on loopback TCP: cannot bind %s (%s)", endpoint, exc.strerror)
            else:
                self._endpoints[channel] = endpoint
                self._ring = RingWriter.create(endpoint)  # before the ready line: the com maps it then
                if self._ring is not None:
                    remove_at_exit(str(self._ring.path))
                self._bound(channel, 0)
                return
        if ":" in self._address:
            sock.ipv6 = True
        host = f"[{self._address}]" if ":" in self._address else self._address
        try:
            if port:
                sock.bind(f"tcp://{host}:{port}")
                bound = port
            else:
                bound = sock.bind_to_random_port(f"tcp://{host}")
        except zmq.ZMQError as exc:
            self._die(
                f"cannot bind the {channel} socket on {host}:{port}: {exc.strerror}. "
                + (
                    "Another process holds the port: is an earlier worker of this node still running?"
                    if self._address == "127.0.0.1"
                    else "Is that address this PC's own (not one a NAT router forwards)? Use the tunnel transport "
                    "if the rig reaches this PC through an address it does not have."
                ),
                EXIT_BAD_START,
            )
        self._bound(channel, bound)

    def _bound(self, channel: str, bound: int) -> None:
        with self._ports_lock:
            self._ports[channel] = bound
            complete = len(self._ports) == len(_CHANNEL_OFFSET)
        if complete:
            line = ReadyLine(
                pid=os.getpid(),
                ports=dict(self._ports),
                version=__version__,
                python=platform.python_version(),
                reaped=self._reaped,
                server_key=self._gate.keys.server_public.decode() if self._gate is not None else "",
                endpoints=dict(self._endpoints),
            )
            print(line.to_line(), flush=True)  # the ready line: the com reads it on our stdout

    def connect_socket(self) -> None:
        """Bind the data socket (this thread sends on it)."""
        # A context of its own, so that at a normal end it can be terminated with
        # its linger while the service threads' sockets are still open.
        if self._data_context is None:
            self._data_context = zmq.Context()
        self._data = self._data_context.socket(zmq.PUSH)
        # Shallow on purpose: a worker that runs far ahead of its com only takes the CPU the com needs.
        self._data.sndhwm = DATA_HWM
        self._data.linger = 0
        self._bind(self._data, "data")
        self._batcher = Batcher(self._data, self._send_lock, window_s=self.batch_window)

    def send_data_to_com(self, data: Any, *, copy: bool = True, captured: float | None = None) -> None:
        """Send one packet: an ndarray, a dict, ``"Ignore"``, or a list of them (one per output).

        With ``copy=False`` large arrays go without a copy; the array must then not
        be changed afterwards (a camera that reuses its buffer needs the default).
        Blocks while the com is behind, so nothing is dropped between worker and com.
        ``captured``: when the data was captured, in seconds of this PC's ``time.time()``
        (a camera's own time stamp); by default, now. The com publishes it in the rig's clock.
        """
        captured_us = clock.now_ns() // 1000 if captured is None else round(captured * 1e6)
        if isinstance(data, (list, tuple)):
            if len(data) != self.num_outputs and self.num_outputs:
                raise ValueError(self._outputs_error(len(data)))
            frames: list[Any] = []
            for value in data:
                frames += self._encode(value)
        else:
            if self.num_outputs > 1:
                raise ValueError(self._outputs_error(1))
            frames = self._encode(data)
        with self._send_lock:
            batcher = self._batcher
            assert batcher is not None, "call connect_socket() first"
            ring = self._ring
            size = 0
            for k in range(1, len(frames), 2):
                payload = frames[k]
                if type(payload) is bytes:
                    size += len(payload)
                elif type(payload) is memoryview:  # a large array's, not packed
                    size += payload.nbytes  # through the ring too: a reference is never batched
                    if ring is not None:
                        frames[k] = ring.put(payload) or payload
                else:
                    size += memoryview(payload).nbytes
            # The packet number lets the com count packets lost on the way (a broken tunnel).
            batcher.send(self.index + 1, frames, copy=copy, captured_us=captured_us, size=size)
            self.index += 1

    def _encode(self, value: Any) -> list[Any]:
        """One output's [metadata, payload], its array packed when the com asked for compression."""
        meta, payload = encode_output(value)
        if self._packer is not None and isinstance(value, np.ndarray):
            return list(self._packer.pack(meta, payload, value.dtype.itemsize))
        return [meta, payload]

    def _outputs_error(self, sent: int) -> str:
        return (
            f"send_data_to_com got {sent} output(s) but node {self.node_name!r} has {self.num_outputs}: "
            "send one value per output, in the order of the node's outputs (a list when there are several)"
        )

    # -- parameters --------------------------------------------------------------
    def start_parameters_thread(self) -> None:
        self._start_thread("parameters", self._parameters_loop)

    def _parameters_loop(self) -> None:
        sock = self._context.socket(zmq.PULL)
        sock.linger = 0
        sock.maxmsgsize = PARAMETERS_MAX_BYTES  # per frame: ZeroMQ drops a link that sends more
        self._bind(sock, "parameters")
        while True:
            frames = sock.recv_multipart()
            try:
                value = _parameters_in(frames)
            except DecodeError as exc:
                self._drops(exc)
                continue
            self.update_parameters(value)

    def update_parameters(self, value: Any) -> None:
        """Take new parameters; retry the initialisation function until it returns True."""
        self.parameters = value
        if not self.initialised:
            if self.initialisation_function is None:
                self.initialised = True
            else:
                try:
                    self.initialised = bool(self.initialisation_function(self))
                except Exception as exc:
                    logger.exception("the initialisation function raised; it is retried with the next parameters")
                    self._heartbeat.report(f"the initialisation function raised {type(exc).__name__}: {exc}")
        self._save_parameters(value)

    def _save_parameters(self, value: Any) -> None:
        """Parameters that arrive after the Parameters table was started are appended to it."""
        relic = self._relic
        if relic is not None and relic.has("Parameters"):
            relic.add_parameters(self.index, parameters=value)

    # -- heartbeat and service threads -----------------------------------------------
    def start_heartbeat_thread(self) -> None:
        self._start_thread("heartbeat", lambda: self._heartbeat.run(self._context))

    def _start_thread(self, name: str, target: Callable[[], None]) -> None:
        if name in self._threads:
            return

        def failed(exc: BaseException) -> None:  # a dead service thread must end the worker, not hang it
            text = "".join(traceback.format_exception(exc))
            self._die(f"the {name} thread failed:\n{text}", EXIT_WORK_FAILED)

        self._threads[name] = KeptThread.start_new(target, name=f"heron-worker-{name}", on_error=failed)

    # -- relic (Heron's saved node state) ---------------------------------------------
    def _relic_or_none(self) -> Relic | None:
        if self.relic_path is None:
            return None
        if self._relic is None:
            self._relic = Relic(
                self.relic_path,
                self.node_name,
                self.node_index,
                flush_every=self.num_of_iters_to_update_relics_substate,
            )
            self._life.relic = self._relic  # saved when the worker ends
        return self._relic

    def relic_create_parameters_df(self, **parameters: Any) -> None:
        """Start the Parameters table with these named values; later updates are appended."""
        relic = self._relic_or_none()
        if relic is not None:
            relic.add_parameters(self.index, **parameters)

    def relic_create_substate_df(self, **variables: Any) -> None:
        """Start the Substate table with a first row."""
        self.relic_update_substate_df(**variables)

    def relic_update_substate_df(self, **variables: Any) -> None:
        """Append a Substate row stamped with the current packet index."""
        relic = self._relic_or_none()
        if relic is not None:
            relic.add_substate(self.index, **variables)

    # Heron's later name for the relic.
    savenodestate_create_parameters_df = relic_create_parameters_df
    savenodestate_create_substate_df = relic_create_substate_df
    savenodestate_update_substate_df = relic_update_substate_df

    # -- the end -------------------------------------------------------------------
    def _die(self, reason: str, code: int) -> NoReturn:
        self._life.die(reason, code)

    def finish(self) -> NoReturn:
        """The work function returned: deliver what is queued, then end normally."""
        if self._batcher is not None:
            with self._send_lock:
                self._batcher.close()
        self._life.finish(self._data, self._data_context)

    def on_kill(self, signum: int, frame: Any = None) -> None:
        """SIGTERM or SIGINT: end the worker (end of life, relic saved)."""
        self._life.on_signal(signum, frame)


def _parameters_in(frames: list[bytes]) -> Any:
    """The parameters a message from the com carries (one JSON frame); DecodeError."""
    if len(frames) != 1:
        raise DecodeError(f"parameters come as one JSON frame, got {len(frames)} frames")
    return read_json(frames[0], "parameters", PARAMETERS_MAX_BYTES)
