"""Test worker with the two outputs of tests/workers/heron_com.py: a natural-scene frame and a dict.

Output "Counter": frame n of heron_remote.examples.natural_camera at 120x160; output "Echo": {"n": n}.
"""

import time

from heron_remote import start_the_source_worker_process
from heron_remote.examples.natural_camera import frame

SHAPE = (120, 160)


def work(worker):
    n = 0
    while True:
        n += 1
        worker.send_data_to_com([frame(n, SHAPE), {"n": n}])
        time.sleep(0.01)


start_the_source_worker_process(work, None)
