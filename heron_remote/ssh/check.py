"""The preflight a lab user runs before an experiment: ``heron-remote check ID``."""

from __future__ import annotations

import base64
import json
import platform
import statistics
import time
from dataclasses import dataclass, field

from .._version import __version__
from ..errors import HeronRemoteError
from .check_direct import check_direct
from .connection import HostConnection
from .hostkeys import HostKeys, fingerprint
from .registry import Registry

__all__ = ["CheckReport", "check_server", "probe_argv"]

# Run on the acquisition PC: versions, and whether the node's ports can be bound on its loopback.
_PROBE = r"""
import json, socket, sys
out = {"python": sys version_info_placeholder, "heron_remote": None, "ports": {}}
try:
    import heron_remote
    out["heron_remote"] = heron_remote.__version__
except Exception as exc:
    out["heron_remote_error"] = repr(exc)
for port in PORTS:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        out["ports"][port] = "free"
    except OSError as exc:
        out["ports"][port] = exc.strerror or str(exc)
    finally:
        s.close()
print(json.dumps(out))
""".replace("sys version_info_placeholder", "'%d.%d.%d' % sys.version_info[:3]")


def _python_advice(python: str) -> str:
    """How to point the registry at the PC's interpreter (heron_remote installed in a venv, say)."""
    return (
        f'The workers run with "python" of this server in the registry ({python} now): if heron_remote is '
        'installed in a venv on the PC, set "python" to that venv\'s interpreter, e.g. '
        '"python": "/home/lab/venv/bin/python".'
    )


@dataclass
class CheckReport:
    server: str
    ok: bool = True
    lines: list[str] = field(default_factory=list)

    def add(self, ok: bool, text: str, warn: bool = False) -> None:
        """One line: ok, FAIL (not ready), or WARN (ready, but not as asked)."""
        self.ok = self.ok and ok
        self.lines.append(f"{('WARN' if warn else 'ok  ') if ok else 'FAIL'} {text}")

    def __str__(self) -> str:
        verdict = "ready" if self.ok else "NOT ready"
        return "\n".join([f"check of {self.server}:", *self.lines, f"{self.server} is {verdict} for heron_remote"])


def probe_argv(python: list[str], ports: list[int]) -> list[str]:
    """The interpreter's command with the probe for ``ports``: one line, in base64, so that no
    shell (cmd cannot pass a line break) changes it."""
    code = base64.b64encode(_PROBE.replace("PORTS", repr(ports)).encode()).decode()
    return [*python, "-c", f"import base64; exec(base64.b64decode('{code}'))"]


def check_server(ref: str, *, ssh_info: str | None = None, port: int = 0, timeout: float = 10.0) -> CheckReport:
    """Connect to a registry server and report what an experiment needs of it."""
    server = Registry.load(ssh_info).get(ref)
    report = CheckReport(server.label)
    started = time.monotonic()
    try:
        conn = HostConnection.acquire(server, timeout=timeout)
    except HeronRemoteError as exc:
        report.add(False, f"connect: {exc}")
        return report
    try:
        report.add(
            True,
            f"connected in {(time.monotonic() - started) * 1000:.0f} ms as {conn.username!r}, "
            f"cipher {conn.transport.remote_cipher}",
        )
        key = conn.transport.get_remote_server_key()
        report.add(True, f"host key {key.get_name()} {fingerprint(key)} matches {HostKeys(server).files[0]}")
        rtts = sorted(conn.round_trip() for _ in range(5))
        report.add(True, f"SSH round trip median {statistics.median(rtts) * 1000:.2f} ms (of 5)")
        ports = list(range(port, port + 4)) if port else [0]
        # As a launch runs it: the interpreter's words, each quoted for the PC's shell.
        code, out, err = conn.run(conn.shell.command(probe_argv(server.python_argv, ports)), timeout=30)
        if code != 0:
            report.add(
                False,
                f'"python" {server.python!r} failed on the PC (status {code}): {err.strip()[-300:]}. It is the '
                "interpreter's path and its options, run as those words (never as shell code). "
                + _python_advice(server.python),
            )
            return report
        try:
            probe = json.loads(out.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            report.add(
                False,
                f'"python" {server.python!r} on the PC did not run the probe (it printed {out.strip()[-300:]!r}): '
                "it must be a Python interpreter, then any options it takes before -c. "
                + _python_advice(server.python),
            )
            return report
        local_py = platform.python_version()
        same_minor = probe["python"].rsplit(".", 1)[0] == local_py.rsplit(".", 1)[0]
        report.add(
            True,
            f"remote Python {probe['python']} (here {local_py}"
            f"{'' if same_minor else '; different minor versions work, but numpy must be there'})",
        )
        if probe["heron_remote"] is None:
            report.add(
                False,
                f"heron_remote is not importable by {server.python} on the PC "
                f"({probe.get('heron_remote_error')}): pip install heron_remote there. "
                + _python_advice(server.python),
            )
        else:
            report.add(
                probe["heron_remote"] == __version__,
                f"remote heron_remote {probe['heron_remote']} (here {__version__})",
            )
        for p, state in probe["ports"].items():
            label = f"port {p}" if int(p) else "a free loopback port"
            report.add(state == "free", f"{label} on the PC's 127.0.0.1: {state}")
        if server.direct:
            report.add(*check_direct(conn, timeout=min(timeout, 3.0)))
    except HeronRemoteError as exc:
        report.add(False, str(exc))
    finally:
        conn.release()
    return report
