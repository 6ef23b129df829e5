"""The worker runtime: what runs inside a source's worker process.

A Heron source worker ports by changing its imports::

    from heron_remote import start_the_source_worker_process

    def work(worker):
        while True:
            worker.send_data_to_com(grab_frame())

    start_the_source_worker_process(work, end_of_life_function=release_camera,
                                    initialisation_function=open_camera)

:mod:`.runtime` is the worker object a work function holds, :mod:`.heartbeat` its pulses
and beacons, :mod:`.life` how the process ends, :mod:`.main` the entry point. The worker
ends itself, after ``end_of_life_function``, when its com's pulses stop for
``heartbeats_to_death`` beats, when its com is gone (:mod:`.control`: its stdin closed),
and on SIGTERM or SIGINT.
"""

from .._protocol import (
    EXIT_BAD_START,
    EXIT_ENDED_OUTSIDE,
    EXIT_HELD,
    EXIT_NO_HEARTBEAT,
    EXIT_OK,
    EXIT_ORPHANED,
    EXIT_WORK_FAILED,
)
from .main import start_the_source_worker_process
from .runtime import SourceWorker

__all__ = [
    "EXIT_BAD_START",
    "EXIT_ENDED_OUTSIDE",
    "EXIT_HELD",
    "EXIT_NO_HEARTBEAT",
    "EXIT_OK",
    "EXIT_ORPHANED",
    "EXIT_WORK_FAILED",
    "SourceWorker",
    "start_the_source_worker_process",
]
