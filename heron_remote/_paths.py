"""Where heron_remote keeps files on a host: one folder name, in one place."""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["TEMP_DIR", "temp_root"]

#: Our folder in the temp dir; not the package's name, or a script run from there would import it.
TEMP_DIR = "heron-remote"


def temp_root() -> Path:
    """``<temp dir>/heron-remote``."""
    return Path(tempfile.gettempdir()) / TEMP_DIR
