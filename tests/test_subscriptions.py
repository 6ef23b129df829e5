"""A com beside its data forwarder sends it only the topics somebody subscribed to
(heron_remote/forwarders_subscriptions.py): real forwarders, real subscribers over TCP, a real Source,
a com in a process of its own relayed by the forwarders' process, and a second account's cancels."""

from __future__ import annotations

import struct
import time

import zmq

from heron_remote import Settings, Source
from heron_remote.forwarders import Forwarders, subscriptions
from heron_remote.forwarders_subscriptions import MAX_PREFIXES
from heron_remote.settings import ForwarderPorts
from heron_remote.wire import read_published

from .helpers import CAMERA, ComScript, local_account, send_as, wait_until

TOPICS = [b"Camera##cam##0", b"Other##x##0"]


def _subscriber(port: int, *prefixes: bytes) -> zmq.Socket:
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.rcvtimeo = 5000
    for prefix in prefixes:
        sub.subscribe(prefix)
    sub.connect(f"tcp://127.0.0.1:{port}")
    return sub


def _indices(sub: zmq.Socket, topic: bytes, n: int) -> list[int]:
    """The indices of the next ``n`` messages on ``topic`` (the only one ``sub`` subscribes to)."""
    got = []
    for _ in range(n):
        assert sub.recv() == topic
        got.append(read_published(sub.recv)[0])
    return got


def _taken_in(fw: Forwarders) -> int:
    """Frames the data forwarder has taken in from publishers (its proxy's own count)."""
    control = next(p.control for p in fw._proxies if p.name == "data")
    req = zmq.Context.instance().socket(zmq.REQ)
    req.linger = 0
    try:
        req.connect(control)
        req.send(b"STATISTICS")
        assert req.poll(5000), "the data forwarder did not answer"
        return struct.unpack("=Q", req.recv_multipart()[0])[0]
    finally:
        req.close()


def _camera(settings: Settings) -> Source:
    return Source(CAMERA, parameters={"shape": [8, 8], "fps": 500}, settings=settings)


def test_the_watcher_hears_subscriptions_keeps_them_and_hears_all_when_it_cannot_tell() -> None:
    with Forwarders(ports=ForwarderPorts.free()) as fw:
        subs = subscriptions("127.0.0.1", fw.ports.data_submit)
        assert subs is not None
        assert subs.heard(TOPICS) == [False, False]  # the forwarder's own subscription to everything is not one
        first = _subscriber(fw.ports.data_publish, b"Camera")  # a prefix, as a ZeroMQ subscription is
        wait_until(lambda: subs.heard(TOPICS) == [True, False], 5, "the subscription to be heard")
        first.close()
        time.sleep(0.3)  # its end reaches the watcher, which does not believe cancels
        assert subs.heard(TOPICS) == [True, False]
        half = MAX_PREFIXES // 2 + 1  # a SUB socket passes on at most 1000 of its subscriptions at connect
        flood = [_subscriber(fw.ports.data_publish, *(b"x%d-%d" % (s, k) for k in range(half))) for s in (1, 2)]
        wait_until(lambda: subs.heard(TOPICS) == [True, True], 5, "too many prefixes to make every topic heard")
        for sub in flood:
            sub.close()
        assert fw.error is None
    assert subs.heard(TOPICS) == [True, True]
    assert subscriptions("127.0.0.1", fw.ports.data_submit) is None


def test_a_subscription_to_everything_makes_every_topic_heard() -> None:
    with Forwarders(ports=ForwarderPorts.free()) as fw:
        subs = subscriptions("127.0.0.1", fw.ports.data_submit)
        assert subs is not None
        everything = _subscriber(fw.ports.data_publish, b"")
        try:
            wait_until(lambda: subs.heard(TOPICS) == [True, True], 5, "a subscription to everything to be heard")
        finally:
            everything.close()
    assert subs.heard(TOPICS) == [True, True]


def _settings(fw: Forwarders) -> Settings:
    return Settings(ports=fw.ports, heartbeat_rate=0.2, heartbeats_to_death=5, start_timeout=15, stop_grace=2)


def test_a_source_sends_its_forwarder_nothing_until_somebody_subscribes() -> None:
    with Forwarders(ports=ForwarderPorts.free()) as forwarders, _camera(settings := _settings(forwarders)) as cam:
        frames = cam.frames(timeout=10)
        read = [next(frames).index for _ in range(300)]  # handed over in-process (com/tap.py)
        assert cam._tap.live and read == list(range(read[0], read[0] + len(read)))
        assert cam.stats.unheard >= 300  # from its first frame on
        taken = _taken_in(forwarders)
        [next(frames) for _ in range(100)]
        assert _taken_in(forwarders) == taken  # not one of them went to the forwarder

        topic = cam.topics[0].encode()
        outside = _subscriber(settings.ports.data_publish, topic)  # a Heron node, say
        try:
            outside.recv_multipart()  # it is heard: the com sends again
            unheard = cam.stats.unheard
            got = _indices(outside, topic, 200)
            assert got == list(range(got[0], got[0] + len(got)))  # every frame from the first on
            assert cam.stats.unheard == unheard
        finally:
            outside.close()
        read = [next(frames).index for _ in range(200)]
        assert read == list(range(read[0], read[0] + len(read)))
        assert cam.stats.unheard == unheard  # still sent: the subscriber may come back
        assert cam.rejected == 0 and cam.error is None


