"""A source worker for the whole-path benchmark: frames of a given size, as fast as the path takes.

Run by a com as ``python -m heron_remote.bench.worker``; its parameters are a
:class:`~heron_remote.bench.protocol.Plan` as a dict. It sends the plan's phases with
``send_data_to_com(frame, copy=False)`` (every frame a fresh buffer) and returns,
which ends the worker normally. Between its throughput and latency phases it waits for
parameters ``{"drained": true}``: the subscriber saw the queues empty.

With ``HERON_REMOTE_BENCH_PROFILE=<path>`` in its environment it writes a cProfile of
its sending to that path (the worker ends with ``os._exit``, so it dumps itself).
"""

from __future__ import annotations

import cProfile
import logging
import os
import time
from collections.abc import Callable

from heron_remote.worker import SourceWorker, start_the_source_worker_process

from .protocol import Plan, run_plan

logger = logging.getLogger(__name__)

PARAMETERS_WAIT_S = 15.0
PROFILE_ENV = "HERON_REMOTE_BENCH_PROFILE"


def initialise(worker: SourceWorker) -> bool:
    return isinstance(worker.parameters, dict) and "size" in worker.parameters


def _drained(worker: SourceWorker) -> Callable[[float], bool]:
    """The receiver says the queues are empty with new parameters holding ``drained``."""

    def drained(timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            params = worker.parameters
            if isinstance(params, dict) and params.get("drained"):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)

    return drained


def work(worker: SourceWorker) -> None:
    deadline = time.monotonic() + PARAMETERS_WAIT_S
    while not worker.initialised:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no benchmark plan arrived as parameters within {PARAMETERS_WAIT_S:g} s")
        time.sleep(0.005)
    plan = Plan(**worker.parameters)

    def send(frame: object) -> None:
        worker.send_data_to_com(frame, copy=False)

    profile_path = os.environ.get(PROFILE_ENV)
    drained = _drained(worker)
    if not profile_path:
        seen = run_plan(send, plan, array=True, drained=drained)
    else:
        profiler = cProfile.Profile()
        seen = profiler.runcall(run_plan, send, plan, array=True, drained=drained)
        profiler.dump_stats(profile_path)
    logger.info("bench worker sent: %s", seen)


def main() -> None:
    start_the_source_worker_process(work, None, initialise)


if __name__ == "__main__":
    main()
