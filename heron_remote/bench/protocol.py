"""What a benchmark sender sends and how a receiver turns it into figures.

Every payload starts with a 16-byte header: the sender's ``time.perf_counter_ns()``
when it made the payload, a sequence number and a phase. Sender and receiver run
on one machine (network namespaces share its clock), so the receiver's clock minus
the stamp is the one-way latency.

A run has these phases, decided by the sender's clock, as raw forwards carry one
direction only:

1. THROUGHPUT: as fast as the path takes, for warmup + seconds + a margin (and at least
   ``min_messages``). The receiver counts what arrives in [first + warmup, first + warmup
   + seconds], extended until it has ``min_messages``.
2. A pause that lets the queues drain: a time estimated from the backlog, or, where the
   path has a way back (a source's parameters), DRAIN markers until the receiver, having
   seen one come out of the queues, says so.
3. LATENCY: messages paced at a quarter of the rate the sender achieved, so the latency
   is the path's, not a queue's. The receiver skips those that still arrive bunched.
4. END: one message that tells the receiver to stop.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..wire import ZERO_COPY_MIN

__all__ = ["DRAIN", "END", "HEADER", "LATENCY", "THROUGHPUT", "Plan", "Result", "measure", "run_plan"]

HEADER = struct.Struct("<QII")  # stamp ns, sequence, phase: 16 bytes
THROUGHPUT, LATENCY, END, DRAIN = 1, 2, 3, 4
#: The latency phase uses this share of the throughput the sender reached.
LATENCY_LOAD = 0.25


@dataclass(frozen=True, kw_only=True)
class Plan:
    """How long and how hard a sender sends. JSON-friendly: it travels as worker parameters."""

    size: int
    warmup_s: float = 0.5
    seconds: float = 3.0
    margin_s: float = 0.5
    #: Messages the throughput phase sends at least (slow paths and big frames).
    min_messages: int = 5
    latency_samples: int = 2000
    latency_s: float = 1.5
    min_interval_s: float = 0.001
    #: Bytes that can sit in queues between sender and receiver; the sender waits for them to drain.
    backlog_bytes: int = 16 * 1024 * 1024
    #: What each message costs in those queues besides its payload (frames, framing).
    overhead_bytes: int = 64
    max_drain_s: float = 3.0
    #: Seconds without a message after which the receiver gives up.
    idle_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.size < HEADER.size:
            raise ValueError(f"frame size must be at least {HEADER.size} bytes (the header), got {self.size}")

    @property
    def deadline_s(self) -> float:
        """An upper bound for a whole run, from the first message on (slow links stretch the phases)."""
        phases = self.warmup_s + self.seconds + self.margin_s + self.max_drain_s + self.latency_s
        return phases + 3 * self.idle_timeout_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def payload_factory(size: int, *, array: bool = False) -> Callable[[int, int], Any]:
    """A function (phase, seq) -> a fresh payload of ``size`` bytes with its header stamped last."""
    if size < ZERO_COPY_MIN:  # the whole path copies these too
        pad = bytes(size - HEADER.size)
        if array:
            return lambda phase, seq: np.frombuffer(HEADER.pack(time.perf_counter_ns(), seq, phase) + pad, np.uint8)
        return lambda phase, seq: HEADER.pack(time.perf_counter_ns(), seq, phase) + pad

    def make(phase: int, seq: int) -> np.ndarray:
        # A fresh buffer each time: it is sent without a copy, so it must not be reused.
        buf = np.empty(size, np.uint8)
        HEADER.pack_into(buf.data, 0, time.perf_counter_ns(), seq, phase)
        return buf

    return make


def run_plan(
    send: Callable[[Any], None],
    plan: Plan,
    *,
    array: bool = False,
    drained: Callable[[float], bool] | None = None,
) -> dict[str, float]:
    """Send the phases through ``send``; returns what the sender saw (for logs).

    ``drained(timeout)``, where the path has a way back, returns True once the receiver
    has seen a DRAIN marker; without it the sender waits an estimate of the drain time.
    """
    make = payload_factory(plan.size, array=array)
    seq = 0
    send(make(THROUGHPUT, seq))  # blocks until the receiver is connected
    t0 = time.perf_counter()
    end = t0 + plan.warmup_s + plan.seconds + plan.margin_s
    # Enough that min_messages reach the receiver's window besides those still queued (big frames).
    at_least = plan.min_messages + min(50, plan.backlog_bytes // (plan.size + plan.overhead_bytes))
    while True:
        seq += 1
        send(make(THROUGHPUT, seq))
        if seq >= at_least and time.perf_counter() >= end:
            break
    elapsed = time.perf_counter() - t0
    rate = seq / elapsed if elapsed > 0 else 1.0
    estimate = plan.backlog_bytes / (rate * (plan.size + plan.overhead_bytes)) + 0.1
    drain_start = time.perf_counter()
    if drained is None:
        time.sleep(min(plan.max_drain_s, estimate))
    else:
        drain_end = drain_start + plan.max_drain_s
        while time.perf_counter() < drain_end:
            send(make(DRAIN, seq))
            if drained(0.05):
                break
    drain = time.perf_counter() - drain_start
    interval = max(plan.min_interval_s, 1.0 / (rate * LATENCY_LOAD))
    count = max(3, min(plan.latency_samples, int(plan.latency_s / interval)))
    next_t = time.perf_counter()
    for _ in range(count):
        seq += 1
        send(make(LATENCY, seq))
        next_t += interval
        delay = next_t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    send(make(END, seq + 1))
    return {"sent_msg_per_s": rate, "drain_s": drain, "latency_interval_s": interval, "latency_count": count}


@dataclass
class Result:
    """The figures of one measurement (one path, one frame size)."""

    name: str
    size: int
    ok: bool = False
    error: str | None = None
    messages: int = 0
    seconds: float = 0.0
    msg_per_s: float = 0.0
    mb_per_s: float = 0.0
    latency_p50_us: float | None = None
    latency_p99_us: float | None = None
    latency_samples: int = 0
    loaded_latency_p50_us: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(name: str, frames: Iterator[Any], plan: Plan, on_drain: Callable[[], None] | None = None) -> Result:
    """Consume ``frames`` (payload buffers) until the END message or the deadline; compute the figures.

    ``frames`` is expected to raise (or end) on its own after ``plan.idle_timeout_s`` without
    data. ``on_drain`` is called once, at the first DRAIN marker: the queues are empty.
    """
    result = Result(name, plan.size)
    clock = time.perf_counter_ns
    warmup_ns, window_ns = int(plan.warmup_s * 1e9), int(plan.seconds * 1e9)
    win_start = win_end = 0
    first = last = None
    counted = 0
    loaded: list[int] = []
    latencies: list[tuple[int, int]] = []  # (receipt, stamp)
    deadline = None
    drain_seen = False
    for payload in frames:
        now = clock()
        stamp, _seq, phase = HEADER.unpack_from(payload, 0)
        if deadline is None:  # the first frame starts the clocks
            deadline = now + int(plan.deadline_s * 1e9)
            win_start, win_end = now + warmup_ns, now + warmup_ns + window_ns
            size = memoryview(payload).nbytes
            if size != plan.size:
                raise ValueError(f"{name}: expected {plan.size}-byte payloads, got {size}")
        if phase == THROUGHPUT:
            if win_start <= now and (now < win_end or counted < plan.min_messages) and not drain_seen:
                if first is None:
                    first = now
                last = now
                counted += 1
                loaded.append(now - stamp)
        elif phase == LATENCY:
            latencies.append((now, stamp))
        elif phase == DRAIN:
            if on_drain is not None and not drain_seen:
                on_drain()
            drain_seen = True
        elif phase == END:
            break
        if now > deadline:
            result.notes["stopped"] = "deadline"
            break
    if first is None or last is None or counted < 2 or last == first:
        result.error = f"too few messages in the measuring window ({counted})"
        return result
    result.messages = counted
    result.seconds = (last - first) / 1e9
    result.msg_per_s = (counted - 1) / result.seconds
    result.mb_per_s = result.msg_per_s * plan.size / 1e6
    result.loaded_latency_p50_us = float(np.percentile(loaded, 50)) / 1e3
    paced = _paced(latencies)
    result.notes["latency_skipped"] = len(latencies) - len(paced)
    result.notes["drain_marker_seen"] = drain_seen
    if paced:
        result.latency_p50_us = float(np.percentile(paced, 50)) / 1e3
        result.latency_p99_us = float(np.percentile(paced, 99)) / 1e3
        result.latency_samples = len(paced)
    result.ok = True
    return result


def _paced(samples: list[tuple[int, int]], run: int = 5) -> list[int]:
    """Latencies (ns) from the first sample that starts ``run`` paced arrivals on.

    Sent ``interval`` apart, messages arrive about ``interval`` apart on an empty path but
    back to back while a queue ahead of them drains (or after a stall, such as Nagle's
    algorithm waiting for a delayed ACK). Stalls later on are the path's own and are kept.
    """
    paced = [
        samples[k][0] - samples[k - 1][0] >= (samples[k][1] - samples[k - 1][1]) / 2 for k in range(1, len(samples))
    ]
    for k in range(len(paced)):
        if all(paced[k : k + run]):
            return [now - stamp for now, stamp in samples[k + 1 :]]
    return []
