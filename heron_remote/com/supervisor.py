"""The worker's life as its com sees it: launch and ready handshake, ended and lost workers, restarts."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeGuard

import zmq

from .._drops import Drops
from .._logging import NodeLogger
from .._protocol import WorkerArgs, parse_liveness
from .._records import ComId
from ..compression import Compression, blosc2_module
from ..errors import (
    AuthenticationError,
    DecodeError,
    HostKeyError,
    SSHError,
    WorkerError,
    WorkerLostError,
    WorkerStartError,
)
from ..launcher import LocalLauncher, WorkerLauncher
from ..settings import Settings
from ..wire.bounded import ERROR_MAX_CHARS, NUMBER_LIMIT
from .heartbeat import Heartbeat
from .sockets import ComSockets
from .stats import ComStats

__all__ = ["STALL_BEATS", "Supervisor", "WorkerSpec", "make_launcher"]

logger = logging.getLogger("heron_remote.source_com")

#: Seconds between two warnings that the worker refused connections (the count is kept all along).
REFUSED_LOG_S = 60.0
#: Heartbeats without anything from the worker (data or its answers to pulses) after which the
#: stream counts as stalled: logged, and shown in the status, until something comes again.
STALL_BEATS = 3


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    """What a com starts: the worker's command and what it passes to it."""

    worker_exec: str
    node_name: str
    #: What identifies the node on its host: a new worker of it ends one an earlier run left there.
    node_id: str
    #: A server of the registry (name or id), or None for this machine.
    host: str | None
    port: int
    parameters_topic: str
    num_sending_topics: int
    outputs: int
    relic_dir: str
    #: The CPU the worker is pinned to (Heron's cpu_to_pin), or None.
    cpu: int | None = None
    #: How the worker packs its arrays; None: as its server in the registry says; False: not at all.
    compression: Compression | bool | None = None


def make_launcher(spec: WorkerSpec, settings: Settings) -> WorkerLauncher:
    """A launcher for ``spec``: here, or on its host over that host's one SSH connection."""
    if spec.host is None:
        return LocalLauncher(spec.worker_exec, node_name=spec.node_name)
    from ..ssh import HostConnection, Registry, RemoteLauncher

    server = Registry.load(settings.ssh_info).get(spec.host)
    connection = HostConnection.acquire(server, timeout=settings.connect_timeout, link_timeout=settings.link_timeout)
    try:
        return RemoteLauncher(spec.worker_exec, node_name=spec.node_name, connection=connection, settings=settings)
    except BaseException:
        connection.release()
        raise


