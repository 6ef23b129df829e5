"""The com <-> worker control protocol: the worker's argv, its ready line, pulses and liveness.

A worker its com started reads the launch's keys first on its stdin (:mod:`._linkkeys`),
binds its four sockets on its own 127.0.0.1 (ports chosen as asked, or free ones), each
accepting only that com, and then writes one line to stdout::

    HERON_REMOTE_READY {"v": 1, "pid": ..., "ports": {"data": ..., ...}, ...}

With the direct transport (``--heron-remote-bind=ADDRESS``, curve keys) it binds on that
address instead, as CurveZMQ servers, and the ready line adds ``"server_key"``: its public key
for this launch.

The com connects to those ports (directly, or through SSH forwards) and counts the
worker as running once the first liveness message arrives over ZeroMQ, which proves
the whole path works. Pulses carry the com's send time; liveness messages echo the
last one, so the com measures the heartbeat round trip.
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass, field
from typing import Any

from ._verbosity import NO_RELIC
from .errors import ConfigError, DecodeError
from .settings import DEFAULT_BATCH_WINDOW, MAX_BATCH_WINDOW, Settings
from .wire.bounded import CONTROL_MAX_BYTES, ERROR_MAX_CHARS, read_int, read_json

READY_PREFIX = "HERON_REMOTE_READY "
#: A remote launch prints this and the shell's pid (which exec hands to the worker) first.
PID_PREFIX = "HERON_REMOTE_PID "
PROTOCOL_VERSION = 1
CHANNELS = ("data", "heartbeat", "parameters", "liveness")

# Exit statuses a com can tell apart.
EXIT_OK = 0
EXIT_WORK_FAILED = 1
EXIT_BAD_START = 2
EXIT_NO_HEARTBEAT = 3
#: Another com's live worker holds the node on this host; nothing was ended.
EXIT_HELD = 4
#: Ended by a signal its com did not ask for (somebody else ended it).
EXIT_ENDED_OUTSIDE = 5
#: Its com is gone (its pipe or SSH session closed, unanswered).
EXIT_ORPHANED = 6

#: What our own statuses mean, for a com's messages (1 and 2 are also Python's own: not explained).
EXIT_MEANINGS = {
    EXIT_NO_HEARTBEAT: "it heard no pulse from its com for its death window",
    EXIT_HELD: "another com's worker holds this node on that host",
    EXIT_ENDED_OUTSIDE: "somebody other than its com ended it with a signal",
    EXIT_ORPHANED: "it found its com gone",
}

PULSE = b"PULSE"
LIVE = b"LIVE"

_OPTION_PREFIX = "--heron-remote-"

#: What a local worker's shared-memory ring lets wait for its com, in bytes.
DATA_QUEUE_BYTES = 8 * 1024 * 1024
#: ZeroMQ messages the com's queue from its worker holds, and the worker's own queue. Small packets
#: close together travel several to a message (worker/batching.py). The depth is never changed on a
#: live socket: lowered once packets turned out big, it left the worker blocked on a queue its com
#: had emptied (measured: 8x8 frames, then 2 MiB ones, stalled for good).
DATA_HWM = 8


@dataclass(frozen=True, kw_only=True)
class WorkerArgs:
    """What a com passes to its worker on the command line (never a secret)."""

    port: int
    parameters_topic: str
    num_sending_topics: int
    relic_dir: str = NO_RELIC
    heartbeat_rate: float = 1.0
    heartbeats_to_death: int = 10
    #: This launch's start token, and the node it runs (for the host's start records).
    token: str = ""
    node_id: str = ""
    #: Where the host keeps its start records, when not in the default place.
    run_dir: str = ""
    #: Outputs per packet (0: not said, as when Heron starts the worker).
    outputs: int = 0
    #: The CPU the worker pins itself to (Heron's cpu_to_pin); None: any.
    cpu: int | None = None
    #: The com that owns the worker (``str(ComId)``), for the start record.
    com: str = ""
    #: What the worker's stdin is: "pipe" (its local com's pipe: closed means the com is gone),
    #: "session" (its SSH session: closed, with no answer to a probe, means the com is gone),
    #: or "" (nothing: a worker started some other way reads no stdin).
    control: str = ""
    #: Seconds a "session" worker waits for an answer from its com once its stdin closed.
    session_grace: float = 0.75
    #: The address the worker binds on ("": its 127.0.0.1). The direct transport gives the PC's
    #: address as its com reaches it; the worker then reads its keys first and serves CurveZMQ.
    bind: str = ""
    #: Seconds after which a direct worker drops a silent connection (Settings.link_timeout).
    link_timeout: float = 3.0
    #: How the worker packs its arrays (``Compression.to_arg()``), or "" for not at all.
    compression: str = ""
    #: The Unix socket (a path in this account's private folder) to bind the data socket on,
    #: not loopback TCP: a local launch, its com on this machine. No port for another account,
    #: and a frame costs the kernel less than through TCP. "": loopback TCP.
    data_ipc: str = ""
    #: Settings.batch_window: how long the worker holds a small packet for the ones after it.
    batch_window: float = DEFAULT_BATCH_WINDOW

    def to_argv(self) -> list[str]:
        # Heron's positional layout first, so Heron's own parser still reads it;
        # our options follow and are stripped before the positional part is read.
        argv = [
            str(self.port),
            self.parameters_topic,
            "0",
            str(self.num_sending_topics),
            self.relic_dir or NO_RELIC,
            f"{_OPTION_PREFIX}heartbeat-rate={self.heartbeat_rate!r}",
            f"{_OPTION_PREFIX}heartbeats-to-death={self.heartbeats_to_death}",
        ]
        for key in ("token", "node_id", "run_dir", "outputs", "com", "control", "bind", "compression"):
            value = getattr(self, key)
            if value:
                argv.append(f"{_OPTION_PREFIX}{key.replace('_', '-')}={value}")
        if self.cpu is not None:
            argv.append(f"{_OPTION_PREFIX}cpu={self.cpu}")
        if self.control:
            argv.append(f"{_OPTION_PREFIX}session-grace={self.session_grace!r}")
        if self.bind:
            argv.append(f"{_OPTION_PREFIX}link-timeout={self.link_timeout!r}")
        if self.data_ipc:
            argv.append(f"{_OPTION_PREFIX}data-ipc={self.data_ipc}")
        if self.batch_window != DEFAULT_BATCH_WINDOW:
            argv.append(f"{_OPTION_PREFIX}batch-window={self.batch_window!r}")
        return argv

    @classmethod
    def from_settings(
        cls,
        *,
        port: int,
        parameters_topic: str,
        num_sending_topics: int,
        relic_dir: str,
        settings: Settings,
        token: str = "",
        node_id: str = "",
        outputs: int = 0,
        cpu: int | None = None,
        com: str = "",
        compression: str = "",
    ) -> WorkerArgs:
        return cls(
            port=port,
            parameters_topic=parameters_topic,
            num_sending_topics=num_sending_topics,
            relic_dir=relic_dir,
            heartbeat_rate=settings.heartbeat_rate,
            heartbeats_to_death=settings.heartbeats_to_death,
            token=token,
            node_id=node_id,
            outputs=outputs,
            cpu=cpu,
            com=com,
            session_grace=settings.session_grace,
            link_timeout=settings.link_timeout,
            compression=compression,
            batch_window=settings.batch_window,
        )

    @classmethod
    def parse(cls, argv: list[str]) -> WorkerArgs:
        """Parse ``sys.argv[1:]`` of a worker."""
        options: dict[str, str] = {}
        positional: list[str] = []
        for arg in argv:
            if arg.startswith(_OPTION_PREFIX) and "=" in arg:
                key, value = arg[len(_OPTION_PREFIX) :].split("=", 1)
                options[key] = value
            else:
                positional.append(arg)
        usage = (
            "a heron_remote worker is started by its com with the arguments "
            "PORT PARAMETERS_TOPIC 0 NUM_SENDING_TOPICS RELIC_DIR; got "
        )
        if len(positional) < 5:
            raise ConfigError(usage + repr(argv))
        try:
            return cls(
                port=int(positional[0]),
                parameters_topic=positional[1],
                num_sending_topics=int(positional[-2]),
                relic_dir=positional[-1],
                heartbeat_rate=float(options.get("heartbeat-rate", 1.0)),
                heartbeats_to_death=int(options.get("heartbeats-to-death", 10)),
                token=options.get("token", ""),
                node_id=options.get("node-id", ""),
                run_dir=options.get("run-dir", ""),
                outputs=int(options.get("outputs", 0)),
                cpu=int(options["cpu"]) if "cpu" in options else None,
                com=options.get("com", ""),
                control=_control(options.get("control", "")),
                session_grace=float(options.get("session-grace", 0.75)),
                bind=_address(options.get("bind", "")),
                link_timeout=float(options.get("link-timeout", 3.0)),
                compression=options.get("compression", ""),
                data_ipc=options.get("data-ipc", ""),
                batch_window=_window(options.get("batch-window")),
            )
        except ValueError as exc:
            raise ConfigError(usage + repr(argv)) from exc


@dataclass(frozen=True, kw_only=True)
class ReadyLine:
    """The worker's announcement of its pid and bound ports."""

    pid: int
    ports: dict[str, int]
    version: str
    python: str
    #: Pids of workers of the same node that an earlier run left and this one ended.
    reaped: tuple[int, ...] = ()
    #: The worker's CurveZMQ public key for this launch (z85), when it serves CurveZMQ.
    server_key: str = ""
    #: Channels bound on a Unix socket (``ipc://`` endpoints) rather than a port: their port is 0.
    endpoints: dict[str, str] = field(default_factory=dict)

    def to_line(self) -> str:
        body = {
            "v": PROTOCOL_VERSION,
            "pid": self.pid,
            "ports": self.ports,
            "version": self.version,
            "python": self.python,
            "reaped": list(self.reaped),
        }
        if self.server_key:
            body["server_key"] = self.server_key
        if self.endpoints:
            body["endpoints"] = self.endpoints
        return READY_PREFIX + json.dumps(body, separators=(",", ":"))

    @classmethod
    def find(cls, line: str) -> ReadyLine | None:
        """The announcement in ``line``, or None when the line is ordinary output."""
        at = line.find(READY_PREFIX)
        if at < 0:
            return None
        try:
            body = json.loads(line[at + len(READY_PREFIX) :])
            ports = {name: int(body["ports"][name]) for name in CHANNELS}
            return cls(
                pid=int(body["pid"]),
                ports=ports,
                version=str(body.get("version", "?")),
                python=str(body.get("python", "?")),
                reaped=tuple(int(p) for p in body.get("reaped", ())),
                server_key=str(body.get("server_key", "")),
                endpoints={
                    str(k): str(v)
                    for k, v in body.get("endpoints", {}).items()
                    if k in CHANNELS and str(v).startswith("ipc://")
                },
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def _address(value: str) -> str:
    """An IP address to bind on ("" for loopback); ValueError for anything else (a name, a pattern)."""
    if value:
        ipaddress.ip_address(value)
    return value


def _window(raw: str | None) -> float:
    """A batch window from the command line: seconds, 0 to 0.1; ValueError otherwise."""
    if raw is None:
        return DEFAULT_BATCH_WINDOW
    window = float(raw)
    if not 0 <= window <= MAX_BATCH_WINDOW:
        raise ValueError(f"batch window {raw!r}")
    return window


def _control(value: str) -> str:
    if value not in CONTROLS:
        raise ValueError(f"unknown control {value!r}")
    return value


#: What a worker's stdin can be (see WorkerArgs.control).
CONTROLS = ("", "pipe", "session")
#: The line a com writes to its worker's stdin to stop it.
STOP_LINE = "stop"


def pulse(answer: int | None = None) -> list[bytes]:
    """A com's pulse; ``answer`` echoes a worker's probe (it asked whether its com still lives)."""
    frames = [PULSE, str(time.time_ns()).encode()]
    if answer is not None:
        frames.append(str(answer).encode())
    return frames


def parse_pulse(frames: list[bytes]) -> tuple[int, int | None]:
    """(the com's send time in ns, the probe it answers or None); DecodeError for what is not a pulse."""
    if len(frames) not in (2, 3) or frames[0] != PULSE:
        raise DecodeError(f"a pulse is [b'PULSE', time(, answer)], got {len(frames)} frame(s)")
    answer = read_int(frames[2], "a pulse's answer") if len(frames) == 3 else None
    return read_int(frames[1], "a pulse's time"), answer


def liveness(
    pid: int,
    seq: int,
    echo_ns: int,
    error: str | None = None,
    rejected: int = 0,
    probe: int | None = None,
    refused: int = 0,
    *,
    times: tuple[int, int] | None = None,
    ring: tuple[int, int] | None = None,
    sent: tuple[int, int] | None = None,
) -> list[bytes]:
    """A worker's beacon; ``error`` is what went wrong in it that its com should report,
    ``rejected`` how many messages it dropped as undecodable so far, ``probe`` asks the com to
    answer at once (the worker's stdin closed: is the com still there?), ``refused`` how many
    connections it refused for not carrying its com's key, ``times`` the worker's clock (ns)
    when the echoed pulse came and when this beacon left: with the pulse's own send time and
    its arrival, the com has the four times of an NTP exchange; ``ring`` the payloads its
    shared-memory ring could not take so far and the rings it started anew (a local worker's),
    ``sent`` the packets it sent so far and the messages they travelled in (see Settings.batch_window)."""
    body: dict[str, Any] = {"pid": pid, "seq": seq, "echo_ns": echo_ns, "rejected": rejected, "refused": refused}
    if times is not None and times[0]:
        body["rx_ns"], body["tx_ns"] = times
    if error is not None:
        body["error"] = error[:ERROR_MAX_CHARS]
    if probe is not None:
        body["probe"] = probe
    if ring is not None:
        body["ring"] = list(ring)
    if sent is not None:
        body["sent"] = list(sent)
    return [LIVE, json.dumps(body).encode()]


def parse_liveness(frames: list[bytes]) -> dict[str, Any]:
    """A worker's beacon as a dict; DecodeError for what is not one. Its fields are the
    caller's to check."""
    if len(frames) != 2 or frames[0] != LIVE:
        raise DecodeError(f"a liveness message is [b'LIVE', JSON], got {len(frames)} frame(s)")
    body = read_json(frames[1], "a liveness message", CONTROL_MAX_BYTES)
    if not isinstance(body, dict):
        raise DecodeError(f"a liveness message must be a JSON object, got {type(body).__name__}")
    return body
