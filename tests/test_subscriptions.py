"""A com beside its data forwarder sends it only the topics somebody subscribed to
(heron_remote/forwarders_subscriptions.py): real forwarders, real subscribers over TCP, a real Source."""

from __future__ import annotations

import subprocess
import time

import zmq

from heron_remote import Settings, Source
from heron_remote.forwarders import Forwarders, endpoint
from heron_remote.forwarders_subscriptions import subscriptions_at
from heron_remote.settings import ForwarderPorts
from heron_remote.wire import read_published

from .helpers import CAMERA, hosted_relay, wait_until

TOPICS = [b"Camera##cam##0", b"Other##x##0"]


def _subscriber(port: int, prefix: bytes) -> zmq.Socket:
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.rcvtimeo = 5000
    sub.subscribe(prefix)
    sub.connect(f"tcp://127.0.0.1:{port}")
    return sub


def test_the_watcher_hears_subscribers_come_and_go_and_counts_all_heard_when_it_cannot_tell() -> None:
    with Forwarders(ports=ForwarderPorts.free()) as fw:
        subs = subscriptions_at(endpoint("127.0.0.1", fw.ports.data_submit)[0])
        assert subs is not None
        assert subs.heard(TOPICS) == [False, False]  # the forwarder's own subscription to everything is not one
        first = _subscriber(fw.ports.data_publish, b"Camera")  # a prefix, as a ZeroMQ subscription is
        wait_until(lambda: subs.heard(TOPICS) == [True, False], 5, "the first subscription to be heard")
        second = _subscriber(fw.ports.data_publish, b"Camera##cam##0")
        time.sleep(0.2)
        first.close()
        time.sleep(0.2)  # the first one's end, had it been passed on, would be here by now
        assert subs.heard(TOPICS) == [True, False]  # the second still wants it
        second.close()
        wait_until(lambda: subs.heard(TOPICS) == [False, False], 5, "the last subscriber's end to be heard")
        everything = _subscriber(fw.ports.data_publish, b"")
        wait_until(lambda: subs.heard(TOPICS) == [True, True], 5, "a subscription to everything to be heard")
        everything.close()
        time.sleep(0.2)
        assert subs.heard(TOPICS) == [True, True]  # its end is hidden by the forwarder's own: all stay heard
        assert fw.error is None
    assert subs.heard(TOPICS) == [True, True]  # a stopped forwarder's watcher cannot tell
    assert subscriptions_at(endpoint("127.0.0.1", fw.ports.data_submit)[0]) is None


def test_a_source_sends_the_forwarder_its_frames_only_while_somebody_subscribes(settings: Settings) -> None:
    with Source(CAMERA, parameters={"shape": [8, 8], "fps": 500}, settings=settings) as cam:
        frames = cam.frames(timeout=10)
        read = [next(frames).index for _ in range(300)]  # through the tap: its own subscription ended
        assert cam._tap.live
        wait_until(lambda: cam.stats.unheard > 50, 10, "outputs nobody subscribed to to be kept from the forwarder")
        assert read == list(range(read[0], read[0] + len(read)))  # all of them reached frames() all the same

        outside = _subscriber(settings.ports.data_publish, cam.topics[0].encode())  # a Heron node, say
        try:
            outside.recv_multipart()  # it is heard: the com sends again
            before = cam.stats.unheard
            got = []
            for _ in range(200):
                assert outside.recv() == cam.topics[0].encode()
                got.append(read_published(outside.recv)[0])
            assert got == list(range(got[0], got[0] + len(got)))  # every frame from the first on
            assert cam.stats.unheard == before  # nothing kept from the forwarder while it listens
            read = [next(frames).index for _ in range(200)]
            assert read == list(range(read[0], read[0] + len(read)))
        finally:
            outside.close()
        unheard = cam.stats.unheard
        wait_until(lambda: cam.stats.unheard > unheard + 50, 10, "the subscriber's end to be heard")
        assert cam.stats.published > cam.stats.unheard > 0 and cam.rejected == 0


def test_in_herons_layout_the_forwarders_process_relays_only_what_somebody_subscribed_to(
    outside: tuple[Settings, subprocess.Popen[str]],
) -> None:
    settings, _ = outside
    with Source(CAMERA, parameters={"shape": [8, 8], "fps": 500}, settings=settings) as cam:
        frames = cam.frames(timeout=10)  # subscribed at the forwarders: everything is sent
        read = [next(frames).index for _ in range(300)]
        assert hosted_relay(cam).hosted and not cam._tap.live
        assert cam.stats.unheard == 0 and read == list(range(read[0], read[0] + len(read)))
        frames.close()
        assert cam._sub is not None
        for topic in cam.topics:  # the Source keeps its subscriber between reads: as if it had gone
            cam._sub.unsubscribe(topic.encode())
        wait_until(lambda: cam.stats.unheard > 50, 10, "the forwarders' process to keep back what nobody wants")
        outside_sub = _subscriber(settings.ports.data_publish, cam.topics[0].encode())  # a Heron sink, say
        try:
            outside_sub.recv_multipart()
            got = []
            for _ in range(200):
                assert outside_sub.recv() == cam.topics[0].encode()
                got.append(read_published(outside_sub.recv)[0])
            assert got == list(range(got[0], got[0] + len(got)))
        finally:
            outside_sub.close()
        assert cam.error is None and hosted_relay(cam).hosted
