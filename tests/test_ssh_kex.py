"""Key exchanges while channels come and go (heron_remote/ssh/transport.py, KexSafeTransport).

paramiko answers a channel the PC closes from its transport thread, with a message that waits
for the key exchange under way, which that thread itself runs. Over a real sshd: commands end
(their channels closed by sshd) while the keys are renewed back to back, and the link must
neither stall nor reconnect.
"""

from __future__ import annotations

import threading
import time

import pytest

from heron_remote.ssh import HostConnection, Registry
from heron_remote.ssh.transport import KexSafeTransport
from heron_remote.testing import AcqHosts, ExternalHosts

pytestmark = pytest.mark.multihost
Hosts = AcqHosts | ExternalHosts

COMMANDS = 40


def test_channels_closed_by_the_pc_during_key_exchanges_neither_stall_nor_drop_the_link(acq: Hosts) -> None:
    conn = HostConnection.acquire(Registry.load(acq.registry).get("acq1"))
    try:
        transport = conn.transport
        assert isinstance(transport, KexSafeTransport)
        stop = threading.Event()
        exchanges: list[float] = []
        failed: list[BaseException] = []

        def renew_keys() -> None:
            try:
                while not stop.wait(0.01):  # a gap, for the commands' own messages
                    transport.renegotiate_keys()
                    exchanges.append(time.monotonic())
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=renew_keys, name="test-renew-keys", daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        commands = 0
        try:
            # As many commands as it takes for both to number COMMANDS (a slow host exchanges
            # keys more slowly than it runs commands).
            while (commands < COMMANDS or len(exchanges) < COMMANDS) and time.monotonic() < deadline:
                code, _, err = conn.run("true", timeout=10)
                assert code == 0, err
                commands += 1
        finally:
            stop.set()
            thread.join(15)
        assert not failed, f"a key exchange failed: {failed[0]!r}"
        assert len(exchanges) >= COMMANDS, f"only {len(exchanges)} key exchanges beside {commands} commands in 60 s"
        # A stalled transport thread shows as a link given up (nothing for 3 s) and made again.
        assert conn.reconnects == 0 and conn.is_active, "the link was lost during the exchanges"
    finally:
        conn.release()
