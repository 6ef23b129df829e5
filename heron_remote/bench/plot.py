"""bench.png: a figure that explains itself to someone who has not read the README.

Panels: throughput (MB/s), message rate, one-way latency (p50 bars, p99 ticks) per path and
frame size; then, when they were measured, launch times and scale. heron_remote's own paths
(``path-*``) are hatched and their names starred; a caption says what every name means, and
the title says what kind of run it was (quick or full) and when.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .protocol import Result

__all__ = ["CAPTION", "RunKind", "figure", "is_ours", "path_label", "write_plot"]

OURS = ("path", "heron")
#: What the names in the figure mean; printed under it.
CAPTION = (
    "★ hatched = heron_remote, the whole source path (worker → com → data forwarder → subscriber); "
    "heron = the same in Heron's layout (com, forwarders and subscriber each a process: "
    "a com file started as Heron's editor starts it, heron-remote forwarders, a pyzmq SUB); "
    "the others are raw transports, for comparison.\n"
    "Suffixes: -ns = to a network-namespace host over a veth link (MTU 1500, like a LAN); -lo = to an sshd on "
    "loopback; no suffix = on this machine. -openssh = heron_remote with its OpenSSH tunnel backend "
    "(else sshtunnel, the default).\n"
    "Raw: zmq = pyzmq PUSH→PULL direct; sshtunnel = an sshtunnel forward with paramiko's defaults; "
    "openssh = ssh -L (-gcm: aes128-gcm); zmq-paramiko = pyzmq's paramiko tunnel, the mechanism Heron uses."
)


@dataclass(frozen=True, kw_only=True)
class RunKind:
    """What kind of run the figure shows: quick (a smoke test) or full, when, and how long it took."""

    quick: bool
    date: str
    wall_s: float

    @property
    def title(self) -> str:
        kind = "QUICK run: a smoke test, not figures to quote" if self.quick else "full run"
        when = self.date.replace("T", " ").removesuffix("+00:00")
        return f"heron_remote bench: {kind}\n{when} UTC, {self.wall_s / 60:.1f} min"


def is_ours(name: str) -> bool:
    return any(name == ours or name.startswith(ours + "-") for ours in OURS)


def path_label(name: str) -> str:
    return f"★ {name}" if is_ours(name) else name


def _size_label(size: int) -> str:
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


def write_plot(
    out_dir: Path, results: Sequence[Result], sections: dict[str, Any], kind: RunKind
) -> tuple[str | None, str | None]:
    """Draw bench.png in ``out_dir``: (file name, None), or (None, why there is no plot)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        note = "matplotlib is not installed (pip install 'heron_remote[bench]'): no plot was drawn"
        (out_dir / "bench-plot.txt").write_text(note + "\n")
        return None, note
    fig = figure(results, sections, kind)
    if fig is None:
        return None, "no successful measurement to plot"
    fig.savefig(out_dir / "bench.png", dpi=110)
    return "bench.png", None


