"""Load: eight sources on two acquisition hosts from one rig process, with a link cut in the middle."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from heron_remote import Settings, Source
from heron_remote.ssh import HostConnection
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import CAMERA

pytestmark = pytest.mark.multihost

RUN_S = 60.0
CUT_AT_S, CUT_S = 25.0, 3.0
SHAPE, FPS = [256, 256], 20  # 64 KiB frames: 8 x 20 x 64 KiB = 10.5 MB/s over SSH on two cores


def _remote_workers(acq: AcqHosts | ExternalHosts) -> list[str]:
    return [
        f"{host.name}:{pid}"
        for host in acq.hosts
        for pid, cmdline in acq.processes(host).items()
        if b"--heron-remote-heartbeat-rate=" in cmdline
    ]


@pytest.mark.timeout(RUN_S + 90)
def test_eight_sources_on_two_hosts_for_a_minute_survive_a_link_cut(
    acq: AcqHosts | ExternalHosts, remote_settings: Settings
) -> None:
    if not acq.can_control:
        pytest.skip("needs hosts this run controls (namespaces as root, or compose with $HERON_REMOTE_TEST_CONTROL)")
    settings = remote_settings.replace(heartbeat_rate=0.5, heartbeats_to_death=12, link_timeout=1.5)
    sources = [
        Source(
            CAMERA,
            name=f"cam{i}",
            parameters={"shape": SHAPE, "fps": FPS},
            settings=settings,
            host=f"acq{1 + i % 2}",
        )
        for i in range(8)
    ]
    seen: dict[str, list[tuple[float, int]]] = {s.name: [] for s in sources}
    errors: list[BaseException] = []
    done = threading.Event()

    def consume(src: Source) -> None:
        try:
            for frame in src.frames(timeout=20):
                seen[src.name].append((time.monotonic(), frame.index))
                if done.is_set():
                    return
        except BaseException as exc:
            errors.append(exc)

    cut_host = next(h for h in acq.hosts if h.name == "acq2")
    workers_before = set(_remote_workers(acq))
    with contextlib.ExitStack() as stack:
        for src in sources:
            stack.enter_context(src)
        assert HostConnection.open_connections() == 2  # one per host, eight sources
        readers = [threading.Thread(target=consume, args=(s,), daemon=True) for s in sources]
        for r in readers:
            r.start()
        time.sleep(CUT_AT_S)
        acq.set_link(cut_host, up=False)
        try:
            time.sleep(CUT_S)
        finally:
            acq.set_link(cut_host, up=True)
        back = time.monotonic()
        time.sleep(RUN_S - CUT_AT_S - CUT_S)
        done.set()
        for r in readers:
            r.join(30)
        stats = {s.name: (s.stats, s.gaps) for s in sources}
    assert errors == []
    total = 0
    for src in sources:
        frames = seen[src.name]
        indices = [i for _, i in frames]
        com, gaps = stats[src.name]
        missing = len(set(range(indices[0], indices[-1] + 1)) - set(indices))
        total += len(frames)
        assert missing == gaps >= com.lost + com.malformed  # every gap counted, the com's share too
        after = [t for t, _ in frames if t > back]
        assert len(after) > FPS * 10, f"{src.name} did not recover: {len(after)} frames after the cut"
        recovered = after[0] - back
        print(f"{src.name}: {len(frames)} frames, {gaps} gaps ({com.lost} lost before the com), back {recovered:.2f} s")
        assert recovered < 3.0
    print(f"{total} frames of {SHAPE} in {RUN_S:g} s ({total * 65536 / RUN_S / 1e6:.1f} MB/s)")
    assert HostConnection.open_connections() == 0
    time.sleep(1)
    assert set(_remote_workers(acq)) <= workers_before