def test_in_herons_layout_the_forwarders_process_relays_only_what_somebody_subscribed_to() -> None:
    with Forwarders(ports=ForwarderPorts.free()) as fw:  # this process plays Heron's forwarders process
        com = ComScript(_settings(fw))  # a com script of its own, as Heron's editor runs it; its worker sends
        try:  # a Counter every 10 ms
            outside = _subscriber(fw.ports.data_publish, b"Counter##echo##1")
            try:
                outside.recv_multipart()  # the relay runs, and sends what somebody wants
                counters = _indices(outside, b"Counter##echo##1", 50)
                assert counters == list(range(counters[0], counters[0] + len(counters)))
                taken = _taken_in(fw)
                [outside.recv_multipart() for _ in range(50)]
                frames_in = _taken_in(fw) - taken
            finally:
                outside.close()
            # Five frames per message: the Counters only. With the Echo output (2 packets in 3), which
            # nobody subscribed to, it would be about 415.
            assert 40 * 5 <= frames_in < 60 * 5, frames_in
        finally:
            code, _, log = com.stop()
        assert code == 0, log


def test_another_account_cannot_cancel_a_subscription_it_did_not_make() -> None:
    """A subscriber can send the forwarder the cancel of a subscription it never made, and ZeroMQ passes
    it on to the watcher: another account's cancels of our topic, alone, after its own subscription, and
    of a prefix, do not stop the com sending what our subscriber wants. (With a cancel of everything
    first, see the next test.)"""
    with Forwarders(ports=ForwarderPorts.free()) as fw, _camera(settings := _settings(fw)) as cam:
        frames = cam.frames(timeout=10)
        [next(frames) for _ in range(50)]
        topic = cam.topics[0].encode()
        ours = _subscriber(settings.ports.data_publish, topic)
        try:
            ours.recv_multipart()
            with local_account("hrsub") as other:
                cancels = [[b"\x00" + topic]] * 100 + [[b"\x01" + topic], [b"\x00" + topic]] * 50
                cancels += [[b"\x00" + topic[:5]]] * 20
                send_as(other, settings.ports.data_publish, "XSUB", cancels)
            unheard = cam.stats.unheard
            got = _indices(ours, topic, 500)
            assert got == list(range(got[0], got[0] + len(got)))
            assert cam.stats.unheard == unheard  # the com never stopped sending it
        finally:
            ours.close()


_PLAIN = b"Plain##node##0"
_COUNTER = b"Counter##echo##1"


def _read_for(sub: zmq.Socket, seconds: float) -> dict[bytes, list[int]]:
    """The indices ``sub`` received in ``seconds``, by topic."""
    got: dict[bytes, list[int]] = {}
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if sub.poll(int(left * 1000) + 1):
            topic = sub.recv()
            got.setdefault(topic, []).append(read_published(sub.recv)[0])
    return got


def test_another_account_cannot_silence_our_publishers_by_cancelling_everything_first() -> None:
    """Another account sends the data forwarder the cancel of everything (the forwarder's own
    subscription, which ZeroMQ passes on to every publisher) and then of our topics. A plain PUB
    socket, as Heron's own nodes publish with, stops sending: the attack works here. Ours do not
    (com/publisher.py): a Source beside its forwarders, and a com in a process of its own relayed
    by the forwarders' process (Heron's layout) go on, every index in turn."""
    with Forwarders(ports=ForwarderPorts.free()) as fw, _camera(settings := _settings(fw)) as cam:
        com = ComScript(settings)
        plain = zmq.Context.instance().socket(zmq.PUB)  # Heron's node, as it publishes
        plain.linger = 0
        plain.connect(f"tcp://127.0.0.1:{settings.ports.data_submit}")
        topic = cam.topics[0].encode()
        ours = _subscriber(settings.ports.data_publish, topic, _COUNTER, _PLAIN)
        try:
            sent = 0

            def plain_and_read(seconds: float) -> dict[bytes, list[int]]:
                nonlocal sent
                got: dict[bytes, list[int]] = {}
                for _ in range(int(seconds / 0.05)):
                    sent += 1
                    plain.send_multipart([_PLAIN, b"%d" % sent, b"0", b'{"data_type": "ignore"}', b""])
                    for t, indices in _read_for(ours, 0.05).items():
                        got.setdefault(t, []).extend(indices)
                return got

            before = plain_and_read(2.0)
            assert {topic, _COUNTER, _PLAIN} <= set(before), before.keys()
            with local_account("hrcancel") as other:
                cancels = [[b"\x00"], [b"\x00" + topic], [b"\x00" + _COUNTER], [b"\x00" + _PLAIN]]
                send_as(other, settings.ports.data_publish, "XSUB", cancels)
            _read_for(ours, 0.5)  # what was queued before the attack
            after = plain_and_read(1.5)
            assert _PLAIN not in after  # the attack silenced the plain PUB
            for t, least in ((topic, 100), (_COUNTER, 50)):
                got = after.get(t, [])
                assert len(got) >= least, (t, len(got))
                assert got == list(range(got[0], got[0] + len(got))), t
                assert got[0] > before[t][-1], t
        finally:
            ours.close()
            plain.close()
            code, _, log = com.stop()
        assert code == 0, log
        assert cam.rejected == 0 and cam.error is None
