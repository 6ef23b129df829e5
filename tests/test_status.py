"""What the status shows is true: rates from the first call, `stopped` after a stop, `unknown` when nobody
reports, then gone; stalls and restarts shown as such."""

from __future__ import annotations

import signal
import time

import pytest

from heron_remote import Settings, Source
from heron_remote.com.stats import RateMeter
from heron_remote.status import SourceStatus, StatusBoard, render

from .helpers import CAMERA, ComScript, wait_until

# Short board times, so that the tests see a row go unknown and disappear.
UNKNOWN_AFTER, FORGET_AFTER = 1.5, 4.0


def _board(settings: Settings) -> StatusBoard:
    port = settings.ports.proof_of_life_publish
    return StatusBoard(port=port, unknown_after=UNKNOWN_AFTER, forget_after=FORGET_AFTER)


def _state(board: StatusBoard, node: str) -> str | None:
    row = board.poll(0.1).get(node)
    return None if row is None else row.state


def test_the_rate_meter_counts_from_the_first_frame_then_over_a_sliding_window() -> None:
    meter = RateMeter(window=2.0, every=0.25)
    meter.sample(0, 0, now=10.0)  # the com runs, no frame yet: nothing to count from
    assert meter.rates(0, 0, now=10.1) == (0.0, 0.0)
    meter.sample(1, 100, now=11.0)  # the first frame
    assert meter.rates(31, 3100, now=11.5) == (60.0, 6000.0)  # since the first frame, not since 10.0
    for k in range(1, 20):  # 60 frames/s for 5 s, then 10 frames/s
        t = 11.0 + k * 0.25
        meter.sample(1 + 15 * k, 100 * (1 + 15 * k), now=t)
    then, n = 15.75, 1 + 15 * 19
    for k in range(1, 13):
        meter.sample(n + int(2.5 * k), 0, now=then + k * 0.25)
    assert meter.rates(n + 30, 0, now=then + 3.0)[0] == pytest.approx(10.0, rel=0.15)  # the old rate is gone


def test_source_status_reports_the_rate_on_its_first_call(settings: Settings) -> None:
    with Source(CAMERA, parameters={"shape": [8, 8], "fps": 60}, settings=settings) as cam:
        next(cam.frames(timeout=10))
        time.sleep(0.5)
        first = cam.status()
    print(f"first Source.status() 0.5 s into a 60 frames/s stream: {first.frames_per_s} frames/s")
    assert first.state == "running"
    assert 40 < first.frames_per_s < 80
    assert first.mb_per_s > 0


def test_a_com_stopped_cleanly_shows_stopped_until_it_is_forgotten(settings: Settings) -> None:
    with _board(settings) as board:
        com = ComScript(settings)
        wait_until(lambda: _state(board, "echo") == "running", 10, "the com to report running")
        code, _, err = com.stop(signal.SIGTERM)
        assert code == 0, err
        stopped_at = time.monotonic()
        wait_until(lambda: _state(board, "echo") == "stopped", 5, "the com's last word: stopped")
        row = board.sources["echo"]
        assert row.frames_per_s == 0 or "-" in render(board.sources).splitlines()[1]
        time.sleep(max(0.0, stopped_at + UNKNOWN_AFTER + 0.5 - time.monotonic()))
        assert _state(board, "echo") == "stopped"  # a last word stays as it is; no "unknown"
        wait_until(lambda: "echo" not in board.poll(0.1), FORGET_AFTER + 2, "the stopped row to be dropped")
    print(f"stopped row dropped {time.monotonic() - stopped_at:.1f} s after the stop (forget_after {FORGET_AFTER})")


def test_a_killed_com_goes_unknown_after_the_stated_time_then_disappears(settings: Settings) -> None:
    with _board(settings) as board:
        com = ComScript(settings)
        wait_until(lambda: _state(board, "echo") == "running", 10, "the com to report running")
        com.proc.kill()  # no last word
        com.proc.wait(5)
        killed = time.monotonic()
        wait_until(lambda: _state(board, "echo") == "unknown", UNKNOWN_AFTER + 3, "the row to go unknown")
        went_unknown = time.monotonic() - killed
        screen = render(board.sources)
        wait_until(lambda: "echo" not in board.poll(0.1), FORGET_AFTER + 2, "the unknown row to be dropped")
        gone = time.monotonic() - killed
    print(screen)
    print(f"SIGKILLed com: unknown after {went_unknown:.1f} s, dropped after {gone:.1f} s")
    # The last report came up to a status interval (1 s) before the kill.
    assert went_unknown > UNKNOWN_AFTER - 1.1 and gone > FORGET_AFTER - 1.1
    assert "unknown" in screen and "no report for" in screen


def _row(node: str, state: str, **more: object) -> SourceStatus:
    values: dict = dict(
        node=node,
        host="acq1",
        worker_pid=4711,
        state=state,
        frames_per_s=50.0,
        mb_per_s=0.2,
        received=900,
        gaps=0,
        restarts=0,
        heartbeat_rtt_ms=1.1,
        last_error=None,
        time=0.0,
    )
    values.update(more)
    return SourceStatus(**values)


def test_the_table_says_each_state_in_words() -> None:
    screen = render(
        {
            "cam-left": _row("cam-left", "running", transport="direct"),
            "cam-right": _row("cam-right", "stalled", stalled_s=2.5, frames_per_s=0.0),
            "cam-top": _row("cam-top", "stopped"),
            "cam-old": _row("cam-old", "unknown", silent_s=7.0),
            "daq": _row("daq", "running", restarts=1, down_s=14.8, gaps=1, transport="tunnel (direct unreachable)"),
        }
    )
    print(screen)
    lines = {line.split()[0]: line for line in screen.splitlines()[1:]}
    assert "stalled 2.5s" in lines["cam-right"]
    assert lines["cam-top"].split()[4:7] == ["stopped", "-", "-"]  # no rates for a source that stopped
    assert lines["cam-left"].split()[2] == "direct" and lines["daq"].split()[2] == "tunnel*"  # a direct fall-back
    assert "unknown" in lines["cam-old"] and "no report for 7 s" in lines["cam-old"]
    assert "1 (14.8s)" in lines["daq"]
    assert "?" not in screen


def test_an_older_com_s_status_without_the_new_fields_is_still_read() -> None:
    row = _row("cam", "running")
    raw = row.to_json().replace(b', "stalled_s": null, "down_s": 0.0, "silent_s": null, "transport": ""', b"")
    assert b"stalled_s" not in raw and b"transport" not in raw
    assert SourceStatus.from_json(raw) == row
