"""Link-limited: a 1280x1024 camera at 100 frames/s (131 MB/s) over a link shaped to 1 Gbit/s.

The namespace host's link is shaped with ``tc`` (a token bucket on the host's end, the way the
frames go) to what a lab LAN carries; the camera films a natural scene with sensor noise
(:mod:`heron_remote.examples.natural_camera`), as compression meets it on a real camera. Each run
is a :class:`~heron_remote.Source` on that host, without compression and with a few codecs (over
the default tunnel backend, and over OpenSSH's, which keeps the tunnel's work out of the rig's
Python process); it
counts the frames a subscriber got in a window against the 100 frames/s the camera tried to make
(a camera that the path holds back runs late: it drops nothing, it makes fewer), and the bytes
that crossed the link against the bytes published.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..compression import Compression
from ..examples.natural_camera import NATURAL_CAMERA
from ..settings import Settings
from ..source import Source
from .links import Link
from .paths import FREE_PORTS

__all__ = ["format_link_limited", "link_limited", "shaped"]

logger = logging.getLogger(__name__)

SHAPE = (1024, 1280)
FPS = 100.0
RATE = "1gbit"
#: (label, compression, tunnel backend: None for the registry's default) of each run.
RUNS: tuple[tuple[str, Compression | None, str | None], ...] = (
    ("none", None, None),
    ("zstd-1 bit 1 thread", Compression(), None),
    ("zstd-1 bit 2 threads", Compression(codec="zstd", level=1, threads=2), None),
    ("lz4 bit 2 threads", Compression(codec="lz4", level=1, threads=2), None),
    ("none, openssh", None, "openssh"),
    ("zstd-1 bit 2 thr., openssh", Compression(codec="zstd", level=1, threads=2), "openssh"),
)


@contextmanager
def shaped(link: Link, rate: str = RATE) -> Iterator[None]:
    """The link's host end limited to ``rate`` (tc's spelling) while the block runs."""
    assert link.host is not None and link.host.netns, "shaping needs a namespace host"
    netns = link.host.netns
    subprocess.run(
        ["tc", "-n", netns, "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "512kb",
         "latency", "20ms"],
        check=True, capture_output=True, timeout=10,
    )  # fmt: skip
    try:
        yield
    finally:
        subprocess.run(["tc", "-n", netns, "qdisc", "del", "dev", "eth0", "root"], capture_output=True, timeout=10)


def _run(link: Link, compression: Compression | None, warmup_s: float, window_s: float) -> dict[str, Any]:
    settings = Settings(ports=FREE_PORTS, ssh_info=str(link.registry), start_timeout=30)
    source = Source(
        NATURAL_CAMERA,
        name="link-limited",
        parameters={"shape": list(SHAPE), "fps": FPS},
        settings=settings,
        host=link.server_id,
        compression=compression if compression is not None else False,
    )
    with source:
        frames = source.frames(timeout=10)
        next(frames)
        start = time.monotonic() + warmup_s
        end = start + window_s
        counted = 0
        stats = source.stats
        base: tuple[int, int, int] | None = None
        for _ in frames:
            now = time.monotonic()
            if now >= start and base is None:
                base = (stats.bytes_received, stats.bytes_unpacked, source.gaps)
            elif base is not None:
                counted += 1
            if now >= end:
                break
        assert base is not None
        wall = time.monotonic() - start
        link_bytes = stats.bytes_received - base[0]
        published = stats.bytes_unpacked - base[1]
        return {
            "compression": None if compression is None else compression.to_arg(),
            "frames": counted,
            "frames_per_s": counted / wall,
            "delivered": counted / (FPS * wall),
            "link_mb_per_s": link_bytes / wall / 1e6,
            "published_mb_per_s": published / wall / 1e6,
            "ratio": stats.compression_ratio,
            "gaps": source.gaps - base[2],
        }


def link_limited(link: Link, *, quick: bool = False) -> dict[str, Any]:
    """Each run of RUNS over the link shaped to RATE."""
    warmup_s, window_s = (1.0, 2.0) if quick else (2.0, 6.0)
    rows = []
    with shaped(link):
        for label, compression, tunnel in RUNS:
            try:
                row = _run(link.with_tunnel(tunnel) if tunnel else link, compression, warmup_s, window_s)
            except Exception as exc:  # one run failing must not cost the others
                logger.debug("link-limited run %s failed", label, exc_info=True)
                row = {"error": f"{type(exc).__name__}: {exc}"}
            rows.append({"label": label, **row})
            logger.info("link-limited %s: %s", label, rows[-1])
    return {
        "link": link.name,
        "rate": RATE,
        "shape": list(SHAPE),
        "fps": FPS,
        "offered_mb_per_s": FPS * SHAPE[0] * SHAPE[1] / 1e6,
        "warmup_s": warmup_s,
        "window_s": window_s,
        "rows": rows,
    }


def format_link_limited(section: dict[str, Any]) -> str:
    """The table: frames delivered, and the bytes on the link against those published."""
    header = f"{'compression':<26} {'frames/s':>8} {'deliv.':>6} {'link MB/s':>9} {'published MB/s':>14} {'ratio':>5}"
    lines = [header, "-" * len(header)]
    for row in section.get("rows", []):
        if "error" in row:
            lines.append(f"{row['label']:<26} failed: {row['error'][:100]}")
            continue
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(
            f"{row['label']:<26} {row['frames_per_s']:8.1f} {row['delivered']:6.1%} {row['link_mb_per_s']:9.1f} "
            f"{row['published_mb_per_s']:14.1f} {ratio:>5}"
        )
    lines.append(
        f"({section.get('shape')} uint8 natural-scene frames with sensor noise at {section.get('fps', 0):g} "
        f"frames/s ({section.get('offered_mb_per_s', 0):.1f} MB/s) over the veth link shaped to "
        f"{section.get('rate')} with tc)"
    )
    return "\n".join(lines)
