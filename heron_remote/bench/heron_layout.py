"""Heron's layout, measured: the com, the forwarders and the subscriber each a process of its own.

Heron's editor runs every node's com as a process and the forwarders in another; whatever reads
the data is a third. Here: ``heron-remote forwarders`` on free fixed ports, the bench's Heron
node (:mod:`.heron_com`, a com file using Heron's ``start_the_source_communications_process``)
started as the editor starts it (:class:`~heron_remote.heron.editor.HeronEditor`: its argv, its
pickled parameters), with the bench worker here or on a link's host, and a plain pyzmq SUB socket
in this process as the subscriber. Beside ``zmq`` (raw pyzmq) and ``path-<link>`` (a
:class:`~heron_remote.Source`, everything but the worker in one process) it shows what the
process boundaries cost.

Each entry of :data:`VARIANTS` is one more way to reach the worker (a registry change): the
default backend is ``""``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import zmq

from ..com.hosted import RELAYED_THERE
from ..heron.editor import HeronEditor
from ..settings import ForwarderPorts, Settings
from ..wire import ZERO_COPY_MIN
from . import heron_com
from .child import BenchChild
from .links import Link
from .paths import WORKER, Stream, StreamOpener, measure_stream, path_plan
from .protocol import Plan, Result
from .takeover import free_fixed_ports

__all__ = ["COM_RELAY", "NODE", "TOPIC", "VARIANTS", "ForwardersProcess", "heron_layout", "heron_stream"]

NODE = "BenchSource##0"
TOPIC = "Frame_Out##BenchSource##0->Frame_In##Viewer##0"
_START_TIMEOUT_S = 30.0
#: Ways to reach the worker, by the suffix of the measurement's name (``heron-ns-<suffix>``): a
#: function that gives the link to use, in a registry of its own. The default backend has no suffix.
#: Each entry is one more measurement and target, e.g. once the registry knows the direct transport:
#: ``"direct": lambda link: link.with_entries("direct", transport="direct")``.
#: The name's last suffix for the com relaying in its own process (``Settings.relay_in_forwarders``
#: False), the layout's three hops: what the forwarders' relaying saves.
COM_RELAY = "comrelay"
VARIANTS: dict[str, Callable[[Link], Link]] = {
    "": lambda link: link,
    "direct": lambda link: link.with_transport("direct"),
}


class ForwardersProcess(BenchChild):
    """``heron-remote forwarders`` on ``ports`` in a process of its own; ended on close, whatever happened."""

    def __init__(self, ports: ForwarderPorts, env: dict[str, str] | None = None) -> None:
        self.ports = p = ports
        argv = [sys.executable, "-m", "heron_remote", "forwarders"]
        argv += ["--data", str(p.data_submit), str(p.data_publish)]
        argv += ["--parameters", str(p.parameters_submit), str(p.parameters_publish)]
        argv += ["--proof-of-life", str(p.proof_of_life_submit), str(p.proof_of_life_publish)]
        super().__init__(argv, env=env)
        try:
            line = self.first_line("heron-remote forwarders did not start")
            if not line.startswith(b"forwarders on"):
                raise RuntimeError(f"heron-remote forwarders said {line!r}: {self.stderr_tail()}")
        except BaseException:
            self.close()
            raise


def heron_stream(
    link: Link, notes: dict[str, Any], *, pids: dict[str, int] | None = None, relay_in_forwarders: bool = True
) -> StreamOpener:
    """A StreamOpener for Heron's layout with the bench worker on ``link`` (``local``: this machine).

    ``pids``, when given, receives the pids of the forwarders and the com (for a profiler);
    ``relay_in_forwarders`` False: the com relays in its own process (the layout's third hop).
    """

    @contextmanager
    def open_stream(plan: Plan) -> Iterator[Stream]:
        ports = free_fixed_ports()
        settings = Settings(ports=ports, relay_in_forwarders=relay_in_forwarders)
        env = {k: v for k, v in {**os.environ, **settings.to_env()}.items() if k != "HERON_REMOTE_SSH_INFO"}
        remote_id = "None"
        if link.host is not None and link.registry is not None:
            env["HERON_REMOTE_SSH_INFO"] = str(link.registry)
            remote_id = link.server_id
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="heron-layout-")))
            forwarders = stack.enter_context(ForwardersProcess(ports, env))
            context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
            sub = context.socket(zmq.SUB)
            stack.callback(sub.close, linger=0)
            sub.rcvhwm = 1000
            sub.subscribe(TOPIC.encode())
            sub.connect(f"tcp://127.0.0.1:{ports.data_publish}")
            editor = stack.enter_context(HeronEditor(settings, NODE))
            editor.start(
                heron_com.__file__,
                0,
                [TOPIC],
                worker_exec=WORKER,
                remote_id=remote_id,
                env=env,
                log=tmp / "com.log",
            )
            stack.callback(editor.stop)  # TERM, KILL 0.5 s later: as the editor stops a node
            editor.wait_for_proof_of_life(_START_TIMEOUT_S)
            assert editor.proc is not None
            notes.update(forwarders_pid=forwarders.proc.pid, com_pid=editor.proc.pid)
            if pids is not None:
                pids.update(forwarders=forwarders.proc.pid, com=editor.proc.pid)
            parameters = plan.to_dict()
            editor.send_parameters(parameters)
            copy = plan.size < ZERO_COPY_MIN
            timeout_ms = int(plan.idle_timeout_s * 1000)

            def payloads() -> Iterator[Any]:
                # As any pyzmq client would read a camera's frames: whole messages, large payloads uncopied.
                while True:
                    if not sub.poll(timeout_ms):
                        raise TimeoutError(
                            f"no data for {plan.idle_timeout_s:g} s: {(tmp / 'com.log').read_text()[-2000:]}"
                        )
                    if copy:
                        yield sub.recv_multipart()[-1]
                    else:
                        yield sub.recv_multipart(copy=False)[-1].buffer

            try:
                yield Stream(payloads(), lambda: editor.send_parameters({**parameters, "drained": True}))
            finally:
                notes["forwarders_stderr"] = forwarders.stderr_tail()
                said = (tmp / "com.log").read_text(errors="replace") if (tmp / "com.log").exists() else ""
                notes["relay"] = "forwarders process" if RELAYED_THERE in said else "com process"

    return open_stream


def heron_layout(name: str, link: Link, plan: Plan) -> Result:
    """Heron's layout with the worker on ``link``; the variant is the name's suffix after the link."""
    suffix = name.removeprefix(f"heron-{link.name}").removeprefix("-")
    in_com = suffix.endswith(COM_RELAY)
    suffix = suffix.removesuffix(COM_RELAY).removesuffix("-")
    notes: dict[str, Any] = {}
    stream = heron_stream(VARIANTS[suffix](link), notes, relay_in_forwarders=not in_com)
    result = measure_stream(name, path_plan(plan), stream)
    result.notes.update({k: v for k, v in notes.items() if k != "forwarders_stderr"})
    result.notes["layout"] = "com, forwarders and subscriber in three processes"
    return result
