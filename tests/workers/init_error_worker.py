"""Test worker whose initialisation raises until its parameters say {"ok": true}."""

import time

import numpy as np

from heron_remote import start_the_source_worker_process


def initialise(worker):
    if not worker.parameters.get("ok"):
        raise RuntimeError("camera 7 not found")
    return True


def work(worker):
    while True:
        if worker.initialised:
            worker.send_data_to_com(np.zeros(4, dtype=np.uint8))
        time.sleep(0.02)


start_the_source_worker_process(work, lambda: None, initialise)
