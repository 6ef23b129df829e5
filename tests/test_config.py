"""Configuration values: settings, the verbosity string, the worker's argv and ready line."""

from __future__ import annotations

import inspect

import pytest

from heron_remote import ConfigError, ForwarderPorts, Settings, SourceCom
from heron_remote._protocol import ReadyLine, WorkerArgs
from heron_remote._verbosity import parse_verbosity, timestamped
from heron_remote.source_com import cpu_of


def test_source_com_keeps_the_seed_signature() -> None:
    params = list(inspect.signature(SourceCom.__init__).parameters.values())[1:]
    positional = [p for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    # The seed's eight, then Heron's cpu_to_pin; everything of ours after them is keyword-only.
    assert [p for p in params if p not in positional] == [p for p in params if p.kind is p.KEYWORD_ONLY]
    assert [(p.name, p.default) for p in positional] == [
        ("sending_topics", inspect.Parameter.empty),
        ("parameters_topic", inspect.Parameter.empty),
        ("port", inspect.Parameter.empty),
        ("worker_exec", inspect.Parameter.empty),
        ("verbose", "||"),
        ("ssh_local_server_id", "None"),
        ("ssh_remote_server_id", "None"),
        ("outputs", None),
        ("cpu_to_pin", "Any"),
    ]
    for method in (
        "connect_sockets",
        "define_verbosity_and_relic",
        "on_receive_data_from_worker",
        "heartbeat_loop",
        "start_heartbeat_thread",
        "start_worker_process",
        "start_ioloop",
        "on_kill",
    ):
        assert callable(getattr(SourceCom, method)), method


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("||", (0, "_")),
        ("", (0, "_")),
        ("2||", (2, "_")),
        ("||/data/relics", (0, "/data/relics")),
        ("packets.log||/r", ("packets.log", "/r")),
        ("1", (1, "_")),
    ],
)
def test_verbosity_string(text: str, expected: tuple) -> None:
    assert parse_verbosity(text) == expected


def test_verbosity_string_with_two_separators_is_refused() -> None:
    with pytest.raises(ConfigError, match="more than one"):
        parse_verbosity("1||a||b")


def test_packet_log_name_gets_a_timestamp() -> None:
    import datetime

    assert (
        timestamped("out/packets.log", datetime.datetime(2026, 1, 2, 3, 4, 5)) == "out/packets_2026-01-02_03-04-05.log"
    )


def test_worker_args_round_trip_and_keep_herons_positions() -> None:
    args = WorkerArgs(
        port=6600,
        parameters_topic="Parameters##Cam##3",
        num_sending_topics=2,
        relic_dir="/r",
        heartbeat_rate=0.25,
        heartbeats_to_death=4,
        outputs=2,
    )
    argv = args.to_argv()
    assert argv[:5] == ["6600", "Parameters##Cam##3", "0", "2", "/r"]
    assert WorkerArgs.parse(argv) == args
    with pytest.raises(ConfigError, match="PORT PARAMETERS_TOPIC"):
        WorkerArgs.parse(["6600"])


def test_ready_line_is_found_in_output_and_ordinary_lines_are_not() -> None:
    line = ReadyLine(pid=12, ports={"data": 1, "heartbeat": 2, "parameters": 3, "liveness": 4}, version="x", python="3")
    assert ReadyLine.find("partial print without newline" + line.to_line()) == line
    assert ReadyLine.find("HERON_REMOTE_READY {broken") is None
    assert ReadyLine.find("hello") is None


def test_settings_validate_and_round_trip_through_the_environment() -> None:
    s = Settings(heartbeat_rate=0.3, heartbeats_to_death=4, ports=ForwarderPorts(data_submit=7000))
    assert Settings.from_env(s.to_env()) == s
    assert s.death_window == pytest.approx(1.2)
    with pytest.raises(ConfigError, match="heartbeat_rate"):
        Settings(heartbeat_rate=0)
    with pytest.raises(ConfigError, match="heartbeats_to_death"):
        Settings(heartbeats_to_death=0)
    with pytest.raises(ConfigError, match="data_publish"):
        ForwarderPorts(data_publish=70000)
    with pytest.raises(ConfigError, match="HERON_REMOTE_HEARTBEAT_RATE"):
        Settings.from_env({"HERON_REMOTE_HEARTBEAT_RATE": "fast"})
    off = Settings(relay_in_forwarders=False)
    assert Settings.from_env(off.to_env()) == off and off.to_env()["HERON_REMOTE_RELAY_IN_FORWARDERS"] == "0"
    for word, value in (("yes", True), ("Off", False), ("1", True), ("false", False)):
        assert Settings.from_env({"HERON_REMOTE_RELAY_IN_FORWARDERS": word}).relay_in_forwarders is value
    with pytest.raises(ConfigError, match=r"HERON_REMOTE_RELAY_IN_FORWARDERS='maybe' is not a valid boolean"):
        Settings.from_env({"HERON_REMOTE_RELAY_IN_FORWARDERS": "maybe"})
    with pytest.raises(ConfigError, match="relay_in_forwarders must be True or False"):
        Settings(relay_in_forwarders="no")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"sending_topics": "Frame##x##0"}, "sending_topics"),
        ({"port": "sixty"}, "port must be an integer"),
        ({"port": 70000}, "port must be 0 or"),
        ({"parameters_topic": ""}, "parameters_topic"),
        ({"outputs": ["Left", "Right"], "sending_topics": ["Middle##x##0"]}, "names none of the outputs"),
        ({"verbose": "1||a||b"}, "more than one"),
    ],
)
def test_source_com_refuses_bad_input_by_name(kwargs: dict, reason: str) -> None:
    base = {"sending_topics": ["Frame##x##0"], "parameters_topic": "Parameters##x##0", "port": 0, "worker_exec": "w.py"}
    with pytest.raises(ConfigError, match=reason):
        SourceCom(**{**base, **kwargs})


def test_heron_server_ids_turn_into_one_host() -> None:
    """Heron's editor starts local nodes with the local id set and the remote one 'None'."""
    com = SourceCom(["Frame##x##0"], "Parameters##x##0", 0, "w.py", ssh_local_server_id="0")
    assert com.host is None and not com.is_remote
    remote = SourceCom(["Frame##x##0"], "Parameters##x##0", 0, "w.py", "||", "0", "acq1")
    assert remote.host == "acq1" and remote.is_remote


@pytest.mark.parametrize(("cpu_to_pin", "cpu"), [("Any", None), (None, None), ("1", 1), (0, 0)])
def test_cpu_to_pin_is_heron_s_any_or_a_cpu_number(cpu_to_pin: object, cpu: int | None) -> None:
    assert cpu_of(cpu_to_pin) == cpu  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["first", "-1", True, 1.5])
def test_a_cpu_to_pin_that_is_no_cpu_number_is_refused_by_name(bad: object) -> None:
    with pytest.raises(ConfigError, match="cpu_to_pin must be 'Any' or a CPU number"):
        SourceCom(["Frame##x##0"], "Parameters##x##0", 0, "w.py", cpu_to_pin=bad)  # type: ignore[arg-type]
