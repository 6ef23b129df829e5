"""Test worker that fails in its work function."""

import sys

from heron_remote import start_the_source_worker_process


def work(worker):
    print("opening camera 7", file=sys.stderr, flush=True)
    raise RuntimeError("camera 7 not found")


start_the_source_worker_process(work, lambda: None)
