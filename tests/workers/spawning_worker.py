"""Test worker that starts a helper process (like a grabber's converter) and reports its pid."""

import subprocess
import time

from heron_remote import start_the_source_worker_process

helper = None


def work(worker):
    global helper
    # The helper ignores TERM, as a busy grabber may: stopping must still end it.
    helper = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 1; done"])
    while True:
        worker.send_data_to_com({"worker": worker.index, "helper": helper.pid})
        time.sleep(0.05)


start_the_source_worker_process(work, lambda: None)
