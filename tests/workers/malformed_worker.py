"""Test worker that sends malformed packets between good ones.

Packet k (from 1): k % 4 == 1 good; 2 wrong frame count; 3 metadata not JSON; 0 size not matching.
"""

import time

import numpy as np

from heron_remote import start_the_source_worker_process
from heron_remote.wire import encode_output


def work(worker):
    k = 0
    while True:
        k += 1
        good = np.full((4, 4), k % 256, dtype=np.uint8)
        meta, payload = encode_output(good)
        frames = {
            1: [meta, payload],
            2: [meta],
            3: [b"{not json", payload],
            0: [b'{"data_type": "ndarray", "dtype": "<u1", "shape": [5, 5]}', payload],
        }[k % 4]
        worker.data_socket.send_multipart([b"%d" % k, *frames])  # past send_data_to_com, which would refuse these
        time.sleep(0.005)


start_the_source_worker_process(work, lambda: None)
