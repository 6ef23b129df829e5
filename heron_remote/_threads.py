"""Background threads that never die silently.

A :class:`KeptThread` keeps the exception that ended its target; its owner checks
:attr:`~KeptThread.error` (or calls :meth:`~KeptThread.check`) and re-raises or reports it,
or, when it must act at once, passes ``on_error``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["KeptThread"]

logger = logging.getLogger(__name__)


class KeptThread(threading.Thread):
    """A daemon thread whose exception is kept for its owner, and logged at debug level."""

    def __init__(
        self,
        target: Callable[..., Any],
        *,
        name: str,
        args: tuple[Any, ...] = (),
        on_error: Callable[[BaseException], object] | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._run_target = target
        self._run_args = args
        self._on_error = on_error
        #: What ended the target, if it raised.
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run_target(*self._run_args)
        except BaseException as exc:
            self.error = exc
            logger.debug("thread %s ended on %r", self.name, exc)
            if self._on_error is not None:
                self._on_error(exc)  # an owner that must act at once (a worker ends)

    def check(self) -> None:
        """Re-raise the exception that ended the thread, if any."""
        if self.error is not None:
            raise self.error

    @classmethod
    def start_new(
        cls,
        target: Callable[..., Any],
        *,
        name: str,
        args: tuple[Any, ...] = (),
        on_error: Callable[[BaseException], object] | None = None,
    ) -> KeptThread:
        thread = cls(target, name=name, args=args, on_error=on_error)
        thread.start()
        return thread
