"""Forwarders: in-process and as `heron-remote forwarders`, on loopback unless asked."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import zmq

from heron_remote import ForwarderError, ForwarderPorts, Forwarders

from .helpers import FREE_PORTS, PYTHON, listening_address, wait_until


def _relay(submit: int, publish: int, topic: bytes) -> list[bytes]:
    """Publish on submit until a subscriber on publish hears it; the frames it got."""
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    pub = ctx.socket(zmq.PUB)
    try:
        sub.subscribe(topic)
        sub.connect(f"tcp://127.0.0.1:{publish}")
        pub.connect(f"tcp://127.0.0.1:{submit}")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pub.send_multipart([topic, b"payload"])
            if sub.poll(50):
                return sub.recv_multipart()
        raise AssertionError(f"nothing relayed from {submit} to {publish} within 5 s")
    finally:
        sub.close(0)
        pub.close(0)


def test_all_three_forwarders_relay_and_bind_loopback() -> None:
    with Forwarders(ports=FREE_PORTS) as fw:
        p = fw.ports
        pairs = [
            (p.data_submit, p.data_publish),
            (p.parameters_submit, p.parameters_publish),
            (p.proof_of_life_submit, p.proof_of_life_publish),
        ]
        for submit, publish in pairs:
            assert _relay(submit, publish, b"topic") == [b"topic", b"payload"]
            assert listening_address(submit) == "127.0.0.1"
            assert listening_address(publish) == "127.0.0.1"
    for submit, publish in pairs:
        assert listening_address(submit) is None and listening_address(publish) is None


def test_close_is_idempotent_and_frees_the_ports() -> None:
    fw = Forwarders(ports=FREE_PORTS).start()
    ports = fw.ports
    fw.close()
    fw.close()
    again = Forwarders(ports=ports).start()  # the same ports bind again at once
    again.close()


def test_a_port_in_use_is_named() -> None:
    with Forwarders(ports=FREE_PORTS) as fw:
        clash = ForwarderPorts(
            data_submit=0,
            data_publish=0,
            parameters_submit=fw.ports.parameters_submit,
            parameters_publish=0,
            proof_of_life_submit=0,
            proof_of_life_publish=0,
        )
        with pytest.raises(
            ForwarderError, match=f"parameters forwarder cannot bind its submit port {fw.ports.parameters_submit}"
        ):
            Forwarders(ports=clash).start()


def test_another_interface_is_an_explicit_choice() -> None:
    with Forwarders(host="0.0.0.0", ports=FREE_PORTS) as fw:
        assert listening_address(fw.ports.data_submit) == "0.0.0.0"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_forwarders_command_runs_until_signalled(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "heron_remote",
            "forwarders",
            "--data",
            "0",
            "0",
            "--parameters",
            "0",
            "0",
            "--proof-of-life",
            "0",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "forwarders on 127.0.0.1: data" in line, line + proc.stderr.read()
        data = line.split("data ")[1].split(",")[0]
        submit, publish = (int(x) for x in data.split("->"))
        assert _relay(submit, publish, b"x") == [b"x", b"payload"]
        proc.send_signal(sig)
        assert proc.wait(10) == 0
        wait_until(lambda: listening_address(submit) is None, 5, "the port to be released")
    finally:
        proc.kill()
        proc.wait(5)


def test_publishers_are_asked_for_everything_so_a_new_subscriber_misses_nothing() -> None:
    """The submit side subscribes to every topic, as Heron's forwarders do: a publisher sends all it
    has from the moment it connects, and a subscription needs to reach only the forwarder. (Passed
    on to the publishers instead, it arrived there too late for a source's first message more often
    than with Heron's forwarders.)"""
    with Forwarders(ports=FREE_PORTS) as fw:
        publisher = zmq.Context.instance().socket(zmq.XPUB)  # an XPUB sees the subscriptions it is sent
        publisher.linger = 0
        publisher.rcvtimeo = 5000
        try:
            publisher.connect(f"tcp://127.0.0.1:{fw.ports.data_submit}")
            assert publisher.recv() == b"\x01"  # subscribe to every topic, with no subscriber downstream
        finally:
            publisher.close()
