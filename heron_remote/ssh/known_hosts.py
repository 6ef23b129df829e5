"""Reading a known_hosts file as OpenSSH writes it: host patterns, hashed names and markers.

A line is ``[marker] patterns keytype base64-key [comment]``. Patterns are comma-separated
host names with ``*`` and ``?`` wildcards, ``!`` negation, ``[host]:port`` for other ports,
or ``|1|salt|hash`` (hashed by ``ssh-keygen -H``). ``@revoked`` marks a key that must be
refused; ``@cert-authority`` lines are skipped (host certificates are not used here). A line
that cannot be read is a :class:`~heron_remote.errors.HostKeyError` naming the file and the line:
a silently skipped line could be the one that revokes a key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.pkey import UnknownKeyType

from ..errors import HostKeyError

__all__ = ["KnownHost", "read_known_hosts"]

logger = logging.getLogger(__name__)

_REVOKED = "@revoked"
_CERT_AUTHORITY = "@cert-authority"
_HASHED = "|1|"
_cert_authority_said = False


@dataclass(frozen=True)
class KnownHost:
    """One key line of a known_hosts file."""

    file: Path
    line: int
    patterns: tuple[str, ...]
    key: paramiko.PKey
    revoked: bool = False

    @property
    def where(self) -> str:
        return f"{self.file} line {self.line}"

    def matches(self, name: str) -> bool:
        """Whether this line is about host ``name`` (``host`` or ``[host]:port``), as ssh decides."""
        hit = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if _pattern_matches(pattern.removeprefix("!"), name):
                if negated:
                    return False
                hit = True
        return hit


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith(_HASHED):
        salt, digest = (base64.b64decode(part) for part in pattern[len(_HASHED) :].split("|"))
        return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.IGNORECASE) is not None


def _check_hashed(pattern: str) -> None:
    """ValueError unless ``pattern`` is ``|1|salt|hash`` with a 20-byte salt and hash."""
    parts = pattern.removeprefix("!")[len(_HASHED) :].split("|")
    if len(parts) != 2 or any(len(base64.b64decode(p, validate=True)) != 20 for p in parts):
        raise ValueError(f"the hashed host name {pattern!r} is not |1|salt|hash")


def read_known_hosts(path: Path) -> list[KnownHost]:
    """The key lines of ``path`` (skipping comments, blank lines, certificate authorities and key
    types paramiko lacks); HostKeyError naming the line for anything else it cannot read."""
    global _cert_authority_said
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise HostKeyError(f"cannot read known_hosts file {path}: {exc.strerror or exc}") from exc
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"known_hosts file {path}, line {number}"
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if marker == _CERT_AUTHORITY:
            if not _cert_authority_said:
                _cert_authority_said = True
                logger.debug("%s: @cert-authority lines are skipped: host certificates are not used", where)
            continue
        if marker not in (None, _REVOKED):
            raise HostKeyError(f"{where}: unknown marker {marker!r} (OpenSSH knows @revoked and @cert-authority)")
        if len(fields) < 3:
            raise HostKeyError(f"{where}: expected 'host-patterns key-type base64-key', got {raw.strip()[:80]!r}")
        patterns, key_type, encoded = fields[:3]
        try:
            for pattern in patterns.split(","):
                if pattern.removeprefix("!").startswith(_HASHED):
                    _check_hashed(pattern)
            key = paramiko.PKey.from_type_string(key_type, base64.b64decode(encoded, validate=True))
        except UnknownKeyType:
            logger.debug("%s: a %s key, which paramiko cannot use: skipped", where, key_type)
            continue
        except Exception as exc:  # a damaged key fails in paramiko or cryptography in many ways
            raise HostKeyError(f"{where}: cannot read this line ({exc}); fix or remove it") from exc
        entries.append(KnownHost(path, number, tuple(patterns.split(",")), key, revoked=marker == _REVOKED))
    return entries
