"""A com's publishers: they send the forwarder they face everything, whatever they are told.

A forwarder's submit side (an XSUB) passes the subscriptions and cancels of the forwarder's
subscribers on to every publisher, and ZeroMQ passes on the cancel of a subscription nobody made.
So any account that reaches the forwarder's publish port can cancel "everything" (the forwarder's
own subscription) and then a topic, and a plain PUB socket stops sending that topic (README,
Security). These publishers are XPUB sockets in manual mode: a subscription they are told of
subscribes the connection it came on to everything; a cancel is read and changes nothing.

The com that owns one calls :func:`keep_sending` from the thread that sends on it, before it
sends and then at least every :data:`KEEP_S` while it sends: until then a new connection (the
forwarder's, or a new owner's after a takeover) gets nothing, as a PUB's gets nothing until its
subscription arrives.
"""

from __future__ import annotations

import zmq

__all__ = ["KEEP_S", "keep_sending", "open_publisher"]

#: How often a com that is sending reads what its publisher was told: as often as a socket that
#: lost its forwarder tries to reach it again (forwarders.RECONNECT_MS).
KEEP_S = 0.01
#: Messages read per call: another account's flood of subscriptions cannot hold the com here.
_MAX_READ = 10_000


def open_publisher(context: zmq.Context) -> zmq.Socket:
    """A publisher (XPUB, manual mode) for :func:`keep_sending` to keep sending everything."""
    sock = context.socket(zmq.XPUB)
    sock.setsockopt(zmq.XPUB_MANUAL, 1)
    return sock


def keep_sending(sock: zmq.Socket) -> int:
    """Read what ``sock``'s connections said; each that subscribed gets everything. Returns the messages read."""
    if not int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:  # the usual case: cheaper than an exception
        return 0
    for n in range(_MAX_READ):
        try:
            said = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return n
        if said[:1] == b"\x01":
            # Manual mode: this applies to the connection that sent the message just read.
            sock.setsockopt(zmq.SUBSCRIBE, b"")
    return _MAX_READ
