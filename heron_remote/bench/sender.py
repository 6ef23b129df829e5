"""A raw pyzmq sender for the transport baselines: PUSH bound on this host's loopback.

Run as ``python -m heron_remote.bench.sender '<plan JSON>' HWM [ADDRESS [curve]]``, here or
inside a namespace host (``ip netns exec``). It binds on ADDRESS (default 127.0.0.1), as a
CurveZMQ server with a key pair of its own when ``curve`` is given, prints ``PORT <n>`` (and
``KEY <z85 public key>``) once bound, sends the plan (see :mod:`heron_remote.bench.protocol`)
and exits; it gives up when no receiver takes its messages for a while, so it never outlives a
harness that died.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import zmq

from ..wire import ZERO_COPY_MIN
from .protocol import Plan, run_plan

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_MS = 30_000
STALL_TIMEOUT_MS = 10_000


def serve(plan: Plan, hwm: int, address: str = "127.0.0.1", curve: bool = False) -> int:
    context = zmq.Context()
    sock = context.socket(zmq.PUSH)
    sock.sndhwm = hwm
    sock.linger = 2000  # the END message must leave before the process does
    sock.sndtimeo = CONNECT_TIMEOUT_MS
    key = b""
    if curve:  # a raw CurveZMQ baseline: no ZAP handler, any client key will do
        key, secret = zmq.curve_keypair()
        sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, key, True
    port = sock.bind_to_random_port(f"tcp://{address}")
    print(f"PORT {port}" + (f" KEY {key.decode()}" if curve else ""), flush=True)
    copy = plan.size < ZERO_COPY_MIN
    first = True

    def send(payload: Any) -> None:
        nonlocal first
        sock.send(payload, copy=copy)
        if first:
            first = False
            sock.sndtimeo = STALL_TIMEOUT_MS

    try:
        seen = run_plan(send, plan)
    except zmq.Again:
        logger.error("no receiver took a message for %d ms: giving up", sock.sndtimeo)
        return 1
    finally:
        sock.close()
        context.term()
    logger.info("sent: %s", seen)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    if not 2 <= len(args) <= 4 or args[3:] not in ([], ["curve"]):
        print("usage: python -m heron_remote.bench.sender '<plan JSON>' HWM [ADDRESS [curve]]", file=sys.stderr)
        return 2
    address = args[2] if len(args) > 2 else "127.0.0.1"
    return serve(Plan(**json.loads(args[0])), int(args[1]), address, curve=args[3:] == ["curve"])


if __name__ == "__main__":
    sys.exit(main())
