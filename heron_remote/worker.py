"""The worker runtime: what runs inside a source's worker process.

A Heron source worker ports by changing its imports::

    from heron_remote import start_the_source_worker_process

    def work(worker):
        while True:
            worker.send_data_to_com(grab_frame())

    start_the_source_worker_process(work, end_of_life_function=release_camera,
                                    initialisation_function=open_camera)

Every socket binds on this host's 127.0.0.1 and the com connects, so an SSH
forward from the rig is all a remote worker needs. The worker ends itself, after
``end_of_life_function``, when its com's pulses stop for ``heartbeats_to_death``
beats, and on SIGTERM or SIGINT.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from . import _records as records
from ._protocol import DATA_HWM_RANGE, PULSE, ReadyLine, WorkerArgs, liveness
from ._streams import guard_std_streams
from ._version import __version__
from .relic import Relic
from .wire import encode_output, send_packet

__all__ = ["SourceWorker", "start_the_source_worker_process"]

logger = logging.getLogger(__name__)

# Exit statuses a com can tell apart.
EXIT_OK = 0
EXIT_WORK_FAILED = 1
EXIT_BAD_START = 2
EXIT_NO_HEARTBEAT = 3

#: Seconds end_of_life_function may take before the worker exits anyway.
_END_OF_LIFE_S = 1.5
#: Seconds a finished worker waits for its last packets to reach the com.
_DELIVER_S = 5.0

_CHANNEL_OFFSET = {"data": 0, "heartbeat": 1, "parameters": 2, "liveness": 3}


class SourceWorker:
    """The worker's side of a source: sends data to the com, receives parameters.

    Attributes a work function uses: ``parameters`` (the last parameters, decoded
    JSON; None until the first arrive), ``initialised``, ``node_name``,
    ``node_index``, ``index`` (packets sent so far).
    """

    def __init__(
        self,
        port: int | str,
        parameters_topic: str,
        initialisation_function: Callable[[SourceWorker], bool] | None,
        end_of_life_function: Callable[[], Any] | None,
        num_sending_topics: int | str = 1,
        relic_path: str = "_",
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
        self.relic_path = None if relic_path in ("", "_", None) else relic_path
        self.heartbeat_rate = float(heartbeat_rate)
        self.heartbeats_to_death = int(heartbeats_to_death)
        #: Substate rows between two flushes of the relic's Substate file.
        self.num_of_iters_to_update_relics_substate = 100

        self.parameters: Any = None
        self.initialised = False
        self.index = 0

        self._relic: Relic | None = None
        self._data_context: zmq.Context | None = None
        self._context = zmq.Context()
        self._data: zmq.Socket | None = None
        self._send_lock = threading.Lock()
        self._ports: dict[str, int] = {}
        self._ports_lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._dying = threading.Lock()
        self._finishing = self._delivering = self._stop_asked = False
        self._error_to_report: str | None = None
        self._beacon_now = threading.Event()
        self._reaped: tuple[int, ...] = ()
        self._record: tuple[str, str, Path] | None = None  # node, token, run dir

    # -- start record ----------------------------------------------------------
    def claim_node(self, node: str, token: str, run_dir: str = "") -> None:
        """End any worker of ``node`` an earlier run left on this host, and record this one."""
        folder = records.run_dir(run_dir or None)
        self._reaped = tuple(r.pid for r in records.claim(node, token, folder=folder))
        self._record = (node, token, folder)

    def _release_node(self) -> None:
        if self._record is not None:
            node, token, folder = self._record
            records.release(node, token, folder=folder)

    # -- sockets ---------------------------------------------------------------
    def _bind(self, sock: zmq.Socket, channel: str) -> None:
        port = self.port + _CHANNEL_OFFSET[channel] if self.port else 0
        try:
            if port:
                sock.bind(f"tcp://127.0.0.1:{port}")
                bound = port
            else:
                bound = sock.bind_to_random_port("tcp://127.0.0.1")
        except zmq.ZMQError as exc:
            self._die(
                f"cannot bind the {channel} socket on 127.0.0.1:{port}: {exc.strerror}. "
                "Another process holds the port: is an earlier worker of this node still running?",
                EXIT_BAD_START,
            )
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
            )
            print(line.to_line(), flush=True)

    def connect_socket(self) -> None:
        """Bind the data socket (this thread sends on it)."""
        # A context of its own, so that at a normal end it can be terminated with
        # its linger while the service threads' sockets are still open.
        self._data_context = zmq.Context()
        self._data = self._data_context.socket(zmq.PUSH)
        # Shallow on purpose: a worker that runs far ahead of its com only takes the CPU the com needs.
        self._data.sndhwm = DATA_HWM_RANGE[0]
        self._data.linger = 0
        self._bind(self._data, "data")

    def send_data_to_com(self, data: Any, *, copy: bool = True) -> None:
        """Send one packet: an ndarray, a dict, ``"Ignore"``, or a list of them (one per output).

        With ``copy=False`` large arrays go without a copy; the array must then not
        be changed afterwards (a camera that reuses its buffer needs the default).
        Blocks while the com is behind, so nothing is dropped between worker and com.
        """
        if isinstance(data, (list, tuple)):
            if len(data) != self.num_outputs and self.num_outputs:
                raise ValueError(self._outputs_error(len(data)))
            frames: list[Any] = []
            for value in data:
                frames += encode_output(value)
        else:
            if self.num_outputs > 1:
                raise ValueError(self._outputs_error(1))
            frames = list(encode_output(data))
        with self._send_lock:
            sock = self._data
            assert sock is not None, "call connect_socket() first"
            # The packet number lets the com count packets lost on the way (a broken tunnel).
            send_packet(sock, self.index + 1, frames, copy=copy)
            self.index += 1

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
        self._bind(sock, "parameters")
        while True:
            raw = sock.recv()
            try:
                value = json.loads(raw)
            except ValueError:
                logger.error("ignored parameters that are not JSON: %r", raw[:80])
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
                    self._report(f"the initialisation function raised {type(exc).__name__}: {exc}")
        if self._relic is not None and self._relic.has("Parameters"):
            self._relic.add_parameters(self.index, parameters=value)

    # -- heartbeat and liveness ---------------------------------------------------
    def _report(self, error: str) -> None:
        """Tell the com, with the next beacon (sent at once), what went wrong here."""
        self._error_to_report = error
        self._beacon_now.set()

    def start_heartbeat_thread(self) -> None:
        self._start_thread("heartbeat", self._heartbeat_loop)

    def _heartbeat_loop(self) -> None:
        pulses = self._context.socket(zmq.PULL)
        pulses.linger = 0
        beacon = self._context.socket(zmq.PUB)
        beacon.linger = 0
        self._bind(pulses, "heartbeat")
        self._bind(beacon, "liveness")
        window = self.heartbeat_rate * self.heartbeats_to_death
        pid, seq, echo = os.getpid(), 0, 0
        last_pulse = time.monotonic()
        next_beacon = last_pulse
        connected = False
        while True:
            now = time.monotonic()
            wait = min(next_beacon, last_pulse + window) - now
            if self._beacon_now.is_set():
                self._beacon_now.clear()
                next_beacon = now
                wait = 0
            if pulses.poll(max(0, int(wait * 1000) + 1)):
                frames = pulses.recv_multipart()
                if frames and frames[0] == PULSE:
                    last_pulse = time.monotonic()
                    connected = True
                    if len(frames) > 1 and frames[1].isdigit():
                        echo = int(frames[1])
                    next_beacon = last_pulse  # answer at once: the com measures the round trip
            now = time.monotonic()
            if now - last_pulse > window:
                self._die(
                    f"no heartbeat from the com for {window:g} s ({self.heartbeats_to_death} beats): ending",
                    EXIT_NO_HEARTBEAT,
                )
            if now >= next_beacon:
                seq += 1
                error, self._error_to_report = self._error_to_report, None
                try:
                    beacon.send_multipart(liveness(pid, seq, echo, error), zmq.NOBLOCK)
                except zmq.Again:
                    self._error_to_report = self._error_to_report or error  # goes with the next beacon
                next_beacon = now + (self.heartbeat_rate if connected else min(0.1, self.heartbeat_rate))

    def _start_thread(self, name: str, target: Callable[[], None]) -> None:
        if name in self._threads:
            return

        def run() -> None:
            try:
                target()
            except BaseException:  # a dead service thread must end the worker, not hang it
                self._die(f"the {name} thread failed:\n{traceback.format_exc()}", EXIT_WORK_FAILED)

        t = threading.Thread(target=run, name=f"heron-worker-{name}", daemon=True)
        self._threads[name] = t
        t.start()

    # -- relic -----------------------------------------------------------------
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

    # -- end of life -------------------------------------------------------------
    def _end_of_life(self, timeout: float) -> None:
        if self.end_of_life_function is not None:
            t = threading.Thread(target=self._call_end_of_life, name="heron-worker-end-of-life", daemon=True)
            t.start()
            t.join(timeout)
            if t.is_alive():
                logger.error("end_of_life_function did not return within %.1f s; exiting anyway", timeout)
        if self._relic is not None:
            self._relic.close()

    def _call_end_of_life(self) -> None:
        try:
            self.end_of_life_function()  # type: ignore[misc]
        except Exception:
            logger.exception("end_of_life_function raised")

    def _die(self, reason: str, code: int) -> None:
        """End the process now, from any thread: end-of-life, relic saved, exit."""
        if not self._dying.acquire(blocking=False):
            time.sleep(3600)  # another thread is already ending the process
        # Logging can block (a remote stderr pipe whose SSH link is stalled); the exit must not.
        _hard_exit_after(_END_OF_LIFE_S + 0.5, code)
        logger.log(
            logging.INFO if code == EXIT_OK else logging.ERROR,
            "worker %s##%s (pid %d): %s",
            self.node_name,
            self.node_index,
            os.getpid(),
            reason,
        )
        self._end_of_life(timeout=_END_OF_LIFE_S / 2 if code == EXIT_NO_HEARTBEAT else _END_OF_LIFE_S)
        self._release_node()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def finish(self) -> None:
        """The work function returned: deliver what is queued, then end normally."""
        if not self._dying.acquire(blocking=False):
            time.sleep(3600)
        self._finishing = True
        _hard_exit_after(_END_OF_LIFE_S + _DELIVER_S + 1, EXIT_OK)
        self._end_of_life(timeout=_END_OF_LIFE_S)
        self._release_node()
        self._delivering = True  # before the check: a stop from here on exits in on_kill
        if self._stop_asked:
            self._exit_now(EXIT_OK)
        if self._data is not None and self._data_context is not None:
            self._data.close(linger=int(_DELIVER_S * 1000))
            self._data_context.term()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)

    def on_kill(self, signum: int, frame: Any = None) -> None:
        if self._finishing:
            # finish() runs the end of life; what it would deliver after, the stopping com won't take.
            if self._delivering:
                self._exit_now(EXIT_OK)
            self._stop_asked = True
            return
        self._die(f"stopped by signal {signal.Signals(signum).name}", EXIT_OK)

    @staticmethod
    def _exit_now(code: int) -> None:
        _hard_exit_after(0.5, code)  # a flush into a stalled pipe must not hold the exit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _hard_exit_after(seconds: float, code: int) -> None:
    timer = threading.Timer(seconds, os._exit, args=(code,))
    timer.daemon = True
    timer.start()


def start_the_source_worker_process(
    work_function: Callable[[SourceWorker], Any],
    end_of_life_function: Callable[[], Any] | None,
    initialisation_function: Callable[[SourceWorker], bool] | None = None,
) -> None:
    """Run a source worker: parse the com's arguments, bind, announce, then ``work_function(worker)``.

    Never returns: the process ends when the work function returns (status 0), raises
    (status 1), the com stops it (SIGTERM) or the com's heartbeat stops (status 3).
    """
    try:
        args = WorkerArgs.parse(sys.argv[1:])
    except ValueError as exc:
        print(f"heron_remote worker: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_BAD_START)
    node = args.parameters_topic.split("##")[-2] if "##" in args.parameters_topic else "worker"
    guard_std_streams(node)  # before logging takes hold of sys.stderr
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    worker = SourceWorker(
        args.port,
        args.parameters_topic,
        initialisation_function,
        end_of_life_function,
        args.num_sending_topics,
        args.relic_dir,
        heartbeat_rate=args.heartbeat_rate,
        heartbeats_to_death=args.heartbeats_to_death,
    )
    worker.num_outputs = args.outputs
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, worker.on_kill)
    if args.token:
        worker.claim_node(args.node_id or args.parameters_topic, args.token, args.run_dir)
    worker.connect_socket()
    worker.start_heartbeat_thread()
    worker.start_parameters_thread()
    try:
        work_function(worker)
    except Exception:
        worker._die(f"the work function raised:\n{traceback.format_exc()}", EXIT_WORK_FAILED)
    worker.finish()
