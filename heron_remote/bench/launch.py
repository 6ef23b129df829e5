"""Launch latency: from ``Source.start()`` (which runs ``start_worker_process``) to the first frame
at a subscriber, here and on a link's host.

Each launch starts a synthetic camera (tiny frames, 1,000 frames/s, so the first frame follows
the worker's readiness at once) on forwarders that already run, as in an experiment. Remote
launches are measured twice: *cold*, opening the SSH connection (and, with the OpenSSH
backend, its master) as the first source on a PC does, and *warm*, with the connection held
by something else, as for a restart or a second source on that PC.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..examples import SYNTHETIC_CAMERA as CAMERA
from ..forwarders import Forwarders
from ..settings import Settings
from ..source import Source
from ..ssh import HostConnection, Registry
from .links import Link
from .paths import FREE_PORTS

__all__ = ["CAMERA", "format_launch", "launch_latency"]

logger = logging.getLogger(__name__)


PARAMETERS = {"shape": [16, 16], "fps": 1000}
FIRST_FRAME_TIMEOUT_S = 20.0


def _launch_once(settings: Settings, remote: str, name: str) -> dict[str, float]:
    """Seconds from start() to start() returning (the worker is ready) and to the first frame."""
    source = Source(
        CAMERA,
        name=name,
        parameters=PARAMETERS,
        settings=settings,
        host=None if remote == "None" else remote,
    )
    started = time.perf_counter()
    try:
        source.start()
        ready = time.perf_counter()
        next(iter(source.frames(timeout=FIRST_FRAME_TIMEOUT_S)))
        first = time.perf_counter()
    finally:
        source.stop()
    return {"ready_s": ready - started, "first_frame_s": first - started}


@contextmanager
def _held(link: Link) -> Iterator[None]:
    """The link's SSH connection held open, so that launches find it there (warm)."""
    assert link.registry is not None
    conn = HostConnection.acquire(Registry.load(link.registry).get(link.server_id))
    try:
        yield
    finally:
        conn.release()


def _series(settings: Settings, remote: str, runs: int, tag: str) -> dict[str, Any]:
    samples = [_launch_once(settings, remote, f"launch-{tag}-{i}") for i in range(runs)]
    firsts = [s["first_frame_s"] for s in samples]
    return {
        "runs": runs,
        "median_s": statistics.median(firsts),
        "min_s": min(firsts),
        "max_s": max(firsts),
        "ready_median_s": statistics.median(s["ready_s"] for s in samples),
        "first_frame_s": firsts,
    }


def launch_latency(link: Link, *, runs: int = 5) -> dict[str, Any]:
    """Median of ``runs`` launches on ``link`` (cold and warm when it is remote)."""
    with Forwarders(ports=FREE_PORTS) as forwarders:
        settings = Settings(ports=forwarders.ports, ssh_info=str(link.registry) if link.registry else None)
        if link.host is None:
            return {"link": link.name, "cold": _series(settings, "None", runs, link.name)}
        found: dict[str, Any] = {"link": link.name, "host": link.server_id}
        found["cold"] = _series(settings, link.server_id, runs, f"{link.name}-cold")
        with _held(link):
            found["warm"] = _series(settings, link.server_id, runs, f"{link.name}-warm")
        return found


def format_launch(sections: dict[str, dict[str, Any]]) -> str:
    """A table: one row per launch measurement and kind (cold, warm)."""
    header = f"{'launch':<20} {'kind':<5} {'runs':>4} {'median s':>9} {'min s':>7} {'max s':>7} {'ready s':>8}"
    lines = [header, "-" * len(header)]
    for name, section in sections.items():
        if "error" in section:
            lines.append(f"{name:<20} failed: {section['error'][:90]}")
            continue
        for kind in ("cold", "warm"):
            s = section.get(kind)
            if s is not None:
                lines.append(
                    f"{name:<20} {kind:<5} {s['runs']:>4} {s['median_s']:9.3f} {s['min_s']:7.3f} "
                    f"{s['max_s']:7.3f} {s['ready_median_s']:8.3f}"
                )
    lines.append("(seconds from Source.start() to the first frame at a subscriber; ready: start() returned)")
    return "\n".join(lines)
