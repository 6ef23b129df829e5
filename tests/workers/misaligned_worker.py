"""Test worker that sends, back to back, packets too long and too short between good ones.

Each burst: good, too long (an extra frame), good, too short (no payload), good, good.
A reader that does not ask for every message's end must find the boundaries again.
"""

import time

import numpy as np

from heron_remote import start_the_source_worker_process
from heron_remote.wire import encode_output


def work(worker):
    k = 0
    while True:
        for shape in ("good", "long", "good", "short", "good", "good"):
            k += 1
            meta, payload = encode_output(np.full((4, 4), k % 256, dtype=np.uint8))
            frames = {"good": [meta, payload], "long": [meta, payload, b"extra"], "short": [meta]}[shape]
            worker.data_socket.send_multipart([b"%d" % k, *frames])  # past send_data_to_com, which would refuse these
        time.sleep(0.01)


start_the_source_worker_process(work, lambda: None)
