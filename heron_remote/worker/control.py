"""The worker's end of its com's control channel: its stdin.

A com starts its worker with stdin connected to itself: a pipe here, the SSH session's
channel on a PC. Two things travel on it:

- ``stop``: the com ends the worker (a SIGTERM that came without it was sent by somebody
  else, and the worker says so in its exit status);
- its end: nobody holds the other side any more. A local pipe closes only when the com
  process is gone, so the worker ends at once. An SSH session also closes when sshd on the
  PC drops it or the com reconnects after a long cut, so the worker first probes its com
  over the heartbeat and ends only if no answer comes within ``session_grace`` seconds --
  and only if pulses were still arriving: a session that closes after a silence is a link
  that was down, left to the death window as before.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import BinaryIO

from .._protocol import STOP_LINE
from .._threads import KeptThread
from .heartbeat import WorkerHeartbeat

__all__ = ["ComControl"]

logger = logging.getLogger("heron_remote.worker")

_MAX_LINE = 4096


class ComControl:
    """Reads the control channel in a thread of its own; calls ``stop`` or ``gone(reason)``."""

    def __init__(
        self,
        mode: str,
        heartbeat: WorkerHeartbeat,
        *,
        session_grace: float,
        stop: Callable[[], object],
        gone: Callable[[str], object],
        closed: Callable[[], object] = lambda: None,
        stream: BinaryIO | None = None,
    ) -> None:
        self._mode = mode
        self._heartbeat = heartbeat
        self._grace = session_grace
        self._stop = stop
        self._gone = gone
        self._closed_hook = closed
        self._stream = stream if stream is not None else sys.stdin.buffer
        #: Whether the com asked for the stop (a signal without it came from somebody else).
        self.stop_asked = False
        self._thread: KeptThread | None = None

    def start(self) -> None:
        self._thread = KeptThread.start_new(self._read, name="heron-worker-control", on_error=self._failed)

    def _failed(self, exc: BaseException) -> None:
        logger.error("the control channel reader failed: %r", exc)

    def _read(self) -> None:
        while True:
            try:
                line = self._stream.readline(_MAX_LINE)
            except (OSError, ValueError):
                line = b""
            if not line:
                self._closed()
                return
            if line.strip().decode(errors="replace") == STOP_LINE:
                self.stop_asked = True
                self._stop()

    def _closed(self) -> None:
        if self._mode == "pipe":
            self._gone("its com is gone: the pipe from it closed")
            return
        silent = time.monotonic() - self._heartbeat.last_pulse
        if silent > 2 * self._heartbeat.rate + 0.5:
            logger.warning("the SSH session closed after %.1f s without pulses: the link was down", silent)
            return
        logger.info("the SSH session closed: asking the com whether it is still there")
        self._closed_hook()
        why = f"its com is gone: its SSH session closed and it did not answer within {self._grace:g} s"
        self._heartbeat.probe(self._grace, lambda: self._gone(why))
