"""Typed settings: forwarder ports and the timing of heartbeats, starts and stops.

The defaults are Heron's. A com started as a script (Heron's way) reads
overrides from ``HERON_REMOTE_*`` environment variables through
:meth:`Settings.from_env`; Python callers pass a :class:`Settings` value.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._backoff import Backoff
from .errors import ConfigError

__all__ = ["ForwarderPorts", "RestartPolicy", "Settings"]

#: Heron reserves this many ports per node; kept for port-group arithmetic.
PORTS_PER_NODE = 20


@dataclass(frozen=True, kw_only=True)
class ForwarderPorts:
    """Submit and publish ports of the three forwarders. 0 binds a free port."""

    data_submit: int = 6560
    data_publish: int = 6561
    parameters_submit: int = 6563
    parameters_publish: int = 6564
    proof_of_life_submit: int = 6569
    proof_of_life_publish: int = 6570

    @classmethod
    def free(cls) -> ForwarderPorts:
        """Every port 0: the forwarders bind free ports (read the bound ones from Forwarders.ports)."""
        return cls(**{f.name: 0 for f in dataclasses.fields(cls)})

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
                raise ConfigError(f"ForwarderPorts.{f.name} must be an int from 0 to 65535, got {value!r}")


_RESTART_MODES = ("never", "on-failure")


@dataclass(frozen=True, kw_only=True)
class RestartPolicy:
    """Whether a com starts its worker again after a crash or a lost link.

    mode: "never" (the default: the error reaches the user) or "on-failure" (a worker
        that ends with a non-zero status, or is lost, is started again; status 0 is an end).
    max_restarts: restarts allowed in one run; the next failure is raised.
    backoff: seconds before the first restart, doubled for each one after, up to max_backoff.
    reach_timeout: seconds a restart keeps trying to reach an acquisition PC that is down.
    """

    mode: str = "never"
    max_restarts: int = 3
    backoff: float = 1.0
    max_backoff: float = 30.0
    reach_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.mode not in _RESTART_MODES:
            raise ConfigError(f"RestartPolicy.mode must be one of {', '.join(_RESTART_MODES)}, got {self.mode!r}")
        if not isinstance(self.max_restarts, int) or isinstance(self.max_restarts, bool) or self.max_restarts < 0:
            raise ConfigError(f"RestartPolicy.max_restarts must be an int >= 0, got {self.max_restarts!r}")
        for name in ("backoff", "max_backoff", "reach_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"RestartPolicy.{name} must be a number of seconds >= 0, got {value!r}")

    @property
    def enabled(self) -> bool:
        return self.mode != "never" and self.max_restarts > 0

    def delay(self, restart: int) -> float:
        """Seconds to wait before restart number ``restart`` (from 1)."""
        return Backoff(first=self.backoff, maximum=self.max_backoff).delay(restart)


#: Seconds a worker holds a small packet for the ones after it, unless told (Settings.batch_window),
#: and the longest it may.
DEFAULT_BATCH_WINDOW = 0.0005
MAX_BATCH_WINDOW = 0.1


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How a com and its worker talk.

    heartbeat_rate: seconds between the com's pulses to the worker.
    heartbeats_to_death: pulses a worker may miss in a row before it ends itself.
    start_timeout: seconds a worker has to report ready before the start fails.
    stop_grace: seconds between TERM and KILL when a worker is stopped.
    forwarder_host: where the com finds the forwarders.
    forwarder_bind: the interface a Source opens its own forwarders on, when none answer at
        forwarder_host. 127.0.0.1 unless set: on another interface anyone who reaches it can
        read the frames and send parameters.
    ports: the forwarders' ports.
    ssh_info: the server registry file (default: $HERON_REMOTE_SSH_INFO, then
        ~/.config/heron_remote/ssh_info.json).
    connect_timeout: seconds an SSH connection may take before the host counts as unreachable.
    link_timeout: seconds without anything from an SSH host before its connection counts as
        dropped and is opened again (the tunnels keep their local ports).
    restart: a :class:`RestartPolicy`, or its mode as a string ("never", "on-failure").
    session_grace: seconds a remote worker whose SSH session closed while pulses still came
        waits for its com to answer before it ends itself (its com was killed). Raise it only
        if sshd on a PC may end sessions while the com lives on (a killed sshd), at the cost of
        an orphan holding the camera that much longer.
    relay_in_forwarders: when the forwarders run in another process of this account (Heron's
        layout), let them relay the com's packets (one loopback hop less per frame); False keeps
        the relaying in the com's own process (the relays of all such coms share one thread of
        the forwarders' process).
    batch_window: seconds a worker holds a small packet (8 KiB of payload or less) sent within
        that time of its previous one, so that the packets after it travel to the com in the same
        message: a packet then waits up to this long, and costs a quarter less CPU at 64 B (see
        README, "Performance"). A packet that comes alone goes at once. 0: every packet at once.
    """

    heartbeat_rate: float = 1.0
    heartbeats_to_death: int = 10
    start_timeout: float = 20.0
    stop_grace: float = 3.0
    forwarder_host: str = "127.0.0.1"
    forwarder_bind: str = "127.0.0.1"
    ports: ForwarderPorts = field(default_factory=ForwarderPorts)
    ssh_info: str | None = None
    connect_timeout: float = 10.0
    link_timeout: float = 3.0
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    session_grace: float = 0.75
    relay_in_forwarders: bool = True
    batch_window: float = DEFAULT_BATCH_WINDOW

    def __post_init__(self) -> None:
        if isinstance(self.restart, str):
            object.__setattr__(self, "restart", RestartPolicy(mode=self.restart))
        elif not isinstance(self.restart, RestartPolicy):
            raise ConfigError(f"Settings.restart must be a RestartPolicy or a mode string, got {self.restart!r}")
        for name in (
            "heartbeat_rate",
            "start_timeout",
            "stop_grace",
            "connect_timeout",
            "link_timeout",
            "session_grace",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"Settings.{name} must be a positive number of seconds, got {value!r}")
        for name in ("forwarder_host", "forwarder_bind"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"Settings.{name} must be an address or host name, got {value!r}")
        if not isinstance(self.relay_in_forwarders, bool):
            raise ConfigError(f"Settings.relay_in_forwarders must be True or False, got {self.relay_in_forwarders!r}")
        window = self.batch_window
        if not isinstance(window, (int, float)) or isinstance(window, bool) or not 0 <= window <= MAX_BATCH_WINDOW:
            raise ConfigError(
                f"Settings.batch_window must be between 0 (no batching) and {MAX_BATCH_WINDOW:g} s, got {window!r}"
            )
        if not isinstance(self.heartbeats_to_death, int) or self.heartbeats_to_death < 1:
            raise ConfigError(f"Settings.heartbeats_to_death must be an int >= 1, got {self.heartbeats_to_death!r}")

    @property
    def death_window(self) -> float:
        """Seconds without a pulse after which a worker ends itself."""
        return self.heartbeat_rate * self.heartbeats_to_death

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: os._Environ[str] | dict[str, str] | None = None) -> Settings:
        """Defaults overridden by ``HERON_REMOTE_HEARTBEAT_RATE`` and friends."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = _from_env(
            env,
            "HERON_REMOTE_",
            (
                ("heartbeat_rate", float),
                ("heartbeats_to_death", int),
                ("start_timeout", float),
                ("stop_grace", float),
                ("forwarder_host", str),
                ("forwarder_bind", str),
                ("connect_timeout", float),
                ("link_timeout", float),
                ("session_grace", float),
                ("relay_in_forwarders", boolean),
                ("batch_window", float),
            ),
        )
        port_kwargs = _from_env(
            env, "HERON_REMOTE_PORT_", tuple((f.name, int) for f in dataclasses.fields(ForwarderPorts))
        )
        if port_kwargs:
            kwargs["ports"] = ForwarderPorts(**port_kwargs)
        restart_kwargs = _from_env(
            env,
            "HERON_REMOTE_RESTART_",
            (("max_restarts", int), ("backoff", float), ("max_backoff", float), ("reach_timeout", float)),
        )
        if "HERON_REMOTE_RESTART" in env:
            restart_kwargs["mode"] = env["HERON_REMOTE_RESTART"]
        if restart_kwargs:
            kwargs["restart"] = RestartPolicy(**restart_kwargs)
        if env.get("HERON_REMOTE_SSH_INFO"):
            kwargs["ssh_info"] = env["HERON_REMOTE_SSH_INFO"]
        return cls(**kwargs)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The environment that makes :meth:`from_env` return these settings."""
        env = {
            "HERON_REMOTE_HEARTBEAT_RATE": repr(float(self.heartbeat_rate)),
            "HERON_REMOTE_HEARTBEATS_TO_DEATH": str(self.heartbeats_to_death),
            "HERON_REMOTE_START_TIMEOUT": repr(float(self.start_timeout)),
            "HERON_REMOTE_STOP_GRACE": repr(float(self.stop_grace)),
            "HERON_REMOTE_FORWARDER_HOST": self.forwarder_host,
            "HERON_REMOTE_FORWARDER_BIND": self.forwarder_bind,
            "HERON_REMOTE_CONNECT_TIMEOUT": repr(float(self.connect_timeout)),
            "HERON_REMOTE_LINK_TIMEOUT": repr(float(self.link_timeout)),
            "HERON_REMOTE_SESSION_GRACE": repr(float(self.session_grace)),
            "HERON_REMOTE_RELAY_IN_FORWARDERS": "1" if self.relay_in_forwarders else "0",
        }
        if self.ssh_info:
            env["HERON_REMOTE_SSH_INFO"] = self.ssh_info
        r = self.restart
        env["HERON_REMOTE_RESTART"] = r.mode
        env["HERON_REMOTE_RESTART_MAX_RESTARTS"] = str(r.max_restarts)
        for name in ("backoff", "max_backoff", "reach_timeout"):
            env["HERON_REMOTE_RESTART_" + name.upper()] = repr(float(getattr(r, name)))
        for f in dataclasses.fields(ForwarderPorts):
            env["HERON_REMOTE_PORT_" + f.name.upper()] = str(getattr(self.ports, f.name))
        return env


def boolean(text: str) -> bool:
    """An environment variable's yes or no: 1/0, true/false, yes/no, on/off (any case)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _from_env(
    env: Mapping[str, str], prefix: str, names: tuple[tuple[str, Callable[[str], Any]], ...]
) -> dict[str, Any]:
    """The values of ``prefix + NAME`` variables that are set, converted; ConfigError names a bad one."""
    found: dict[str, Any] = {}
    for name, kind in names:
        key = prefix + name.upper()
        if key in env:
            try:
                found[name] = kind(env[key])
            except ValueError as exc:
                what = getattr(kind, "__name__", "value")
                raise ConfigError(f"environment variable {key}={env[key]!r} is not a valid {what}") from exc
    return found
