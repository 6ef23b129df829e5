"""A camera that films a natural scene: a grey photograph panning sideways, with sensor noise.

Run by a com as ``python -m heron_remote.examples.natural_camera`` (needs matplotlib, whose
sample photograph it films: ``pip install 'heron_remote[bench]'``). Its parameters are a dict
(any key may be left out)::

    {"shape": [1024, 1280], "fps": 100, "count": 0, "sigma": 2.0, "seed": 0}

Frame ``n`` (from 1) is :func:`frame`: the photograph scaled to the frame's height, seen through
a window that pans one pixel per frame back and forth, plus Gaussian noise of ``sigma`` grey
levels, like a camera's sensor; uint8. It is what compression meets on a real camera (a
synthetic test pattern packs a hundred times better than any camera frame). ``count`` frames,
then the worker ends (0: until stopped); ``fps`` 0: as fast as the path takes them.

Like a camera's driver, it holds :data:`BUFFER` frames: a worker held back for a moment (the
path blocks ``send_data_to_com`` while the com is behind) catches up with the frames the sensor
made meanwhile; held back longer, the oldest are lost, and counted in the log, as a camera's
buffer overflows. The frames it sends are numbered without gaps (frame n is the n-th sent).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import numpy as np

from heron_remote.worker import SourceWorker, start_the_source_worker_process

__all__ = ["BUFFER", "NATURAL_CAMERA", "frame", "scene"]

logger = logging.getLogger(__name__)

NATURAL_CAMERA = "python -m heron_remote.examples.natural_camera"
#: Frames the camera holds for a worker that falls behind (a third of a second at 100 frames/s).
BUFFER = 32
#: Pixels the window pans before it turns back.
PAN = 256
#: Noise frames made in advance and used in turn (drawing 1.3 M normal numbers takes ~25 ms).
_NOISE_BANK = 8
#: The scene keeps this far from black and white, so that noise added modulo 256 never wraps.
_MARGIN = 16


@functools.lru_cache(maxsize=4)
def scene(height: int, width: int) -> np.ndarray:
    """The photograph in grey, scaled (bilinear) to ``height`` x ``width + PAN``, uint8 in [16, 239]."""
    import matplotlib.cbook
    import matplotlib.image

    photograph = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    rgb = matplotlib.image.imread(str(photograph)).astype(np.float32)
    grey = rgb[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    wide = width + PAN
    # Bilinear: along each row first, then along each column.
    xs = np.linspace(0, grey.shape[1] - 1, wide)
    by_rows = np.stack([np.interp(xs, np.arange(grey.shape[1]), line) for line in grey])
    ys = np.linspace(0, grey.shape[0] - 1, height)
    out = np.stack([np.interp(ys, np.arange(grey.shape[0]), column) for column in by_rows.T], axis=1)
    span = 255 - 2 * _MARGIN
    out = _MARGIN + (out - out.min()) * (span / max(float(np.ptp(out)), 1.0))
    return np.ascontiguousarray(np.rint(out).astype(np.uint8))


@functools.lru_cache(maxsize=4)
def _noise(height: int, width: int, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = np.rint(rng.normal(0.0, sigma, (_NOISE_BANK, height, width))).clip(-_MARGIN, _MARGIN)
    return noise.astype(np.int8).view(np.uint8)  # added modulo 256: the scene keeps away from the ends


def frame(n: int, shape: tuple[int, int] = (1024, 1280), sigma: float = 2.0, seed: int = 0) -> np.ndarray:
    """Frame ``n``: the scene through a window at the pan's position ``n``, with noise (uint8)."""
    height, width = shape
    step = n % (2 * PAN)
    left = step if step < PAN else 2 * PAN - step
    view = scene(height, width)[:, left : left + width]
    out = np.empty(shape, np.uint8)
    np.add(view, _noise(height, width, float(sigma), seed)[n % _NOISE_BANK], out=out)
    return out


def _config(parameters: Any) -> dict[str, Any]:
    given = parameters if isinstance(parameters, dict) else {}
    return {
        "shape": tuple(given.get("shape", (1024, 1280))),
        "fps": float(given.get("fps", 100.0)),
        "count": int(given.get("count", 0)),
        "sigma": float(given.get("sigma", 2.0)),
        "seed": int(given.get("seed", 0)),
    }


def work(worker: SourceWorker) -> None:
    worker.wait_initialised(timeout=5.0)
    config = _config(worker.parameters)
    shape, fps, count = config["shape"], config["fps"], config["count"]
    frame(1, shape, config["sigma"], config["seed"])  # the scene and the noise made before the clock starts
    interval = 1.0 / fps if fps > 0 else 0.0
    start = time.perf_counter()
    made = sent = lost = overflows = 0  # frames the sensor made, sent, lost to a full buffer; times it was full
    while count == 0 or sent < count:
        if interval:
            now = time.perf_counter()
            due = start + made * interval
            if now < due:
                time.sleep(due - now)
            elif now - due > BUFFER * interval:  # the buffer overflowed: the oldest frames are gone
                behind = int((now - start) / interval) - BUFFER - made
                made += behind
                lost += behind
                overflows += 1
                if overflows <= 5 or overflows % 100 == 0:  # a camera the link holds back would flood the log
                    logger.warning("camera buffer overflowed: %d frame(s) lost (%d in all)", behind, lost)
        made += 1
        sent += 1
        worker.send_data_to_com(frame(sent, shape, config["sigma"], config["seed"]), copy=False)


def main() -> None:
    start_the_source_worker_process(work, None)


if __name__ == "__main__":
    main()
