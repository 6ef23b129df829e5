"""The direct transport: CurveZMQ straight from the PC's address, SSH only to start, watch and key it.

Real sshd in network namespaces (or compose hosts), real CurveZMQ, the hosts' real firewall
(iptables, through the acq control API).
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from heron_remote import DirectUnreachableError, RestartPolicy, Settings, Source, StatusBoard, WorkerError
from heron_remote.examples.synthetic_camera import expected_frame, frame_header
from heron_remote.testing import AcqHosts, ExternalHosts

from .helpers import CAMERA, NO_CONTROL, PYTHON, WORKERS, edit_registry, on_host, remote_alive, wait_until

pytestmark = pytest.mark.multihost
Hosts = AcqHosts | ExternalHosts


def _direct(acq: Hosts, settings: Settings, tmp_path: Path, transport: str = "direct", name: str = "acq1") -> dict:
    return {
        "settings": settings.replace(ssh_info=edit_registry(acq, tmp_path, name, transport=transport)),
        "host": name,
    }


def _host(acq: Hosts, name: str = "acq1"):  # noqa: ANN202 - a Host of either kind
    return next(h for h in acq.hosts if h.name == name)


def _pc_address(acq: Hosts, name: str = "acq1") -> str:
    return socket.gethostbyname(_host(acq, name).address)


def test_frames_come_straight_from_the_pcs_address_over_curve(
    acq: Hosts, remote_settings: Settings, tmp_path: Path
) -> None:
    with Source(
        CAMERA, parameters={"shape": [64, 80], "dtype": "uint16", "fps": 200}, **_direct(acq, remote_settings, tmp_path)
    ) as cam:
        got = []
        for index, _, (frame,) in cam.frames(timeout=15):
            n, captured = frame_header(frame)
            assert n == index
            np.testing.assert_array_equal(frame, expected_frame(n, (64, 80), "uint16", captured))
            got.append(index)
            if len(got) == 100:
                break
        assert got == list(range(got[0], got[0] + 100)) and cam.gaps == 0
        launcher = cam.launcher
        assert launcher.transport == "direct" and launcher.tunnels == ()  # no SSH forward carries the data
        assert launcher.keys is not None and len(launcher.ready.server_key) == 40
        # The worker listens on the PC's address, not its loopback, on the ports it reported.
        address = _pc_address(acq)
        _, out, _ = on_host(acq, "acq1", "cat /proc/net/tcp")
        listening = {
            (".".join(str(int(a[i : i + 2], 16)) for i in (6, 4, 2, 0)), int(p, 16))
            for a, p, state in (
                (line.split()[1].split(":")[0], line.split()[1].split(":")[1], line.split()[3])
                for line in out.splitlines()[1:]
            )
            if state == "0A"
        }
        assert {(address, port) for port in launcher.ready.ports.values()} <= listening
        assert cam.status().transport == "direct"
        pid = cam.stats.worker_pid
    assert not remote_alive(acq, "acq1", pid)
