"""Logging context: every record about a node says which node and which host."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class NodeLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes messages with ``[node@host]`` and puts both in the record's extras."""

    def __init__(self, logger: logging.Logger, *, node: str, host: str = "local") -> None:
        super().__init__(logger, {"node": node, "host": host})
        self._prefix = f"[{node}@{host}] "

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs.setdefault("extra", {}).update(self.extra)
        return f"{self._prefix}{msg}", kwargs
