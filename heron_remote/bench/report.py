"""The bench's outputs: a plain-text table and ``bench.json`` (``bench.png``: :mod:`.plot`)."""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from .protocol import Result

__all__ = ["format_table", "machine_info", "progress_line", "write_json"]

logger = logging.getLogger(__name__)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _openssh_version() -> str | None:
    try:
        out = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stderr or out.stdout).strip() or None


def machine_info() -> dict[str, Any]:
    import zmq

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "paramiko": _version("paramiko"),
        "sshtunnel": _version("sshtunnel"),
        "numpy": _version("numpy"),
        "heron_remote": _version("heron_remote"),
        "openssh": _openssh_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _size_label(size: int) -> str:
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


def _num(value: float | None, fmt: str, width: int = 0) -> str:
    return format("-" if value is None else format(value, fmt), f">{width}")


def progress_line(result: Result) -> str:
    if not result.ok:
        return f"  {result.name:<16} {_size_label(result.size):>8}  FAILED: {result.error}"
    return (
        f"  {result.name:<16} {_size_label(result.size):>8}  {result.mb_per_s:10.1f} MB/s "
        f"{result.msg_per_s:11.0f} msg/s  p50 {_num(result.latency_p50_us, '.0f')} us"
    )


def _listed(ratios: Sequence[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in ratios)


def format_table(results: Sequence[Result], ratios: Sequence[dict[str, Any]]) -> str:
    """One row per measurement; ``ratio`` is MB/s over the base named beside it (same size)."""
    first_ratio: dict[tuple[str, int], dict[str, Any]] = {}
    for r in ratios:
        first_ratio.setdefault((r["name"], r["size"]), r)
    header = f"{'path':<16} {'size':>8} {'MB/s':>10} {'msg/s':>11} {'p50 us':>9} {'p99 us':>9}  {'ratio':>6}  vs / note"
    lines = [header, "-" * len(header)]
    for res in results:
        label = _size_label(res.size)
        if not res.ok:
            lines.append(f"{res.name:<16} {label:>8}  {'failed: ' + (res.error or '')[:90]}")
            continue
        ratio = first_ratio.get((res.name, res.size))
        ratio_s = f"{ratio['ratio']:6.2f}  {ratio['base']}" if ratio else f"{'':6}  "
        rounds = res.notes.get("rounds")
        if rounds:  # the median round is shown: say how far the others were
            spread = rounds["mb_per_s"]
            ratio_s += f"{'; ' if ratio else ''}rounds {min(spread):.1f}-{max(spread):.1f} MB/s"
            if ratio and ratio.get("rounds"):  # its two sides measured seconds apart, round by round
                ratio_s += f"; ratio per round {_listed(ratio['rounds'])}"
        lines.append(
            f"{res.name:<16} {label:>8} {res.mb_per_s:10.1f} {res.msg_per_s:11.0f} "
            f"{_num(res.latency_p50_us, '.0f', 9)} {_num(res.latency_p99_us, '.0f', 9)}  {ratio_s}"
        )
    extra = [r for r in ratios if first_ratio.get((r["name"], r["size"])) is not r]
    if extra:
        lines.append("")
        lines.append("more ratios (MB/s over MB/s, same size):")
        for r in extra:
            per_round = f" (per round {_listed(r['rounds'])})" if r.get("rounds") else ""
            lines.append(f"  {r['name']:<16} {_size_label(r['size']):>8}  {r['ratio']:8.2f} x {r['base']}{per_round}")
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path
