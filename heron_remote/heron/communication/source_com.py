"""``Heron.communication.source_com``: the com of a source node is heron_remote's :class:`SourceCom`."""

from __future__ import annotations

from ...source_com import SourceCom

__all__ = ["SourceCom"]
