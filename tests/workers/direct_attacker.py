"""An attacker on a direct worker's LAN ports: ``direct_attacker.py ADDRESS PORTS_JSON SERVER_KEY SECONDS [USER]``.

With USER it becomes that account once its interpreter and pyzmq are loaded (another account
may not be able to read the test's interpreter), before it opens anything.

It knows everything but the com's secret key: the PC's address, the four ports and even the
worker's server key. It tries to take packets (CurveZMQ with a key of its own, and without any
security), to read the liveness beacons, and to send pulses and parameters. Prints what it got,
as JSON.
"""

import json
import os
import pwd
import sys
import time

import zmq

address, ports, server_key, seconds = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3].encode(), float(sys.argv[4])
if len(sys.argv) > 5:
    account = pwd.getpwnam(sys.argv[5])
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    assert os.getuid() == account.pw_uid != 0
context = zmq.Context()
public, secret = zmq.curve_keypair()


def sock(kind: int, port: int, curve: bool) -> zmq.Socket:
    s = context.socket(kind)
    s.linger = 0
    if curve:
        s.curve_secretkey, s.curve_publickey, s.curve_serverkey = secret, public, server_key
    if kind == zmq.SUB:
        s.subscribe(b"")
    s.connect(f"tcp://{address}:{port}")
    return s


takers = {
    "data_curve": sock(zmq.PULL, ports["data"], True),
    "data_plain": sock(zmq.PULL, ports["data"], False),
    "liveness_curve": sock(zmq.SUB, ports["liveness"], True),
    "liveness_plain": sock(zmq.SUB, ports["liveness"], False),
}
senders = [
    (sock(zmq.PUSH, ports["heartbeat"], True), [b"PULSE", str(time.time_ns()).encode()]),
    (sock(zmq.PUSH, ports["parameters"], True), [json.dumps({"ok": True, "evil": True}).encode()]),
    (sock(zmq.PUSH, ports["heartbeat"], False), [b"PULSE", str(time.time_ns()).encode()]),
    (sock(zmq.PUSH, ports["parameters"], False), [json.dumps({"ok": True, "evil": True}).encode()]),
]
got = dict.fromkeys(takers, 0)
sent = 0
poller = zmq.Poller()
for s in takers.values():
    poller.register(s, zmq.POLLIN)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for s, frames in senders:
        try:
            s.send_multipart(frames, zmq.NOBLOCK)
            sent += 1
        except zmq.Again:
            pass  # no connection made it through the handshake: nothing to queue on
    for s, _ in poller.poll(20):
        for name, taker in takers.items():
            if taker is s:
                s.recv_multipart()
                got[name] += 1
print(json.dumps({"got": got, "sent": sent}), flush=True)
context.destroy(linger=0)
