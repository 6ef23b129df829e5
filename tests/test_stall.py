"""A stall shorter than the death window is logged (PC, how long; the total when it resumes) and shown."""

from __future__ import annotations

import logging
import re
import threading

import pytest

from heron_remote import Settings, Source
from heron_remote.status import StatusBoard, render
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import CAMERA, NO_CONTROL, wait_until

pytestmark = pytest.mark.multihost
Hosts = AcqHosts | ExternalHosts
CUT_S = 3.0


def _link(acq: Hosts, state: str) -> None:
    acq.set_link(next(h for h in acq.hosts if h.name == "acq1"), up=state == "up")


def test_a_short_link_cut_is_logged_as_a_stall_and_shown_in_the_status(
    acq: Hosts, remote_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    if not acq.can_control:
        pytest.skip(NO_CONTROL)
    caplog.set_level(logging.INFO, logger="heron_remote")
    # Stalled after 3 beats (1.5 s); the link counts as dropped after 1.5 s; a 6 s death window.
    settings = remote_settings.replace(heartbeat_rate=0.5, heartbeats_to_death=12, link_timeout=1.5)
    params = {"shape": [4, 4], "fps": 100}
    port = settings.ports.proof_of_life_publish
    with (
        StatusBoard(port=port) as board,
        Source(CAMERA, name="cam-cut", parameters=params, settings=settings, host="acq1") as cam,
    ):
        with Source(CAMERA, name="cam-done", parameters=params, settings=settings) as done:
            next(done.frames(timeout=10))
        frames = cam.frames(timeout=20)
        for _ in range(20):
            next(frames)
        pid = cam.stats.worker_pid
        _link(acq, "down")
        up = threading.Timer(CUT_S, _link, args=(acq, "up"))
        up.start()
        try:
            wait_until(lambda: cam.status().state == "stalled", CUT_S, "the stall to be shown by Source.status()")
            stalled = cam.status()
            wait_until(
                lambda: board.poll(0.2).get("cam-cut", stalled).state == "stalled", CUT_S, "the board to show it"
            )
            screen = render(board.sources)
            for _ in range(50):  # the stream resumes, with the same worker
                next(frames)
        finally:
            up.join()
            _link(acq, "up")
        # The com marks the stream running once its relay hands back (within one 20 ms turn), which
        # may be just after the subscriber has read the 50 frames of the backlog.
        wait_until(lambda: cam.status().state == "running", 1.0, "the status to say running again")
        after = cam.status()
        assert cam.stats.worker_pid == pid and after.state == "running" and after.stalled_s is None
        assert cam.stats.stalls == 1
    print(screen)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    said = "\n".join(warnings)
    print(said)
    began = re.search(r"stream stalled: nothing from the worker on acq1 for ([\d.]+) s", said)
    ended = re.search(r"stream resumed: the worker on acq1 was silent for ([\d.]+) s in all", said)
    assert began and ended, said
    assert 1.5 <= float(began[1]) < CUT_S
    assert CUT_S - 0.5 < float(ended[1]) < CUT_S + 3  # the cut, and the reconnect after it
    assert stalled.stalled_s is not None and stalled.stalled_s >= 1.5
    assert re.search(r"cam-cut .* stalled [\d.]+s ", screen) and re.search(r"cam-done .* stopped ", screen)
