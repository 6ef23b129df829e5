"""The launcher's start/stop interplay: a stop that comes while the worker is being spawned."""

from __future__ import annotations

import signal
import threading

import pytest

from heron_remote import WorkerStartError
from heron_remote._protocol import WorkerArgs
from heron_remote.launcher import WorkerLauncher


class _SlowPC(WorkerLauncher):
    """Spawning takes until ``go`` is set; records what stop() did."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__("grab.py", node_name="cam")
        self.go = threading.Event()
        self.spawning = threading.Event()
        self.fail = fail
        self.alive = False
        self.signals: list[signal.Signals] = []
        self.released = 0

    def _python(self) -> list[str]:
        return ["python3"]

    def _spawn(self, argv: list[str]) -> None:
        self.spawning.set()
        assert self.go.wait(5)
        if self.fail:
            raise OSError("the PC went away")
        self.alive = True

    def returncode(self) -> int | None:
        return None if self.alive else 0

    def _signal_group(self, sig: signal.Signals) -> bool:
        self.signals.append(sig)
        self.alive = False
        return True

    def _release(self) -> None:
        self.released += 1


ARGS = WorkerArgs(port=0, parameters_topic="Parameters##cam##0", num_sending_topics=1)


@pytest.mark.parametrize("fail", [False, True])
def test_a_stop_during_the_spawn_is_carried_out_by_the_starting_thread(fail: bool) -> None:
    launcher = _SlowPC(fail=fail)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            launcher.start(ARGS)
        except BaseException as exc:
            errors.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    assert launcher.spawning.wait(5)
    assert launcher.stop(grace=0.1) is None  # returns at once: nothing to signal yet
    assert launcher.signals == [] and launcher.released == 0
    launcher.go.set()
    starter.join(5)
    if fail:
        assert isinstance(errors[0], OSError)
        assert launcher.signals == []
    else:
        assert isinstance(errors[0], WorkerStartError) and "stopped while it started" in str(errors[0])
        assert launcher.signals == [signal.SIGTERM] and not launcher.alive
    assert launcher.released == 1  # the connection is given back exactly once


@pytest.mark.parametrize(("when", "ends_within"), [("delivering", 1.0), ("slow-end", 1.6)])
def test_sigterm_while_a_finished_worker_delivers_its_last_packets_ends_it_without_the_wait(
    when: str, ends_within: float
) -> None:
    # A worker whose work function returned runs its end of life, then waits up to 5 s for its
    # com to take what is queued. When the com stops it meanwhile, the end of life still runs
    # to its end, but nothing waits for the delivery.
    import subprocess
    import sys
    import time

    from .helpers import WORKERS

    argv = [sys.executable, str(WORKERS / "stuck_delivery.py")] + (["slow-end"] if when == "slow-end" else [])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        time.sleep(0.2)
        proc.terminate()
        started = time.monotonic()
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < ends_within
        if when == "slow-end":
            assert proc.stdout.read().strip() == "END DONE"
    finally:
        proc.kill()
        proc.wait()
