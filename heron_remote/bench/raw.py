"""Raw transport baselines: a pyzmq PUSH -> PULL stream, direct or through one kind of SSH forward.

Each function takes a link and a plan, starts a raw sender on the link's host, opens
its forward (or none), receives with a PULL socket here and returns the figures. Every
forward is the library's as users meet it: sshtunnel and pyzmq with paramiko's
defaults, OpenSSH's ``ssh -L`` with its own; and ``ssh -L`` with AES-GCM, the cipher the
OpenSSH tunnel backend asks for, so that the backend is also compared with its own transport.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import zmq

from ..wire import ZERO_COPY_MIN
from .links import Link, Sender
from .protocol import Plan, Result, measure

__all__ = [
    "RAW",
    "direct",
    "hwm_for",
    "openssh_forward",
    "openssh_gcm_forward",
    "over_link",
    "sshtunnel_forward",
    "zmq_curve_over_link",
    "zmq_paramiko",
]

logger = logging.getLogger(__name__)

FIRST_MESSAGE_TIMEOUT_S = 20.0
_FORWARD_UP_TIMEOUT_S = 15.0
#: What a forward may hold besides the ZeroMQ queues: SSH windows and socket buffers (measured ~10 MB).
_TUNNEL_BUFFER_BYTES = 16 * 1024 * 1024

Forward = Callable[[Link, int], AbstractContextManager[tuple[int, dict[str, Any]]]]


def hwm_for(size: int) -> int:
    """ZeroMQ high-water mark for ``size``-byte messages: about 16 MiB queued per socket."""
    return max(2, min(1000, (16 * 1024 * 1024) // size))


def raw_plan(plan: Plan) -> Plan:
    """The plan with the backlog a raw sender must let drain before its latency phase."""
    backlog = 2 * hwm_for(plan.size) * plan.size + _TUNNEL_BUFFER_BYTES
    return Plan(**{**plan.to_dict(), "backlog_bytes": backlog})


def _receive(sock: zmq.Socket, plan: Plan) -> Iterator[Any]:
    copy = plan.size < ZERO_COPY_MIN
    sock.rcvtimeo = int(FIRST_MESSAGE_TIMEOUT_S * 1000)
    first = True
    while True:
        try:
            msg = sock.recv(copy=copy)
        except zmq.Again:
            raise TimeoutError(f"no message for {sock.rcvtimeo / 1000:g} s") from None
        if first:
            first = False
            sock.rcvtimeo = int(plan.idle_timeout_s * 1000)
        yield msg.buffer if isinstance(msg, zmq.Frame) else msg


@contextmanager
def _from_sender(link: Link, plan: Plan, *extra: str) -> Iterator[tuple[Sender, zmq.Socket]]:
    """A bench sender on ``link`` (``extra``: its address and ``curve``) and a PULL socket, not yet
    connected, to read it with.

    A timeout while reading comes out with the sender's stderr.
    """
    context = zmq.Context()
    try:
        with Sender(link, plan, hwm_for(plan.size), *extra) as sender:
            sock = context.socket(zmq.PULL)
            sock.rcvhwm = hwm_for(plan.size)
            sock.linger = 0
            try:
                yield sender, sock
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}; sender stderr: {sender.stderr_tail()}") from None
            finally:
                sock.close()
    finally:
        context.term()


def _run(name: str, link: Link, plan: Plan, forward: Forward | None) -> Result:
    plan = raw_plan(plan)
    with _from_sender(link, plan) as (sender, sock):
        if forward is None:
            sock.connect(f"tcp://127.0.0.1:{sender.port}")
            result = measure(name, _receive(sock, plan), plan)
        else:
            with forward(link, sender.port) as (local_port, notes):
                sock.connect(f"tcp://127.0.0.1:{local_port}")
                result = measure(name, _receive(sock, plan), plan)
                result.notes.update(notes)
                sock.close()  # before the forward goes, so nothing waits on it
    result.notes["hwm"] = hwm_for(plan.size)
    return result


# -- the forwards ----------------------------------------------------------------------------


@contextmanager
def _sshtunnel(link: Link, remote_port: int) -> Iterator[tuple[int, dict[str, Any]]]:
    import sshtunnel

    assert link.host is not None and link.key is not None
    forwarder = sshtunnel.SSHTunnelForwarder(
        (link.host.address, link.host.port),
        ssh_username="root",
        ssh_pkey=str(link.key),
        ssh_config_file=None,
        allow_agent=False,
        host_pkey_directories=[],
        remote_bind_address=("127.0.0.1", remote_port),
        local_bind_address=("127.0.0.1", 0),
        logger=logging.getLogger(__name__ + ".sshtunnel"),
    )
    forwarder.start()
    try:
        transport = getattr(forwarder, "_transport", None)
        notes = {"cipher": getattr(transport, "remote_cipher", None)}
        yield forwarder.local_bind_port, notes
    finally:
        forwarder.stop(force=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            raise RuntimeError(f"ssh exited with status {proc.returncode}: {err[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ssh -L did not listen on port {port} within {timeout:g} s") from None
            time.sleep(0.05)


@contextmanager
def _openssh(link: Link, remote_port: int, cipher: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    assert link.host is not None and link.key is not None and link.known_hosts is not None
    local_port = _free_port()
    argv = [
        "ssh",
        *(["-c", cipher] if cipher else []),
        "-F",
        "/dev/null",  # the user's ~/.ssh/config must not change the baseline
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={link.known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
        str(link.key),
        "-p",
        str(link.host.port),
        "-N",
        "-L",
        f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}",
        f"root@{link.host.address}",
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(local_port, proc, _FORWARD_UP_TIMEOUT_S)
        yield local_port, {"cipher": cipher or "OpenSSH's default"}
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


@contextmanager
def _host_key_policy(policy: str) -> Iterator[None]:
    """pyzmq's paramiko tunnel reads ~/.ssh/known_hosts only; accept the bench host's key for this call."""
    key = "PYZMQ_PARAMIKO_HOST_KEY_POLICY"
    before = os.environ.get(key)
    os.environ[key] = policy
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # paramiko warns of the unknown key; the forked tunnel inherits this
            yield
    finally:
        if before is None:
            del os.environ[key]
        else:
            os.environ[key] = before


def _zmq_paramiko_run(name: str, link: Link, plan: Plan) -> Result:
    """pyzmq's tunnel connects the socket itself, so this one does not fit :data:`Forward`."""
    from zmq import ssh as zmq_ssh

    assert link.host is not None and link.key is not None
    plan = raw_plan(plan)
    tunnel: Any = None
    try:
        with _from_sender(link, plan) as (sender, sock):
            with _host_key_policy("Warning"):
                # pyzmq's stub says socket.socket; the function takes (and needs) a zmq socket.
                tunnel = zmq_ssh.tunnel_connection(  # type: ignore[call-overload]
                    sock, f"tcp://127.0.0.1:{sender.port}", link.ssh_target, keyfile=str(link.key), paramiko=True
                )
            result = measure(name, _receive(sock, plan), plan)
    finally:
        if tunnel is not None and hasattr(tunnel, "terminate"):  # a multiprocessing.Process
            tunnel.terminate()
            tunnel.join(5)
            if tunnel.is_alive():
                tunnel.kill()
                tunnel.join(5)
    result.notes["hwm"] = hwm_for(plan.size)
    return result


