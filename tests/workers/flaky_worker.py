"""Test worker that sends a few frames, then dies as its parameters say: SIGKILL or an exception.

Parameters: {"frames": n, "death": "kill" | "raise"}. Just before it dies it writes the
time on stderr ("DYING AT <unix seconds>") so the com's notice can be timed.
"""

import os
import signal
import sys
import time

import numpy as np

from heron_remote import start_the_source_worker_process


def work(worker):
    while worker.parameters is None:
        time.sleep(0.01)
    for n in range(int(worker.parameters["frames"])):
        worker.send_data_to_com(np.full(4, n, dtype=np.uint8))
        time.sleep(0.01)
    time.sleep(0.3)  # the frames reach the com before the end
    print(f"DYING AT {time.time():.6f}", file=sys.stderr, flush=True)
    if worker.parameters["death"] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError("sensor unplugged")


start_the_source_worker_process(work, lambda: None)
