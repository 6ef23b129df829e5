"""What a com counts: read it at any time (``com.stats``, ``Source.stats``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ComStats"]


@dataclass
class ComStats:
    """Counters a com keeps.

    ``lost`` counts packets the worker sent that never reached the com; ``malformed``
    those that arrived but did not follow the wire format (both show as index gaps).
    ``restarts`` counts workers started again under the restart policy. ``rejected`` counts
    messages the com dropped as undecodable on its parameters and liveness inputs,
    ``worker_rejected`` those its worker dropped on its pulse and parameters inputs (as the
    worker last said).
    """

    received: int = 0
    lost: int = 0
    published: int = 0
    ignored: int = 0
    malformed: int = 0
    rejected: int = 0
    worker_rejected: int = 0
    bytes_received: int = 0
    liveness_seen: int = 0
    heartbeat_rtt_s: float | None = None
    worker_pid: int | None = None
    last_error: str | None = None
    #: "starting", "running", "lost", "restarting", "stopped" or "failed".
    state: str = "starting"
    restarts: int = 0
