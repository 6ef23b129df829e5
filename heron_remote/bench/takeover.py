"""Several scripts on one rig: they share the forwarders, started and stopped in every order.

Each run starts scripts (:mod:`.rig_script`, a Source streaming the synthetic camera at
100 frames/s) on one set of fixed forwarder ports -- the first alone, so that it runs the
forwarders, the others together -- then stops them one by one in a given order, each by
SIGTERM (a clean stop) or SIGKILL. After each stop every survivor must stream again; the
figure is the longest gap between two frames any survivor saw. A stop of the script that
runs the forwarders is a takeover.

:func:`shared_path` measures the other side of the choice: the whole local path of a
script whose forwarders run in another process (over TCP), beside ``path-local`` (in-process).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from .._procs import stop_child
from ..settings import ForwarderPorts, Settings
from .links import Link
from .paths import measure_stream, path_plan, source_stream
from .protocol import Plan, Result

__all__ = ["Rig", "RigScript", "format_takeover", "free_fixed_ports", "shared_path", "takeover"]

FPS = 100.0
#: Seconds a survivor must stream on after a stop before the next stop.
_RESUMED_S = 0.3
_RESUME_TIMEOUT_S = 5.0
_READY_TIMEOUT_S = 30.0
_TARGET_S = 1.0


def free_fixed_ports() -> ForwarderPorts:
    """Six ports free a moment ago, to be asked for by number (as Heron's fixed ports are)."""
    with contextlib.ExitStack() as stack:
        numbers = []
        for _ in range(6):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            numbers.append(sock.getsockname()[1])
    names = ForwarderPorts.__dataclass_fields__
    return ForwarderPorts(**dict(zip(names, numbers, strict=True)))


@dataclass
class RigScript:
    """One script: its process, the lines it printed (with the time they were read) and its stderr."""

    name: str
    proc: subprocess.Popen[str]
    stderr: IO[bytes]
    pid: int = 0
    owner: bool = False
    ticks: list[tuple[float, int, float]] = field(default_factory=list)
    gaps: list[tuple[float, float]] = field(default_factory=list)
    end: tuple[int, int] | None = None
    stopped_at: float | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word, *rest = line.split()
            if word == "READY":
                self.pid, self.owner = int(rest[0]), rest[1] == "1"
                self.ready.set()
            elif word == "TICK":
                self.ticks.append((float(rest[0]), int(rest[1]), float(rest[2])))
            elif word == "GAP":
                self.gaps.append((float(rest[0]), float(rest[1])))
            elif word == "END":
                self.end = (int(rest[0]), int(rest[1]))

    def streamed_after(self, moment: float) -> bool:
        ticks = self.ticks
        return bool(ticks) and ticks[-1][0] > moment

    def err_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def survivor_gaps(self) -> list[float]:
        """The longest interval between two frames in each 0.1 s, while this script was not being stopped."""
        until = self.stopped_at if self.stopped_at is not None else float("inf")
        return [longest for at, _, longest in self.ticks if at <= until]

    def longest_gap(self, start: float, end: float) -> float:
        """The longest interval between two frames that ended in (start, end], while not being stopped."""
        end = min(end, self.stopped_at if self.stopped_at is not None else end)
        return max((longest for at, _, longest in self.ticks if start < at <= end), default=0.0)


class Rig:
    """Scripts on one set of fixed forwarder ports; every one is ended on exit, whatever happened."""

    def __init__(self, ports: ForwarderPorts | None = None, *, fps: float = FPS) -> None:
        self.ports = ports or free_fixed_ports()
        self.fps = fps
        # Quick pulses: a killed script's worker ends within a second, not ten.
        settings = Settings(heartbeat_rate=0.2, heartbeats_to_death=5, ports=self.ports)
        self.env = {**os.environ, **settings.to_env()}
        self.scripts: list[RigScript] = []

    def launch(self, name: str) -> RigScript:
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        proc = subprocess.Popen(
            [sys.executable, "-m", "heron_remote.bench.rig_script", name, str(self.fps)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env,
        )
        script = RigScript(name, proc, stderr)
        self.scripts.append(script)
        threading.Thread(target=script._read, daemon=True, name=f"rig-{name}").start()
        return script

    def wait_ready(self, *scripts: RigScript) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        for script in scripts:
            if not script.ready.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"script {script.name} did not start: {script.err_text()[-2000:]}")

    def start(self, *names: str) -> list[RigScript]:
        """Start scripts together; returns once each streams."""
        scripts = [self.launch(name) for name in names]
        self.wait_ready(*scripts)
        return scripts

    def stop(self, script: RigScript, how: str) -> float:
        """Stop ``script`` by SIGTERM ("term") or SIGKILL ("kill"); the moment it had ended."""
        script.stopped_at = time.monotonic()
        script.proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
        try:
            script.proc.wait(15)
        except subprocess.TimeoutExpired:
            script.proc.kill()
            script.proc.wait(5)
            raise RuntimeError(f"script {script.name} did not stop within 15 s: {script.err_text()[-2000:]}") from None
        return time.monotonic()

    def wait_streaming(self, survivors: list[RigScript], after: float) -> list[str]:
        """Names of the survivors that did not stream for ``_RESUMED_S`` after ``after`` (within a bound)."""
        deadline = time.monotonic() + _RESUME_TIMEOUT_S
        while time.monotonic() < deadline:
            if all(s.streamed_after(after + _RESUMED_S) for s in survivors):
                return []
            time.sleep(0.02)
        return [s.name for s in survivors if not s.streamed_after(after + _RESUMED_S)]

    def close(self) -> None:
        for script in self.scripts:
            if script.proc.poll() is None:
                stop_child(script.proc, grace=5)
            script.stderr.close()

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run(count: int, order: tuple[int, ...], modes: tuple[str, ...]) -> dict[str, Any]:
    """Start ``count`` scripts (the first alone), stop them in ``order``, by ``modes``."""
    names = [chr(ord("A") + k) for k in range(count)]
    with Rig() as rig:
        first = rig.start(names[0])[0]
        scripts = [first, *rig.start(*names[1:])]
        time.sleep(_RESUMED_S)
        owner = next((s for s in scripts if s.owner), None)
        stalled: list[str] = []
        # (signal sent, survivors, whether it stopped the forwarders' script)
        events: list[tuple[float, list[RigScript], bool]] = []
        alive = list(scripts)
        for k, how in zip(order, modes, strict=True):
            script = scripts[k]
            alive.remove(script)
            ended = rig.stop(script, how)
            assert script.stopped_at is not None
            events.append((script.stopped_at, list(alive), script is owner))
            stalled += rig.wait_streaming(alive, ended)
            if script is owner and alive:
                owner = _new_owner(alive)
        per_event = []
        for n, (moment, survivors, takeover) in enumerate(events):
            until = events[n + 1][0] if n + 1 < len(events) else float("inf")
            per_event.append((max((s.longest_gap(moment, until) for s in survivors), default=0.0), takeover))
        first_stop = events[0][0] if events else float("inf")
        # While the others started (three Python processes at once, on this machine's cores).
        at_start = max((s.longest_gap(0.0, first_stop) for s in scripts), default=0.0)
        gaps = [g for s in scripts for g in s.survivor_gaps()]
        warnings = sum(s.err_text().count("WARNING heron_remote.forwarders_share") for s in scripts)
    takeover_gaps = [round(gap, 4) for gap, took in per_event if took and gap]
    return {
        "scripts": count,
        "stops": " ".join(f"{names[k]}:{how}" for k, how in zip(order, modes, strict=True)),
        "takeovers": len(takeover_gaps),
        "takeover_gaps_s": takeover_gaps,
        "other_stop_gaps_s": [round(gap, 4) for gap, took in per_event if not took and gap],
        "start_gap_s": round(at_start, 4),
        "forwarder_warnings": warnings,
        "longest_gap_s": round(max(gaps, default=0.0), 4),
        "stalled": stalled,
    }


def _new_owner(alive: list[RigScript]) -> RigScript | None:
    """The survivor that said it took over (only the one running the forwarders now has, of those alive)."""
    deadline = time.monotonic() + _RESUME_TIMEOUT_S
    while time.monotonic() < deadline:
        for script in alive:
            if "taking over" in script.err_text():
                return script
        time.sleep(0.02)
    return None


def _scenarios(quick: bool) -> Iterator[tuple[int, tuple[int, ...], tuple[str, ...]]]:
    if quick:
        yield 2, (0, 1), ("kill", "term")
        return
    for how in ("term", "kill"):
        for order in itertools.permutations(range(2)):
            yield 2, order, (how, "term")
    for n, order in enumerate(itertools.permutations(range(4))):
        # Kills and clean stops alternate, the other way round in every other order: each
        # position sees both.
        modes = (*(("kill", "term")[(n + k) % 2] for k in range(3)), "term")
        yield 4, order, modes


def takeover(*, quick: bool = False) -> dict[str, Any]:
    """Every scenario's row, and the longest gap any survivor saw (target: at most 1 s)."""
    rows = []
    for count, order, modes in _scenarios(quick):
        try:
            rows.append(_run(count, order, modes))
        except Exception as exc:  # one run failing must not cost the others
            rows.append({"scripts": count, "stops": str(order), "error": f"{type(exc).__name__}: {exc}"})
    good = [r for r in rows if "error" not in r]
    at_takeovers = [g for r in good for g in r["takeover_gaps_s"]]
    at_other_stops = [g for r in good for g in r["other_stop_gaps_s"]]
    return {
        "fps": FPS,
        "runs": len(rows),
        "rows": rows,
        "takeovers": len(at_takeovers),
        # Any interval between two frames at any survivor, takeovers or not (a loaded machine's too).
        "longest_gap_s": max((r["longest_gap_s"] for r in good), default=None),
        "longest_takeover_gap_s": max(at_takeovers, default=None),
        "median_takeover_gap_s": statistics.median(at_takeovers) if at_takeovers else None,
        "median_other_stop_gap_s": statistics.median(at_other_stops) if at_other_stops else None,
        "longest_other_stop_gap_s": max(at_other_stops, default=None),
        "longest_start_gap_s": max((r["start_gap_s"] for r in good), default=None),
        "stalled": sum(len(r["stalled"]) for r in good),
        "errors": len(rows) - len(good),
        "target_s": _TARGET_S,
    }


def format_takeover(section: dict[str, Any]) -> str:
    if "error" in section:
        return f"takeover: {section['error']}"
    lines = [
        f"takeover: {section['runs']} runs, {section['takeovers']} takeovers at {section['fps']:g} frames/s; "
        f"longest gap any survivor saw {_ms(section['longest_gap_s'])} (target <= {section['target_s']:g} s); "
        f"at a takeover: longest {_ms(section['longest_takeover_gap_s'])}, "
        f"median {_ms(section['median_takeover_gap_s'])}; at another script's stop: longest "
        f"{_ms(section['longest_other_stop_gap_s'])}, median {_ms(section['median_other_stop_gap_s'])}; while "
        f"scripts started: longest {_ms(section['longest_start_gap_s'])}; survivors that stalled: "
        f"{section['stalled']}; failed runs: {section['errors']}"
    ]
    for row in section["rows"]:
        if "error" in row:
            lines.append(f"  {row['scripts']} scripts {row['stops']}: FAILED {row['error']}")
            continue
        stalled = f"  STALLED {row['stalled']}" if row["stalled"] else ""
        at = ", ".join(_ms(g) for g in row["takeover_gaps_s"]) or "-"
        lines.append(
            f"  {row['scripts']} scripts, stops {row['stops']:<28} takeover gaps {at:<22} "
            f"at start {_ms(row['start_gap_s']):>7}  longest {_ms(row['longest_gap_s']):>7}{stalled}"
        )
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


@contextmanager
def _forwarders_process(ports: ForwarderPorts) -> Iterator[None]:
    """``heron-remote forwarders`` on ``ports`` in a process of its own, until the block ends."""
    argv = [sys.executable, "-m", "heron_remote", "forwarders"]
    argv += ["--data", str(ports.data_submit), str(ports.data_publish)]
    argv += ["--parameters", str(ports.parameters_submit), str(ports.parameters_publish)]
    argv += ["--proof-of-life", str(ports.proof_of_life_submit), str(ports.proof_of_life_publish)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], _READY_TIMEOUT_S)
        if not ready or b"forwarders on" not in proc.stdout.readline():
            raise RuntimeError("heron-remote forwarders did not start")
        yield
    finally:
        stop_child(proc, grace=5)
        proc.communicate(timeout=5)


def shared_path(name: str, link: Link, plan: Plan) -> Result:
    """The whole local path of a script whose forwarders run in another process (reached over TCP)."""
    notes: dict[str, Any] = {}
    ports = free_fixed_ports()
    with _forwarders_process(ports):
        result = measure_stream(name, path_plan(plan), source_stream(link, notes, ports=ports))
    result.notes.update(notes, forwarders="another process")
    return result
