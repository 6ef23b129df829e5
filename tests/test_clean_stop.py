"""A clean stop says nothing alarming: no paramiko errors, no ERROR lines, no tracebacks."""

from __future__ import annotations

import re
import time

import pytest

from heron_remote import Settings, Source
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import WORKERS, ComScript, remote_alive, wait_until

pytestmark = pytest.mark.multihost
Hosts = AcqHosts | ExternalHosts
_ALARMING = re.compile(r"open FAILED|^ERROR|^CRITICAL|Traceback", re.M)


def test_a_remote_com_script_stopped_by_sigterm_prints_nothing_alarming(remote_settings: Settings, acq: Hosts) -> None:
    # Before the fix each stop printed 6-11 "Secsh channel N open FAILED: Connection refused" ERROR
    # lines: the com's sockets reconnected, through the tunnels, to the worker that had just ended.
    for _ in range(2):
        com = ComScript(remote_settings, host="acq1")
        pid = com.worker_pid
        time.sleep(1.0)  # streaming, pulsing, several reconnect intervals long
        code, out, err = com.stop()
        assert code == 0 and "COM EXIT" in out, err
        assert "worker stopped (status 0)" in err  # the stop really ran, and logged at INFO
        assert not _ALARMING.search(err), err
        wait_until(lambda pid=pid: not remote_alive(acq, "acq1", pid), 5, "the remote worker to be gone")


def test_a_remote_worker_that_finishes_ends_its_stream_quietly(
    remote_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker whose work function returns ends cleanly: its com refuses to reconnect to it."""
    caplog.set_level("DEBUG")
    with Source(str(WORKERS / "finite_worker.py"), settings=remote_settings, host="acq1") as src:
        assert len(list(src.frames(timeout=15))) == 20
    errors = [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not errors, errors
