"""The viewer process: dearpygui's render loop in its main thread, fed through its stdin.

Run as a script by :mod:`._viewer_link` (``python _viewer.py '<settings as JSON>'``); it imports
nothing of heron_remote. The pipe carries messages written by :func:`_frame` and read by
:class:`_Inbox`: a 4-byte length, a JSON header, then the text or the array's raw bytes.
No pickle.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["TRACE_ENV", "_Inbox", "_frame", "_stdin", "_viewer_main"]

#: Set to a file path, the viewer process appends JSON lines of what it shows and saves a frame
#: drawn after an update, at most five a second, next to it as ``<path>.<n>.png``; for tests.
TRACE_ENV = "HERON_REMOTE_VISUALISER_TRACE"
_FRAME_PERIOD = 1 / 30  # the viewer draws at most 30 frames a second
_MAX_MESSAGE = 512 * 1024 * 1024  # bytes of one message the viewer accepts


def _frame(message: Any) -> tuple[bytes, bytes]:
    """One message to the viewer: a 4-byte length, a JSON header, then the text or the array's bytes."""
    import json

    if isinstance(message, str):
        payload = message.encode("utf-8", "replace")
        header: dict[str, Any] = {"text": True, "size": len(payload)}
    else:
        payload = message.tobytes()
        header = {"dtype": message.dtype.str, "shape": list(message.shape), "size": len(payload)}
    head = json.dumps(header).encode()
    return len(head).to_bytes(4, "big") + head, payload


def _rgba(image: NDArray[Any]) -> NDArray[Any]:
    """A uint8 gray or RGB(A) image as dearpygui's raw texture wants it: float32 RGBA in 0..1, flat."""
    import numpy as np

    height, width = image.shape[:2]
    out = np.empty((height, width, 4), dtype=np.float32)
    pixels = image[:, :, None] if image.ndim == 2 else image
    np.multiply(pixels[:, :, :3], 1 / 255, out=out[:, :, :3], casting="unsafe")
    if pixels.shape[2] == 4:
        np.multiply(pixels[:, :, 3], 1 / 255, out=out[:, :, 3], casting="unsafe")
    else:
        out[:, :, 3] = 1.0
    return out.reshape(-1)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    """``size`` bytes, or fewer at the end of the stream."""
    parts: list[bytes] = []
    while size > 0:
        part = stream.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _stdin() -> IO[bytes]:
    """Standard input, unbuffered: a daemon thread blocked reading sys.stdin.buffer aborts Python at exit."""
    return open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)


