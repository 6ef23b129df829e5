"""Hosts for tests and benchmarks: :mod:`.hosts`, network namespaces with their own sshd (or the
docker-compose services); :mod:`.fake`, a host without sshd for unit tests."""

from .fake import FakeHost, FakeProcess, FakeTunnel
from .hosts import ENV_VAR, SSHD, AcqHosts, ExternalHosts, Host, acquisition_hosts, namespaces_possible

__all__ = [
    "ENV_VAR",
    "SSHD",
    "AcqHosts",
    "ExternalHosts",
    "FakeHost",
    "FakeProcess",
    "FakeTunnel",
    "Host",
    "acquisition_hosts",
    "namespaces_possible",
]
