"""How a worker process ends: its end-of-life function, its relic saved, its start record freed, exit.

A worker ends from any thread (a lost heartbeat, a failed service thread, a signal, the
work function returning) and must end even when logging or a flush would block on a
stalled pipe: every path arms a hard exit first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

import zmq

from .. import _records as records
from .._protocol import EXIT_ENDED_OUTSIDE, EXIT_NO_HEARTBEAT, EXIT_OK, EXIT_ORPHANED
from .._threads import KeptThread

__all__ = ["WorkerLife"]

logger = logging.getLogger("heron_remote.worker")

#: Seconds end_of_life_function may take before the worker exits anyway.
END_OF_LIFE_S = 1.5
#: Seconds a finished worker waits for its last packets to reach the com.
DELIVER_S = 5.0


class SavedState(Protocol):
    """A node's saved state (its relic): flushed and closed when the worker ends."""

    def close(self) -> None: ...


class WorkerLife:
    """The end of one worker process; :meth:`die` and :meth:`finish` never return."""

    def __init__(self, label: str, end_of_life_function: Callable[[], Any] | None) -> None:
        self._label = label
        self._end_of_life_function = end_of_life_function
        self.relic: SavedState | None = None
        self._dying = threading.Lock()
        self._finishing = self._delivering = self._stop_asked = False
        self._claim: records.NodeClaim | None = None
        #: Whether the com controls this worker: a signal it did not ask for is then reported.
        self.controlled = False
        self.stop_asked_by_com = False

    # -- start record ----------------------------------------------------------
    def claim(
        self, node_id: str, token: str, run_dir: str = "", *, com: str = "", window: float = 10.0
    ) -> tuple[int, ...]:
        """Take ``node_id`` on this host, ending a holder whose com is gone; the ended pids.

        Raises NodeHeldError when another com's live worker holds it.
        """
        folder = records.run_dir(run_dir or None)
        self._claim, reaped = records.claim(node_id, token, folder=folder, com=com, window=window)
        return tuple(r.pid for r in reaped)

    def pulse(self) -> None:
        if self._claim is not None:
            self._claim.pulse()

    def channel_closed(self) -> None:
        """The com's control channel closed: a launch may end this worker while it asks its com."""
        if self._claim is not None:
            self._claim.closed()

    def orphaned(self, reason: str) -> NoReturn:
        """The com is gone: say so in the start record, then end."""
        if self._claim is not None:
            self._claim.orphaned()
        self.die(reason, EXIT_ORPHANED)

    def _release(self) -> None:
        if self._claim is not None:
            self._claim.release()

    # -- ending ------------------------------------------------------------------
    def die(self, reason: str, code: int) -> NoReturn:
        """End the process now, from any thread: end of life, relic saved, exit with ``code``."""
        if not self._dying.acquire(blocking=False):
            time.sleep(3600)  # another thread is already ending the process
        # Logging can block (a remote stderr pipe whose SSH link is stalled); the exit must not.
        _hard_exit_after(END_OF_LIFE_S + 0.5, code)
        level = logging.INFO if code == EXIT_OK else logging.ERROR
        logger.log(level, "worker %s (pid %d): %s", self._label, os.getpid(), reason)
        hurried = code in (EXIT_NO_HEARTBEAT, EXIT_ORPHANED)  # nobody waits for this worker's end
        self._end_of_life(timeout=END_OF_LIFE_S / 2 if hurried else END_OF_LIFE_S)
        self._release()
        _flush_and_exit(code)

    def finish(self, data: zmq.Socket | None, data_context: zmq.Context | None) -> NoReturn:
        """The work function returned: deliver what is queued on ``data``, then end normally."""
        if not self._dying.acquire(blocking=False):
            time.sleep(3600)
        self._finishing = True
        _hard_exit_after(END_OF_LIFE_S + DELIVER_S + 1, EXIT_OK)
        self._end_of_life(timeout=END_OF_LIFE_S)
        self._release()
        self._delivering = True  # before the check: a stop from here on exits in on_signal
        if self._stop_asked:
            _exit_now(EXIT_OK)
        if data is not None and data_context is not None:
            data.close(linger=int(DELIVER_S * 1000))
            data_context.term()
        _flush_and_exit(EXIT_OK)

    def on_signal(self, signum: int, frame: Any = None) -> None:
        """SIGTERM or SIGINT: end now (a worker that is finishing ends once its end of life ran)."""
        if self._finishing:
            # finish() runs the end of life; what it would deliver after, the stopping com won't take.
            if self._delivering:
                _exit_now(EXIT_OK)
            self._stop_asked = True
            return
        name = signal.Signals(signum).name
        if self.controlled and not self.stop_asked_by_com:
            self.die(f"ended by {name}, which its com did not ask for", EXIT_ENDED_OUTSIDE)
        self.die(f"stopped by signal {name}", EXIT_OK)

    def stop_from_com(self) -> None:
        """The com wrote ``stop`` on the control channel: end normally."""
        self.stop_asked_by_com = True
        if self._finishing:
            self._stop_asked = True
            if self._delivering:
                _exit_now(EXIT_OK)
            return
        self.die("stopped by its com", EXIT_OK)

    def _end_of_life(self, timeout: float) -> None:
        if self._end_of_life_function is not None:
            thread = KeptThread.start_new(self._end_of_life_function, name="heron-worker-end-of-life")
            thread.join(timeout)
            if thread.is_alive():
                logger.error("end_of_life_function did not return within %.1f s; exiting anyway", timeout)
            elif thread.error is not None:
                logger.error("end_of_life_function raised %r", thread.error, exc_info=thread.error)
        if self.relic is not None:
            self.relic.close()


def _hard_exit_after(seconds: float, code: int) -> None:
    timer = threading.Timer(seconds, _exit, args=(code,))
    timer.daemon = True
    timer.start()


def _exit_now(code: int) -> NoReturn:
    _hard_exit_after(0.5, code)  # a flush into a stalled pipe must not hold the exit
    _flush_and_exit(code)


#: Files the worker removes as it exits (its data socket's).
_remove_at_exit: list[str] = []


def remove_at_exit(path: str) -> None:
    """Have the worker remove ``path`` as it exits, however it exits but a SIGKILL."""
    _remove_at_exit.append(path)


def _flush_and_exit(code: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    _exit(code)


def _exit(code: int) -> NoReturn:
    for path in _remove_at_exit:
        with contextlib.suppress(OSError):
            os.unlink(path)
    os._exit(code)
