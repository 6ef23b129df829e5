"""``Heron.general_utils`` for source nodes: the com's and the worker's entry points, and Heron's helpers.

A Heron source node's files call, unchanged::

    com = gu.start_the_source_communications_process(NodeAttributeType, NodeAttributeNames)
    gu.register_exit_signals(com.on_kill)
    com.start_ioloop()

    gu.start_the_source_worker_process(work_function, end_of_life_function, initialisation_function)

Importing this module does nothing else: Heron's editor imports every node's com file to
list its operations. The com and the worker are heron_remote's.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import ConfigError
from ..settings import Settings

if TYPE_CHECKING:
    from ..source_com import SourceCom
    from .communication.source_worker import SourceWorker

__all__ = [
    "accurate_delay",
    "add_timestamp_to_filename",
    "choose_color_according_to_operations_type",
    "com_settings",
    "full_split_path",
    "get_next_available_port_group",
    "heron_ssh_info",
    "parse_arguments_to_com",
    "register_exit_signals",
    "start_the_sink_communications_process",
    "start_the_sink_worker_process",
    "start_the_source_communications_process",
    "start_the_source_worker_process",
    "start_the_transform_communications_process",
    "start_the_transform_worker_process",
]

logger = logging.getLogger(__name__)

#: Seconds of a delay left to spin on the clock (the rest is slept): sleep alone overshoots.
_SPIN_S = 0.0015


# -- the com ---------------------------------------------------------------------------------


def parse_arguments_to_com(args: Sequence[str]) -> tuple[Any, ...]:
    """Heron's com argv: ``<com.py> <port> <n_in> [topics_in…] <n_out> [topics_out…] <node_name>
    "<verbose>||<relic_dir>" <ssh_local_server_id> <ssh_remote_server_id> <worker_exec> <cpu_to_pin>``.

    Returns (port, receiving_topics, sending_topics, parameters_topic, verbose,
    ssh_local_server_id, ssh_remote_server_id, worker_exec, cpu_to_pin), as Heron does.
    """
    a = list(args[1:])
    usage = (
        "a Heron com is started as: com.py PORT N_IN [TOPICS_IN…] N_OUT [TOPICS_OUT…] NODE_NAME "
        f"'VERBOSE||RELIC_DIR' LOCAL_SERVER_ID REMOTE_SERVER_ID WORKER_EXEC CPU_TO_PIN; got {list(args)!r}"
    )
    try:
        n_in = int(a[1])
        receiving = a[2 : 2 + n_in]
        n_out = int(a[2 + n_in])
        sending = a[3 + n_in : 3 + n_in + n_out]
        rest = a[3 + n_in + n_out :]
    except (IndexError, ValueError) as exc:
        raise ConfigError(usage) from exc
    if len(rest) != 6 or len(sending) != n_out or len(receiving) != n_in:
        raise ConfigError(usage)
    parameters_topic, verbose, local_id, remote_id, worker_exec, cpu_to_pin = rest
    return a[0], receiving, sending, parameters_topic, verbose, local_id, remote_id, worker_exec, cpu_to_pin


def heron_ssh_info(script: str | os.PathLike[str]) -> Path | None:
    """The server registry of the Heron tree ``script`` is in (``<Heron>/communication/ssh_info.json``)."""
    for folder in Path(script).resolve().parents:
        if folder.name == "Heron":
            found = folder / "communication" / "ssh_info.json"
            return found if found.is_file() else None
    return None


def com_settings(script: str | os.PathLike[str], settings: Settings) -> Settings:
    """``settings`` (from the environment), with the registry of the Heron tree ``script`` is in,
    unless ``HERON_REMOTE_SSH_INFO`` named one."""
    registry = heron_ssh_info(script)
    if settings.ssh_info is None and registry is not None:
        return settings.replace(ssh_info=str(registry))
    return settings


def start_the_source_communications_process(
    node_attribute_type: Sequence[str], node_attribute_names: Sequence[str]
) -> SourceCom:
    """Start the com Heron's editor asked for (its argv): sockets, heartbeat, worker; returns the com.

    The com uses the server registry of the Heron tree it is in, unless
    ``HERON_REMOTE_SSH_INFO`` names another. The caller registers ``com.on_kill`` and runs
    ``com.start_ioloop()``, as Heron's source coms do.
    """
    from ..source_com import SourceCom

    (port, _, sending, parameters_topic, verbose, local_id, remote_id, worker_exec, cpu) = parse_arguments_to_com(
        sys.argv
    )
    if not logging.getLogger().handlers:  # the com script is the program: say what happens, on stderr
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = com_settings(sys.argv[0], Settings.from_env())
    outputs = [name for name, kind in zip(node_attribute_names, node_attribute_type, strict=False) if "Output" in kind]
    com = SourceCom(
        sending_topics=sending,
        parameters_topic=parameters_topic,
        port=port,
        worker_exec=worker_exec,
        verbose=verbose,
        ssh_local_server_id=local_id,
        ssh_remote_server_id=remote_id,
        outputs=outputs or None,
        cpu_to_pin=cpu,
        settings=settings,
    )
    # The node file registers on_kill only after this returns: an editor's stop that comes while
    # the worker starts must stop it too, not leave it to starve for want of pulses.
    register_exit_signals(com.on_kill)
    com.connect_sockets()
    com.start_heartbeat_thread()
    com.start_worker_process()
    return com


def register_exit_signals(function_to_register: Callable[[int, Any], Any]) -> None:
    """Call ``function_to_register(signal, frame)`` when the editor stops the node (SIGTERM; SIGBREAK on Windows)."""
    sigbreak = getattr(signal, "SIGBREAK", None)
    signal.signal(sigbreak if sigbreak is not None else signal.SIGTERM, function_to_register)


# -- the worker --------------------------------------------------------------------------------


def start_the_source_worker_process(
    work_function: Callable[[SourceWorker], Any],
    end_of_life_function: Callable[[], Any] | None,
    initialisation_function: Callable[[SourceWorker], bool] | None = None,
) -> NoReturn:
    """Run the worker the com started: ``work_function(worker)`` in this thread, with Heron's saved state.

    Never returns: the worker ends when the work function returns or raises, when its com
    stops it, or when the com's heartbeat stops.
    """
    from ..worker.main import run_worker
    from .communication.source_worker import SourceWorker

    run_worker(work_function, end_of_life_function, initialisation_function, worker_class=SourceWorker)


def _not_a_source(kind: str) -> NoReturn:
    raise ConfigError(
        f"heron_remote runs source nodes; this is a {kind} node: keep Heron's own imports "
        "(from Heron import general_utils as gu) in its files"
    )


def start_the_transform_communications_process(*args: Any, **kwargs: Any) -> NoReturn:
    _not_a_source("transform")


def start_the_transform_worker_process(*args: Any, **kwargs: Any) -> NoReturn:
    _not_a_source("transform")


def start_the_sink_communications_process(*args: Any, **kwargs: Any) -> NoReturn:
    _not_a_source("sink")


def start_the_sink_worker_process(*args: Any, **kwargs: Any) -> NoReturn:
    _not_a_source("sink")


# -- Heron's helpers -----------------------------------------------------------------------------


def accurate_delay(delay: float) -> None:
    """Wait ``delay`` milliseconds, accurately: sleep most of it, spin on the clock for the rest."""
    end = time.perf_counter() + delay / 1000
    left = end - time.perf_counter()
    if left > _SPIN_S:
        time.sleep(left - _SPIN_S)
    while time.perf_counter() < end:
        pass


def get_next_available_port_group(starting_port: int | str, step: int) -> Iterator[str]:
    """``str(starting_port)``, then every ``step`` ports after it, as Heron's editor numbers nodes."""
    port = int(starting_port)
    while True:
        yield str(port)
        port += step


def full_split_path(path: str) -> list[str]:
    """Every component of ``path``, the root (if any) first."""
    parts: list[str] = []
    while True:
        head, tail = os.path.split(path)
        if head == path:
            parts.insert(0, head)
            break
        if tail == path:
            parts.insert(0, tail)
            break
        path = head
        parts.insert(0, tail)
    return parts


def choose_color_according_to_operations_type(operations_parent_name: str) -> list[int]:
    """The editor's RGBA colour for a node by its kind."""
    for kind, colour in (("Sources", [172, 124, 41, 255]), ("Transforms", [50, 134, 79, 255])):
        if kind in operations_parent_name:
            return colour
    return [105, 110, 196, 255] if "Sinks" in operations_parent_name else [255, 255, 255, 100]


def add_timestamp_to_filename(file_name: str, datetime: dt.datetime) -> str:
    """``packets.log`` -> ``packets_2026-12-02_10-00-00.log``, as Heron names its log files."""
    stamp = datetime.strftime("%Y-%m-%d_%H-%M-%S")
    root, dot, ext = file_name.partition(".")
    return f"{root}_{stamp}{dot}{ext.split('.')[0] if ext else ''}"
