"""Test worker that sends packed payloads a com must refuse, between good packed ones.

Packet k (from 1): k % 4 == 1 good (packed); 2 no blosc2 header; 3 a header announcing another
size than the metadata's; 0 a packed mark on metadata whose header claims 1 TB.
"""

import json
import time

import blosc2
import numpy as np

from heron_remote import start_the_source_worker_process


def packed_meta(shape):
    return json.dumps({"data_type": "ndarray", "dtype": "uint8", "shape": list(shape), "packed": "blosc2"}).encode()


def work(worker):
    k = 0
    while True:
        k += 1
        good = np.full((64, 64), k % 256, dtype=np.uint8)
        packed = blosc2.compress2(good.tobytes(), typesize=1)
        other = blosc2.compress2(bytes(4096 + 64), typesize=1)
        frames = {
            1: [packed_meta((64, 64)), packed],
            2: [packed_meta((64, 64)), b"\x00" * 100],
            3: [packed_meta((64, 64)), other],
            0: [packed_meta((1 << 20, 1 << 20)), packed],
        }[k % 4]
        worker.data_socket.send_multipart([b"%d" % k, *frames])  # past send_data_to_com, which packs well
        time.sleep(0.005)


start_the_source_worker_process(work, lambda: None)
