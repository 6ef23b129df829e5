"""A worker that returns with packets its com never reads: finish() waits to deliver them.

Prints READY once it is in that wait; a SIGTERM then must end it at once. With the argument
``slow-end`` its end-of-life function takes 0.8 s and prints READY as it starts: a SIGTERM
then lets it finish and ends the worker without the wait.
"""

import signal
import sys
import threading
import time

import numpy as np
import zmq

from heron_remote.worker import SourceWorker

slow_end = sys.argv[1:] == ["slow-end"]


def end_of_life():
    print("READY", flush=True)
    time.sleep(0.8)
    print("END DONE", flush=True)


worker = SourceWorker(0, "Parameters##stuck##0", None, end_of_life if slow_end else None)
worker.connect_socket()
reader = zmq.Context().socket(zmq.PULL)  # connected, never reads: the packets stay queued
reader.rcvhwm = 1
reader.connect(f"tcp://127.0.0.1:{worker.ports['data']}")
frame = np.zeros(1 << 20, np.uint8)
worker.data_socket.sndtimeo = 5000  # the first waits for the connection
worker.data_socket.send_multipart([b"1", b"{}", frame])
worker.data_socket.sndtimeo = 0
full_since = None
while full_since is None or time.monotonic() - full_since < 0.3:  # the socket buffers too are full
    try:
        worker.data_socket.send_multipart([b"1", b"{}", frame])
        full_since = None
    except zmq.Again:
        full_since = full_since or time.monotonic()
        time.sleep(0.01)
signal.signal(signal.SIGTERM, worker.on_kill)
if not slow_end:
    threading.Timer(0.3, lambda: print("READY", flush=True)).start()
worker.finish()
sys.exit("finish() returned")
