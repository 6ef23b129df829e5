"""Forwarders that every script (process) of this account on the rig shares, and that outlive their starter.

The first process that needs the forwarders of a set of ports runs them in its own threads
(its Sources reach them in-process, at full speed); every other process checks who they
are (:mod:`.forwarders_hello`) and publishes through them over TCP, holding the hello
connection while it does. When the process that runs them goes -- stopped, or killed --
that connection ends: one survivor binds the ports and runs the forwarders from then on,
the others find it and use its forwarders; each says so at WARNING. Who decides is settled
under a lock in the account's private folder, so two survivors never both try.

A port held by anything that does not answer the hello as this account's forwarders is an
error that names it: a Source never publishes into an unknown listener.

``Settings.forwarder_host`` is where forwarders are looked for; those found on another
machine's (or interface's) address answer no hello, and are used as they are. When none
answer there, a Source's forwarders bind ``Settings.forwarder_bind`` (127.0.0.1 unless the
caller names another interface): where to find forwarders never decides where to open them.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import zmq

from . import forwarders_hello as hello_mod
from ._portowner import Listener, account_name, describe_process, listeners, socket_holders
from ._shared import SharedRegistry
from ._threads import KeptThread
from .errors import ForwarderError
from .forwarders import Forwarders
from .settings import ForwarderPorts

__all__ = ["ForwarderLease", "describe_taken", "lease_forwarders", "reach", "start_forwarders"]

logger = logging.getLogger(__name__)

#: Seconds a start waits for forwarders that hold the ports but do not answer yet (just starting).
START_WAIT_S = 1.0
#: Seconds a survivor waits for the ports of forwarders that went to be free.
TAKEOVER_WAIT_S = 3.0
_LOCK_TIMEOUT_S = 10.0
_RETRY_S = 0.01
#: Seconds to wait for forwarders to accept a connection where the com looks for them (another address).
PROBE_TIMEOUT_S = 1.0
_WILDCARDS = ("0.0.0.0", "*", "::")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def reach(bind: str) -> str:
    """The address that reaches forwarders bound on ``bind`` from this machine."""
    return "127.0.0.1" if bind in _WILDCARDS else bind


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _port_list(ports: ForwarderPorts) -> list[int]:
    return list(dataclasses.astuple(ports))


def _serves(listener: Listener, bind: str) -> bool:
    """Whether ``listener`` takes the connections meant for forwarders bound to ``bind``."""
    return listener.wildcard or bind in ("0.0.0.0", "*", "::") or listener.address == bind or bind == "localhost"


def describe_taken(bind: str, ports: ForwarderPorts) -> str:
    """Why the forwarders of ``ports`` cannot start here: who holds which port, and what to do."""
    advice = (
        "Stop it, or give every script of this rig other forwarder ports "
        "(Settings(ports=ForwarderPorts(...)), or HERON_REMOTE_PORT_DATA_SUBMIT and the other five)."
    )
    try:
        link = hello_mod.say_hello(ports.data_submit)
    except ForwarderError as exc:
        return f"{exc}. {advice}"
    if link is not None:
        link.close()
        return (
            f"heron_remote forwarders of {link.hello} run on these ports already (ports {link.hello.ports}); "
            "scripts of this account share them: there is nothing to start"
        )
    for port in _port_list(ports):
        held = [ln for ln in listeners(port) if _serves(ln, bind)]
        if not held:
            continue
        ln = held[0]
        pids = socket_holders(ln.inode)
        who = ", ".join(describe_process(pid) for pid in pids)
        where = f"port {port} on {ln.address}"
        if ln.uid != os.getuid():
            seen = f"; {who}" if who else " (its process is not visible to this account)"
            return (
                f"{where} is held by another account ({account_name(ln.uid)}, uid {ln.uid}{seen}). Forwarders "
                f"of another account are never used: they would see this account's data. {advice}"
            )
        return (
            f"{where} is held by {who or 'a process of this account'}, which does not answer as heron_remote "
            f"forwarders. {advice}"
        )
    return f"a forwarder port ({', '.join(map(str, _port_list(ports)))}) on {bind} is in use. {advice}"


def start_forwarders(bind: str, ports: ForwarderPorts) -> Forwarders:
    """Start forwarders here (``heron-remote forwarders``); a port in use names what holds it."""
    try:
        return Forwarders(host=bind, ports=ports).start()
    except ForwarderError as exc:
        if _in_use(exc):
            raise ForwarderError(describe_taken(bind, ports)) from exc
        raise


def _in_use(exc: ForwarderError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, zmq.ZMQError) and cause.errno == errno.EADDRINUSE


class _Shared:
    """This process's use of the forwarders on one set of ports: run here, or another process's, watched."""

    def __init__(self, bind: str, ports: ForwarderPorts) -> None:
        self.bind = bind
        self.ports = ports
        self.forwarders: Forwarders | None = None
        self.link: hello_mod.HelloLink | None = None
        self.error: ForwarderError | None = None
        self._on_failure: dict[int, Callable[[ForwarderError], object]] = {}
        self._lock = threading.Lock()
        self._closing = False
        self._watch: KeptThread | None = None

    # -- who runs them ---------------------------------------------------------------
    def open(self) -> _Shared:
        self._obtain(START_WAIT_S)
        if self.link is not None:
            logger.info("using the forwarders of %s on %s", self.link.hello, self.bind)
            self._watch = KeptThread.start_new(self._watch_run, name=f"heron-forwarders-watch-{self.ports.data_submit}")
        return self

    def _obtain(self, wait: float) -> None:
        """Attach to the forwarders that answer, else run them here; ForwarderError names what holds a port."""
        with hello_mod.lock(self.ports.data_submit, _LOCK_TIMEOUT_S):
            deadline = time.monotonic() + wait
            while True:
                link = hello_mod.say_hello(self.ports.data_submit)
                if link is not None:
                    if link.hello.ports != self.ports:
                        link.close()
                        raise ForwarderError(
                            f"the forwarders of {link.hello} on port {self.ports.data_submit} use other ports "
                            f"({link.hello.ports}) than this script ({self.ports}): give every script of this rig "
                            "the same forwarder ports"
                        )
                    self.link = link
                    return
                try:
                    self.forwarders = Forwarders(host=self.bind, ports=self.ports).start()
                    return
                except ForwarderError as exc:
                    # Held: by forwarders still starting or just gone (their ports free in a moment), or
                    # by something else -- named once the wait is over.
                    if not _in_use(exc) or time.monotonic() > deadline:
                        if _in_use(exc):
                            raise ForwarderError(describe_taken(self.bind, self.ports)) from exc
                        raise
                time.sleep(_RETRY_S)

    def _watch_run(self) -> None:
        """Wait until the forwarders in use go; take over or follow whoever did."""
        while True:
            link = self.link
            assert link is not None
            goodbye = link.wait_gone()
            if self._closing:
                return
            gone = link.hello
            link.close()
            started = time.monotonic()
            how = "stopped" if goodbye else "ended without a goodbye (killed?)"
            try:
                with self._lock:
                    self.link = None
                    self._obtain(TAKEOVER_WAIT_S)
                if self._closing:
                    return
            except Exception as exc:  # whatever it is, the sources that rely on these forwarders hear of it
                self.error = ForwarderError(f"the forwarders of {gone} {how}, and none could replace them: {exc}")
                self.error.__cause__ = exc
                logger.error("%s", self.error)
                for callback in list(self._on_failure.values()):
                    callback(self.error)
                return
            took = (time.monotonic() - started) * 1000
            if self.forwarders is not None:
                logger.warning(
                    "the forwarders of %s %s; taking over: they run in this process (pid %d) now (%.0f ms)",
                    gone,
                    how,
                    os.getpid(),
                    took,
                )
                return
            assert self.link is not None
            logger.warning(
                "the forwarders of %s %s; now using those of %s, which took over (%.0f ms)",
                gone,
                how,
                self.link.hello,
                took,
            )

    # -- users ------------------------------------------------------------------------
    def watch_failure(self, key: int, callback: Callable[[ForwarderError], object] | None) -> None:
        if callback is None:
            self._on_failure.pop(key, None)
        else:
            self._on_failure[key] = callback

    @property
    def host(self) -> str:
        """Where the users connect to the forwarders in use now."""
        link = self.link
        return reach(link.hello.bind if link is not None and self.forwarders is None else self.bind)

    @property
    def owner_pid(self) -> int | None:
        """The process that runs the forwarders in use now (this one, or another), if any."""
        if self.forwarders is not None:
            return os.getpid()
        link = self.link
        return link.hello.pid if link is not None else None

    def close(self) -> None:
        self._closing = True
        link = self.link
        if link is not None:
            link.close()
        watch = self._watch
        if watch is not None and watch is not threading.current_thread():
            watch.join(_LOCK_TIMEOUT_S + TAKEOVER_WAIT_S + 1)
        with self._lock:
            if self.link is not None:
                self.link.close()
            if self.forwarders is not None:
                users = self.forwarders.users
                if users:
                    logger.info("forwarders stopping; %d other process(es) using them will take over", users)
                self.forwarders.close()


#: This process's forwarders by (bind address, ports), shared by its Sources and counted.
_shared: SharedRegistry[tuple[str, ForwarderPorts], _Shared] = SharedRegistry(_Shared.close)
_lease_ids = iter(range(1, 1 << 62))


class ForwarderLease:
    """The forwarders one user (a Source) relies on; :meth:`close` gives them back. Idempotent.

    ``running_here`` is the :class:`Forwarders` this process runs for them (shared and counted),
    or None while another process runs them. ``error`` is set when they went and none could
    replace them (``on_failure`` was called with it).
    """

    def __init__(
        self, host: str, ports: ForwarderPorts, shared: _Shared | Forwarders | None, release: Callable[[], object]
    ) -> None:
        self._host = host
        self.ports = ports
        self._shared = shared
        self._release: Callable[[], object] | None = release

    @property
    def host(self) -> str:
        """Where this lease's users connect to the forwarders."""
        return self._shared.host if isinstance(self._shared, _Shared) else self._host

    @property
    def running_here(self) -> Forwarders | None:
        if isinstance(self._shared, _Shared):
            return self._shared.forwarders
        return self._shared

    @property
    def owner_pid(self) -> int | None:
        """The process that runs them now."""
        if isinstance(self._shared, _Shared):
            return self._shared.owner_pid
        return os.getpid() if self._shared is not None else None

    @property
    def error(self) -> ForwarderError | None:
        return self._shared.error if isinstance(self._shared, _Shared) else None

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> ForwarderLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lease_forwarders(
    ports: ForwarderPorts,
    *,
    find_at: str = "127.0.0.1",
    bind: str = "127.0.0.1",
    on_failure: Callable[[ForwarderError], object] | None = None,
) -> ForwarderLease:
    """The forwarders of ``ports``: those answering at ``find_at`` when it is another address (used as
    they are), else this process's, another process's of this account (checked), or started here on
    ``bind``. ``on_failure`` hears when they went and none could replace them."""
    if 0 in _port_list(ports):  # free ports: nobody else can ask for these
        own = Forwarders(host=bind, ports=ports).start()
        return ForwarderLease(reach(bind), own.ports, own, own.close)
    if find_at not in (*_LOOPBACK, bind) and _answers(find_at, ports.data_submit):
        logger.info("forwarders answer on %s; using them (not on this machine's loopback: no hello to check)", find_at)
        return ForwarderLease(find_at, ports, None, lambda: None)
    if find_at not in (*_LOOPBACK, bind):
        logger.info("no forwarders answer on %s: starting this process's own on %s (forwarder_bind)", find_at, bind)
    if not hello_mod.AVAILABLE:
        return _unshared(bind, ports)
    key = (bind, ports)
    shared, _ = _shared.acquire(key, lambda: _Shared(bind, ports).open())
    lease_id = next(_lease_ids)
    shared.watch_failure(lease_id, on_failure)

    def release() -> None:
        shared.watch_failure(lease_id, None)
        _shared.release(key, shared)

    return ForwarderLease(reach(bind), ports, shared, release)


def _unshared(bind: str, ports: ForwarderPorts) -> ForwarderLease:
    """Where forwarders cannot say who they are (no unix sockets or peer credentials): run them here,
    or use whatever holds the ports, said at WARNING."""
    try:
        own = Forwarders(host=bind, ports=ports).start()
    except ForwarderError as exc:
        if not _in_use(exc):
            raise
        logger.warning("forwarder ports %s on %s are in use; using them unchecked (no hello here)", ports, bind)
        return ForwarderLease(reach(bind), ports, None, lambda: None)
    return ForwarderLease(reach(bind), ports, own, own.close)
