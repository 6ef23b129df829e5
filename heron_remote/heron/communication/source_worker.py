"""``Heron.communication.source_worker``: heron_remote's worker, with Heron's saved node state.

A Heron source worker keeps Heron's names for its saved state (``savenodestate_*``, with
``savenodestate_path`` and ``num_of_iters_to_update_savenodestate_substate``) and Heron's
files (:mod:`heron_remote.heron.save_node_state`); everything else is heron_remote's
:class:`~heron_remote.worker.SourceWorker`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..._verbosity import NO_RELIC
from ...worker import SourceWorker as _NativeWorker
from ..save_node_state import SaveNodeState

__all__ = ["SourceWorker"]


class SourceWorker(_NativeWorker):
    """A source worker whose saved node state is Heron's: ``<path>/<Name>##<index>/*.df``."""

    def __init__(
        self,
        port: int | str,
        parameters_topic: str,
        initialisation_function: Callable[[Any], bool] | None,
        end_of_life_function: Callable[[], Any] | None,
        num_sending_topics: int | str = 1,
        savenodestate_path: str = NO_RELIC,
        *,
        heartbeat_rate: float = 1.0,
        heartbeats_to_death: int = 10,
    ) -> None:
        super().__init__(
            port,
            parameters_topic,
            initialisation_function,
            end_of_life_function,
            num_sending_topics,
            savenodestate_path,
            heartbeat_rate=heartbeat_rate,
            heartbeats_to_death=heartbeats_to_death,
        )
        #: Where the node's state is saved ('_': nowhere), as Heron names it.
        self.savenodestate_path = savenodestate_path or NO_RELIC
        #: Substate rows between two saves (None: Heron's 1000; -1: only when the worker ends).
        #: Set it before the first savenodestate_* call, as in Heron.
        self.num_of_iters_to_update_savenodestate_substate: int | None = None
        self.heron_savenodestate: SaveNodeState | None = None

    def _state(self) -> SaveNodeState:
        if self.heron_savenodestate is None:
            self.heron_savenodestate = SaveNodeState(
                self.savenodestate_path,
                self.node_name,
                self.node_index,
                self.num_of_iters_to_update_savenodestate_substate,
            )
            self._life.relic = self.heron_savenodestate  # saved when the worker ends
        return self.heron_savenodestate

    def savenodestate_create_parameters_df(self, **parameters: Any) -> None:
        """Start the Parameters table with these named values; the editor's updates are appended."""
        self._state().create("Parameters", self.index, **parameters)

    def savenodestate_create_substate_df(self, **variables: Any) -> None:
        """Start the Substate table with a first row."""
        self._state().create("Substate", self.index, **variables)

    def savenodestate_update_substate_df(self, **variables: Any) -> None:
        """Append a Substate row stamped with the packets sent so far."""
        self._state().update_substate(self.index, **variables)

    # Heron's names before it called the saved state "savenodestate".
    relic_create_parameters_df = savenodestate_create_parameters_df
    relic_create_substate_df = savenodestate_create_substate_df
    relic_update_substate_df = savenodestate_update_substate_df

    def _save_parameters(self, value: Any) -> None:
        # Heron appends each parameters message of an initialised node, by position.
        if self.initialised and self.heron_savenodestate is not None:
            self.heron_savenodestate.update_parameters(self.index, value)
