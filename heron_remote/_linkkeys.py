"""The per-launch keys of a com <-> worker link, and the worker's ZAP handler that checks them.

A com makes fresh keys for every launch and writes them as the first line on its worker's
stdin (the local pipe, or the SSH session's channel), never on argv, in the environment or
in a file::

    HERON_REMOTE_KEYS {"v": 1, "mechanism": "curve", "client": "<z85 public key of the com>"}

``curve`` (the direct transport): the worker makes a CurveZMQ server key pair for this launch,
marks each of its sockets a CURVE server, and its ZAP handler accepts only that client key; its
public key goes back in the ready line, over the host-key-verified SSH session. The com then
applies the client credentials to every socket it points at the worker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import zmq
from zmq.utils import z85

from .errors import DecodeError

__all__ = ["KEYS_PREFIX", "LinkKeys", "ZapHandler"]

KEYS_PREFIX = "HERON_REMOTE_KEYS "
_VERSION = 1
_MECHANISMS = ("curve",)
#: Where libzmq asks a context's ZAP handler (RFC 27).
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: What CurveZMQ adds to each frame on the wire (its MESSAGE command: name, nonce, box).
CURVE_FRAME_OVERHEAD = 64
#: The largest handshake command a com sends (INITIATE: keys, vouch and metadata, ~300 bytes).
CURVE_HANDSHAKE_MAX_BYTES = 1024
#: The longest key line a worker reads (a z85 key is 40 characters).
KEYS_MAX_CHARS = 1024


def _z85_key(value: object, what: str) -> bytes:
    """A z85 CurveZMQ key (40 characters); DecodeError for anything else."""
    if not isinstance(value, str) or len(value) != 40:
        raise DecodeError(f"{what} must be a z85 CurveZMQ key of 40 characters")
    try:
        z85.decode(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError, KeyError) as exc:
        raise DecodeError(f"{what} is not z85: {exc}") from exc
    return value.encode("ascii")


@dataclass(frozen=True, kw_only=True, repr=False)
class LinkKeys:
    """The keys of one launch. The com holds the client pair (and, once the worker is ready, the
    server's public key); the worker holds the client's public key and its own server pair."""

    mechanism: str = "curve"
    client_public: bytes
    client_secret: bytes = b""
    server_public: bytes = b""
    server_secret: bytes = b""
    #: Seconds after which a silent connection is dropped and made again (ZMTP heartbeats; 0: never).
    #: A direct link needs it: a cable pulled leaves TCP connections open that carry nothing, and a
    #: worker's PUSH would go on sharing its packets with one until TCP gives up, many minutes later.
    #: Not sent on the wire: each side sets its own.
    link_timeout: float = 0.0

    def __repr__(self) -> str:  # never a secret in a log line
        return f"LinkKeys({self.mechanism}, client={self.client_public.decode()})"

    # -- the com's side ----------------------------------------------------------
    @classmethod
    def make(cls, mechanism: str = "curve", *, link_timeout: float = 0.0) -> LinkKeys:
        """Fresh client keys for one launch."""
        if mechanism not in _MECHANISMS:
            raise ValueError(f"unknown link mechanism {mechanism!r}")
        public, secret = zmq.curve_keypair()
        return cls(mechanism=mechanism, client_public=public, client_secret=secret, link_timeout=link_timeout)

    def to_line(self) -> str:
        """The line the com writes first on its worker's stdin (newline included)."""
        body = {"v": _VERSION, "mechanism": self.mechanism, "client": self.client_public.decode()}
        return KEYS_PREFIX + json.dumps(body, separators=(",", ":")) + "\n"

    def with_server(self, server_public: str) -> LinkKeys:
        """These keys and the worker's server key from its ready line; DecodeError when it is not one."""
        return replace(self, server_public=_z85_key(server_public, "the worker's server key"))

    def apply_client(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before it connects) a CURVE client of the worker."""
        if not self.server_public or not self.client_secret:
            raise RuntimeError("the client credentials need the com's secret and the worker's server key")
        sock.curve_secretkey = self.client_secret
        sock.curve_publickey = self.client_public
        sock.curve_serverkey = self.server_public
        self._watch(sock)

    def _watch(self, sock: zmq.Socket) -> None:
        if self.link_timeout > 0:
            sock.heartbeat_ivl = max(50, int(self.link_timeout * 1000 / 3))
            sock.heartbeat_timeout = max(150, int(self.link_timeout * 1000))

    # -- the worker's side ---------------------------------------------------------
    @classmethod
    def from_line(cls, line: str | bytes) -> LinkKeys:
        """The keys a com sent; DecodeError for anything that is not a key line."""
        text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
        text = text.strip()
        if len(text) > KEYS_MAX_CHARS or not text.startswith(KEYS_PREFIX):
            raise DecodeError(f"the first line from the com must be its keys ({KEYS_PREFIX.strip()} {{...}})")
        try:
            body = json.loads(text[len(KEYS_PREFIX) :])
        except ValueError as exc:
            raise DecodeError(f"the com's key line is not JSON: {exc}") from exc
        if not isinstance(body, dict) or body.get("v") != _VERSION:
            raise DecodeError(f"the com's key line must be a JSON object of version {_VERSION}")
        mechanism = body.get("mechanism")
        if mechanism not in _MECHANISMS:
            raise DecodeError(f"the com's key line names the unknown mechanism {mechanism!r}")
        return cls(mechanism=mechanism, client_public=_z85_key(body.get("client"), "the com's client key"))

    def with_server_pair(self, *, link_timeout: float = 0.0) -> LinkKeys:
        """These keys and a CurveZMQ server key pair made now, for this launch only."""
        public, secret = zmq.curve_keypair()
        return replace(self, server_public=public, server_secret=secret, link_timeout=link_timeout)

    def apply_server(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before it binds) a CURVE server; its context's ZAP handler must run."""
        if not self.server_secret:
            raise RuntimeError("a CURVE server needs its key pair: with_server_pair() first")
        sock.curve_secretkey = self.server_secret
        sock.curve_publickey = self.server_public
        sock.curve_server = True
        sock.zap_domain = b"heron_remote"
        # libzmq applies a socket's size cap to the handshake's commands and to each encrypted frame
        # (the frame plus its box): a cap for a 64-byte pulse would refuse the com's own handshake.
        cap = int(sock.getsockopt(zmq.MAXMSGSIZE))
        if cap >= 0:
            sock.maxmsgsize = max(cap + CURVE_FRAME_OVERHEAD, CURVE_HANDSHAKE_MAX_BYTES)
        self._watch(sock)


class ZapHandler:
    """A context's ZAP handler: accepts the one client key of ``keys``, refuses every other.

    Its socket lives in its own thread. :meth:`start` returns once the handler is bound, so that
    sockets made afterwards are checked (libzmq lets any peer in while no handler is bound).
    """

    def __init__(
        self, context: zmq.Context, keys: LinkKeys, on_refused: Callable[[str], object] = lambda why: None
    ) -> None:
        self._context = context
        self._on_refused = on_refused
        self._client = z85.decode(keys.client_public)
        self._bound = threading.Event()
        self._error: BaseException | None = None
        #: Handshakes refused so far (another account's client, or a stale com).
        self.refused = 0
        self._thread = threading.Thread(target=self._serve, name="heron-worker-zap", daemon=True)

    def start(self, timeout: float = 5.0) -> ZapHandler:
        self._thread.start()
        if not self._bound.wait(timeout) or self._error is not None:
            raise RuntimeError(f"the ZAP handler did not start: {self._error!r}")
        return self

    def _serve(self) -> None:
        try:
            sock = self._context.socket(zmq.REP)
            sock.linger = 0
            sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self._error = exc
            self._bound.set()
            return
        self._bound.set()
        while True:
            try:
                frames = sock.recv_multipart()
            except zmq.ContextTerminated:
                sock.close()
                return
            sock.send_multipart(self._answer(frames))

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        # version, request id, domain, address, identity, mechanism, credentials...
        if len(frames) < 6:
            return [b"1.0", frames[1] if len(frames) > 1 else b"", b"400", b"malformed request", b"", b""]
        version, request_id, mechanism, credentials = frames[0], frames[1], frames[5], frames[6:]
        if mechanism == b"CURVE" and credentials == [self._client]:
            return [version, request_id, b"200", b"OK", b"com", b""]
        self.refused += 1
        peer = frames[3].decode(errors="replace")[:64]
        self._on_refused(
            f"a {mechanism.decode(errors='replace')[:16]} handshake from {peer} with another key than its com's"
        )
        return [version, request_id, b"400", b"not this worker's com", b"", b""]
