"""A rig user's script, for the takeover study and its tests: a Source streaming the synthetic camera.

    python -m heron_remote.bench.rig_script NAME [FPS]

Its settings (forwarder ports, heartbeat) come from ``HERON_REMOTE_*`` variables. It prints,
flushed, one event a line (times on ``CLOCK_MONOTONIC``, one clock for every process here)::

    READY <pid> <1 if the forwarders run in this process, else 0>
    TICK <time s> <frames so far> <s>    every 0.1 s while frames come, with the longest
                                         interval between two frames since the last TICK
    GAP <from s> <to s>                  each time two frames are further apart than 3 periods
    END <frames> <frames missed>         after a clean stop (SIGTERM or SIGINT)

Warnings (a forwarder taken over) go to stderr, as in any script.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

from ..examples import SYNTHETIC_CAMERA
from ..settings import Settings
from ..source import Source

__all__ = ["main"]

#: Seconds without a frame before the script gives up (NoDataError, exit status 1).
NO_DATA_S = 10.0
_TICK_S = 0.1


def main(argv: list[str]) -> int:
    name = argv[0] if argv else "rig"
    fps = float(argv[1]) if len(argv) > 1 else 100.0
    # SIGTERM stops the script as Ctrl-C does: the with block below stops the source cleanly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    period = 1.0 / fps
    frames = 0
    try:
        with Source(
            SYNTHETIC_CAMERA, name=name, parameters={"shape": [8, 8], "fps": fps}, settings=Settings.from_env()
        ) as source:
            lease = source.forwarders
            owner = int(lease is not None and lease.running_here is not None)
            print(f"READY {os.getpid()} {owner}", flush=True)
            last = next_tick = longest = 0.0
            for _ in source.frames(timeout=NO_DATA_S):
                now = time.monotonic()
                frames += 1
                if last:
                    longest = max(longest, now - last)
                    if now - last > 3 * period:
                        print(f"GAP {last:.4f} {now:.4f}", flush=True)
                if now >= next_tick:
                    print(f"TICK {now:.4f} {frames} {longest:.4f}", flush=True)
                    next_tick, longest = now + _TICK_S, 0.0
                last = now
    except KeyboardInterrupt:
        print(f"END {frames} {source.gaps}", flush=True)
        return 0
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main(sys.argv[1:]))
