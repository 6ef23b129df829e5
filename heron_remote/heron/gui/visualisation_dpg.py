"""Heron's in-node visualisation, ``Heron.gui.visualisation_dpg.VisualisationDPG``, for heron_remote's workers.

A node uses it as in Heron::

    vis = VisualisationDPG(worker.node_name, worker.node_index, _visualisation_type="Value", _buffer=20)
    ...
    vis.visualisation_on = parameters[0]     # every loop iteration
    vis.visualise(data)
    ...
    vis.end_of_life()

It never fails or slows the worker:

* Without a display (on Linux and other Unixes: neither ``DISPLAY`` nor ``WAYLAND_DISPLAY``
  set) or without dearpygui (an acquisition PC), it does nothing, after one log line per
  object saying why (when visualisation is first turned on; a 'Histogram' never needs saying).
* Otherwise, turning ``visualisation_on`` on opens a window, turning it off closes it, and
  ``end_of_life`` closes it for good. :meth:`VisualisationDPG.visualise` only puts the data
  in a lock-protected slot; a daemon thread of the object's own shapes it (the last
  ``_buffer`` values, an image's colours) and sends it through a pipe to a viewer process
  that runs dearpygui's render loop in its main thread. The viewer is a process, not a
  thread of the worker, because dearpygui aborts the whole process when it cannot open its
  window (a stale ``DISPLAY``) and crashes when its context is made again in another thread,
  which turning visualisation off and on again would do: a failing viewer is logged and the
  worker goes on. If the user closes the window, it opens again once visualisation has been
  turned off and on.

Importing this module is cheap and does nothing: numpy, subprocess and dearpygui are imported
only when a window is first opened (dearpygui only in the viewer process).

The types, as in Heron:

``'Image'``
    a 2-D (gray) or 3-D (BGR or BGRA, OpenCV's order) array, uint8 or as OpenCV shows other
    types (float in 0..1, uint16); shown at ``_image_size`` (width, height) if given.
``'Value'``
    the last ``_buffer`` values as text, newest at the bottom.
``'Single Pane Plot'`` and ``'Multi Pane Plot'``
    in one plot, or in one plot per line, as Heron draws them: a 1-D array is a line of its
    last ``_buffer`` values, a 2-D array a line per row over the row's last ``_buffer`` values;
    a number (which Heron cannot plot) is one more value of a line, the last ``_buffer`` drawn.
``'Histogram'``
    accepted; shows nothing (as in Heron).

``_buffer`` of -1 (Heron's "all") keeps up to 5000 values.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from ._viewer import TRACE_ENV
from ._viewer_link import _Viewer

__all__ = ["TRACE_ENV", "VISUALISATION_TYPES", "VisualisationDPG"]

logger = logging.getLogger(__name__)

#: The visualisation types Heron knows.
VISUALISATION_TYPES = ("Image", "Value", "Single Pane Plot", "Multi Pane Plot", "Histogram")
_SHOWN_TYPES = ("Image", "Value", "Single Pane Plot", "Multi Pane Plot")

_MAX_HISTORY = 5000  # values kept for a ``_buffer`` of -1 (Heron's "all"), or a bigger one
_REOPEN_GAP = 1.0  # seconds between two windows of one object, against a flickering switch
_END_TIMEOUT = 5.0  # end_of_life waits at most this long


class VisualisationDPG:
    """A Heron node's own visualisation window (see the module's docstring)."""

    def __init__(
        self,
        _node_name: str = "Node",
        _node_index: int | str = 0,
        _visualisation_type: str = "Image",
        _buffer: int = 10,
        _image_size: Any = None,
        _x_axis_label: str | None = None,
        _y_axis_base_label: str | None = None,
        _base_plot_title: str | None = None,
    ) -> None:
        #: Whether the window should show; workers set it every iteration, usually from parameters[0].
        self.visualisation_on: Any = False
        self.visualisation_type = _visualisation_type
        self.buffer = _buffer
        self.image_size = _image_size
        self.x_axis_label = "Data index" if _x_axis_label is None else _x_axis_label
        self.y_axis_label = _y_axis_base_label
        self.plot_title = _base_plot_title
        self.window_name = f"{_node_name} {_node_index}"
        #: The last data given to :meth:`visualise`.
        self.data: Any = None

        self._control = threading.Lock()
        self._said: set[str] = set()
        self._said_lock = threading.Lock()
        self._off_reason: str | None = None
        self._viewer: _Viewer | None = None
        self._closing: list[_Viewer] = []
        self._may_reopen = True
        self._opened_at = float("-inf")
        self._ended = False

    @property
    def visualiser_showing(self) -> bool:
        """Whether a window is open (or opening) for this node."""
        viewer = self._viewer
        return viewer is not None and viewer.showing

    @visualiser_showing.setter
    def visualiser_showing(self, _value: bool) -> None:
        """Ignored (a plain attribute in Heron): whether the window shows is the window's to say."""

    def visualise(self, data: Any) -> None:
        """Keep ``data`` and, if ``visualisation_on``, hand it to the window; never raises, never waits for the GUI."""
        self.data = data
        try:
            with self._control:
                self._visualise(data)
        except Exception as exc:
            self._say_once(
                f"visualise:{type(exc).__name__}",
                logging.WARNING,
                "visualisation of %s failed (%r); the worker goes on",
                self.window_name,
                exc,
            )

    def end_of_life(self) -> None:
        """Close the window and stop its thread for good (waits at most a few seconds); safe to call again."""
        try:
            with self._control:
                self._ended = True
                self._close_viewer()
                closing, self._closing = self._closing, []
            deadline = time.monotonic() + _END_TIMEOUT
            for viewer in closing:
                viewer.join(max(0.0, deadline - time.monotonic()))
            for viewer in closing:
                if not viewer.ended:  # a viewer that hangs, and its sender blocked writing to it
                    viewer.kill()
                    viewer.join(1.0)
        except Exception as exc:
            self._say_once("end", logging.WARNING, "closing the visualisation of %s failed: %r", self.window_name, exc)

    def kill(self) -> None:
        """Heron's older name of :meth:`end_of_life`."""
        self.end_of_life()

    def _visualise(self, data: Any) -> None:
        if self._ended:
            return
        if not self.visualisation_on:
            self._may_reopen = True
            self._close_viewer()
            return
        kind = self.visualisation_type
        if kind not in _SHOWN_TYPES:
            if kind not in VISUALISATION_TYPES:
                self._say_once(
                    "type",
                    logging.WARNING,
                    "unknown visualisation type %r of %s: nothing is shown (Heron's types are %s)",
                    kind,
                    self.window_name,
                    ", ".join(VISUALISATION_TYPES),
                )
            return
        viewer = self._viewer
        if viewer is None or viewer.ended:
            if viewer is not None:  # closed by the user, or failed: not again until turned off and on
                self._viewer = None
                self._may_reopen = False
            if not self._may_reopen or not self._can_show():
                return
            if time.monotonic() - self._opened_at < _REOPEN_GAP:
                return
            viewer = self._open_viewer()
        viewer.put(data)

    def _can_show(self) -> bool:
        """Whether this machine can show a window; says once, for good, why not."""
        if self._off_reason is None:
            reason = _no_display(self.window_name)
            level = logging.INFO
            if reason is None:
                reason = _no_dearpygui(self.window_name)
                level = logging.WARNING
            if reason is not None:
                self._off_reason = reason
                self._say_once("off", level, "%s", reason)
        return self._off_reason is None

    def _open_viewer(self) -> _Viewer:
        self._closing = [v for v in self._closing if not v.ended]
        spec = {
            "kind": self.visualisation_type,
            "title": self.window_name,
            "x_label": str(self.x_axis_label),
            "y_label": "Data" if self.y_axis_label is None else str(self.y_axis_label),
            "plot_title": "Plot" if self.plot_title is None else str(self.plot_title),
            "image_size": _image_size(self.image_size),
        }
        viewer = _Viewer(spec, _history_length(self.buffer), self._say_once)
        viewer.start()
        self._viewer = viewer
        self._opened_at = time.monotonic()
        return viewer

    def _close_viewer(self) -> None:
        viewer, self._viewer = self._viewer, None
        if viewer is not None:
            viewer.stop()
            self._closing.append(viewer)

    def _say_once(self, key: str, level: int, message: str, *args: Any) -> None:
        with self._said_lock:
            if key in self._said:
                return
            self._said.add(key)
        logger.log(level, message, *args)


def _no_display(window_name: str) -> str | None:
    if os.name != "posix" or sys.platform == "darwin":
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return f"no display here (neither DISPLAY nor WAYLAND_DISPLAY is set): visualisation of {window_name} is off"


def _no_dearpygui(window_name: str) -> str | None:
    """Whether dearpygui can be found, without importing it (the viewer process imports it)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("dearpygui") is not None
        problem = "it is not installed"
    except (ImportError, ValueError) as exc:
        found = False
        problem = f"it cannot be found: {exc!r}"
    if found:
        return None
    return f"dearpygui is not usable here ({problem}): visualisation of {window_name} is off; pip install dearpygui"


def _history_length(buffer: Any) -> int:
    try:
        length = int(buffer)
    except (TypeError, ValueError, OverflowError):
        return 10
    return min(length, _MAX_HISTORY) if length > 0 else _MAX_HISTORY


def _image_size(size: Any) -> list[int] | None:
    """``_image_size`` as [width, height] of positive ints, or None."""
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError, OverflowError):
        return None
    return [width, height] if width > 0 and height > 0 else None
