"""The demo: forwarders, the synthetic camera as a source, and a subscriber that measures it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .examples import SYNTHETIC_CAMERA as CAMERA
from .examples.synthetic_camera import frame_header
from .settings import Settings
from .source import Source


@dataclass(frozen=True, kw_only=True)
class DemoResult:
    """What the subscriber saw. The first frame starts the clock and is not counted: ``frames``
    are those from ``first_index`` to ``last_index`` (``clock_index`` + 1 onwards), over ``seconds``."""

    seconds: float
    frames: int
    bytes: int
    gaps: int
    clock_index: int
    first_index: int
    last_index: int
    latency_p50_ms: float
    latency_p99_ms: float
    ready_s: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0

    def report(self) -> str:
        return (
            f"{self.frames} frames in {self.seconds:.2f} s: {self.fps:.1f} frames/s, {self.mb_per_s:.1f} MB/s, "
            f"gaps {self.gaps} (indices {self.first_index}..{self.last_index}; the clock started at index "
            f"{self.clock_index}, not counted), "
            f"latency capture->subscriber p50 {self.latency_p50_ms:.2f} ms p99 {self.latency_p99_ms:.2f} ms, "
            f"worker ready {self.ready_s:.2f} s after start"
        )


def run_demo(
    *,
    seconds: float = 5.0,
    shape: tuple[int, ...] = (1024, 1280),
    dtype: str = "uint8",
    fps: float = 100.0,
    settings: Settings | None = None,
    host: str | None = None,
) -> DemoResult:
    """Stream the synthetic camera for ``seconds`` and measure what the subscriber saw."""
    started = time.monotonic()
    source = Source(
        CAMERA,
        name="synthetic_camera",
        parameters={"shape": list(shape), "dtype": dtype, "fps": fps},
        settings=settings,
        host=host,
    )
    with source:
        ready = time.monotonic() - started
        latencies: list[float] = []
        nbytes = frames = 0
        clock = first = last = 0
        t0 = None
        for frame in source.frames(timeout=max(5.0, source.settings.start_timeout)):
            now_us = time.time_ns() // 1000
            if t0 is None:
                t0, clock = time.monotonic(), frame.index
                continue  # the clock starts at the first frame, which is not counted: frames over time
            if not frames:
                first = frame.index
            array = frame.arrays[0]
            frames += 1
            nbytes += array.nbytes
            last = frame.index
            header = frame_header(array)
            if header is not None:
                latencies.append((now_us - header[1]) / 1000)
            if time.monotonic() - t0 >= seconds:
                break
        elapsed = time.monotonic() - t0 if t0 is not None else 0.0
        gaps = source.gaps
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return DemoResult(
        seconds=elapsed,
        frames=frames,
        bytes=nbytes,
        gaps=gaps,
        clock_index=clock,
        first_index=first,
        last_index=last,
        latency_p50_ms=float(np.percentile(lat, 50)),
        latency_p99_ms=float(np.percentile(lat, 99)),
        ready_s=ready,
    )
