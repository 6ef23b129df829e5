"""Shared fixtures: forwarders on free ports, fast heartbeat settings, and a leak check."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from heron_remote import Forwarders, Settings
from heron_remote.bench.takeover import free_fixed_ports
from heron_remote.relay_host import relay_path
from heron_remote.testing import AcqHosts, ExternalHosts, acquisition_hosts

from .helpers import FREE_PORTS, first_line, forwarders_command, wait_until, worker_pids


@pytest.fixture(scope="session", autouse=True)
def own_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Start records of this run's local workers in a folder of its own, apart from other runs here."""
    os.environ["HERON_REMOTE_RUN_DIR"] = str(tmp_path_factory.mktemp("run"))
    yield
    del os.environ["HERON_REMOTE_RUN_DIR"]


@pytest.fixture(autouse=True)
def no_leaked_workers() -> Iterator[None]:
    """Fail any test that leaves a worker process running."""
    before = worker_pids()
    yield
    try:
        wait_until(lambda: not (worker_pids() - before), 5, "the test's workers to end")
    except AssertionError:
        leaked = {pid: _cmdline(pid) for pid in worker_pids() - before}
        for pid in leaked:
            os.kill(pid, signal.SIGKILL)
        pytest.fail(f"worker processes left running: {leaked}")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"


@pytest.fixture
def forwarders() -> Iterator[Forwarders]:
    with Forwarders(ports=FREE_PORTS) as fw:
        yield fw


@pytest.fixture
def settings(forwarders: Forwarders) -> Settings:
    """Heartbeat every 0.2 s, death after 5 missed (1 s), on the fixture's forwarders."""
    return Settings(heartbeat_rate=0.2, heartbeats_to_death=5, start_timeout=15, stop_grace=2, ports=forwarders.ports)


@pytest.fixture(scope="session")
def acq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcqHosts | ExternalHosts]:
    """Acquisition hosts acq1 and acq2: namespaces with sshd here, compose services elsewhere."""
    hosts = acquisition_hosts(tmp_path_factory.mktemp("acq"))
    yield hosts
    hosts.close()


@pytest.fixture
def remote_settings(settings: Settings, acq: AcqHosts | ExternalHosts) -> Settings:
    return settings.replace(ssh_info=str(acq.registry))


@pytest.fixture
def outside() -> Iterator[tuple[Settings, subprocess.Popen[str]]]:
    """Forwarders run by ``heron-remote forwarders`` in a process of their own, as Heron's editor runs
    them: they relay the packets of a com in this process (Heron's layout), and frames() reads them."""
    ports = free_fixed_ports()
    command = forwarders_command(ports)
    try:
        assert "forwarders on 127.0.0.1" in first_line(command)
        wait_until(lambda: relay_path(ports.data_submit).exists(), 5, "the relay socket")
        yield Settings(ports=ports, heartbeat_rate=0.2, heartbeats_to_death=5, start_timeout=15, stop_grace=2), command
    finally:
        command.kill()
        command.communicate(timeout=10)
