"""A synthetic camera: a source worker that streams frames at a set rate.

Run by a com as ``python -m heron_remote.examples.synthetic_camera``. Its
parameters are a dict (any key may be left out)::

    {"shape": [1024, 1280], "dtype": "uint8", "fps": 100}

``fps`` 0 streams as fast as the pipeline takes frames. Frame ``n`` (counting from 1)
is filled with ``n % 256``; when it has 16 bytes or more, its first 16 bytes hold
``n`` and the capture time in microseconds as two little-endian uint64, so a
subscriber can check every frame and measure latency from capture
(:func:`frame_header`, :func:`expected_frame`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from heron_remote.worker import SourceWorker, start_the_source_worker_process

logger = logging.getLogger(__name__)

HEADER_BYTES = 16
#: Seconds the camera waits for its first parameters before it streams its defaults.
PARAMETERS_WAIT = 2.0


@dataclass(frozen=True, kw_only=True)
class CameraConfig:
    shape: tuple[int, ...] = (1024, 1280)
    dtype: str = "uint8"
    fps: float = 100.0

    @classmethod
    def from_parameters(cls, parameters: Any, base: CameraConfig | None = None) -> CameraConfig:
        base = base or cls()
        if not isinstance(parameters, dict):
            raise ValueError(f"synthetic camera parameters must be a dict, got {parameters!r}")
        config = replace(
            base,
            shape=tuple(int(n) for n in parameters.get("shape", base.shape)),
            dtype=str(np.dtype(parameters.get("dtype", base.dtype))),
            fps=float(parameters.get("fps", base.fps)),
        )
        if config.fps < 0 or not config.shape or any(n <= 0 for n in config.shape):
            raise ValueError(f"synthetic camera needs fps >= 0 and a positive shape, got {parameters!r}")
        return config


def expected_frame(n: int, shape: tuple[int, ...], dtype: str, time_us: int = 0) -> np.ndarray:
    """Frame ``n`` as the camera makes it (with ``time_us`` in its header)."""
    frame = np.full(shape, n % 256, dtype=dtype)
    flat = frame.reshape(-1).view(np.uint8)
    if flat.nbytes >= HEADER_BYTES:
        flat[:HEADER_BYTES] = np.array([n, time_us], dtype="<u8").view(np.uint8)
    return frame


def frame_header(frame: np.ndarray) -> tuple[int, int] | None:
    """(n, capture time in us) read from a frame, or None for frames under 16 bytes."""
    flat = np.ascontiguousarray(frame).reshape(-1).view(np.uint8)
    if flat.nbytes < HEADER_BYTES:
        return None
    n, t = flat[:HEADER_BYTES].view("<u8")
    return int(n), int(t)


class SyntheticCamera:
    def __init__(self) -> None:
        self.config = CameraConfig()
        self.running = True

    def initialise(self, worker: SourceWorker) -> bool:
        return self.apply(worker.parameters)

    def apply(self, parameters: Any) -> bool:
        try:
            self.config = CameraConfig.from_parameters(parameters, self.config)
        except (ValueError, TypeError) as exc:
            logger.error("%s", exc)
            return False
        logger.info("synthetic camera: %s", self.config)
        return True

    def work(self, worker: SourceWorker) -> None:
        # Parameters normally follow readiness within milliseconds; without any, stream the defaults.
        deadline = time.monotonic() + PARAMETERS_WAIT
        while not worker.initialised and time.monotonic() < deadline and self.running:
            time.sleep(0.005)
        n = 0
        seen = worker.parameters
        next_t = time.perf_counter()
        while self.running:
            if worker.parameters is not seen:  # a later update also changes the running camera
                seen = worker.parameters
                if seen is not None and worker.initialised:
                    self.apply(seen)
            c = self.config
            n += 1
            frame = expected_frame(n, c.shape, c.dtype, time.time_ns() // 1000)
            worker.send_data_to_com(frame, copy=False)  # a fresh array each time: no copy needed
            if c.fps > 0:
                next_t += 1.0 / c.fps
                delay = next_t - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_t = time.perf_counter()  # behind: do not burst to catch up

    def end_of_life(self) -> None:
        self.running = False


def main() -> None:
    camera = SyntheticCamera()
    start_the_source_worker_process(camera.work, camera.end_of_life, camera.initialise)


if __name__ == "__main__":
    main()
