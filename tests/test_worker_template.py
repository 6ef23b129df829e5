"""The README's worker template, run as it is written: nothing streams before `initialise` succeeds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from heron_remote import NoDataError, Settings, Source

ROOT = Path(__file__).resolve().parent.parent
# What the template leaves to the reader: the camera.
_CAMERA = """import time
import numpy as np

def grab():
    time.sleep(0.01)
    return np.arange(4, dtype=np.uint8)

def release_camera():
    pass

"""


def _template() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Writing a worker", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "no python block under 'Writing a worker'"
    return code[1]


def test_the_readme_template_waits_for_a_successful_initialisation(settings: Settings, tmp_path: Path) -> None:
    template = _template()
    assert "worker.wait_initialised()" in template
    worker = tmp_path / "template_worker.py"
    worker.write_text(_CAMERA + template)
    with Source(str(worker), settings=settings) as cam:  # no parameters: initialise returns False
        with pytest.raises(NoDataError):
            next(cam.frames(timeout=1.0))
        assert cam.stats.received == 0
        cam.set_parameters({"exposure_ms": 5})
        frame = next(cam.frames(timeout=10))
    assert frame.index == 1 and frame.arrays[0].tolist() == [0, 1, 2, 3]
