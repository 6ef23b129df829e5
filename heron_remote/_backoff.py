"""Waiting longer after each failure: reconnects, ssh master restarts, worker restarts."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Delays that start at ``first`` seconds and grow by ``factor`` up to ``maximum``."""

    first: float
    maximum: float
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (from 1)."""
        return min(self.first * self.factor ** max(0, attempt - 1), self.maximum)