def figure(results: Sequence[Result], sections: dict[str, Any], kind: RunKind) -> Any:
    """The figure (a matplotlib Figure), or None when nothing was measured."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ok = [r for r in results if r.ok]
    extras = [key for key in ("launch", "scale") if _has(sections, key)]
    if not ok and not extras:
        return None
    names = list(dict.fromkeys(r.name for r in ok))
    # Figure/FigureCanvasAgg rather than pyplot: no global backend or figure state in the caller's process.
    rows = (3 if ok else 0) + (1 if extras else 0)
    fig = Figure(figsize=(max(9.0, 1.0 * len(names) + 3), 3.2 * rows + 2.2), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows, max(1, len(extras)))
    if ok:
        axes = [fig.add_subplot(grid[k, :]) for k in range(3)]
        _paths(axes, ok, names)
    for k, key in enumerate(extras):
        ax = fig.add_subplot(grid[rows - 1, k])
        (_launch if key == "launch" else _scale)(ax, sections)
    fig.suptitle(kind.title, fontsize="large", fontweight="bold")
    fig.text(0.01, 0.0, CAPTION, fontsize="small", va="bottom", wrap=True)
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.set(rect=(0, 0.09, 1, 0.91))  # type: ignore[call-arg]  # room for the caption (constrained layout)
    return fig


def _has(sections: dict[str, Any], key: str) -> bool:
    section = sections.get(key) or {}
    if key == "launch":
        return any("error" not in s for s in section.values())
    return any("error" not in r for r in section.get("rows", []))


def _paths(axes: list[Any], ok: Sequence[Result], names: list[str]) -> None:
    from matplotlib.patches import Patch

    by_key = {(r.name, r.size): r for r in ok}
    sizes = sorted({r.size for r in ok})
    width = 0.8 / len(sizes)
    panels = (
        ("mb_per_s", "MB/s", "throughput: MB/s of payload (higher is better)", 1.0),
        ("msg_per_s", "messages/s", "message rate (higher is better)", 1.0),
        ("latency_p50_us", "ms", "one-way latency, paced at a quarter of the rate: p50 bars, p99 ticks", 1e-3),
    )
    for ax, (metric, unit, title, scale) in zip(axes, panels, strict=True):
        for k, size in enumerate(sizes):
            xs = [i + (k - (len(sizes) - 1) / 2) * width for i in range(len(names))]
            values = [_value(by_key.get((n, size)), metric, scale) for n in names]
            bars = ax.bar(xs, values, width, label=_size_label(size), color=f"C{k}")
            for bar, name in zip(bars, names, strict=True):
                if is_ours(name):
                    bar.set_hatch("//")
                    bar.set_edgecolor("black")
            if metric == "latency_p50_us":
                p99 = [_value(by_key.get((n, size)), "latency_p99_us", scale) for n in names]
                ax.plot(xs, [v or float("nan") for v in p99], "_", color="black", markersize=10)
        ax.set_yscale("log")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize="medium", loc="left")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.set_xticks(range(len(names)), [path_label(n) if ax is axes[-1] else "" for n in names])
    for tick, name in zip(axes[-1].get_xticklabels(), names, strict=True):
        tick.set_rotation(30)
        tick.set_horizontalalignment("right")
        if is_ours(name):
            tick.set_fontweight("bold")
    handles, _ = axes[0].get_legend_handles_labels()
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="★ heron_remote"))
    axes[0].legend(handles=handles, title="frame size", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _value(result: Result | None, metric: str, scale: float) -> float:
    value = None if result is None else getattr(result, metric)
    return 0.0 if value is None else value * scale


def _launch(ax: Any, sections: dict[str, Any]) -> None:
    """Seconds from Source.start() to the first frame at a subscriber: median, min to max."""
    labels, medians, spans = [], [], []
    for name, section in sections["launch"].items():
        for kind in ("cold", "warm"):
            s = section.get(kind)
            if s is None:
                continue
            labels.append(f"{name}\n{kind}" if "warm" in section else name)
            medians.append(s["median_s"])
            spans.append((s["median_s"] - s["min_s"], s["max_s"] - s["median_s"]))
    xs = range(len(labels))
    ax.bar(xs, medians, 0.6, color="C2", hatch="//", edgecolor="black", yerr=list(zip(*spans, strict=True)))
    ax.set_xticks(xs, labels, fontsize="small")
    ax.set_xlim(-0.75, max(len(labels), 2) - 0.25)
    ax.set_ylabel("seconds")
    ax.set_title("★ launch: Source.start() to first frame (median, min-max;\ncold: new SSH connection, warm: open)",
                 fontsize="medium", loc="left")  # fmt: skip


def _scale(ax: Any, sections: dict[str, Any]) -> None:
    """Delivered MB/s as sources are added, per tunnel backend, beside what they offered."""
    offered: list[tuple[int, float]] = []
    for key, label, style in (("scale", "★ default (sshtunnel)", "o-"), ("scale_openssh", "★ OpenSSH backend", "s-")):
        rows = [r for r in (sections.get(key) or {}).get("rows", []) if "error" not in r]
        if rows:
            ax.plot([r["sources"] for r in rows], [r["mb_per_s"] for r in rows], style, label=label)
            offered = [(r["sources"], r["offered_mb_per_s"]) for r in rows]
    if offered:
        ax.plot(*zip(*offered, strict=True), "k--", label="offered", alpha=0.6)
    section = sections.get("scale") or sections.get("scale_openssh") or {}
    kib = section.get("frame_bytes", 0) // 1024
    ax.set_xlabel("sources on 2 namespace hosts, one rig process")
    ax.set_ylabel("MB/s delivered")
    ax.set_title(f"★ scale: {kib} KiB frames at {section.get('fps_per_source', 0):g} frames/s per source",
                 fontsize="medium", loc="left")  # fmt: skip
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
