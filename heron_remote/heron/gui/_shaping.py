"""What a node gives ``visualise``, made into what its viewer shows: text, lines or an image.

Runs in the sender thread of :mod:`._viewer_link`; numpy is imported only when data comes.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["Say", "_Shaper"]

#: How the shaper tells of a problem, once per kind: ``say(key, level, message, *args)``.
Say = Callable[..., None]

_MAX_LINES = 64  # lines drawn at most; more are left out (said once)
_MAX_IMAGE_SIDE = 1024  # images are thinned to this, or to ``_image_size``, before they are sent
_MAX_TEXT = 2000  # characters of one value's text


class _Shaper:
    """Turns what ``visualise`` was given into what the viewer shows; runs in the sender thread."""

    def __init__(self, spec: dict[str, Any], length: int, say: Say) -> None:
        self._kind = str(spec["kind"])
        self._title = str(spec["title"])
        self._length = length
        self._say = say
        size = spec.get("image_size")
        self._image_limit = (size[0], size[1]) if size else (_MAX_IMAGE_SIDE, _MAX_IMAGE_SIDE)
        self._texts: collections.deque[str] = collections.deque(maxlen=length)
        self._samples: collections.deque[NDArray[Any]] = collections.deque(maxlen=length)
        self._rows: NDArray[Any] | None = None

    def feed(self, items: list[Any]) -> Any:
        """The message for the newest state: an image array, a text, a lines-by-samples array; None if nothing new."""
        if self._kind == "Image":
            return self._image(items[-1])
        if self._kind == "Value":
            for item in items:
                self._texts.append(_value_text(item))
            return "\n".join(self._texts)
        return self._lines(items)

    def _image(self, data: Any) -> Any:
        try:
            return _image_for_viewer(data, self._image_limit)
        except Exception as exc:
            self._say("image", logging.WARNING, "cannot show the data of %s as an image: %s", self._title, exc)
            return None

    def _lines(self, items: list[Any]) -> Any:
        import numpy as np

        for item in items:
            try:
                array = np.array(item, dtype=np.float64)
            except Exception as exc:
                self._say("plot", logging.WARNING, "cannot plot the data of %s: %s", self._title, exc)
                continue
            if array.size == 0:
                continue
            if array.ndim in (1, 2):  # as Heron draws them: a line, or a line per row, of its last values
                self._rows = array.reshape(-1, array.shape[-1])[:, -self._length :]
                self._samples.clear()
            elif array.ndim == 0:  # a number: one more value of a line kept here
                if self._rows is not None:
                    self._samples.clear()
                self._samples.append(array.reshape(1))
                self._rows = None
            else:
                self._say(
                    "plot-shape",
                    logging.WARNING,
                    "cannot plot the data of %s: it is a number (one more value of a line), a 1-D array (a "
                    "line) or a 2-D array (a line per row), not an array of shape %s",
                    self._title,
                    array.shape,
                )
        if self._rows is not None:
            lines = self._rows
        elif self._samples:
            lines = np.stack(list(self._samples), axis=1)
        else:
            return None
        if lines.shape[0] > _MAX_LINES:
            self._say(
                "lines",
                logging.WARNING,
                "%s has %s lines: the first %s are drawn",
                self._title,
                lines.shape[0],
                _MAX_LINES,
            )
            lines = lines[:_MAX_LINES]
        return np.ascontiguousarray(lines, dtype=np.float64)


def _value_text(data: Any) -> str:
    """A value as Heron shows it: the element of a one-element container, else the whole (shortened)."""
    import reprlib

    try:
        if not isinstance(data, str | bytes) and len(data) == 1:
            data = data[0]
    except Exception:
        pass
    try:
        if isinstance(data, str):
            text = data
        elif type(data).__module__ == "numpy" and hasattr(data, "shape"):
            import numpy as np

            text = np.array2string(np.asarray(data), threshold=64, max_line_width=100)
        else:
            shortener = reprlib.Repr()
            shortener.maxlevel, shortener.maxstring, shortener.maxother = 4, _MAX_TEXT, 200
            shortener.maxlist = shortener.maxtuple = shortener.maxdict = shortener.maxset = shortener.maxdeque = 100
            text = shortener.repr(data)
    except Exception as exc:
        text = f"<cannot show {type(data).__name__}: {exc!r}>"
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def _image_for_viewer(data: Any, limit: tuple[int, int]) -> NDArray[Any]:
    """An image to send: uint8, gray (H, W) or RGB(A) (H, W, 3|4), thinned to about ``limit`` (width, height)."""
    import numpy as np

    image = np.asarray(data)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.size == 0 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"an image is a 2-D (gray) or 3-D (BGR or BGRA) array, not an array of shape {image.shape}")
    if image.dtype.kind not in "buif":
        raise ValueError(f"an image is an array of numbers, not of {image.dtype}")
    height, width = image.shape[:2]
    step = max(1, -(-height // max(1, limit[1])), -(-width // max(1, limit[0])))
    if step > 1:
        image = image[::step, ::step]
    if image.ndim == 3:  # OpenCV's BGR(A) to RGB(A)
        image = image[:, :, [2, 1, 0, 3][: image.shape[2]]]
    if image.dtype == np.uint8:
        pass
    elif image.dtype.kind == "b":
        image = image.astype(np.uint8) * 255
    elif image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype.kind in "iu":
        image = np.clip(image, 0, 255).astype(np.uint8)
    else:  # floats, as OpenCV shows them: 0..1
        image = (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255).astype(np.uint8)
    return np.ascontiguousarray(image)