# -- the measurements ------------------------------------------------------------------------


def direct(name: str, link: Link, plan: Plan) -> Result:
    """pyzmq PUSH -> PULL on loopback, no forward."""
    return _run(name, link, plan, None)


def _straight(name: str, link: Link, plan: Plan, *, curve: bool) -> Result:
    """PUSH bound on the link's host address, PULL here connecting straight to it over the link."""
    assert link.host is not None
    address = socket.gethostbyname(link.host.address)
    plan = raw_plan(plan)
    with _from_sender(link, plan, address, *(["curve"] if curve else [])) as (sender, sock):
        if curve:
            public, secret = zmq.curve_keypair()
            sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, sender.key
        sock.connect(f"tcp://{address}:{sender.port}")
        result = measure(name, _receive(sock, plan), plan)
    result.notes.update(hwm=hwm_for(plan.size), security="CurveZMQ" if curve else "none")
    return result


def over_link(name: str, link: Link, plan: Plan) -> Result:
    """pyzmq PUSH -> PULL over the link itself (plain TCP, no SSH, no encryption)."""
    return _straight(name, link, plan, curve=False)


def zmq_curve_over_link(name: str, link: Link, plan: Plan) -> Result:
    """pyzmq PUSH -> PULL over the link, CurveZMQ: what the direct transport rides on."""
    return _straight(name, link, plan, curve=True)


def sshtunnel_forward(name: str, link: Link, plan: Plan) -> Result:
    """Through ``sshtunnel.SSHTunnelForwarder`` with paramiko's defaults."""
    return _run(name, link, plan, _sshtunnel)


def openssh_forward(name: str, link: Link, plan: Plan) -> Result:
    """Through OpenSSH's ``ssh -N -L`` with host keys checked."""
    return _run(name, link, plan, _openssh)


def openssh_gcm_forward(name: str, link: Link, plan: Plan) -> Result:
    """Through ``ssh -N -L`` with aes128-gcm, as the OpenSSH tunnel backend asks for."""
    return _run(name, link, plan, lambda lk, port: _openssh(lk, port, "aes128-gcm@openssh.com"))


def zmq_paramiko(name: str, link: Link, plan: Plan) -> Result:
    """Through ``zmq.ssh.tunnel_connection(..., paramiko=True)``, Heron's mechanism."""
    return _zmq_paramiko_run(name, link, plan)


RAW = {
    "zmq": direct,
    "sshtunnel": sshtunnel_forward,
    "openssh": openssh_forward,
    "openssh-gcm": openssh_gcm_forward,
    "zmq-paramiko": zmq_paramiko,
    "zmq-tcp": over_link,
    "zmq-curve": zmq_curve_over_link,
}
