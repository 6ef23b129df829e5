"""Test double of a worker that sends its com whatever the test tells it to, frame for frame.

It speaks the com <-> worker protocol (binds four loopback ports, prints the ready line, answers
each pulse with a liveness message, ends after the death window without pulses or on SIGTERM),
and connects to $HERON_TEST_PUPPET, from which it takes messages ``[channel, *frames]``:
channel b"data" sends the frames to the com's data input, b"live" to its liveness input.
Parameters from the com come back as a packet of one dict output: ``{"parameters": ...}``.
"""

import json
import os
import signal
import sys
import time

import zmq

from heron_remote._linkkeys import Gate, LinkKeys
from heron_remote._protocol import ReadyLine, WorkerArgs, liveness, parse_pulse
from heron_remote.wire import encode_output

args = WorkerArgs.parse(sys.argv[1:])
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
context = zmq.Context()
# Its com's keys come first on stdin: like a real worker, it lets only that com in.
gate = Gate(LinkKeys.from_line(sys.stdin.buffer.readline()))
gate.start({context: ("data", "heartbeat", "parameters", "liveness")})


def bound(kind: int, channel: str) -> tuple[zmq.Socket, int]:
    sock = context.socket(kind)
    sock.linger = 0
    gate.watch(sock, channel)
    return sock, sock.bind_to_random_port("tcp://127.0.0.1")


(data, data_port), (pulses, pulse_port) = bound(zmq.PUSH, "data"), bound(zmq.PULL, "heartbeat")
(parameters, parameters_port), (beacon, beacon_port) = bound(zmq.PULL, "parameters"), bound(zmq.PUB, "liveness")
orders = context.socket(zmq.PULL)
orders.connect(os.environ["HERON_TEST_PUPPET"])
ports = {"data": data_port, "heartbeat": pulse_port, "parameters": parameters_port, "liveness": beacon_port}
print(ReadyLine(pid=os.getpid(), ports=ports, version="puppet", python="").to_line(), flush=True)

window = args.heartbeat_rate * args.heartbeats_to_death
poller = zmq.Poller()
for sock in (pulses, parameters, orders):
    poller.register(sock, zmq.POLLIN)
last_pulse, seq, number = time.monotonic(), 0, 0
while time.monotonic() - last_pulse < window:
    events = dict(poller.poll(int(args.heartbeat_rate * 1000)))
    if pulses in events:
        echo, _ = parse_pulse(pulses.recv_multipart())  # the com's own pulses: a failure here fails the test
        last_pulse, seq = time.monotonic(), seq + 1
        beacon.send_multipart(liveness(os.getpid(), seq, echo))
    if parameters in events:
        number += 1
        meta, payload = encode_output({"parameters": json.loads(parameters.recv())})
        data.send_multipart([b"%d" % number, meta, payload])
    if orders in events:
        channel, *frames = orders.recv_multipart()
        (data if channel == b"data" else beacon).send_multipart(frames)
os._exit(3)
