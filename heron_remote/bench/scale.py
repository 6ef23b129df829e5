"""Scale: 1, 2, 4 and 8 sources spread over a link's two hosts, from this one rig process.

Every source is a synthetic camera sending 256 KiB frames at a fixed 100 frames/s
(26.2 MB/s), so that the offered load grows with the sources and what each costs can be
read off: the aggregate throughput delivered to the subscribers (beside what was offered),
this process's CPU time per source (coms, their tunnels, the forwarder and the
subscribers; the workers and sshd are other processes), the com threads' own CPU per
source, and the SSH connections per host, which must stay one however many sources share it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..forwarders import Forwarders
from ..settings import Settings
from ..source import Source
from ..ssh import HostConnection
from ..ssh.openssh import master_of
from .launch import CAMERA
from .links import Link
from .paths import FREE_PORTS

__all__ = ["SOURCE_COUNTS", "format_scale", "scale"]

logger = logging.getLogger(__name__)

SOURCE_COUNTS = (1, 2, 4, 8)
FRAME_SHAPE = (512, 512)  # uint8: 256 KiB
FPS = 100.0
START_TIMEOUT_S = 60.0
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(stat_path: str) -> float:
    """CPU seconds (user + system) from a /proc stat file; 0 once its process or thread has ended."""
    try:
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _thread_cpu_s(native_id: int | None) -> float:
    return 0.0 if native_id is None else _cpu_s(f"/proc/self/task/{native_id}/stat")


def _ssh_masters_cpu_s() -> float | None:
    """CPU seconds of the OpenSSH tunnel masters this process runs (None: it runs none)."""
    connections = HostConnection.pooled()
    pids = [m.pid for m in map(master_of, connections) if m is not None and m.pid is not None]
    return sum(_cpu_s(f"/proc/{pid}/stat") for pid in pids) if pids else None


@dataclass
class _Runner:
    """A source and the thread that starts it, counts its frames and stops it (sockets stay in one thread)."""

    name: str
    server: str
    settings: Settings
    frames: int = 0
    nbytes: int = 0
    error: BaseException | None = None
    source: Source | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"bench-scale-{self.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.source = Source(
                CAMERA,
                name=self.name,
                parameters={"shape": list(FRAME_SHAPE), "fps": FPS},
                settings=self.settings,
                host=self.server,
            )
            self.source.start()
            self.ready.set()
            for frame in self.source.frames(timeout=10):
                self.frames += 1
                self.nbytes += frame.arrays[0].nbytes
                if self.stop.is_set():
                    break
        except BaseException as exc:  # reported in the row; the others go on
            self.error = exc
        finally:
            self.ready.set()
            if self.source is not None:
                self.source.stop()  # at the same moment as the others: they share the host's connection

    @property
    def com_native_id(self) -> int | None:
        thread = self.source._thread if self.source is not None else None  # the com's thread
        return thread.native_id if thread is not None else None

    def snapshot(self) -> tuple[int, int, float]:
        return self.frames, self.nbytes, _thread_cpu_s(self.com_native_id)


def _connections_per_host() -> dict[str, int]:
    return dict(Counter(conn.server.host for conn in HostConnection.pooled() if conn.is_active))


def _row(link: Link, settings: Settings, count: int, warmup_s: float, window_s: float) -> dict[str, Any]:
    servers = link.server_ids or (link.server_id,)
    runners = [_Runner(f"scale{count}-{i}", servers[i % len(servers)], settings) for i in range(count)]
    started = time.monotonic()
    try:
        for r in runners:
            r.start()
        for r in runners:
            r.ready.wait(START_TIMEOUT_S)
        start_s = time.monotonic() - started
        failed = [f"{r.name}: {r.error}" for r in runners if r.error is not None]
        if failed:
            return {"sources": count, "error": "; ".join(failed)[:500]}
        time.sleep(warmup_s)
        before = [r.snapshot() for r in runners]
        cpu0, ssh0, wall0 = time.process_time(), _ssh_masters_cpu_s(), time.monotonic()
        time.sleep(window_s)
        after = [r.snapshot() for r in runners]
        cpu, ssh1, wall = time.process_time() - cpu0, _ssh_masters_cpu_s(), time.monotonic() - wall0
        per_host = _connections_per_host()
        connections = HostConnection.open_connections()
    finally:
        for r in runners:
            r.stop.set()
        for r in runners:
            if r.thread is not None:
                r.thread.join(30)
    frames = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    nbytes = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    com_cpu = sum(a[2] - b[2] for a, b in zip(after, before, strict=True))
    frame_bytes = FRAME_SHAPE[0] * FRAME_SHAPE[1]
    return {
        "sources": count,
        "hosts": len({r.server for r in runners}),
        "start_s": round(start_s, 3),
        "offered_mb_per_s": count * FPS * frame_bytes / 1e6,
        "mb_per_s": nbytes / wall / 1e6,
        "frames_per_s": frames / wall,
        "delivered": frames / (count * FPS * wall),
        "gaps": sum(r.source.gaps for r in runners if r.source is not None),
        "process_cpu_pct": 100 * cpu / wall,
        "process_cpu_pct_per_source": 100 * cpu / wall / count,
        "com_cpu_pct_per_source": 100 * com_cpu / wall / count,
        # The OpenSSH backend's ssh processes do the tunnels' work outside this process.
        "ssh_cpu_pct_per_source": None if ssh0 is None or ssh1 is None else 100 * (ssh1 - ssh0) / wall / count,
        "ssh_connections": connections,
        "ssh_connections_per_host": per_host,
    }


def scale(
    link: Link, *, quick: bool = False, tunnel: str | None = None, transport: str | None = None
) -> dict[str, Any]:
    """The scale table on ``link`` (its hosts shared round-robin), one shared set of forwarders;
    ``tunnel``, ``transport``: the tunnel backend and the transport, if not the registry's."""
    if tunnel is not None:
        link = link.with_tunnel(tunnel)
    if transport is not None:
        link = link.with_transport(transport)
    warmup_s, window_s = (0.3, 1.0) if quick else (1.0, 3.0)
    rows = []
    with Forwarders(ports=FREE_PORTS) as forwarders:
        settings = Settings(ports=forwarders.ports, ssh_info=str(link.registry))
        for count in SOURCE_COUNTS:
            try:
                rows.append(_row(link, settings, count, warmup_s, window_s))
            except Exception as exc:  # one size failing must not cost the others
                logger.debug("scale with %d sources failed", count, exc_info=True)
                rows.append({"sources": count, "error": f"{type(exc).__name__}: {exc}"})
            logger.info("scale %d sources: %s", count, rows[-1])
    return {
        "link": link.name,
        "hosts": list(link.server_ids),
        "tunnel": tunnel or "registry's (sshtunnel by default)",
        "transport": transport or "registry's (tunnel by default)",
        "frame_bytes": FRAME_SHAPE[0] * FRAME_SHAPE[1],
        "fps_per_source": FPS,
        "warmup_s": warmup_s,
        "window_s": window_s,
        "rows": rows,
    }


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_scale(section: dict[str, Any]) -> str:
    """The scale table: how throughput and cost grow with the sources."""
    header = (
        f"{'sources':>7} {'hosts':>5} {'offered MB/s':>12} {'MB/s':>8} {'frames/s':>9} {'deliv.':>6} {'gaps':>5} "
        f"{'CPU %/src':>9} {'com %/src':>9} {'ssh %/src':>9} {'ssh conns':>9} {'start s':>7}"
    )
    lines = [header, "-" * len(header)]
    for row in section.get("rows", []):
        if "error" in row:
            lines.append(f"{row['sources']:>7} failed: {row['error'][:100]}")
            continue
        per_host = "/".join(str(n) for n in row["ssh_connections_per_host"].values()) or "0"
        lines.append(
            f"{row['sources']:>7} {row['hosts']:>5} {row['offered_mb_per_s']:12.1f} {row['mb_per_s']:8.1f} "
            f"{row['frames_per_s']:9.0f} {row['delivered']:6.0%} {row['gaps']:>5} "
            f"{row['process_cpu_pct_per_source']:9.1f} {row['com_cpu_pct_per_source']:9.1f} "
            f"{_num(row.get('ssh_cpu_pct_per_source')):>9} {per_host:>9} "
            f"{row['start_s']:7.2f}"
        )
    kib = section.get("frame_bytes", 0) // 1024
    lines.append(
        f"({kib} KiB frames at {section.get('fps_per_source', 0):g} frames/s per source. CPU: this process (coms, "
        "tunnels, forwarder, subscribers); com: the com threads;\n ssh: the OpenSSH backend's ssh masters, "
        "outside this process; ssh conns: paramiko connections per host, one ssh master more each with OpenSSH)"
    )
    return "\n".join(lines)
