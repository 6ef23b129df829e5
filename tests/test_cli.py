"""The command line says what it does: -v/-q anywhere, help in words with its defaults."""

from __future__ import annotations

import re
import subprocess

import pytest

from heron_remote import Settings
from heron_remote.cli import build_parser

from .helpers import FREE_PORTS, PYTHON, com_env


def _help(*argv: str) -> str:
    out = subprocess.run([PYTHON, "-m", "heron_remote", *argv, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize(
    ("argv", "verbose", "quiet"),
    [
        (["demo"], 0, False),
        (["-v", "demo"], 1, False),
        (["demo", "-v"], 1, False),
        (["demo", "-vv", "--seconds", "1"], 2, False),
        (["status", "--once", "-q"], 0, True),
        (["-q", "forwarders"], 0, True),
        (["check", "acq1", "--verbose"], 1, False),
    ],
)
def test_verbosity_is_taken_before_and_after_the_subcommand(argv: list[str], verbose: int, quiet: bool) -> None:
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.quiet) == (verbose, quiet)


def test_the_top_level_help_is_plain_words_and_names_the_demo_s_remote_option() -> None:
    text = _help()
    assert "`" not in text
    demo_line = re.search(r"^\s+demo\s+(.*(?:\n\s{10,}.*)*)", text, re.M)
    assert demo_line and "--remote" in demo_line[1] and "local" not in demo_line[1]


def test_every_option_that_has_a_default_shows_it() -> None:
    demo = " ".join(_help("demo").split())
    for option, default in (("--seconds SECONDS", "5.0"), ("--dtype DTYPE", "uint8"), ("--fps FPS", "100.0")):
        assert re.search(rf"{option} [^-]*\(default: {re.escape(default)}\)", demo), option
    forwarders = " ".join(_help("forwarders").split())
    for option, ports in (("--data", "6560 6561"), ("--parameters", "6563 6564"), ("--proof-of-life", "6569 6570")):
        assert re.search(rf"{option} SUBMIT PUBLISH the \S+ forwarder's ports.*?\(default: {ports}\)", forwarders)
    status = " ".join(_help("status").split())
    assert "--unknown-after S a source not heard from for S seconds is shown 'unknown' (default: 3.0)" in status
    assert "(default: 60.0)" in status


def test_demo_with_v_after_the_subcommand_runs_and_logs_at_info() -> None:
    out = subprocess.run(
        [PYTHON, "-m", "heron_remote", "demo", "-v", "--seconds", "0.5", "--shape", "32x32"],
        capture_output=True,
        text=True,
        timeout=60,
        env=com_env(Settings(ports=FREE_PORTS)),  # its own forwarders, on free ports
    )
    assert out.returncode == 0, out.stderr
    assert " INFO heron_remote" in out.stderr
    assert "frames in" in out.stdout
