"""Test worker that sends, between good packets, packets built to crash its com or its subscribers.

Good packet k: a (4, 4) uint8 array filled with k % 256, numbered k. After each, one of: a packet
number of 5000 digits, one of 2**63, one that would take the index past 2**62, metadata nested
3000 deep, metadata of 1 MiB, 65 dimensions, a dict payload nested 100 000 deep (the com passes
dicts on; the subscriber must drop it).
"""

import time

import numpy as np

from heron_remote import start_the_source_worker_process
from heron_remote.wire import encode_output

DICT_META = b'{"data_type": "dict"}'


def hostile(k: int, meta: bytes, payload: bytes) -> list[bytes]:
    return [
        [b"1" * 5000, meta, payload],
        [str(1 << 63).encode(), meta, payload],
        [str(1 << 62).encode(), meta, payload],
        [b"%d" % k, b"[" * 3000, payload],
        [b"%d" % k, b'{"data_type": "dict", "x": "' + b"a" * (1 << 20) + b'"}', payload],
        [b"%d" % k, b'{"data_type": "ndarray", "dtype": "<u1", "shape": [' + b"1, " * 64 + b"1]}", b"\x00"],
        [b"%d" % k, DICT_META, b"[" * 100_000],
    ][k % 7]


def work(worker):
    k = 0
    while True:
        k += 1
        meta, payload = encode_output(np.full((4, 4), k % 256, dtype=np.uint8))
        worker.data_socket.send_multipart([b"%d" % k, meta, payload])
        k += 1
        worker.data_socket.send_multipart(hostile(k, meta, payload))  # past send_data_to_com, which would refuse these
        time.sleep(0.005)


start_the_source_worker_process(work, lambda: None)
