"""The entry point of a worker process: ``start_the_source_worker_process``."""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from .._linkkeys import MAX_LINE, LinkKeys
from .._protocol import EXIT_BAD_START, EXIT_HELD, EXIT_WORK_FAILED, WorkerArgs
from .._streams import guard_std_streams
from ..compression import Compression
from ..errors import ConfigError, DecodeError, NodeHeldError, UnsafePathError
from .runtime import SourceWorker

__all__ = ["pin_to_cpu", "run_worker", "start_the_source_worker_process"]

logger = logging.getLogger("heron_remote.worker")


def start_the_source_worker_process(
    work_function: Callable[[SourceWorker], Any],
    end_of_life_function: Callable[[], Any] | None,
    initialisation_function: Callable[[SourceWorker], bool] | None = None,
) -> NoReturn:
    """Run a source worker: parse the com's arguments, bind, announce, then ``work_function(worker)``.

    Never returns: the process ends when the work function returns (status 0), raises
    (status 1), the com stops it (SIGTERM) or the com's heartbeat stops (status 3).
    """
    run_worker(work_function, end_of_life_function, initialisation_function)


def run_worker(
    work_function: Callable[[Any], Any],
    end_of_life_function: Callable[[], Any] | None,
    initialisation_function: Callable[[Any], bool] | None = None,
    *,
    worker_class: type[SourceWorker] = SourceWorker,
) -> NoReturn:
    """:func:`start_the_source_worker_process` with a worker of ``worker_class`` (Heron's flavour)."""
    try:
        args = WorkerArgs.parse(sys.argv[1:])
    except ValueError as exc:
        print(f"heron_remote worker: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_BAD_START)
    keys = _read_keys() if args.control else None
    node = args.parameters_topic.split("##")[-2] if "##" in args.parameters_topic else "worker"
    guard_std_streams(node)  # before logging takes hold of sys.stderr
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.cpu is not None:
        pin_to_cpu(args.cpu)
    worker = worker_class(
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
    worker.batch_window = args.batch_window
    if (keys is not None and keys.mechanism == "curve") or args.bind:
        # The direct transport: CurveZMQ on the PC's address, with a server key pair of this launch.
        if keys is None or keys.mechanism != "curve" or not args.bind:
            print(
                "heron_remote worker: a bind address comes with its com's curve keys, and curve keys with a bind "
                "address (the direct transport)",
                file=sys.stderr,
                flush=True,
            )
            os._exit(EXIT_BAD_START)
        keys = keys.with_server_pair(link_timeout=args.link_timeout)
        worker.bind_on(args.bind)
    if args.compression:
        try:
            worker.compression = Compression.from_arg(args.compression)
        except ConfigError as exc:  # blosc2 missing on this PC, most likely: the com shows this line
            print(f"heron_remote worker: {exc}", file=sys.stderr, flush=True)
            os._exit(EXIT_BAD_START)
    if args.data_ipc and not args.bind:
        worker.data_on_unix_socket(args.data_ipc)
    if keys is not None:
        worker.use_keys(keys)  # before any socket binds: only its com gets in
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, worker.on_kill)
    worker.start_control(args.control, args.session_grace)
    if args.token:
        try:
            worker.claim_node(args.node_id or args.parameters_topic, args.token, args.run_dir, com=args.com)
        except NodeHeldError as exc:
            print(f"heron_remote worker: {exc}", file=sys.stderr, flush=True)
            os._exit(EXIT_HELD)
        except UnsafePathError as exc:
            print(f"heron_remote worker: {exc}", file=sys.stderr, flush=True)
            os._exit(EXIT_BAD_START)
    worker.connect_socket()
    worker.start_heartbeat_thread()
    worker.start_parameters_thread()
    try:
        work_function(worker)
    except Exception:
        worker._die(f"the work function raised:\n{traceback.format_exc()}", EXIT_WORK_FAILED)
    worker.finish()


def _read_keys() -> LinkKeys:
    """The link's keys: the first line its com writes on the control channel (stdin)."""
    try:
        return LinkKeys.from_line(sys.stdin.buffer.readline(MAX_LINE + 1))
    except (DecodeError, OSError, ValueError) as exc:
        print(f"heron_remote worker: cannot read the key line from its com: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_BAD_START)


def pin_to_cpu(cpu: int) -> bool:
    """Pin this process (and the threads and children it starts) to ``cpu``; False, with one
    warning saying why, where the OS cannot or the CPU does not exist."""
    setaffinity = getattr(os, "sched_setaffinity", None)
    if setaffinity is None:
        logger.warning("cannot pin the worker to CPU %d: this OS (%s) has no CPU affinity call", cpu, sys.platform)
        return False
    try:
        setaffinity(0, {cpu})
    except (OSError, ValueError) as exc:
        usable = sorted(os.sched_getaffinity(0))
        logger.warning("cannot pin the worker to CPU %d (this PC lets it use CPUs %s): %s", cpu, usable, exc)
        return False
    logger.info("worker pinned to CPU %d", cpu)
    return True
