"""Heron's ``VisualisationDPG`` on heron_remote: it never fails or slows the worker.

Headless and without dearpygui it does nothing after one log line; its import is cheap; bad
data never raises. The worker's side (sender thread, pipe, history, images, closing) runs
against a fake viewer process; the real viewer (dearpygui) runs under Xvfb and against a stale
DISPLAY. Those need, in CI, ``apt-get install -y xvfb`` and ``pip install dearpygui``: without
them they fail, saying so (never skipped).
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heron_remote.heron.gui import _shaping, _viewer, _viewer_link
from heron_remote.heron.gui import visualisation_dpg as vis_module
from heron_remote.heron.gui.visualisation_dpg import VISUALISATION_TYPES, VisualisationDPG

from .helpers import wait_until

SHOWN = ("Image", "Value", "Single Pane Plot", "Multi Pane Plot")

BAD_DATA: list[Any] = [
    None,
    "text",
    b"\x00\x01",
    object(),
    {"a": 1},
    [],
    [[1, 2], [3]],  # ragged
    np.array([]),
    np.zeros((2, 3, 4, 5)),
    np.array(["a", "b"]),
    np.array([1 + 2j]),
    np.array([object()], dtype=object),
    np.zeros((0, 4, 3), np.uint8),
    np.zeros((4, 4, 2), np.uint8),
    float("nan"),
    np.array([np.inf, -np.inf, np.nan]),
]


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __len__(self) -> int:
        raise RuntimeError("no len")


class Untruthy:
    def __bool__(self) -> bool:
        raise ValueError("ambiguous")


def our_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == vis_module.__name__]


@pytest.fixture
def caplog_all(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=vis_module.__name__)
    return caplog


@pytest.fixture
def no_viewer(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every viewer thread that would start (none should)."""
    started: list[object] = []
    monkeypatch.setattr(_viewer_link._Viewer, "start", lambda self: started.append(self))
    return started


def run_a_worker(vis: VisualisationDPG, data: list[Any]) -> None:
    """What a worker does: set visualisation_on every iteration, visualise, toggle, end twice."""
    vis.visualise(data[0])  # off: nothing
    for on in (True, True, False, True):
        vis.visualisation_on = on
        for item in data:
            vis.visualise(item)
            assert vis.data is item
            assert vis.visualiser_showing is False
    vis.end_of_life()
    vis.end_of_life()
    vis.kill()
    vis.visualise(data[-1])
    assert vis.visualiser_showing is False


def good_data(kind: str) -> list[Any]:
    if kind == "Image":
        return [np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64), np.uint8)]
    if kind == "Value":
        return [np.array([1.5]), 7, "state"]
    return [np.array([1.0, 2.0]), 3.0, np.random.rand(2, 30)]


# ---------------------------------------------------------------- no display, no dearpygui


