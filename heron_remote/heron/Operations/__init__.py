"""Heron's ``Heron.Operations``: the node files of the Heron tree this program runs from.

A node that imports another node's module (``from Heron.Operations.Sources.Input.Key_Press
import key_press_com``) keeps doing so under the import rule: this package's path is the
``Operations`` folder of the Heron tree that holds the running script (or the working
directory), so ``heron_remote.heron.Operations.Sources…`` finds the same files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _operations_of_the_tree() -> list[str]:
    for start in (sys.argv[0] if sys.argv and sys.argv[0] else "", os.getcwd()):
        if not start:
            continue
        here = Path(start).resolve()
        for folder in (here, *here.parents):
            if folder.name == "Heron" and (folder / "Operations").is_dir():
                return [str(folder / "Operations")]
    return []


__path__ = _operations_of_the_tree()
