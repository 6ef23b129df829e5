"""The links a benchmark runs over: this machine, a namespace host (veth) and a loopback sshd.

A :class:`Link` knows how to start a raw sender on its host (``ip netns exec`` for a
namespace, a plain process for loopback) and carries what SSH needs to reach it.
:func:`open_links` makes the hosts with :class:`heron_remote.testing.AcqHosts` and
removes them on exit, whatever happened. The namespace link has two hosts (the scale
study spreads sources over both); every other measurement uses the first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..testing import AcqHosts, Host
from .child import BenchChild
from .protocol import Plan

logger = logging.getLogger(__name__)

LOCAL, NAMESPACE, LOOPBACK = "local", "ns", "lo"


class LinkUnavailable(RuntimeError):
    """A link's hosts cannot be made here (not root, no sshd, no ip command)."""


@dataclass(frozen=True)
class Link:
    """Where a sender runs and how SSH reaches it."""

    name: str
    host: Host | None = None
    registry: Path | None = None
    known_hosts: Path | None = None
    key: Path | None = None
    server_id: str = "None"
    #: Every host of the link, by registry name; ``server_id`` is the first.
    server_ids: tuple[str, ...] = ()

    def with_tunnel(self, backend: str) -> Link:
        """This link with every server's ``"tunnel"`` set to ``backend``, in a registry of its own."""
        return self.with_entries(backend, tunnel=backend)

    def with_entries(self, label: str, **values: object) -> Link:
        """This link with ``values`` set in every server's registry entry, in a registry of its own
        (named after ``label``)."""
        assert self.registry is not None
        raw = json.loads(self.registry.read_text())
        for entry in raw.values():
            entry.update(values)
        path = self.registry.with_name(f"{self.registry.stem}-{label}.json")
        path.write_text(json.dumps(raw, indent=2))
        return dataclasses.replace(self, registry=path)

    def with_transport(self, transport: str) -> Link:
        """This link with every server's ``"transport"`` set (``"direct"``), in a registry of its own."""
        return self.with_entries(transport, transport=transport)

    @property
    def ssh_target(self) -> str:
        assert self.host is not None
        return f"root@{self.host.address}:{self.host.port}"

    def sender_argv(self, plan: Plan, hwm: int, *extra: str) -> list[str]:
        argv = [sys.executable, "-m", "heron_remote.bench.sender", json.dumps(plan.to_dict()), str(hwm), *extra]
        if self.host is not None and self.host.netns:
            argv = ["ip", "netns", "exec", self.host.netns, *argv]
        return argv


class Sender(BenchChild):
    """A raw sender process on a link; a context manager that always ends it."""

    def __init__(self, link: Link, plan: Plan, hwm: int, *extra: str) -> None:
        """``extra``: the sender's ADDRESS and ``curve`` (see :mod:`.sender`)."""
        super().__init__(link.sender_argv(plan, hwm, *extra))
        #: The sender's CurveZMQ public key, when it serves CurveZMQ.
        self.key = b""
        try:
            self.port = self._read_port()
        except BaseException:
            self.close()
            raise

    def _read_port(self) -> int:
        line = self.first_line("the bench sender did not report its port")
        words = line.split()
        if words[:1] != [b"PORT"] or len(words) not in (2, 4):
            raise RuntimeError(f"the bench sender said {line!r}, not its port")
        if len(words) == 4:
            self.key = words[3]
        return int(words[1])


def _make_hosts(mode: str, stack: ExitStack) -> Link:
    if mode == "namespace" and os.geteuid() != 0:
        raise LinkUnavailable("network namespaces need root")
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"heron-bench-{mode}-")))
    try:
        hosts = AcqHosts(workdir, count=2 if mode == "namespace" else 1, mode=mode)
    except (OSError, subprocess.SubprocessError, RuntimeError, AssertionError) as exc:
        raise LinkUnavailable(f"cannot make a {mode} host: {exc}") from exc
    stack.callback(hosts.close)
    names = tuple(h.name for h in hosts.hosts)
    # The workers must run this interpreter, which has heron_remote, whatever the host's PATH holds.
    hosts.write_registry(**{name: {"python": shlex.quote(sys.executable)} for name in names})
    return Link(
        NAMESPACE if mode == "namespace" else LOOPBACK,
        hosts.hosts[0],
        hosts.registry,
        hosts.known_hosts,
        hosts.user_key,
        server_id=names[0],
        server_ids=names,
    )


@contextmanager
def open_links(names: set[str]) -> Iterator[dict[str, Link | LinkUnavailable]]:
    """The links named (``local``, ``ns``, ``lo``), each a Link or the reason it is unavailable."""
    with ExitStack() as stack:
        links: dict[str, Link | LinkUnavailable] = {}
        for name in sorted(names):
            if name == LOCAL:
                links[name] = Link(LOCAL)
                continue
            mode = "namespace" if name == NAMESPACE else "loopback"
            try:
                links[name] = _make_hosts(mode, stack)
            except LinkUnavailable as exc:
                logger.warning("link %s unavailable: %s", name, exc)
                links[name] = exc
        yield links
