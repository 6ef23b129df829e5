"""Host key checking against known_hosts: unknown hosts are refused, changed or revoked keys always.

Trust-on-first-use is a per-server opt-in (``"trust_on_first_use": true`` in the
registry): the first key seen is shown by its fingerprint, written to the server's
known_hosts and pinned from then on.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from pathlib import Path

import paramiko

from ..errors import HostKeyError
from .known_hosts import KnownHost, read_known_hosts
from .registry import Server

__all__ = ["HostKeys", "fingerprint"]

logger = logging.getLogger(__name__)

_WRITE_LOCK = threading.Lock()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint, as ``ssh-keygen -l`` shows it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _lookup_name(server: Server) -> str:
    return server.host if server.port == 22 else f"[{server.host}]:{server.port}"


class HostKeys:
    """The known keys of one server, from its known_hosts file (or the user's)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        if server.known_hosts:
            self.files = [Path(server.known_hosts)]
        else:
            self.files = [Path("~/.ssh/known_hosts").expanduser(), Path("/etc/ssh/ssh_known_hosts")]
        self.name = _lookup_name(server)
        self.known: dict[str, paramiko.PKey] = {}
        #: Keys an ``@revoked`` line withdraws for this host, by their bytes.
        self.revoked: dict[bytes, KnownHost] = {}
        for f in self.files:
            if not f.is_file():
                continue
            for entry in read_known_hosts(f):
                if not entry.matches(self.name):
                    continue
                if entry.revoked:
                    self.revoked.setdefault(entry.key.asbytes(), entry)
                else:
                    self.known.setdefault(entry.key.get_name(), entry.key)

    def key_types(self) -> list[str]:
        """Host key algorithms to ask for, so the server offers a key we know."""
        types = []
        for ktype in self.known:
            types += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if ktype == "ssh-rsa" else [ktype]
        return types

    def verify(self, offered: paramiko.PKey) -> None:
        """Accept the offered key, pin it (trust on first use), or raise HostKeyError."""
        ktype = offered.get_name()
        revoked = self.revoked.get(offered.asbytes())
        if revoked is not None:
            raise HostKeyError(
                f"the host key of {self.server.label} ({ktype} {fingerprint(offered)}) is REVOKED by "
                f"{revoked.where}: refusing to connect. Whoever runs the PC withdrew that key; ask them "
                "for its new one, check its fingerprint on the PC, and add it to known_hosts."
            )
        known = self.known.get("ssh-rsa" if ktype.startswith("rsa-sha2") else ktype)
        if known is not None:
            if known.asbytes() == offered.asbytes():
                return
            raise HostKeyError(
                f"the host key of {self.server.label} has CHANGED: known {fingerprint(known)}, offered "
                f"{fingerprint(offered)}. Someone may be intercepting the connection, or the PC was "
                f"reinstalled. If you are sure it is the latter, remove its line from {self.files[0]} "
                f"(ssh-keygen -R {self.name!r} -f {self.files[0]}) and add the new key."
            )
        if self.known:
            raise HostKeyError(
                f"{self.server.label} offered a {ktype} host key ({fingerprint(offered)}) but {self.files[0]} "
                f"knows only its {', '.join(self.known)} key(s): refusing, as a changed key"
            )
        if not self.server.trust_on_first_use:
            port = f"-p {self.server.port} " if self.server.port != 22 else ""
            raise HostKeyError(
                f"the host key of {self.server.label} is not known ({ktype} {fingerprint(offered)}); "
                f"refusing to connect. Add it after checking that fingerprint on the PC "
                f"(ssh-keygen -lf /etc/ssh/ssh_host_{ktype.removeprefix('ssh-')}_key.pub):\n"
                f"  ssh-keyscan {port}{self.server.host} >> {self.files[0]}\n"
                f'or set "trust_on_first_use": true for this server in the registry to pin the first key seen.'
            )
        self._pin(offered)

    def _pin(self, key: paramiko.PKey) -> None:
        target = self.files[0]
        line = f"{self.name} {key.get_name()} {key.get_base64()}\n"
        with _WRITE_LOCK:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "a", encoding="utf-8") as f:
                f.write(line)
        self.known[key.get_name()] = key
        logger.warning(
            "trust on first use: pinned the %s host key %s of %s in %s",
            key.get_name(),
            fingerprint(key),
            self.server.label,
            target,
        )
