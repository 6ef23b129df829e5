"""The server registry: Heron's ssh_info.json, where it is found, and what is wrong with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heron_remote import ConfigError
from heron_remote.ssh import Registry, Server, default_registry_path

HERON_FILE = {"0": {"Name": "acq1", "IP": "198.18.11.2", "Port": 22, "username": "lab", "password": "None"}}


def write(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "ssh_info.json"
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    return path


def test_a_heron_file_loads_and_servers_are_found_by_id_or_name(tmp_path: Path) -> None:
    reg = Registry.load(write(tmp_path, {**HERON_FILE, "1": {"IP": "cam-pc", "key_file": "keys/id"}}))
    assert reg.get("0") == reg.get("acq1") == reg.get(0)
    s = reg.get("acq1")
    assert (s.host, s.port, s.username, s.password, s.key_file) == ("198.18.11.2", 22, "lab", None, None)
    other = reg.get("1")
    assert other.name == "1" and other.key_file == str(tmp_path / "keys/id")  # relative to the file
    assert "password" not in repr(s)


def test_the_file_is_found_from_argument_then_environment_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, HERON_FILE)
    monkeypatch.setenv("HERON_REMOTE_SSH_INFO", str(path))
    assert default_registry_path() == path
    assert Registry.load().get("acq1").host == "198.18.11.2"
    monkeypatch.delenv("HERON_REMOTE_SSH_INFO")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_registry_path() == tmp_path / "home/.config/heron_remote/ssh_info.json"
    with pytest.raises(ConfigError, match=r"no server registry at .*HERON_REMOTE_SSH_INFO"):
        Registry.load()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "is not valid JSON"),
        ([1, 2], "must be a JSON object of server ids"),
        ({"0": "acq1"}, "server '0' must be a JSON object"),
        ({"0": {"Name": "a"}}, "server '0' needs \"IP\""),
        ({"0": {"IP": "a", "Port": "ssh"}}, "server '0' has \"Port\" 'ssh'"),
        ({"0": {"IP": "a", "pasword": "x"}}, "server '0' has the unknown key 'pasword'"),
        ({"0": {"IP": "a", "Name": "x"}, "1": {"IP": "b", "Name": "x"}}, "the Name 'x' is used by more than one"),
        ({"0": {"IP": "a", "trust_on_first_use": "yes"}}, "must be true or false"),
        (
            {"0": {"IP": "a", "Name": "cam", "transport": "Direct"}},
            'has "transport" \'Direct\'; it must be one of "tunnel", "direct", "direct-only"',
        ),
        ({"0": {"IP": "a", "transport": None}}, 'has "transport" None; it must be one of'),
    ],
)
def test_malformed_files_name_the_server_and_the_key(tmp_path: Path, raw: object, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason.replace("(", r"\(")):
        Registry.load(write(tmp_path, raw))


def test_an_unknown_server_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown server 'acq9' .*known are 0 \(acq1\)"):
        Registry.load(write(tmp_path, HERON_FILE)).get("acq9")


def test_passwords_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reg = Registry.load(
        write(tmp_path, {"0": {"IP": "a", "password": "env:ACQ_PW"}, "1": {"IP": "b", "password": "hunter2"}})
    )
    with pytest.raises(ConfigError, match="environment variable ACQ_PW, which is not set"):
        reg.get("0").resolve_password()
    monkeypatch.setenv("ACQ_PW", "s3cret")
    assert reg.get("0").resolve_password() == "s3cret"
    assert "keeps its password in the file" in caplog.text  # a plain password still works, with a warning
    assert reg.get("1").resolve_password() == "hunter2"


def test_ssh_config_aliases_fill_in_what_the_registry_leaves_out(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host campc\n  HostName 198.18.11.2\n  User lab\n  Port 2222\n  IdentityFile ~/.ssh/lab_key\n")
    s = Server(id="0", name="campc", host="campc").with_ssh_config(config)
    assert (s.host, s.port, s.username) == ("198.18.11.2", 2222, "lab")
    assert s.key_file.endswith(".ssh/lab_key")
    explicit = Server(id="0", name="campc", host="campc", username="me", key_file="/k").with_ssh_config(config)
    assert (explicit.username, explicit.key_file) == ("me", "/k")


def test_the_transport_is_the_tunnel_unless_a_server_says_direct(tmp_path: Path) -> None:
    servers = {"0": {"IP": "a"}, "1": {"IP": "b", "transport": "direct"}, "2": {"IP": "c", "transport": "direct-only"}}
    registry = Registry.load(write(tmp_path, servers))
    assert [(s.transport, s.direct) for s in registry.servers.values()] == [
        ("tunnel", False),
        ("direct", True),
        ("direct-only", True),
    ]
