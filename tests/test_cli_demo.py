"""The command line: the demo (the README's first command), --version, and the README's promises."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import heron_remote

from .helpers import PYTHON

ROOT = Path(__file__).resolve().parent.parent


def test_demo_streams_with_no_gaps() -> None:
    out = subprocess.run(
        ["heron-remote", "demo", "--seconds", "1.5", "--shape", "256x320", "--fps", "100"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    m = re.search(
        r"(\d+) frames in ([\d.]+) s: ([\d.]+) frames/s, ([\d.]+) MB/s, gaps (\d+) "
        r"\(indices (\d+)\.\.(\d+); the clock started at index (\d+), not counted\)",
        out.stdout,
    )
    assert m, out.stdout + out.stderr
    frames, fps, mbs, gaps = int(m[1]), float(m[3]), float(m[4]), int(m[5])
    first, last, clock = int(m[6]), int(m[7]), int(m[8])
    assert frames > 50 and 50 < fps < 150 and mbs > 0
    assert gaps == 0
    assert first == clock + 1 and frames == last - first + 1  # the frames counted are the indices shown
    assert re.search(r"latency capture->subscriber p50 [\d.]+ ms p99 [\d.]+ ms", out.stdout)


def test_version_and_help() -> None:
    out = subprocess.run([PYTHON, "-m", "heron_remote", "--version"], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == f"heron_remote {heron_remote.__version__}"
    out = subprocess.run(["heron-remote", "demo", "--shape", "big"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0


def test_readme_first_screen_gives_the_two_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:40])
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", first_screen, re.S)
    commands = [line for b in blocks for line in b.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, commands
    demo, tests = commands
    assert "heron-remote demo" in demo and "pip install" in demo
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = tests.split("&&")[-1].strip()
    assert test_command in ci, f"{test_command!r} is not what .ci/run runs"


def test_public_api_is_explicit() -> None:
    for name in heron_remote.__all__:
        assert hasattr(heron_remote, name), name
    assert {
        "SourceCom",
        "SourceWorker",
        "start_the_source_worker_process",
        "Forwarders",
        "Source",
        "HeronRemoteError",
    } <= set(heron_remote.__all__)
