"""The com's event loop: data as it comes, everything else every CHORES_S."""

from __future__ import annotations

import time

from ..status import StatusPublisher
from .heartbeat import Heartbeat
from .parameters import ParametersRelay
from .relay import Relay
from .sockets import CHORES_S, ComSockets
from .supervisor import Supervisor

__all__ = ["ComLoop"]


class ComLoop:
    """Relays data until the com stops or its worker ends for good, starting it again as allowed.

    Data is read as it comes; liveness, parameters, the worker's state and the status are
    looked at every CHORES_S: polling every socket for every packet cost more than relaying it.
    """

    def __init__(
        self,
        sockets: ComSockets,
        relay: Relay,
        parameters: ParametersRelay,
        supervisor: Supervisor,
        heartbeat: Heartbeat,
        status: StatusPublisher,
    ) -> None:
        self._sockets = sockets
        self._relay = relay
        self._parameters = parameters
        self._supervisor = supervisor
        self._heartbeat = heartbeat
        self._status = status

    def publish_status(self) -> None:
        self._sockets.keep_proof_of_life()
        self._status.publish(self._sockets.proof_of_life)

    def run(self) -> None:
        """Until the com stops, or the worker ends and may not (or no longer) be started again."""
        supervisor = self._supervisor
        while not supervisor.stopping.is_set():
            self._serve()
            if supervisor.error is None or supervisor.stopping.is_set():
                return
            if not supervisor.relaunch(self.publish_status, self._relay.restarted):
                return
            self._parameters.resend_last()
            supervisor.log.warning(
                "the next index is %d: one is skipped, so that subscribers see the restart as a gap",
                self._relay.index + 2,
            )

    def _serve(self) -> None:
        supervisor, relay = self._supervisor, self._relay
        supervisor.heard()
        while not supervisor.stopping.is_set():
            if self._chores():
                return
            if relay.pump(until=time.monotonic() + CHORES_S):
                supervisor.heard(data=True)

    def _chores(self) -> bool:
        """Status, liveness, parameters and the worker's state; True when the worker ended or was lost."""
        self._relay.keep_sending()
        self._sockets.keep_proof_of_life()
        self._status.sample()
        if self._status.due:
            self.publish_status()
        liveness = self._sockets.liveness
        while liveness.poll(0):
            self._supervisor.on_liveness(liveness.recv_multipart())
        self._parameters.poll()
        error = self._heartbeat.error
        if error is not None:
            raise error  # the worker would starve: the com ends, saying why
        if self._supervisor.stopping.is_set():
            return False
        if self._supervisor.ended(drain=lambda: self._relay.drain(CHORES_S)):
            if self._supervisor.stats.state == "lost":
                self.publish_status()
            return True
        return False
