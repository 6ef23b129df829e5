"""A helper process of the bench (a raw sender, Heron's forwarders): its first line read with a
deadline, its stderr kept for the error, and always ended on close."""

from __future__ import annotations

import os
import select
import subprocess
import tempfile
import time
from typing import IO, Self

from .._procs import stop_child

__all__ = ["START_TIMEOUT_S", "BenchChild"]

#: Seconds a helper process has to say its first line.
START_TIMEOUT_S = 20.0


class BenchChild:
    """``argv`` started with stdout piped and stderr kept; a context manager that always ends it."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL, env=env
        )

    def first_line(self, what: str) -> bytes:
        """The first line it writes, within START_TIMEOUT_S; RuntimeError naming ``what`` (with its stderr) else."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"{what}: {self.stderr_tail()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.2))
            if ready:
                line += os.read(self.proc.stdout.fileno(), 512)
        return line

    def stderr_tail(self, lines: int = 5) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(nothing on stderr)"

    def close(self) -> None:
        stop_child(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
