"""``python -m heron_remote.bench``: the same as ``heron-remote bench``."""

from __future__ import annotations

import logging
import sys

from . import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main(sys.argv[1:]))
