"""Hosts for tests and benchmarks: :mod:`.hosts`, network namespaces with their own sshd (or the
docker-compose services, controlled through :mod:`.control`); :mod:`.fake`, a host without sshd for unit tests."""

from ._sshd import SSHD
from .control import ControlClient, ControlServer
from .fake import FakeHost, FakeProcess, FakeTunnel
from .hosts import CONTROL_ENV_VAR, ENV_VAR, AcqHosts, ExternalHosts, Host, acquisition_hosts, namespaces_possible

__all__ = [
    "CONTROL_ENV_VAR",
    "ENV_VAR",
    "SSHD",
    "AcqHosts",
    "ControlClient",
    "ControlServer",
    "ExternalHosts",
    "FakeHost",
    "FakeProcess",
    "FakeTunnel",
    "Host",
    "acquisition_hosts",
    "namespaces_possible",
]