@pytest.mark.parametrize("kind", SHOWN)
def test_headless_does_nothing_after_one_line_saying_why(
    kind: str, monkeypatch: pytest.MonkeyPatch, caplog_all: pytest.LogCaptureFixture, no_viewer: list[object]
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    threads = threading.active_count()
    vis = VisualisationDPG("Camera", 3, kind, _buffer=5)

    run_a_worker(vis, good_data(kind) + BAD_DATA)

    records = our_records(caplog_all)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.INFO
    assert "no display" in records[0].getMessage() and "Camera 3" in records[0].getMessage()
    assert no_viewer == [] and threading.active_count() == threads


def test_headless_calls_are_cheap(monkeypatch: pytest.MonkeyPatch, no_viewer: list[object]) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    vis = VisualisationDPG("Camera", 0, "Image")
    vis.visualisation_on = True
    frame = np.zeros((480, 640, 3), np.uint8)
    began = time.perf_counter()
    for _ in range(5000):
        vis.visualise(frame)
    assert time.perf_counter() - began < 2.0  # about 1 µs a call; generous for a loaded CI machine


def test_histogram_and_unknown_types_show_nothing(
    monkeypatch: pytest.MonkeyPatch, caplog_all: pytest.LogCaptureFixture, no_viewer: list[object]
) -> None:
    monkeypatch.setenv("DISPLAY", ":12345")
    histogram = VisualisationDPG("Hist", 0, "Histogram")
    run_a_worker(histogram, good_data("Value"))
    assert our_records(caplog_all) == []

    odd = VisualisationDPG("Odd", 0, "3D Surface")
    run_a_worker(odd, good_data("Value"))
    records = our_records(caplog_all)
    assert len(records) == 1 and "unknown visualisation type '3D Surface'" in records[0].getMessage()
    assert no_viewer == []


@pytest.mark.parametrize("kind", SHOWN)
def test_without_dearpygui_does_nothing_after_one_line_naming_it(
    kind: str, monkeypatch: pytest.MonkeyPatch, caplog_all: pytest.LogCaptureFixture, no_viewer: list[object]
) -> None:
    monkeypatch.setenv("DISPLAY", ":12345")
    monkeypatch.setitem(sys.modules, "dearpygui", None)  # import dearpygui now raises ImportError
    monkeypatch.setitem(sys.modules, "dearpygui.dearpygui", None)
    threads = threading.active_count()
    vis = VisualisationDPG("Lever", 1, kind)

    run_a_worker(vis, good_data(kind) + BAD_DATA)

    records = our_records(caplog_all)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING
    assert "dearpygui" in records[0].getMessage() and "Lever 1" in records[0].getMessage()
    assert no_viewer == [] and threading.active_count() == threads


def test_a_display_is_display_or_wayland_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert vis_module._no_display("x") is not None
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert vis_module._no_display("x") is None
    monkeypatch.delenv("WAYLAND_DISPLAY")
    monkeypatch.setenv("DISPLAY", ":0")
    assert vis_module._no_display("x") is None


def test_attributes_are_herons() -> None:
    vis = VisualisationDPG("Cam", 2, "Single Pane Plot", 20, (320, 240), None, "Volts", "Trace")
    assert (vis.visualisation_on, vis.visualisation_type, vis.buffer, vis.image_size) == (
        False,
        "Single Pane Plot",
        20,
        (320, 240),
    )
    assert (vis.x_axis_label, vis.y_axis_label, vis.plot_title, vis.window_name) == (
        "Data index",
        "Volts",
        "Trace",
        "Cam 2",
    )
    assert vis.visualiser_showing is False and vis.data is None
    vis.visualiser_showing = True  # a plain attribute in Heron: setting it must not fail a node
    assert vis.visualiser_showing is False
    assert set(VISUALISATION_TYPES) == {"Image", "Value", "Single Pane Plot", "Multi Pane Plot", "Histogram"}
    default = VisualisationDPG("Cam", 2)
    assert (default.visualisation_type, default.buffer, default.y_axis_label, default.plot_title) == (
        "Image",
        10,
        None,
        None,
    )


def test_import_is_cheap_and_starts_nothing() -> None:
    code = textwrap.dedent(
        """
        import json, sys, threading
        import heron_remote.heron.gui.visualisation_dpg as m
        vis = m.VisualisationDPG("Cam", 0, "Value")
        print(json.dumps({
            "threads": threading.active_count(),
            "modules": sorted(n for n in sys.modules if n.split(".")[0] in ("dearpygui", "zmq")),
        }))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"threads": 1, "modules": []}


# ---------------------------------------------------------------- the worker's side, against a fake viewer

FAKE_VIEWER = """
import json, os, sys, time
from heron_remote.heron.gui._viewer import _Inbox, _stdin

out, mode, spec = sys.argv[1], sys.argv[2], sys.argv[3]

def note(record):
    with open(out, "a") as f:
        f.write(json.dumps(record) + "\\n")

note({"event": "started", "spec": json.loads(spec), "pid": os.getpid()})
if mode == "crash":
    sys.stderr.write("boom: cannot open the window\\n")
    sys.exit(7)
if mode == "hang":  # reads nothing
    time.sleep(60)
inbox = _Inbox(_stdin())
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    message = inbox.take()
    if message is not None:
        if isinstance(message, str):
            note({"event": "update", "text": message})
        else:
            note({"event": "update", "dtype": message.dtype.str, "shape": list(message.shape),
                  "data": message.tolist()})
        if mode == "close":  # the user closes the window
            sys.exit(0)
    elif inbox.ended.is_set():
        break
    time.sleep(0.01)
note({"event": "ended"})
"""


class FakeViewers:
    """Viewer processes that note what they get in a JSON-lines file of their own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.script = folder / "fake_viewer.py"
        self.script.write_text(FAKE_VIEWER)
        self.mode = "normal"
        self.count = 0

    def command(self, spec: dict[str, Any]) -> list[str]:
        self.count += 1
        out = self.folder / f"viewer{self.count}.jsonl"
        return [sys.executable, str(self.script), str(out), self.mode, json.dumps(spec)]

    def records(self, n: int | None = None) -> list[dict[str, Any]]:
        path = self.folder / f"viewer{n or self.count}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]

    def updates(self, n: int | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records(n) if r["event"] == "update"]

    def ended(self, n: int | None = None) -> bool:
        return any(r["event"] == "ended" for r in self.records(n))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeViewers:
    viewers = FakeViewers(tmp_path)
    monkeypatch.setenv("DISPLAY", ":12345")
    monkeypatch.setattr(vis_module, "_no_dearpygui", lambda name: None)
    monkeypatch.setattr(_viewer_link, "_viewer_command", viewers.command)
    monkeypatch.setattr(vis_module, "_REOPEN_GAP", 0.0)
    return viewers


@pytest.fixture
def ending() -> Iterator[list[VisualisationDPG]]:
    """Objects to end after the test, and a check that their threads are gone."""
    threads = threading.active_count()
    made: list[VisualisationDPG] = []
    yield made
    for vis in made:
        vis.end_of_life()
    wait_until(lambda: threading.active_count() <= threads, 10, "the visualisation threads to end")


def feed_until(vis: VisualisationDPG, data: Any, condition: Any, what: str, timeout: float = 20) -> Any:
    """Visualise ``data`` every 20 ms until ``condition()`` holds, as a worker's loop would."""

    def step() -> Any:
        vis.visualise(data)
        return condition()

    return wait_until(step, timeout, what)


def test_value_shows_the_last_buffer_values(fake: FakeViewers, ending: list[VisualisationDPG]) -> None:
    vis = VisualisationDPG("Val", 1, "Value", _buffer=3)
    ending.append(vis)
    vis.visualisation_on = True
    for item in ([1.5], np.array([2]), {"x": 1}, "fourth"):
        vis.visualise(item)
    assert vis.visualiser_showing
    wait_until(lambda: fake.updates() and fake.updates()[-1]["text"].endswith("fourth"), 20, "the value text")
    assert fake.updates()[-1]["text"] == "2\n{'x': 1}\nfourth"
    spec = fake.records()[0]["spec"]
    assert spec["kind"] == "Value" and spec["title"] == "Val 1"

    vis.end_of_life()
    assert fake.ended() and not vis.visualiser_showing


def test_plots_draw_lines_as_heron_does(fake: FakeViewers, ending: list[VisualisationDPG]) -> None:
    vis = VisualisationDPG("Plot", 1, "Single Pane Plot", _buffer=4, _x_axis_label="t", _y_axis_base_label="V")
    ending.append(vis)
    vis.visualisation_on = True
    vis.visualise(np.arange(6.0))  # a 1-D array: one line of its last _buffer values
    wait_until(lambda: fake.updates() and fake.updates()[-1]["data"] == [[2, 3, 4, 5]], 20, "the line")
    assert fake.updates()[-1]["shape"] == [1, 4]
    spec = fake.records()[0]["spec"]
    assert (spec["x_label"], spec["y_label"], spec["plot_title"]) == ("t", "V", "Plot")

    vis.visualise(np.arange(20.0).reshape(2, 10))  # a line per row
    wait_until(lambda: fake.updates()[-1]["shape"] == [2, 4], 20, "the rows")
    wait_until(lambda: fake.updates()[-1]["data"] == [[6, 7, 8, 9], [16, 17, 18, 19]], 20, "the rows' tails")

    for value in (7.0, 8.0):  # numbers: one more value of a line each
        vis.visualise(value)
    wait_until(lambda: fake.updates()[-1]["data"] == [[7.0, 8.0]], 20, "the numbers' line")


def test_multi_pane_and_all_history(fake: FakeViewers, ending: list[VisualisationDPG]) -> None:
    vis = VisualisationDPG("Multi", 2, "Multi Pane Plot", _buffer=-1)
    ending.append(vis)
    vis.visualisation_on = True
    for i in range(50):
        vis.visualise(float(i))
    wait_until(lambda: fake.updates() and fake.updates()[-1]["shape"] == [1, 50], 20, "all 50 values")
    assert fake.updates()[-1]["data"][0][-1] == 49
    vis.visualise(np.arange(150.0).reshape(3, 50))  # a pane per row, all of each
    wait_until(lambda: fake.updates()[-1]["shape"] == [3, 50], 20, "three panes")
    assert fake.updates()[-1]["data"][2][-1] == 149


def test_images_become_rgb_uint8_and_are_thinned(fake: FakeViewers, ending: list[VisualisationDPG]) -> None:
    vis = VisualisationDPG("Cam", 0, "Image", _image_size=(32, 24))
    ending.append(vis)
    vis.visualisation_on = True
    bgr = np.zeros((96, 128, 3), np.uint8)
    bgr[..., 0] = 10  # blue
    bgr[..., 2] = 200  # red
    feed_until(vis, bgr, lambda: fake.updates(), "an image")
    update = fake.updates()[-1]
    assert update["dtype"] == "|u1" and update["shape"] == [24, 32, 3]
    assert update["data"][0][0] == [200, 0, 10]
    assert fake.records()[0]["spec"]["image_size"] == [32, 24]


def test_image_conversions() -> None:
    limit = (1024, 1024)
    gray16 = np.full((4, 5), 0x1234, np.uint16)
    assert _shaping._image_for_viewer(gray16, limit).tolist() == np.full((4, 5), 0x12).tolist()
    floats = np.full((2, 2, 3), 0.5)
    floats[0, 0] = [2.0, np.nan, -1]
    assert _shaping._image_for_viewer(floats, limit)[0, 0].tolist() == [0, 0, 255]
    assert _shaping._image_for_viewer(np.ones((3, 3, 1), bool), limit).tolist() == np.full((3, 3), 255).tolist()
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., :] = [1, 2, 3, 4]
    assert _shaping._image_for_viewer(bgra, limit)[1, 1].tolist() == [3, 2, 1, 4]
    assert _shaping._image_for_viewer(np.zeros((3000, 100), np.uint8), limit).shape == (1000, 34)
    rgba = _viewer._rgba(np.array([[[255, 0, 51]]], np.uint8))
    assert rgba.dtype == np.float32 and np.allclose(rgba, [1, 0, 0.2, 1])
    assert np.allclose(_viewer._rgba(np.array([[0, 255]], np.uint8)), [0, 0, 0, 1, 1, 1, 1, 1])
    for bad in (np.zeros(5), np.zeros((2, 2, 5)), np.array([["a"]]), np.zeros((0, 3))):
        with pytest.raises(ValueError):
            _shaping._image_for_viewer(bad, limit)


@pytest.mark.parametrize("kind", SHOWN)
def test_bad_data_never_raises_and_is_said_once(
    kind: str, fake: FakeViewers, ending: list[VisualisationDPG], caplog_all: pytest.LogCaptureFixture
) -> None:
    vis = VisualisationDPG("Bad", 0, kind, _buffer=5, _image_size="big")
    ending.append(vis)
    vis.visualisation_on = Untruthy()
    vis.visualise(1.0)
    vis.visualisation_on = True
    for _ in range(3):
        for item in [*BAD_DATA, Unprintable()]:
            vis.visualise(item)
        time.sleep(0.05)  # let the sender shape them
    good = good_data(kind)[0]
    feed_until(vis, good, lambda: fake.updates(), "good data after the bad")
    assert vis.visualiser_showing

    messages = [r.getMessage() for r in our_records(caplog_all)]
    assert len(messages) == len(set(messages)), messages  # each problem said once
    assert all(r.levelno == logging.WARNING for r in our_records(caplog_all))
    assert any("ambiguous" in m for m in messages)  # visualisation_on that is neither true nor false
    if kind in ("Image", "Single Pane Plot", "Multi Pane Plot"):
        assert any("Bad 0" in m and "cannot" in m for m in messages), messages


def test_turning_off_closes_the_window_and_on_opens_another(fake: FakeViewers, ending: list[VisualisationDPG]) -> None:
    vis = VisualisationDPG("Toggle", 0, "Value")
    ending.append(vis)
    vis.visualisation_on = True
    feed_until(vis, 1, lambda: fake.updates(1), "the first window")
    vis.visualisation_on = False
    vis.visualise(2)
    assert not vis.visualiser_showing
    wait_until(lambda: fake.ended(1), 10, "the first window to close")
    vis.visualisation_on = True
    feed_until(vis, 3, lambda: fake.updates(2), "a second window")
    assert fake.count == 2 and vis.visualiser_showing


def test_a_window_the_user_closed_stays_closed_until_toggled(
    fake: FakeViewers, ending: list[VisualisationDPG], caplog_all: pytest.LogCaptureFixture
) -> None:
    fake.mode = "close"
    vis = VisualisationDPG("Closed", 0, "Value")
    ending.append(vis)
    vis.visualisation_on = True
    feed_until(vis, 1, lambda: not vis.visualiser_showing and fake.updates(1), "the user to close the window")
    for _ in range(20):
        vis.visualise(2)
        time.sleep(0.01)
    assert fake.count == 1
    wait_until(lambda: our_records(caplog_all), 10, "the closing to be said")
    [record] = our_records(caplog_all)
    assert record.levelno == logging.INFO and "was closed" in record.getMessage()

    fake.mode = "normal"
    vis.visualisation_on = False
    vis.visualise(3)
    vis.visualisation_on = True
    feed_until(vis, 4, lambda: fake.updates(2), "the window to open again")


def test_a_viewer_that_fails_is_said_once_with_its_own_words(
    fake: FakeViewers, ending: list[VisualisationDPG], caplog_all: pytest.LogCaptureFixture
) -> None:
    fake.mode = "crash"
    vis = VisualisationDPG("Crash", 0, "Image")
    ending.append(vis)
    vis.visualisation_on = True
    feed_until(vis, np.zeros((4, 4), np.uint8), lambda: our_records(caplog_all), "the failure to be said")
    for _ in range(3):  # turning it off and on tries again; the same failure is not said again
        vis.visualisation_on = False
        vis.visualise(np.zeros((4, 4), np.uint8))
        vis.visualisation_on = True
        feed_until(vis, np.zeros((4, 4), np.uint8), lambda: not vis.visualiser_showing, "the viewer to fail again")
    [record] = our_records(caplog_all)
    assert record.levelno == logging.WARNING
    assert "code 7" in record.getMessage() and "boom: cannot open the window" in record.getMessage()


def test_a_viewer_that_cannot_start_is_said_once(
    monkeypatch: pytest.MonkeyPatch, ending: list[VisualisationDPG], caplog_all: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DISPLAY", ":12345")
    monkeypatch.setattr(vis_module, "_no_dearpygui", lambda name: None)
    monkeypatch.setattr(_viewer_link, "_viewer_command", lambda spec: ["/nonexistent/python-for-the-viewer"])
    vis = VisualisationDPG("Nostart", 0, "Value")
    ending.append(vis)
    vis.visualisation_on = True
    feed_until(vis, 1, lambda: our_records(caplog_all), "the failure to be said")
    [record] = our_records(caplog_all)
    assert "cannot start the window of Nostart 0" in record.getMessage()


def test_end_of_life_closes_every_window_it_opened(fake: FakeViewers, ending: list[VisualisationDPG]) -> None:
    vis = VisualisationDPG("End", 0, "Single Pane Plot")
    vis.visualisation_on = True
    feed_until(vis, [1.0], lambda: fake.updates(1), "a window")
    vis.visualisation_on = False
    vis.visualise([2.0])
    vis.visualisation_on = True
    feed_until(vis, [3.0], lambda: fake.updates(2), "a second window")
    threads = threading.active_count()
    began = time.monotonic()
    vis.end_of_life()
    assert time.monotonic() - began < 5
    assert fake.ended(1) and fake.ended(2)
    assert threading.active_count() < threads and not vis.visualiser_showing
    vis.visualise([4.0])
    vis.end_of_life()
    assert fake.count == 2


def test_a_viewer_that_hangs_is_killed_at_end_of_life(
    fake: FakeViewers,
    ending: list[VisualisationDPG],
    monkeypatch: pytest.MonkeyPatch,
    caplog_all: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(vis_module, "_END_TIMEOUT", 0.5)
    fake.mode = "hang"
    vis = VisualisationDPG("Hang", 0, "Image")
    ending.append(vis)
    vis.visualisation_on = True
    vis.visualise(np.zeros((300, 300, 3), np.uint8))  # more than a pipe holds: the sender blocks writing it
    wait_until(lambda: fake.records(), 20, "the viewer to start")
    pid = fake.records()[0]["pid"]
    time.sleep(0.3)
    began = time.perf_counter()
    for _ in range(100):  # the worker is not held up by the blocked sender
        vis.visualise(np.zeros((300, 300, 3), np.uint8))
    assert time.perf_counter() - began < 0.5
    began = time.monotonic()
    vis.end_of_life()
    assert time.monotonic() - began < 3
    assert not vis.visualiser_showing
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert our_records(caplog_all) == []


# ---------------------------------------------------------------- the real viewer: dearpygui under Xvfb


@pytest.fixture(scope="module")
def dearpygui_installed() -> None:
    if vis_module._no_dearpygui("") is not None:
        pytest.fail("dearpygui is missing: pip install dearpygui")


@pytest.fixture(scope="module")
def xvfb_display(dearpygui_installed: None) -> Iterator[str]:
    """A virtual X display of this module's own (CI: apt-get install -y xvfb; pip install dearpygui)."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.fail("Xvfb is missing: apt-get install -y xvfb")
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        number = b""
        deadline = time.monotonic() + 20
        while not number.endswith(b"\n"):
            ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(read_end, 16) if ready else b""
            if not chunk:
                pytest.fail(f"Xvfb gave no display number (exit code {server.poll()})")
            number += chunk
        yield f":{int(number)}"
    finally:
        os.close(read_end)
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def read_png(path: str) -> np.ndarray:
    """The pixels of an 8-bit RGB(A), non-interlaced PNG (what dearpygui writes)."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, packed = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and not interlace
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            packed += body
    raw, stride = zlib.decompress(packed), width * channels
    rows = np.zeros((height, stride), np.int64)
    previous = np.zeros(stride, np.int64)
    for y in range(height):
        start = y * (stride + 1)
        kind_of_filter, row = raw[start], np.frombuffer(raw, np.uint8, stride, start + 1).astype(np.int64)
        if kind_of_filter in (0, 2):
            current = (row + previous * (kind_of_filter == 2)) & 255
        else:
            current = np.zeros(stride, np.int64)
            for x in range(stride):
                a = int(current[x - channels]) if x >= channels else 0
                b = int(previous[x])
                c = int(previous[x - channels]) if x >= channels else 0
                if kind_of_filter == 1:
                    guess = a
                elif kind_of_filter == 3:
                    guess = (a + b) // 2
                else:
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    guess = a if pa <= pb and pa <= pc else b if pb <= pc else c
                current[x] = (row[x] + guess) & 255
        rows[y] = previous = current
    return rows.reshape(height, width, channels).astype(np.uint8)


def trace_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.mark.parametrize("kind", SHOWN)
def test_a_real_window_under_xvfb(
    kind: str,
    xvfb_display: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    ending: list[VisualisationDPG],
    caplog_all: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DISPLAY", xvfb_display)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(vis_module, "_REOPEN_GAP", 0.0)
    vis = VisualisationDPG("Real", 1, kind, _buffer=8)
    ending.append(vis)
    red = np.zeros((48, 64, 3), np.uint8)
    red[..., 2] = 255  # BGR
    data = {"Image": red, "Value": np.array([42]), "Single Pane Plot": [1.0, 2.0, 3.0]}.get(kind, np.random.rand(3))
    expected = {"Image": [48, 64, 3], "Single Pane Plot": [1, 3], "Multi Pane Plot": [1, 3]}.get(kind)

    for opening in (1, 2):  # open, close, and open again: what crashes dearpygui in a thread
        trace = tmp_path / f"trace{opening}"
        monkeypatch.setenv(vis_module.TRACE_ENV, str(trace))
        vis.visualisation_on = True

        def framed(trace: Path = trace) -> bool:
            """A frame was drawn after the data came; for an image, one that shows it (the first may not yet)."""
            events = trace_of(trace)
            updates = [r for r in events if r["event"] == "update" and expected in (None, r["shape"])]
            frames = [r for r in events if r["event"] == "frame"]
            if not (updates and frames):
                return False
            if kind != "Image":
                return True
            pixels = read_png(frames[-1]["path"])
            return bool(np.all(pixels[..., :3] == [255, 0, 0], axis=-1).mean() > 0.2)  # its part of the window

        feed_until(vis, data, framed, f"a frame of the {kind} window showing the data", timeout=30)
        assert vis.visualiser_showing
        events = trace_of(trace)
        assert events[0] == {"event": "shown", "kind": kind}
        assert not [r for r in events if r["event"] == "error"], events
        vis.visualisation_on = False
        vis.visualise(data)
        assert not vis.visualiser_showing

    vis.end_of_life()
    assert [r.getMessage() for r in our_records(caplog_all)] == []  # no viewer failed


def test_a_stale_display_is_said_and_the_worker_goes_on(
    dearpygui_installed: None,
    monkeypatch: pytest.MonkeyPatch,
    ending: list[VisualisationDPG],
    caplog_all: pytest.LogCaptureFixture,
) -> None:
    """dearpygui aborts the process that cannot open its window: that is the viewer, not the worker."""
    number = next(n for n in range(377, 1000) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    monkeypatch.setenv("DISPLAY", f":{number}")
    vis = VisualisationDPG("Stale", 1, "Value")
    ending.append(vis)
    vis.visualisation_on = True
    feed_until(vis, 1, lambda: our_records(caplog_all), "the failure to be said")
    for i in range(20):
        vis.visualise(i)
    [record] = our_records(caplog_all)
    assert record.levelno == logging.WARNING and "Stale 1" in record.getMessage()
    assert f"open display :{number}" in record.getMessage()  # glfw's own words
    assert not vis.visualiser_showing
