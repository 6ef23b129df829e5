"""Benchmarks: the source path against raw pyzmq, sshtunnel, OpenSSH and pyzmq's paramiko tunnel.

``heron_remote.bench.main(["--quick", "--out", "dir"])`` runs them and writes
``bench.json`` and ``bench.png``; ``python -m heron_remote.bench --help`` lists the options.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the bench with command-line arguments ``argv``; returns the exit status."""
    # Imported here so that the sender and worker processes, which import this package, stay light.
    from .run import main as run_main

    return run_main(argv)
