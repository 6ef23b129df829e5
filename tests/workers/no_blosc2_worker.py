"""Test worker on a PC without blosc2: the natural camera, with blosc2 made unimportable."""

import sys

sys.modules["blosc2"] = None  # import blosc2 now raises ImportError, as where it is not installed

from heron_remote.examples.natural_camera import main  # noqa: E402

main()
