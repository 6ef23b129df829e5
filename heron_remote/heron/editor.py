"""What Heron's editor does with a source node, step by step, for tests and benchmarks.

Written from Heron's documented behaviour: start the node's com with the editor's argv in a
new session, wait for its proof of life on the proof-of-life forwarder, publish its
parameters pickled (the editor sends them again every 0.5 s), and stop it with TERM, then
KILL 0.5 s later.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import zmq

from ..settings import Settings

__all__ = ["KILL_AFTER_S", "HeronEditor"]

#: The editor's delay between TERM and KILL.
KILL_AFTER_S = 0.5


class HeronEditor:
    """Heron's editor, as far as one node goes. Use in one thread; :meth:`close` ends the node too."""

    def __init__(self, settings: Settings, node_name: str) -> None:
        self.node_name = node_name
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._pol = context.socket(zmq.SUB)
        self._pol.linger = 0
        self._pol.subscribe(node_name.encode())  # a prefix, as the editor subscribes
        self._pol.connect(f"tcp://{settings.forwarder_host}:{settings.ports.proof_of_life_publish}")
        self._parameters = context.socket(zmq.PUB)
        self._parameters.linger = 0
        self._parameters.connect(f"tcp://{settings.forwarder_host}:{settings.ports.parameters_submit}")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(
        self,
        com_file: str | Path,
        port: int,
        sending_topics: Sequence[str],
        *,
        worker_exec: str,
        verbose: str = "||",
        local_id: str = "None",
        remote_id: str = "None",
        cpu: str = "Any",
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        """Start the com as the editor does: ``python <com.py> <port> 0 <n_out> [topics…] <node> …``."""
        argv = [sys.executable, str(com_file), str(port), "0", str(len(sending_topics)), *sending_topics]
        argv += [self.node_name, verbose, local_id, remote_id, worker_exec, cpu]
        if log is None:
            self.proc = subprocess.Popen(
                argv, start_new_session=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            return
        with open(log, "wb") as out:  # the com writes to it until it ends
            self.proc = subprocess.Popen(argv, start_new_session=True, env=env, stdout=out, stderr=out)

    def wait_for_proof_of_life(self, timeout: float) -> None:
        """Until the node's proof of life arrives (the editor waits without a bound; this one has)."""
        if not self._pol.poll(int(timeout * 1000)):
            raise TimeoutError(f"no proof of life from {self.node_name} within {timeout:g} s")
        frames = self._pol.recv_multipart()
        if frames != [self.node_name.encode(), b"POL"]:
            raise AssertionError(f"not a proof of life: {frames!r}")

    def send_parameters(self, values: object) -> None:
        """Publish the node's parameters the editor's way: ``[node_name, pickle]``."""
        self._parameters.send_multipart([self.node_name.encode(), pickle.dumps(values, protocol=4)])

    def stop(self) -> float:
        """TERM, then KILL after 0.5 s (spinning on the clock, as the editor does); when the KILL went."""
        assert self.proc is not None, "start() first"
        self.proc.terminate()
        deadline = time.perf_counter() + KILL_AFTER_S
        while time.perf_counter() < deadline:
            pass
        killed = time.monotonic()
        self.proc.kill()
        self.proc.wait(10)
        return killed

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._pol.close()
        self._parameters.close()

    def __enter__(self) -> HeronEditor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
