"""Test worker whose PC clock runs OFFSET_S ahead of the rig's: the natural camera, its clock shifted.

The shift is the worker clock's test hook (heron_remote.worker.clock.offset_ns), set here and
nowhere else; the com must find it from the heartbeat.
"""

import heron_remote.worker.clock

OFFSET_S = 2.5
heron_remote.worker.clock.offset_ns = int(OFFSET_S * 1e9)

from heron_remote.examples.natural_camera import main  # noqa: E402

main()
