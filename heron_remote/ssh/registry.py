"""The server registry: Heron's ``ssh_info.json``, with key files and known_hosts per server.

::

    {"0": {"Name": "acq1", "IP": "192.168.1.20", "Port": 22, "username": "lab",
           "password": "None", "key_file": "~/.ssh/id_ed25519", "known_hosts": "~/.ssh/known_hosts"}}

A server is referred to by its id (``"0"``) or its ``Name``. The file is the one given,
else ``$HERON_REMOTE_SSH_INFO``, else ``~/.config/heron_remote/ssh_info.json``.
``"password"`` is best ``"env:VARNAME"`` (read from the rig's environment when
connecting) so that no secret sits in the file; ``"None"`` means not used. ``"IP"``
may be a host alias of ``~/.ssh/config``, whose HostName, User, Port and
IdentityFile then apply where the registry gives none. ``"tunnel"`` picks the port-forward
backend: ``"sshtunnel"`` (default, paramiko in this process) or ``"openssh"`` (the ``ssh``
binary, see :mod:`heron_remote.ssh.openssh`). ``"transport"`` is how the data travels:
``"tunnel"`` (default: through SSH port forwards), ``"direct"`` (CurveZMQ straight to the PC's
address, the tunnel when that port cannot be reached) or ``"direct-only"`` (CurveZMQ, or a
clear error). ``"compression"`` packs the worker's arrays for the link
(:class:`~heron_remote.compression.Compression`: true, or ``{"codec": "zstd", "level": 1,
"threads": 2, "shuffle": "bit"}``). ``"python"`` is the interpreter's path and its
options (``"python3 -X dev"``), split into words like a shell's (quotes group, a backslash is
literal, for Windows paths) and never run as shell code (:func:`python_words`).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..compression import Compression
from ..errors import ConfigError
from .tunnel import BACKENDS, DEFAULT_BACKEND

__all__ = ["TRANSPORTS", "Registry", "Server", "default_registry_path", "python_words"]

logger = logging.getLogger(__name__)

ENV_VAR = "HERON_REMOTE_SSH_INFO"
_KEYS = {
    "Name",
    "IP",
    "Port",
    "username",
    "password",
    "key_file",
    "known_hosts",
    "python",
    "trust_on_first_use",
    "run_dir",
    "tunnel",
    "transport",
    "compression",
}
#: The data paths a server may name in ``"transport"``; the first is the default.
TRANSPORTS = ("tunnel", "direct", "direct-only")


def default_registry_path() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("~/.config/heron_remote/ssh_info.json").expanduser()


def python_words(text: str, *, server: str = "") -> list[str]:
    """The words of a ``"python"`` value; ConfigError when it has none or an unclosed quote.

    Each word is quoted for the PC's shell when used, so ``;`` or ``$(...)`` are part of a word,
    never shell code. Backslashes are kept (``C:\\Python311\\python.exe``), unlike shlex.split.
    """
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    lexer.escape = ""
    try:
        words = list(lexer)
    except ValueError as exc:
        words, problem = [], f"{exc.args[0].lower() if exc.args else exc}"
    else:
        problem = "no interpreter"
    if not words:
        who = f"server {server!r}: " if server else ""
        raise ConfigError(
            f'{who}"python" {text!r} is not an interpreter and its options ({problem}): write its path, '
            "then any options, quoting a path with spaces: \"'/opt/lab venv/bin/python' -X dev\""
        )
    return words


def _optional(value: Any) -> str | None:
    if value is None or value == "None" or value == "":
        return None
    return str(value)


@dataclass(frozen=True, kw_only=True)
class Server:
    """One acquisition PC. ``password`` keeps what the file says (``env:VAR``), never the secret."""

    id: str
    name: str
    host: str
    port: int = 22
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    key_file: str | None = None
    known_hosts: str | None = None
    python: str = "python3"
    trust_on_first_use: bool = False
    #: Where the PC keeps its start records (default: its temp dir, per user).
    run_dir: str | None = None
    #: The port-forward backend, a key of :data:`heron_remote.ssh.tunnel.BACKENDS`.
    tunnel: str = DEFAULT_BACKEND
    #: The data path, one of :data:`TRANSPORTS`.
    transport: str = TRANSPORTS[0]
    #: How workers on this PC pack their arrays for the link, unless a source says otherwise.
    compression: Compression | None = None

    @property
    def direct(self) -> bool:
        """Whether the data goes straight to the PC's address (CurveZMQ), not through SSH."""
        return self.transport != "tunnel"

    @property
    def python_argv(self) -> list[str]:
        """The interpreter's command: its path, then its options (:func:`python_words`)."""
        return python_words(self.python, server=self.name)

    @property
    def label(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{self.name} ({user}{self.host}:{self.port})"

    def resolve_password(self) -> str | None:
        """The password itself: from the environment for ``env:VAR``."""
        if self.password is None:
            return None
        if self.password.startswith("env:"):
            var = self.password[4:]
            value = os.environ.get(var)
            if value is None:
                raise ConfigError(
                    f"server {self.name!r}: its password is to come from the environment variable {var}, "
                    "which is not set in this process"
                )
            return value
        return self.password

    def with_ssh_config(self, config_path: Path | None = None) -> Server:
        """This server with ``~/.ssh/config`` filling in what the registry leaves out."""
        import paramiko

        path = config_path or Path("~/.ssh/config").expanduser()
        if not path.is_file():
            return self
        found = paramiko.SSHConfig.from_path(str(path)).lookup(self.host)
        identity = found.get("identityfile")
        return Server(
            id=self.id,
            name=self.name,
            host=found.get("hostname", self.host),
            port=self.port if self.port != 22 or "port" not in found else int(found["port"]),
            username=self.username or found.get("user"),
            password=self.password,
            key_file=self.key_file or (identity[0] if identity else None),
            known_hosts=self.known_hosts,
            python=self.python,
            trust_on_first_use=self.trust_on_first_use,
            run_dir=self.run_dir,
            tunnel=self.tunnel,
            transport=self.transport,
            compression=self.compression,
        )


class Registry:
    """The servers of one ``ssh_info.json``."""

    def __init__(self, servers: dict[str, Server], *, path: Path | None = None) -> None:
        self.servers = servers
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Registry:
        file = Path(path).expanduser() if path else default_registry_path()
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(
                f"no server registry at {file}: write one (see the README, 'Remote acquisition PCs'), "
                f"or point {ENV_VAR} at it"
            ) from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"server registry {file} is not valid JSON: {exc}") from exc
        return cls.from_dict(raw, path=file)

    @classmethod
    def from_dict(cls, raw: Any, *, path: Path | None = None) -> Registry:
        where = f"server registry {path}" if path else "server registry"
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(f'{where} must be a JSON object of server ids, like {{"0": {{"IP": ...}}}}')
        servers = {}
        for sid, entry in raw.items():
            servers[str(sid)] = _parse_server(str(sid), entry, where, path)
        names = [s.name for s in servers.values()]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ConfigError(f"{where}: the Name {sorted(duplicates)[0]!r} is used by more than one server")
        return cls(servers, path=path)

    def get(self, ref: str | int) -> Server:
        """The server with this id or Name."""
        key = str(ref)
        if key in self.servers:
            return self.servers[key]
        for server in self.servers.values():
            if server.name == key:
                return server
        known = ", ".join(f"{sid} ({s.name})" for sid, s in self.servers.items())
        raise ConfigError(f"unknown server {key!r} in {self.path or 'the registry'}: known are {known}")