class _Inbox:
    """The viewer's reader thread: keeps the newest message from the worker; ``ended`` at end of input."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._lock = threading.Lock()
        self._latest: Any = None
        self.ended = threading.Event()
        threading.Thread(target=self._read, args=(stream,), name="visualisation input", daemon=True).start()

    def take(self) -> Any:
        with self._lock:
            latest, self._latest = self._latest, None
        return latest

    def _read(self, stream: IO[bytes]) -> None:
        import json

        import numpy as np

        try:
            while True:
                size = _read_exactly(stream, 4)
                head = _read_exactly(stream, int.from_bytes(size, "big")) if size else b""
                header = json.loads(head) if head else {}
                length = int(header.get("size", -1))
                if not size or not head or not 0 <= length <= _MAX_MESSAGE:
                    return  # the end, or not from a sender of ours
                payload = _read_exactly(stream, length)
                if len(payload) < length:
                    return
                if header.get("text"):
                    message: Any = payload.decode("utf-8", "replace")
                else:
                    dtype = np.dtype(header["dtype"])
                    if dtype.kind not in "buif":
                        raise ValueError(f"an array of {dtype}")
                    message = np.frombuffer(payload, dtype=dtype).reshape(header["shape"])
                with self._lock:
                    self._latest = message
        except Exception as exc:
            sys.stderr.write(f"visualisation input ended on {exc!r}\n")
        finally:
            self.ended.set()


class _Screen:
    """The window and what it shows, by Heron's visualisation type; every call from the main thread."""

    def __init__(self, dpg: Any, spec: dict[str, Any], trace: str | None) -> None:
        self._dpg = dpg
        self._kind = str(spec["kind"])
        self._title = str(spec["title"])
        self._x_label = str(spec["x_label"])
        self._y_label = str(spec["y_label"])
        self._plot_title = str(spec["plot_title"])
        size = spec.get("image_size")
        self._image_size: tuple[int, int] | None = (int(size[0]), int(size[1])) if size else None
        self._trace = trace
        self._frames = 0
        self._frame_path: str | None = None
        self._frame_at = 0.0
        self._window: Any = None
        self._text: Any = None
        self._x_axis: Any = None
        self._y_axis: Any = None
        self._series: list[Any] = []
        self._panes: list[tuple[Any, Any, Any, Any]] = []
        self._pane_height = 0
        self._texture: Any = None
        self._texture_size: tuple[int, int] | None = None
        self._texture_data: Any = None
        self._image: Any = None

    def open(self) -> None:
        dpg = self._dpg
        width, height = {"Value": (420, 320), "Image": (680, 540)}.get(self._kind, (1050, 770))
        if self._kind == "Image" and self._image_size is not None:
            width, height = self._image_size[0] + 40, self._image_size[1] + 60
        dpg.create_context()
        dpg.create_viewport(title=self._title, width=width, height=height)
        with dpg.window(label=self._title) as self._window:
            if self._kind == "Value":
                self._text = dpg.add_text("")
            elif self._kind == "Single Pane Plot":
                with dpg.plot(label=self._plot_title, width=-1, height=-1):
                    dpg.add_plot_legend()
                    self._x_axis = dpg.add_plot_axis(dpg.mvXAxis, label=self._x_label)
                    self._y_axis = dpg.add_plot_axis(dpg.mvYAxis, label=self._y_label)
        dpg.set_primary_window(self._window, True)
        dpg.setup_dearpygui()
        dpg.show_viewport()
        self.note({"event": "shown", "kind": self._kind})

    def show(self, message: Any) -> None:
        if self._kind == "Value":
            self._dpg.set_value(self._text, str(message))
        elif self._kind == "Image":
            self._show_image(message)
        elif self._kind == "Single Pane Plot":
            self._show_single(message)
        elif self._kind == "Multi Pane Plot":
            self._show_panes(message)
        if self._trace:
            shape = [len(str(message))] if isinstance(message, str) else list(message.shape)
            self.note({"event": "update", "kind": self._kind, "shape": shape})
            if self._frame_path is None and time.monotonic() - self._frame_at >= 0.2:
                # To a file, written as the next frame is drawn: its callback form crashes dearpygui 2.x.
                self._frames += 1
                self._frame_path = f"{self._trace}.{self._frames}.png"
                self._dpg.output_frame_buffer(file=self._frame_path)

    def drawn(self) -> None:
        """Called after each frame is drawn."""
        if self._frame_path is not None:
            self.note({"event": "frame", "path": self._frame_path})
            self._frame_path = None
            self._frame_at = time.monotonic()

    def _label(self, index: int, count: int) -> str:
        return self._y_label if count == 1 else f"{self._y_label}[{index}]"

    def _show_single(self, lines: Any) -> None:
        dpg = self._dpg
        count = lines.shape[0]
        if len(self._series) != count:
            dpg.delete_item(self._y_axis, children_only=True)
            self._series = [
                dpg.add_line_series([], [], label=self._label(i, count), parent=self._y_axis) for i in range(count)
            ]
        x = list(range(lines.shape[1]))
        for series, line in zip(self._series, lines, strict=True):
            dpg.set_value(series, [x, line.tolist()])
        dpg.fit_axis_data(self._x_axis)
        dpg.fit_axis_data(self._y_axis)

    def _show_panes(self, lines: Any) -> None:
        dpg = self._dpg
        count = lines.shape[0]
        height = max(120, (dpg.get_viewport_client_height() - 20) // count - 8)
        if len(self._panes) != count:
            dpg.delete_item(self._window, children_only=True)
            self._panes = []
            for i in range(count):
                with dpg.plot(label=f"{self._plot_title} {i}", width=-1, height=height, parent=self._window) as plot:
                    x_axis = dpg.add_plot_axis(dpg.mvXAxis, label=self._x_label)
                    y_axis = dpg.add_plot_axis(dpg.mvYAxis, label=self._label(i, count))
                    series = dpg.add_line_series([], [], parent=y_axis)
                self._panes.append((plot, x_axis, y_axis, series))
            self._pane_height = height
        elif height != self._pane_height:
            for plot, *_ in self._panes:
                dpg.configure_item(plot, height=height)
            self._pane_height = height
        x = list(range(lines.shape[1]))
        for (_, x_axis, y_axis, series), line in zip(self._panes, lines, strict=True):
            dpg.set_value(series, [x, line.tolist()])
            dpg.fit_axis_data(x_axis)
            dpg.fit_axis_data(y_axis)

    def _show_image(self, image: Any) -> None:
        dpg = self._dpg
        height, width = image.shape[:2]
        pixels = _rgba(image)
        if self._texture_size != (width, height):
            if self._image is not None:
                dpg.delete_item(self._image)
                dpg.delete_item(self._texture)
            with dpg.texture_registry():
                self._texture = dpg.add_raw_texture(width, height, pixels, format=dpg.mvFormat_Float_rgba)
            shown = self._image_size or (width, height)
            self._image = dpg.add_image(self._texture, width=shown[0], height=shown[1], parent=self._window)
            self._texture_size = (width, height)
            if self._image_size is None:
                dpg.set_viewport_width(min(width + 40, 1600))
                dpg.set_viewport_height(min(height + 60, 1000))
        else:
            dpg.set_value(self._texture, pixels)
        self._texture_data = pixels  # the raw texture reads this buffer: keep it alive

    def note(self, record: dict[str, Any]) -> None:
        if not self._trace:
            return
        import json

        with open(self._trace, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _viewer_main(argv: list[str]) -> int:
    """The viewer process: show what arrives on stdin until it ends or the window is closed."""
    import json
    import signal

    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when the window closes
    try:
        spec = json.loads(argv[1])
    except (IndexError, ValueError) as exc:
        sys.stderr.write(f"the viewer needs its settings as JSON: {exc!r}\n")
        return 2
    try:
        dpg = importlib.import_module("dearpygui.dearpygui")
    except Exception as exc:
        sys.stderr.write(f"dearpygui cannot be imported here: {exc!r}\n")
        return 3
    inbox = _Inbox(_stdin())
    screen = _Screen(dpg, spec, os.environ.get(TRACE_ENV) or None)
    screen.open()
    failures: set[str] = set()
    try:
        while dpg.is_dearpygui_running():
            began = time.monotonic()
            message = inbox.take()
            if message is not None:
                try:
                    screen.show(message)
                except Exception as exc:
                    if type(exc).__name__ not in failures:
                        failures.add(type(exc).__name__)
                        sys.stderr.write(f"cannot show an update: {exc!r}\n")
                        screen.note({"event": "error", "error": repr(exc)})
            elif inbox.ended.is_set():
                break
            dpg.render_dearpygui_frame()
            screen.drawn()
            time.sleep(max(0.0, _FRAME_PERIOD - (time.monotonic() - began)))
    finally:
        dpg.destroy_context()
    return 0


if __name__ == "__main__":
    _code = _viewer_main(sys.argv)
    sys.stderr.flush()
    os._exit(_code)  # without finalizing: dearpygui's and the reader's threads may still be blocked
