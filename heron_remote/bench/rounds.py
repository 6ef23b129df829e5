"""Rounds: every measurement run several times, interleaved, and the median round kept.

A shared machine's speed drifts by more than the gaps the targets judge (raw pyzmq at 1 MiB
measured 4,589 MB/s and, hours later, 2,817 on the same machine). A ratio of two measurements
taken minutes apart then says more about the drift than about the paths. Rounds run the whole
list once, then again: the two sides of a ratio are measured seconds apart in every round, and
the round kept for each is the median of its own, by MB/s.
"""

from __future__ import annotations

from collections.abc import Sequence

from .protocol import Result

__all__ = ["median_round"]


def median_round(runs: Sequence[Result]) -> Result:
    """The round of median MB/s (the lower of the two middle ones for an even count), every
    round's figures in its notes; a round that failed makes the whole measurement a failure."""
    if not runs:
        raise ValueError("no round to choose from")
    failed = [(i, r) for i, r in enumerate(runs, 1) if not r.ok]
    if failed:
        first, result = failed[0]
        if len(runs) > 1:
            result.error = f"round {first} of {len(runs)}: {result.error}"
        return result
    if len(runs) == 1:
        return runs[0]
    ordered = sorted(runs, key=lambda r: r.mb_per_s)
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.notes["rounds"] = {
        "kept": runs.index(chosen) + 1,
        "mb_per_s": [round(r.mb_per_s, 1) for r in runs],
        "msg_per_s": [round(r.msg_per_s) for r in runs],
    }
    return chosen