def _parse_server(sid: str, entry: Any, where: str, path: Path | None) -> Server:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: server {sid!r} must be a JSON object, got {type(entry).__name__}")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigError(
            f"{where}: server {sid!r} has the unknown key {sorted(unknown)[0]!r}; the keys are {sorted(_KEYS)}"
        )
    ip = entry.get("IP")
    if not isinstance(ip, str) or not ip.strip():
        raise ConfigError(f'{where}: server {sid!r} needs "IP", the address or host name of the PC')
    port = entry.get("Port", 22)
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f'{where}: server {sid!r} has "Port" {port!r}; it must be a port number')
    password = _optional(entry.get("password"))
    if password is not None and not password.startswith("env:"):
        logger.warning(
            '%s: server %r keeps its password in the file; write "env:VARNAME" and set that variable instead',
            where,
            sid,
        )
    base = path.parent if path else Path.cwd()

    def file_key(key: str) -> str | None:
        value = _optional(entry.get(key))
        if value is None:
            return None
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else base / p)

    python = str(entry.get("python") or "python3")
    python_words(python, server=sid)  # refused now, not at the first launch
    tofu = entry.get("trust_on_first_use", False)
    if not isinstance(tofu, bool):
        raise ConfigError(f'{where}: server {sid!r} has "trust_on_first_use" {tofu!r}; it must be true or false')
    tunnel = entry.get("tunnel", DEFAULT_BACKEND)
    if tunnel not in BACKENDS:
        allowed = " or ".join(f'"{b}"' for b in BACKENDS)
        who = f"{sid!r} ({entry['Name']})" if entry.get("Name") else repr(sid)
        raise ConfigError(f'{where}: server {who} has "tunnel" {tunnel!r}; it must be {allowed}')
    transport = entry.get("transport", TRANSPORTS[0])
    if transport not in TRANSPORTS:
        allowed = ", ".join(f'"{t}"' for t in TRANSPORTS)
        who = f"{sid!r} ({entry['Name']})" if entry.get("Name") else repr(sid)
        raise ConfigError(
            f'{where}: server {who} has "transport" {transport!r}; it must be one of {allowed} '
            '("tunnel": through SSH, the default; "direct": CurveZMQ to the PC\'s address, the tunnel when '
            'that cannot be reached; "direct-only": CurveZMQ or an error)'
        )
    who = f"{sid!r} ({entry['Name']})" if entry.get("Name") else repr(sid)
    compression = Compression.coerce(entry.get("compression"), f'{where}: server {who}\'s "compression"')
    return Server(
        id=sid,
        name=str(entry.get("Name") or sid),
        host=ip.strip(),
        port=port,
        username=_optional(entry.get("username")),
        password=password,
        key_file=file_key("key_file"),
        known_hosts=file_key("known_hosts"),
        python=python,
        trust_on_first_use=tofu,
        run_dir=_optional(entry.get("run_dir")),
        tunnel=tunnel,
        transport=transport,
        compression=compression,
    )
