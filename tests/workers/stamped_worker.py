"""Test worker that gives each packet its own capture time: 0.25 s before it sends it (its clock)."""

import time

import numpy as np

from heron_remote import start_the_source_worker_process

EARLIER_S = 0.25


def work(worker):
    n = 0
    while True:
        n += 1
        worker.send_data_to_com(np.full(8, n % 256, np.uint8), captured=time.time() - EARLIER_S)
        time.sleep(0.01)


start_the_source_worker_process(work, None)
