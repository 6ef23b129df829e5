"""The entry point of a worker process: ``start_the_source_worker_process``."""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from .._protocol import WorkerArgs
from .._streams import guard_std_streams
from .life import EXIT_BAD_START, EXIT_WORK_FAILED
from .runtime import SourceWorker

__all__ = ["start_the_source_worker_process"]


def start_the_source_worker_process(
    work_function: Callable[[SourceWorker], Any],
    end_of_life_function: Callable[[], Any] | None,
    initialisation_function: Callable[[SourceWorker], bool] | None = None,
) -> NoReturn:
    """Run a source worker: parse the com's arguments, bind, announce, then ``work_function(worker)``.

    Never returns: the process ends when the work function returns (status 0), raises
    (status 1), the com stops it (SIGTERM) or the com's heartbeat stops (status 3).
    """
    try:
        args = WorkerArgs.parse(sys.argv[1:])
    except ValueError as exc:
        print(f"heron_remote worker: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_BAD_START)
    node = args.parameters_topic.split("##")[-2] if "##" in args.parameters_topic else "worker"
    guard_std_streams(node)  # before logging takes hold of sys.stderr
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    worker = SourceWorker(
        args.port,
        args.parameters_topic,
        initialisation_function,
        end_of_life_function,
        args.num_sending_topics,
        args.relic_dir,
        heartbeat_rate=args.heartbeat_rate,
        heartbeats_to_death=args.heartbeats_to_death,
    )
    worker.num_outputs = args.outputs
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, worker.on_kill)
    if args.token:
        worker.claim_node(args.node_id or args.parameters_topic, args.token, args.run_dir)
    worker.connect_socket()
    worker.start_heartbeat_thread()
    worker.start_parameters_thread()
    try:
        work_function(worker)
    except Exception:
        worker._die(f"the work function raised:\n{traceback.format_exc()}", EXIT_WORK_FAILED)
    worker.finish()
