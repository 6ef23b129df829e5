"""The README's error table and the messages agree, word for word, and each says what to do.

The SSH errors are raised for real in tests/test_bad_input.py, which checks each against its row too;
here the local ones, and the preflight's advice.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from heron_remote import ConfigError, Forwarders, HeronRemoteError, NoDataError, Settings, Source, errors
from heron_remote.errors import ForwarderError, WorkerExitedError, WorkerLostError, WorkerStartError
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import CAMERA, FREE_PORTS, PYTHON, WORKERS, edit_registry, error_table, readme_row

Hosts = AcqHosts | ExternalHosts
FLAKY, INIT_ERROR = str(WORKERS / "flaky_worker.py"), str(WORKERS / "init_error_worker.py")


def test_every_row_of_the_table_says_what_it_means_and_what_to_do() -> None:
    rows = error_table()
    assert len(rows) >= 15
    for kind, patterns, meaning, advice in rows:
        assert isinstance(getattr(errors, kind), type), kind
        assert patterns and meaning and advice, kind


def _raised(action: Callable[[], object]) -> HeronRemoteError:
    with pytest.raises(HeronRemoteError) as caught:
        action()
    return caught.value


def _frames(src: Source, timeout: float) -> None:
    with src:
        for _ in src.frames(timeout=timeout):
            pass


def test_local_errors_are_worded_as_the_table_says(settings: Settings) -> None:
    quick = settings.replace(start_timeout=2)
    local = {"settings": settings}
    frozen: list[int] = []

    def freeze(src: Source) -> None:
        with src:
            frames = src.frames(timeout=10)
            next(frames)
            frozen.append(src.stats.worker_pid)
            os.kill(frozen[0], signal.SIGSTOP)
            for _ in frames:
                pass

    errors = {
        "script": _raised(lambda: Source("/nowhere/camera.py", settings=settings).start()),
        "program": _raised(lambda: Source("no-such-grabber --fast", settings=settings).start()),
        "parameters": _raised(lambda: Source(CAMERA, parameters={"gain": object()}, settings=settings)),
        "not a worker": _raised(lambda: Source(str(WORKERS / "not_a_worker.py"), settings=quick).start()),
        "crash": _raised(lambda: _frames(Source(FLAKY, parameters={"frames": 2, "death": "kill"}, **local), 10)),
        "frozen": _raised(lambda: freeze(Source(CAMERA, parameters={"shape": [2, 2]}, **local))),
        "no data": _raised(lambda: _frames(Source(INIT_ERROR, parameters={"ok": False}, **local), 1)),
    }
    expected = {
        "script": ConfigError,
        "program": ConfigError,
        "parameters": ConfigError,
        "not a worker": WorkerStartError,
        "crash": WorkerExitedError,
        "frozen": WorkerLostError,
        "no data": NoDataError,
    }
    for case, error in errors.items():
        print(f"{case}: {type(error).__name__}: {str(error).splitlines()[0]}")
        assert isinstance(error, expected[case]), (case, error)
        assert readme_row(error), f"{case}: no row of the README's error table says: {error}"
    assert f"(a relative one starts from this process's working directory, {os.getcwd()})" in str(errors["script"])
    assert 'with restart="on-failure" in the settings it would be started again' in str(errors["frozen"])


def test_a_forwarder_port_held_by_another_program_is_worded_as_the_table_says() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        ports = dataclasses.replace(FREE_PORTS, data_publish=holder.getsockname()[1])
        with pytest.raises(ForwarderError) as caught, Forwarders(ports=ports):
            pass
    assert readme_row(caught.value), str(caught.value)


@pytest.mark.multihost
@pytest.mark.parametrize(
    ("python", "says"),
    [
        (f"{PYTHON} -S", r"heron_remote is not importable by .* -S on the PC .*: pip install heron_remote there\."),
        ("/no/such/python3", r"\"python\" '/no/such/python3' failed on the PC \(status 127\)"),
    ],
    ids=["without heron_remote", "no such interpreter"],
)
def test_check_says_to_install_heron_remote_or_set_python_for_a_venv(
    acq: Hosts, tmp_path: Path, python: str, says: str
) -> None:
    registry = edit_registry(acq, tmp_path, "acq1", python=python)
    out = subprocess.run(
        [PYTHON, "-m", "heron_remote", "check", "acq1", "--ssh-info", registry],
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(out.stdout)
    assert out.returncode == 1 and "NOT ready" in out.stdout
    assert re.search(says, out.stdout), out.stdout
    assert f'The workers run with "python" of this server in the registry ({python} now)' in out.stdout
    assert 'set "python" to that venv\'s interpreter' in out.stdout
