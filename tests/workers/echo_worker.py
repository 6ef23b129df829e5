"""Test worker: two outputs, echoes its parameters, keeps a relic, marks its end of life.

Output "Counter": a 1-element int64 array with the packet number.
Output "Echo": a dict with what the worker knows; every third packet it is "Ignore".
Initialisation succeeds only once the parameters contain {"ok": true}.
End of life writes "end_of_life <pid>" to $HERON_TEST_MARKER when set.
"""

import os
import time

import numpy as np

from heron_remote import start_the_source_worker_process

state = {"n": 0, "running": True}


def initialise(worker):
    ok = isinstance(worker.parameters, dict) and worker.parameters.get("ok") is True
    if ok:
        worker.relic_create_parameters_df(**worker.parameters)
    return ok


def work(worker):
    while state["running"]:
        state["n"] += 1
        n = state["n"]
        echo = {
            "parameters": worker.parameters,
            "initialised": worker.initialised,
            "node_name": worker.node_name,
            "node_index": worker.node_index,
            "pid": os.getpid(),
        }
        worker.send_data_to_com([np.array([n], dtype=np.int64), "Ignore" if n % 3 == 0 else echo])
        if worker.initialised:
            worker.relic_update_substate_df(n=n, square=n * n)
        time.sleep(0.01)


def end_of_life():
    state["running"] = False
    marker = os.environ.get("HERON_TEST_MARKER")
    if marker:
        with open(marker, "a") as f:
            f.write(f"end_of_life {os.getpid()}\n")


start_the_source_worker_process(work, end_of_life, initialise)
