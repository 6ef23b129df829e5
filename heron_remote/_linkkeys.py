"""The per-launch key of the com <-> worker link, and the worker's gate that checks it.

A com makes fresh keys for every launch of a worker and writes them as the FIRST line of
the worker's stdin (the local pipe, or the SSH session's stdin), never on argv, in the
environment or in a file::

    HERON_REMOTE_KEYS {"v": 1, "mechanism": "plain", "secret": "<64 hex>"}
    HERON_REMOTE_KEYS {"v": 1, "mechanism": "curve", "client": "<z85 public key of the com>"}

The worker reads that line before it binds anything, serves ZeroMQ's ZAP in each of its
contexts (:class:`Gate`) and makes each of its four sockets a PLAIN server that accepts only
that secret; the com sets it as client credentials on every socket it points at the worker.
PLAIN sends the secret in the clear: it travels only over loopback or inside SSH. The direct
transport uses ``"curve"``: the com keeps its client key pair's secret, the worker makes a
CurveZMQ server key pair for this launch and sends its public key back in the ready line (over
the SSH session), its sockets are CURVE servers and the gate accepts that one client key. Every
handshake a worker socket refuses (no key, a wrong key, a connection that does not finish
its handshake within :data:`HANDSHAKE_IVL_MS`) is counted and logged; the worker's beacons
carry the count to its com. A connection its peer closes before saying anything is not
counted: it carried nothing, and the OpenSSH backend checks each new forward so.

Mechanism ``"none"`` exists for benchmarks only (:func:`unauthenticated_launches`, which
measures what authentication costs): nothing a user sets reaches it.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import itertools
import json
import logging
import re
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import zmq
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from ._drops import Drops
from ._threads import KeptThread
from .errors import DecodeError

__all__ = ["HANDSHAKE_IVL_MS", "KEYS_PREFIX", "Gate", "LinkKeys", "unauthenticated_launches"]

logger = logging.getLogger("heron_remote.worker")

KEYS_PREFIX = "HERON_REMOTE_KEYS "
KEYS_VERSION = 1
#: The longest key line a worker reads (a curve line is about 100 bytes).
MAX_LINE = 4096
#: Milliseconds a connection to a worker socket has to finish its handshake (ZeroMQ's default
#: is 30 s): a connection that never authenticates is closed, and counted, after this.
HANDSHAKE_IVL_MS = 5000
_USER = b"heron-remote"
_DOMAIN = b"heron-remote"
_SECRET = re.compile(r"[0-9a-f]{64}")
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by ZeroMQ's RFC 27
_REFUSALS: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "it offered no key (or a mechanism other than its com's)",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "its key was not its com's",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: f"it did not finish its handshake within {HANDSHAKE_IVL_MS / 1000:g} s",
}
_WATCHED = sum(_REFUSALS)
#: What a handshake that ran out of time ends with (ZeroMQ says EAGAIN; a peer that closed, EPIPE or ECONNRESET).
_TIMED_OUT = (errno.EAGAIN, errno.ETIMEDOUT)
_STOP_CHECK_MS = 100
_gates = itertools.count(1)
#: What CurveZMQ adds to each frame on the wire (its MESSAGE command: name, nonce, box).
CURVE_FRAME_OVERHEAD = 64
#: The largest handshake command a com sends (INITIATE: keys, vouch and metadata, ~300 bytes).
CURVE_HANDSHAKE_MAX_BYTES = 1024
_unauthenticated = False


def _z85_key(value: object, what: str) -> bytes:
    """A z85 CurveZMQ key (40 characters); DecodeError for anything else."""
    if not isinstance(value, str) or len(value) != 40:
        raise DecodeError(f"{what} must be a z85 CurveZMQ key of 40 characters")
    try:
        z85.decode(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError, KeyError) as exc:
        raise DecodeError(f"{what} is not z85: {exc}") from exc
    return value.encode("ascii")


@dataclass(frozen=True)
class LinkKeys:
    """The keys of one launch: ``mechanism`` "plain" with a ``secret`` of 64 hex digits, or "curve"
    (the direct transport) with the com's client key pair and, once known, the worker's server key.

    A com holds ``client_secret`` and, after the ready line, ``server_public``; a worker holds the
    com's ``client_public`` and the ``server_secret`` it made. ``link_timeout`` (curve only, never
    sent): seconds after which a silent connection is dropped and made again (ZeroMQ heartbeats) --
    a cable pulled leaves TCP connections open that carry nothing, and a worker's PUSH would go on
    sharing its packets with one until TCP gives up, many minutes later.
    """

    mechanism: str
    secret: str = ""
    client_public: bytes = b""
    client_secret: bytes = b""
    server_public: bytes = b""
    server_secret: bytes = b""
    link_timeout: float = 0.0

    def __repr__(self) -> str:  # never the secret, whatever logs this
        return f"LinkKeys({self.mechanism!r})"

    @classmethod
    def make(cls, mechanism: str = "plain", *, link_timeout: float = 0.0) -> LinkKeys:
        """Fresh keys for one launch ("curve": a client key pair, for the direct transport)."""
        if mechanism == "curve":
            public, secret = zmq.curve_keypair()
            return cls("curve", client_public=public, client_secret=secret, link_timeout=link_timeout)
        if _unauthenticated:
            return cls("none")
        return cls("plain", secrets.token_hex(32))

    def to_line(self) -> str:
        """The line a com writes first on its worker's stdin (with its newline)."""
        body: dict[str, object] = {"v": KEYS_VERSION, "mechanism": self.mechanism}
        if self.mechanism == "plain":
            body["secret"] = self.secret
        elif self.mechanism == "curve":
            body["client"] = self.client_public.decode()
        return KEYS_PREFIX + json.dumps(body, separators=(",", ":")) + "\n"

    def with_server(self, server_public: str) -> LinkKeys:
        """The com's curve keys and the worker's server key from its ready line; DecodeError when it is none."""
        return replace(self, server_public=_z85_key(server_public, "the worker's server key"))

    def with_server_pair(self, *, link_timeout: float = 0.0) -> LinkKeys:
        """The worker's curve keys and a CurveZMQ server key pair made now, for this launch only."""
        public, secret = zmq.curve_keypair()
        return replace(self, server_public=public, server_secret=secret, link_timeout=link_timeout)

    def client_state(self) -> dict[str, object]:
        """The com's side, secrets included, for the relay that takes its place in the forwarders'
        process (:mod:`heron_remote.relay_host`): sent only over this account's private socket."""
        return {
            "mechanism": self.mechanism,
            "secret": self.secret,
            "client_public": self.client_public.decode(),
            "client_secret": self.client_secret.decode(),
            "server_public": self.server_public.decode(),
            "link_timeout": self.link_timeout,
        }

    @classmethod
    def from_client_state(cls, state: object) -> LinkKeys:
        """:meth:`client_state` read back; DecodeError when it is not one."""
        if not isinstance(state, dict) or state.get("mechanism") not in ("plain", "curve", "none"):
            raise DecodeError("not a com's link keys")
        try:
            return cls(
                str(state["mechanism"]),
                str(state["secret"]),
                client_public=str(state["client_public"]).encode("ascii"),
                client_secret=str(state["client_secret"]).encode("ascii"),
                server_public=str(state["server_public"]).encode("ascii"),
                link_timeout=float(state["link_timeout"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"a com's link keys lack {exc}") from exc

    @classmethod
    def from_line(cls, line: bytes | str) -> LinkKeys:
        """The keys a key line carries; DecodeError saying what is wrong with it."""
        raw = line.encode() if isinstance(line, str) else line
        if not raw:
            raise DecodeError("no key line: the worker's stdin closed before its com sent the link's keys")
        if len(raw) > MAX_LINE:
            raise DecodeError(f"the key line is longer than {MAX_LINE} bytes")
        text = raw.decode("ascii", errors="replace").rstrip("\r\n")
        if not text.startswith(KEYS_PREFIX):
            raise DecodeError(f"the first line from the com must start with {KEYS_PREFIX.strip()!r}")
        try:
            body = json.loads(text[len(KEYS_PREFIX) :])
        except ValueError as exc:
            raise DecodeError(f"the key line's JSON cannot be read: {exc}") from exc
        if not isinstance(body, dict):
            raise DecodeError(f"the key line must hold a JSON object, got {type(body).__name__}")
        if type(body.get("v")) is not int or body["v"] != KEYS_VERSION:
            raise DecodeError(f"the key line is of version {body.get('v')!r}; this worker reads {KEYS_VERSION}")
        mechanism = body.get("mechanism")
        if mechanism == "none":
            return cls("none")
        if mechanism == "curve":
            return cls("curve", client_public=_z85_key(body.get("client"), "the key line's client key"))
        if mechanism != "plain":
            raise DecodeError(f"the key line names mechanism {mechanism!r}; this worker knows 'plain' and 'curve'")
        secret = body.get("secret")
        if not isinstance(secret, str) or not _SECRET.fullmatch(secret):
            raise DecodeError("the key line's secret must be 64 lower-case hex digits")
        return cls("plain", secret)

    # -- sockets ----------------------------------------------------------------------
    def apply_client(self, sock: zmq.Socket) -> None:
        """Present these keys on ``sock`` (a com's socket, before it connects to the worker)."""
        if self.mechanism == "plain":
            sock.plain_username = _USER
            sock.plain_password = self.secret.encode()
        elif self.mechanism == "curve":
            if not self.server_public or not self.client_secret:
                raise RuntimeError("curve client credentials need the com's secret and the worker's server key")
            sock.curve_secretkey = self.client_secret
            sock.curve_publickey = self.client_public
            sock.curve_serverkey = self.server_public
            self._watch(sock)
        else:
            sock.plain_server = False  # ZeroMQ: back to the NULL mechanism

    def apply_server(self, sock: zmq.Socket) -> None:
        """Accept only these keys on ``sock`` (a worker's socket, before it binds; a :class:`Gate` serves)."""
        sock.handshake_ivl = HANDSHAKE_IVL_MS
        if self.mechanism == "plain":
            sock.plain_server = True
            sock.zap_domain = _DOMAIN
        elif self.mechanism == "curve":
            if not self.server_secret:
                raise RuntimeError("a CURVE server needs its key pair: with_server_pair() first")
            sock.curve_secretkey = self.server_secret
            sock.curve_publickey = self.server_public
            sock.curve_server = True
            sock.zap_domain = _DOMAIN
            # libzmq applies a socket's size cap to the handshake's commands and to each encrypted
            # frame (the frame plus its box): leave room for both above what the reader allows.
            cap = int(sock.getsockopt(zmq.MAXMSGSIZE))
            if cap >= 0:
                sock.maxmsgsize = max(cap + CURVE_FRAME_OVERHEAD, CURVE_HANDSHAKE_MAX_BYTES)
            self._watch(sock)

    def _watch(self, sock: zmq.Socket) -> None:
        """ZeroMQ heartbeats on a direct link: a connection silent for ``link_timeout`` s is dropped."""
        if self.link_timeout > 0:
            sock.heartbeat_ivl = max(50, int(self.link_timeout * 1000 / 3))
            sock.heartbeat_timeout = max(150, int(self.link_timeout * 1000))

    def accepts(self, mechanism: bytes, credentials: Sequence[bytes]) -> bool:
        """Whether a ZAP request's ``mechanism`` and ``credentials`` are these keys."""
        if self.mechanism == "curve":
            client = z85.decode(self.client_public)
            return mechanism == b"CURVE" and len(credentials) == 1 and hmac.compare_digest(credentials[0], client)
        if self.mechanism != "plain" or mechanism != b"PLAIN" or len(credentials) != 2:
            return False
        user, password = credentials
        return hmac.compare_digest(user, _USER) and hmac.compare_digest(password, self.secret.encode())


class Gate:
    """The worker's ZAP handler and its count of refused connections, one thread per context.

    :meth:`start` binds a ZAP socket in each context (before any worker socket binds: with
    none, ZeroMQ refuses every PLAIN handshake) and connects to a monitor endpoint for each
    channel; :meth:`watch` makes a socket report its failed handshakes there. A context that
    is terminated ends its thread (the worker's data context at a normal end).
    """

    def __init__(self, keys: LinkKeys) -> None:
        self.keys = keys
        self._drops = Drops(logger, "a connection to a worker port that did not carry its com's key")
        self._stopping = threading.Event()
        self._threads: list[KeptThread] = []
        self._endpoints: dict[str, str] = {}
        self._id = next(_gates)

    @property
    def refused(self) -> int:
        """Connections refused so far, on all of the worker's sockets."""
        return self._drops.count

    def start(self, channels: Mapping[zmq.Context, Sequence[str]], timeout: float = 5.0) -> None:
        """Serve ``channels`` (the worker's channels by the context their sockets live in); returns once ready."""
        for context, names in channels.items():
            ready = threading.Event()
            endpoints = {name: f"inproc://heron-remote-gate-{self._id}-{name}" for name in names}
            self._endpoints.update(endpoints)
            thread = KeptThread.start_new(
                self._serve, args=(context, endpoints, ready), name=f"heron-worker-gate-{self._id}"
            )
            self._threads.append(thread)
            if not ready.wait(timeout) or thread.error is not None:
                raise RuntimeError(f"the worker's key check did not start: {thread.error!r}")

    def watch(self, sock: zmq.Socket, channel: str) -> None:
        """Set ``sock`` (before it binds, in its own thread) to accept only the com's keys, its refusals counted."""
        self.keys.apply_server(sock)
        sock.monitor(self._endpoints[channel], _WATCHED)

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(1.0)

    def _serve(self, context: zmq.Context, endpoints: Mapping[str, str], ready: threading.Event) -> None:
        zap = context.socket(zmq.REP)
        zap.linger = 0
        monitors: dict[zmq.Socket, str] = {}
        try:
            zap.bind(_ZAP_ENDPOINT)
            for channel, endpoint in endpoints.items():
                monitor = context.socket(zmq.PAIR)
                monitor.linger = 0
                monitor.connect(endpoint)  # inproc: before the worker's socket binds the monitor
                monitors[monitor] = channel
            ready.set()
            poller = zmq.Poller()
            for sock in (zap, *monitors):
                poller.register(sock, zmq.POLLIN)
            while not self._stopping.is_set():
                for sock, _ in poller.poll(_STOP_CHECK_MS):
                    if sock is zap:
                        self._answer(zap, zap.recv_multipart())
                    else:
                        self._event(monitors[sock], sock.recv_multipart())
        except zmq.ContextTerminated:
            pass  # the context ends (the worker's data context when it finishes)
        finally:
            for sock in (zap, *monitors):
                sock.close()

    def _answer(self, zap: zmq.Socket, request: list[bytes]) -> None:
        """Reply to one ZAP request (RFC 27): 200 for the com's keys, 400 for anything else."""
        version, request_id = [*request, b"", b""][:2]
        ok = len(request) >= 6 and self.keys.accepts(request[5], request[6:])
        status = (b"200", b"OK") if ok else (b"400", b"not this launch's key")
        zap.send_multipart([version, request_id, *status, _USER if ok else b"", b""])

    def _event(self, channel: str, message: list[bytes]) -> None:
        event = parse_monitor_message(message)
        kind = int(event["event"])
        if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and event["value"] not in _TIMED_OUT:
            logger.debug("a connection to the worker's %s port closed before its handshake", channel)
            return
        why = _REFUSALS.get(kind)
        if why is not None:
            self._drops(f"on the {channel} port: {why}")


@contextlib.contextmanager
def unauthenticated_launches() -> Iterator[None]:
    """Launches in this block make unauthenticated links: for ``heron-remote bench`` only, to
    measure what authentication costs. Never reachable from settings, the environment or a registry."""
    global _unauthenticated
    saved, _unauthenticated = _unauthenticated, True
    try:
        yield
    finally:
        _unauthenticated = saved