class Supervisor:
    """Starts the worker, watches it, reports its end, and starts it again where the policy says."""

    def __init__(
        self,
        spec: WorkerSpec,
        settings: Settings,
        stats: ComStats,
        *,
        on_error: Callable[[WorkerError], None] | None = None,
        make: Callable[[WorkerSpec, Settings], WorkerLauncher] = make_launcher,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.stats = stats
        self.launcher: WorkerLauncher | None = None
        #: Why the worker ended or was lost, while it is not running again.
        self.error: WorkerError | None = None
        #: How the worker was told to pack its arrays (the spec's, or its server's), once launched.
        self.compression: Compression | None = None
        self.log = NodeLogger(logger, node=spec.node_name, host="com")
        # Undecodable liveness messages; parameters count theirs in the same stats.rejected.
        self._drops = Drops(self.log, "an undecodable liveness message")
        self._on_error = on_error
        self._make = make
        self._sockets: ComSockets | None = None
        self._heartbeat: Heartbeat | None = None
        self._last_heard = 0.0
        #: Connections the current worker said it refused (a new worker counts from 0), and when we said so.
        self._refused = 0
        self._refused_said = -REFUSED_LOG_S
        #: When the worker that failed was last heard from, until the next one's first packet.
        self._hole_since: float | None = None
        self.stopping = threading.Event()
        # Re-entrant: stop() may be a signal handler of the very thread that is launching.
        self._lock = threading.RLock()

    def attach(self, sockets: ComSockets, heartbeat: Heartbeat) -> None:
        self._sockets, self._heartbeat = sockets, heartbeat

    @property
    def where(self) -> str:
        return self.launcher.where if self.launcher is not None else "-"

    # -- launch ------------------------------------------------------------------------
    def launch(self) -> None:
        """Start the worker; return once something it sent over ZeroMQ reached the com."""
        with self._lock:
            if self.stopping.is_set():
                raise WorkerStartError(f"node {self.spec.node_name!r} was stopped before its worker started")
        launcher = self._make(self.spec, self.settings)
        with self._lock:
            if self.stopping.is_set():
                launcher.stop(grace=1.0)
                raise WorkerStartError(f"node {self.spec.node_name!r} was stopped before its worker started")
            self.launcher = launcher
            self._refused = 0
        self.log = NodeLogger(logger, node=self.spec.node_name, host=launcher.where)
        started = time.monotonic()
        try:
            launcher.start(self._worker_args())
            launcher.wait_ready(self.settings.start_timeout)
            self._connect()
            self._wait_first_liveness(started + self.settings.start_timeout)
        except BaseException:
            launcher.stop(grace=1.0)
            raise
        self.stats.state = "running"
        self.log.info("worker running, ready after %.3f s", time.monotonic() - started)
        for pid in launcher.ready.reaped if launcher.ready else ():
            self.log.warning("ended worker pid %d of this node, left on %s by an earlier run", pid, launcher.where)

    def _worker_args(self) -> WorkerArgs:
        spec = self.spec
        return WorkerArgs.from_settings(
            port=spec.port,
            parameters_topic=spec.parameters_topic,
            num_sending_topics=spec.num_sending_topics,
            relic_dir=spec.relic_dir,
            settings=self.settings,
            token=secrets.token_hex(8),
            node_id=spec.node_id,
            outputs=spec.outputs,
            cpu=spec.cpu,
            com=str(ComId.here()),
            compression=self._compression(),
        )

    def _compression(self) -> str:
        """The worker's compression argument: the spec's, else its server's in the registry."""
        chosen = self.spec.compression
        if chosen is None:
            chosen = getattr(getattr(self.launcher, "server", None), "compression", None)
        if not isinstance(chosen, Compression):
            return ""
        blosc2_module()  # the com unpacks: the rig needs it as much as the PC
        self.compression = chosen
        return chosen.to_arg()

    def _connect(self) -> None:
        assert self.launcher is not None and self.launcher.ready is not None
        assert self._sockets is not None and self._heartbeat is not None
        sockets = self._sockets
        self._heartbeat.aim(
            sockets.connect_worker(self.launcher),
            self.launcher.keys,
            liveness=sockets.worker_endpoint(sockets.liveness),
        )
        self.stats.worker_pid = self.launcher.ready.pid
        self.stats.transport = self.launcher.transport

    def _wait_first_liveness(self, deadline: float) -> None:
        """Ready means something arrived over ZeroMQ: a liveness message, or data already."""
        assert self.launcher is not None and self._sockets is not None
        live, data = self._sockets.liveness, self._sockets.data
        poller = zmq.Poller()
        poller.register(live, zmq.POLLIN)
        poller.register(data, zmq.POLLIN)
        while True:
            events = dict(poller.poll(50))
            if live in events and self.on_liveness(live.recv_multipart()):
                return
            if data in events:
                return  # a worker quick enough to send before its first beacon got through
            code = self.launcher.returncode()
            if code is not None:
                if self._sockets.data_waiting(200):
                    return  # it sent its data and ended: the loop publishes it
                raise self.launcher.exit_error(code, starting=True)
            if time.monotonic() > deadline:
                raise WorkerStartError(
                    f"worker of node {self.spec.node_name!r} on {self.launcher.where} announced its ports but "
                    f"nothing it sent reached the com within {self.settings.start_timeout:g} s",
                    node=self.spec.node_name,
                    stderr_tail=self.launcher.output.tail(),
                )

    # -- watching --------------------------------------------------------------------
    def heard(self, *, data: bool = False) -> None:
        """Something came from the worker just now (``data``: packets, not only liveness)."""
        now = self._last_heard = time.monotonic()
        if self.stats.stalled_since is not None:
            self._resumed(now)
        if data and self._hole_since is not None:
            self._hole_closed(now)

    @property
    def stall_after(self) -> float:
        """Seconds of silence after which the stream counts as stalled."""
        return STALL_BEATS * self.settings.heartbeat_rate

    def _watch_stall(self, now: float) -> None:
        stats = self.stats
        silent = now - self._last_heard
        if stats.stalled_since is None and stats.state == "running" and silent > self.stall_after:
            stats.stalled_since, stats.state = self._last_heard, "stalled"
            stats.stalls += 1
            self.log.warning(
                "stream stalled: nothing from the worker on %s for %.1f s (the link, or the PC?); it counts as "
                "lost after %g s",
                self.where,
                silent,
                self.lost_after,
            )

    def _resumed(self, now: float) -> None:
        stats = self.stats
        since, stats.stalled_since = stats.stalled_since, None
        if stats.state == "stalled":
            stats.state = "running"
        assert since is not None
        self.log.warning("stream resumed: the worker on %s was silent for %.1f s in all", self.where, now - since)

    def _hole_closed(self, now: float) -> None:
        assert self._hole_since is not None
        hole, self._hole_since = now - self._hole_since, None
        self.stats.down_s += hole
        self.log.warning(
            "data flows again after a %.1f s hole in the stream (restart %d; the index skips one there)",
            hole,
            self.stats.restarts,
        )

    def on_liveness(self, frames: list[bytes]) -> bool:
        """Take in a liveness message; False (counted, dropped) when it is not one."""
        try:
            body = parse_liveness(frames)
        except DecodeError as exc:
            self._drops(exc)
            self.stats.rejected += 1
            return False
        self.stats.liveness_seen += 1
        self.heard()
        probe = body.get("probe")
        if type(probe) is int and 0 <= probe < NUMBER_LIMIT and self._heartbeat is not None:
            self._heartbeat.answer(probe)  # the worker's session closed: it asks whether we still live
        echo = body.get("echo_ns")
        if type(echo) is int and 0 < echo < NUMBER_LIMIT:
            self.stats.heartbeat_rtt_s = (time.time_ns() - echo) / 1e9
        rejected = body.get("rejected")
        if type(rejected) is int and 0 <= rejected < NUMBER_LIMIT:
            self.stats.worker_rejected = rejected
        ring, sent = body.get("ring"), body.get("sent")
        if _counts(ring):
            self.stats.worker_ring_bypassed, self.stats.worker_ring_renewed = ring
        if _counts(sent):
            self.stats.worker_packets, self.stats.worker_messages = sent
        refused = body.get("refused")
        if type(refused) is int and 0 <= refused < NUMBER_LIMIT and refused != self._refused:
            self._refused_more(refused)
        error = body.get("error")
        if isinstance(error, str):
            error = error[:ERROR_MAX_CHARS]
            self.stats.last_error = f"worker: {error}"
            self.log.error("%s", error)
        assert self._sockets is not None
        self._sockets.proof_of_life_sent()
        return True

    def _refused_more(self, refused: int) -> None:
        """The worker refused more connections that lacked this launch's key: say so, and count them."""
        more = refused - self._refused
        self._refused = refused
        if more <= 0:
            return
        self.stats.worker_refused += more
        now = time.monotonic()
        if now < self._refused_said + REFUSED_LOG_S:
            return  # an attack goes on: said once a minute, counted all the time
        self._refused_said = now
        self.log.warning(
            "the worker on %s refused connection(s) to its ports that did not carry its com's key (%d in all): "
            "another program on that PC tried them",
            self.where,
            self.stats.worker_refused,
        )

    @property
    def lost_after(self) -> float:
        """Seconds of silence after which the worker counts as lost: it ends itself after the
        death window without pulses; a beat later, so does hope."""
        return self.settings.death_window + self.settings.heartbeat_rate

    def ended(self, drain: Callable[[], None]) -> bool:
        """Whether the worker has ended or is lost; reports it (``drain`` publishes what it sent last)."""
        launcher = self.launcher
        assert launcher is not None
        code = launcher.returncode()
        if code is not None:
            launcher.refuse_connections()  # what it sent is in; reconnecting to it would only be refused
            drain()
            self._forget_worker()
            if code == 0:
                self.log.info("worker finished (status 0) after %d packets", self.stats.received)
            else:
                self._report(launcher.exit_error(code))  # first: the user hears of it at once
            launcher.stop(grace=0.5)  # reaps anything its group left behind
            return True
        now = time.monotonic()
        if now - self._last_heard > self.lost_after:
            self._lost(launcher)
            return True
        self._watch_stall(now)
        return False

    def _forget_worker(self) -> None:
        """Stop connecting to a gone worker's ports: another program may bind them once they are free,
        and it must get no connection from the com (the gone launch's key is all it would learn)."""
        if self._sockets is not None:
            self._sockets.disconnect_worker()
        if self._heartbeat is not None:
            self._heartbeat.forget()

    def _lost(self, launcher: WorkerLauncher) -> None:
        self.stats.state, self.stats.stalled_since = "lost", None
        self._forget_worker()
        launcher.abandon()
        silent_for = self.lost_after
        self._report(
            WorkerLostError(
                f"nothing came from the worker of node {self.spec.node_name!r} on {launcher.where} for "
                f"{silent_for:g} s: the link or the PC is down. The worker ends itself after "
                f"{self.settings.death_window:g} s without pulses; "
                + (
                    "the restart policy starts it again when the PC answers."
                    if self.settings.restart.enabled
                    else 'with restart="on-failure" in the settings it would be started again when the PC answers.'
                ),
                node=self.spec.node_name,
                stderr_tail=launcher.output.tail(),
            )
        )

    # -- restarting -------------------------------------------------------------------
    def relaunch(self, on_restarting: Callable[[], None], before_launch: Callable[[], None]) -> bool:
        """Start the worker again if the restart policy allows; False when it may not (or gave up).

        ``on_restarting`` runs when a restart is decided, ``before_launch`` after the back-off.
        """
        policy = self.settings.restart
        stats = self.stats
        if policy.enabled and self._hole_since is None:
            self._hole_since = self._last_heard
        while policy.enabled and stats.restarts < policy.max_restarts and not self.stopping.is_set():
            stats.restarts += 1
            stats.state = "restarting"
            on_restarting()
            delay = policy.delay(stats.restarts)
            self.log.warning(
                "restarting the worker in %.1f s (restart %d of %d)", delay, stats.restarts, policy.max_restarts
            )
            if self.stopping.wait(delay):
                return False
            assert self._sockets is not None
            self._sockets.disconnect_worker()
            before_launch()
            try:
                self._launch_when_reachable(policy.reach_timeout)
            except WorkerError as exc:
                if self.stopping.is_set():
                    return False  # stopped on request while it started: no failure to report
                self._report(exc)
                continue
            except SSHError as exc:
                stats.last_error = f"gave up restarting: {exc}"
                self.log.error("gave up restarting: %s", exc)
                return False
            self.error = None
            self.log.warning("worker restarted (pid %s)", self.stats.worker_pid)
            return True
        return False

    def _launch_when_reachable(self, reach_timeout: float) -> None:
        """:meth:`launch`, retried while the host cannot be reached, for up to ``reach_timeout`` s."""
        deadline = time.monotonic() + reach_timeout
        while True:
            try:
                self.launch()
                return
            except (HostKeyError, AuthenticationError):
                raise  # retrying cannot help
            except SSHError as exc:  # unreachable, or the link dropped again while starting
                if time.monotonic() >= deadline or self.stopping.is_set():
                    raise
                self.log.info("%s; trying again", exc)
                if self.stopping.wait(1.0):
                    raise

    def _report(self, error: WorkerError) -> None:
        self.error = error
        self.stats.last_error = str(error)
        self.log.error("%s", error)
        if self._on_error is not None:
            try:
                self._on_error(error)
            except Exception:
                self.log.exception("the on_worker_error callback raised")

    # -- stopping --------------------------------------------------------------------
    def stop(self, grace: float) -> None:
        """Stop for good: no launch from now on, and the worker stopped (TERM, then KILL)."""
        with self._lock:
            self.stopping.set()
            launcher = self.launcher
        if launcher is not None:
            launcher.stop(grace=grace)


def _counts(value: object) -> TypeGuard[list[int]]:
    """Whether a beacon's ``value`` is a pair of counts."""
    return type(value) is list and len(value) == 2 and all(type(n) is int and 0 <= n < NUMBER_LIMIT for n in value)
