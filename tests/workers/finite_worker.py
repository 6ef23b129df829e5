"""Test worker that sends 20 frames and returns."""

import numpy as np

from heron_remote import start_the_source_worker_process


def work(worker):
    for n in range(1, 21):
        worker.send_data_to_com(np.full((100, 100), n, dtype=np.uint16))


start_the_source_worker_process(work, lambda: None)
