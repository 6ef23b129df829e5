"""heron_remote.heron, piece by piece: parameters as Heron's editor pickles them, its argv, its
saved node state, its wire spellings, CPU pinning and an import with no side effects."""

from __future__ import annotations

import collections
import json
import logging
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zmq

from heron_remote import ConfigError, Settings, Source, decode_published
from heron_remote.com.parameters import ParametersRelay
from heron_remote.com.plain_pickle import MAX_BYTES, PlainPickleError, load_plain
from heron_remote.com.stats import ComStats
from heron_remote.heron import general_utils as gu
from heron_remote.heron import save_node_state
from heron_remote.heron.save_node_state import SaveNodeState
from heron_remote.wire import encode_output
from heron_remote.worker.main import pin_to_cpu

from .helpers import CAMERA, PYTHON

# -- parameters: plain data only ---------------------------------------------------------------

PLAIN = [None, True, -(2**70), 1.5, 2 + 3j, "héllo", b"\x00b", [1, [2.0]], (1, 2, 3, 4), {"a": {1: (2,)}}, {1, 2}]


@pytest.mark.parametrize("protocol", [3, 4, 5])
@pytest.mark.parametrize("value", PLAIN, ids=[type(v).__name__ for v in PLAIN])
def test_plain_values_come_out_as_they_went_in(value: object, protocol: int) -> None:
    out = load_plain(pickle.dumps(value, protocol=protocol))
    assert out == value and type(out) is type(value)


def test_what_heron_s_editor_sends_is_read() -> None:
    sent = [False, "True", "item 1", 0.10000000149011612, 2]  # a list, one value per parameter
    assert load_plain(pickle.dumps(sent, protocol=4)) == sent


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", range(6))
def test_a_pickle_that_would_run_code_runs_nothing_and_is_named(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "ran"
    raw = pickle.dumps([1, _Exploit(marker)], protocol=protocol)
    with pytest.raises(PlainPickleError, match=r"names the global posix\.system.*nothing is looked up or run"):
        load_plain(raw)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (collections.OrderedDict(a=1), r"global collections\.OrderedDict"),
        (frozenset([1]), "opcode FROZENSET"),
        (bytearray(b"x"), "opcode BYTEARRAY8"),
        (_Exploit, r"global tests\.test_heron_compat\._Exploit"),
    ],
)
def test_objects_classes_and_other_types_are_refused_by_name(value: object, reason: str) -> None:
    with pytest.raises(PlainPickleError, match=reason):
        load_plain(pickle.dumps(value, protocol=5))


def test_oversized_cut_short_and_hand_built_pickles_are_refused() -> None:
    with pytest.raises(PlainPickleError, match="over the"):
        load_plain(pickle.dumps("x" * MAX_BYTES, protocol=4))
    with pytest.raises(PlainPickleError, match="not a pickle of plain data"):
        load_plain(pickle.dumps([1, 2], protocol=4)[:-3])
    with pytest.raises(PlainPickleError, match="a name where a value belongs"):
        load_plain(b"\x80\x04]\x8c\x08builtins\x8c\x07complex\x93a.")  # the name, never called
    with pytest.raises(PlainPickleError, match="calls something"):
        load_plain(b"\x80\x04\x8c\x08builtins\x8c\x07complex\x93\x8c\x01x\x85R.")  # complex('x')


def test_pickled_parameters_reach_the_worker_as_json_and_refusals_are_said_once(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    context = zmq.Context.instance()
    editor, com_in = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    com_out, worker = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    editor.bind("inproc://params-in")
    com_in.connect("inproc://params-in")
    com_out.bind("inproc://params-out")
    worker.connect("inproc://params-out")
    stats = ComStats()
    relay = ParametersRelay(logging.LoggerAdapter(logging.getLogger("test.params")), stats)
    relay.attach(com_in, com_out)
    try:
        editor.send_multipart([b"Timer##0", pickle.dumps([False, 5, "a"], protocol=4)])
        time.sleep(0.05)
        relay.poll()
        assert worker.poll(1000) and json.loads(worker.recv()) == [False, 5, "a"]
        for _ in range(3):
            editor.send_multipart([b"Timer##0", pickle.dumps(_Exploit(tmp_path / "x"), protocol=4)])
        editor.send_multipart([b"Timer##0", pickle.dumps({1, 2}, protocol=4)])
        time.sleep(0.05)
        with caplog.at_level(logging.ERROR, logger="test.params"):
            relay.poll()
        assert "cannot receive as JSON" in stats.last_error  # a set: plain, but not for JSON
        assert sum("posix.system" in r.getMessage() for r in caplog.records) == 1
        assert not worker.poll(100)  # neither reached the worker
        relay.resend_last()
        assert json.loads(worker.recv()) == [False, 5, "a"]
    finally:
        for sock in (editor, com_in, com_out, worker):
            sock.close(linger=0)


# -- the editor's argv and the com's registry ---------------------------------------------------


def test_the_editor_s_argv_is_read_as_heron_reads_it() -> None:
    argv = [
        "timer_com.py",
        "6050",
        "1",
        "A##B##0->C##Timer##0",
        "2",
        "Out##Timer##0->X##Y##0",
        "Out##Timer##0->Z##W##0",
    ]
    argv += ["Timer##0", "3||/data/state", "None", "0", "python3 /w/timer_worker.py", "1"]
    assert gu.parse_arguments_to_com(argv) == (
        "6050",
        ["A##B##0->C##Timer##0"],
        ["Out##Timer##0->X##Y##0", "Out##Timer##0->Z##W##0"],
        "Timer##0",
        "3||/data/state",
        "None",
        "0",
        "python3 /w/timer_worker.py",
        "1",
    )


@pytest.mark.parametrize(
    "argv",
    [["c.py"], ["c.py", "6050", "x"], ["c.py", "6050", "0", "2", "only-one-topic", "N##0", "||", "None", "None", "w"]],
)
def test_an_argv_that_is_not_the_editor_s_names_the_expected_form(argv: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"a Heron com is started as: com\.py PORT N_IN"):
        gu.parse_arguments_to_com(argv)


def test_a_com_inside_a_heron_tree_finds_the_tree_s_registry(tmp_path: Path) -> None:
    node = tmp_path / "Heron" / "Operations" / "Sources" / "Cam" / "Cam"
    node.mkdir(parents=True)
    assert gu.heron_ssh_info(node / "cam_com.py") is None  # no registry written yet
    registry = tmp_path / "Heron" / "communication" / "ssh_info.json"
    registry.parent.mkdir()
    registry.write_text('{"0": {"Name": "pc", "IP": "198.18.0.2", "Port": 22, "username": "lab", "password": "None"}}')
    assert gu.heron_ssh_info(node / "cam_com.py") == registry
    assert gu.heron_ssh_info(tmp_path / "elsewhere" / "com.py") is None


def test_transform_and_sink_entry_points_say_what_to_keep() -> None:
    with pytest.raises(ConfigError, match="runs source nodes; this is a transform node"):
        gu.start_the_transform_communications_process(["Static"], ["Parameters"])


def test_heron_s_helpers() -> None:
    started = time.perf_counter()
    gu.accurate_delay(5)
    assert time.perf_counter() - started >= 0.005
    ports = gu.get_next_available_port_group(6050, 20)
    assert [next(ports) for _ in range(3)] == ["6050", "6070", "6090"]
    assert gu.full_split_path("/a/b/c.py") == ["/", "a", "b", "c.py"]
    assert gu.choose_color_according_to_operations_type("Timer##Sources##Operations") == [172, 124, 41, 255]


def test_importing_general_utils_does_nothing_but_import() -> None:
    """Heron's editor imports every node's com file: no sockets, threads, handlers, heavy imports."""
    probe = (
        "import logging, signal, sys, threading, time\n"
        "before = (threading.active_count(), signal.getsignal(signal.SIGTERM), len(logging.getLogger().handlers))\n"
        "t = time.perf_counter()\n"
        "from heron_remote.heron import general_utils, constants\n"
        "took = time.perf_counter() - t\n"
        "after = (threading.active_count(), signal.getsignal(signal.SIGTERM), len(logging.getLogger().handlers))\n"
        "heavy = [m for m in ('zmq', 'numpy', 'paramiko', 'fabric', 'pandas') if m in sys.modules]\n"
        "print(before == after, heavy, f'{took:.3f}')\n"
    )
    out = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, timeout=60, check=True).stdout.split()
    print(f"import heron_remote.heron.general_utils: {out[-1]} s")
    assert out[:2] == ["True", "[]"], out


# -- the saved node state ------------------------------------------------------------------------


def test_saved_state_is_heron_s_dataframes_in_heron_s_folders(tmp_path: Path) -> None:
    state = SaveNodeState(str(tmp_path), "Timer", "0", num_of_iters=3)
    state.create("Parameters", 0, visualisation_on=False, delay=0.5)
    state.update_parameters(7, [True, 0.25])
    for k in range(5):
        state.update_substate(k, count=k, label=f"n{k}")
    substate_path = tmp_path / "Timer##0" / "Substate.df"
    assert len(pd.read_pickle(substate_path)) == 4  # the first row, then a save after 3 more
    state.close()  # the worker ends: the rest is saved
    parameters = pd.read_pickle(tmp_path / "Timer##0" / "Parameters.df")
    assert list(parameters.columns) == ["DateTime", "WorkerIndex", "visualisation_on", "delay"]
    assert parameters[["WorkerIndex", "visualisation_on", "delay"]].values.tolist() == [
        [0, False, 0.5],
        [7, True, 0.25],
    ]
    substate = pd.read_pickle(substate_path)
    assert substate["count"].tolist() == list(range(5)) and substate["WorkerIndex"].tolist() == list(range(5))
    assert str(parameters["DateTime"].dtype).startswith("datetime64")


def test_without_pandas_the_state_goes_to_json_lines_saying_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now fails
    monkeypatch.setattr(save_node_state, "_said_no_pandas", False)
    state = SaveNodeState(str(tmp_path), "Timer", "0", num_of_iters=-1)
    with caplog.at_level(logging.WARNING):
        state.create("Parameters", 0, delay=0.5)
        for k in range(3):
            state.update_substate(k, count=k)
        substate = tmp_path / "Timer##0" / "Substate.jsonl"
        assert len(substate.read_text().splitlines()) == 1  # the first row; -1: the rest when the worker ends
        state.close()
    assert sum("pandas is not installed" in r.getMessage() for r in caplog.records) == 1
    rows = [json.loads(line) for line in (tmp_path / "Timer##0" / "Substate.jsonl").read_text().splitlines()]
    assert [r["count"] for r in rows] == [0, 1, 2] and {"DateTime", "WorkerIndex"} <= set(rows[0])
    assert json.loads((tmp_path / "Timer##0" / "Parameters.jsonl").read_text())["delay"] == 0.5


@pytest.mark.parametrize("name", ["../x", "a/b", ".."])
def test_a_node_name_that_is_a_path_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="must be plain names, not paths"):
        SaveNodeState(str(tmp_path), name, "0")


# -- the wire as Heron writes and reads it ---------------------------------------------------------


def test_native_dtypes_are_spelled_as_heron_spells_them() -> None:
    for dtype, spelled in (("<i2", "int16"), ("u1", "uint8"), ("f8", "float64"), (">i2", ">i2"), ("<U3", "<U3")):
        meta, _ = encode_output(np.zeros(2, dtype=dtype))
        assert json.loads(meta)["dtype"] == spelled


def test_a_message_from_heron_s_transform_com_decodes(
    outside: tuple[Settings, subprocess.Popen[str]],
) -> None:
    """Heron's transform coms write the time as float seconds; Heron spells dtypes as str(dtype).

    In Heron's layout frames() reads the forwarders, so a message published there on its topic
    is read like any other."""
    settings, _ = outside
    meta = json.dumps({"data_type": "ndarray", "dtype": "int16", "shape": [2]}).encode()
    payload = np.array([7, -7], dtype=np.int16).tobytes()
    packet = decode_published([b"Out##T##0->In##S##0", b"4", b"12345.678901", meta, payload])
    assert (packet.index, packet.time_us, packet.value.tolist()) == (4, 12345678901, [7, -7])
    with Source(CAMERA, parameters={"shape": [2, 2], "fps": 5}, settings=settings) as cam:
        pub = zmq.Context.instance().socket(zmq.PUB)
        pub.linger = 0
        pub.connect(f"tcp://127.0.0.1:{settings.ports.data_submit}")
        try:
            frames = cam.frames(timeout=5)
            next(frames)
            for _ in range(20):  # a transform com's message on this source's topic
                pub.send_multipart([cam.topics[0].encode(), b"99999", b"12.5", meta, payload])
                time.sleep(0.05)
            heron = next(f for f in frames if f.index == 99999)
            assert heron.time == 12.5 and heron.arrays[0].tolist() == [7, -7]
        finally:
            pub.close()


# -- CPU pinning -------------------------------------------------------------------------------------


def test_a_worker_pins_itself_or_says_why_not(caplog: pytest.LogCaptureFixture) -> None:
    probe = "import os; from heron_remote.worker.main import pin_to_cpu; print(pin_to_cpu(0), os.sched_getaffinity(0))"
    out = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["True", "{0}"]
    with caplog.at_level(logging.WARNING):
        assert pin_to_cpu(4096) is False
    assert "cannot pin the worker to CPU 4096 (this PC lets it use CPUs" in caplog.text


def test_heron_remote_ssh_info_wins_over_the_tree_s_registry(tmp_path: Path) -> None:
    node = tmp_path / "Heron" / "Operations" / "Sources" / "Cam" / "Cam"
    node.mkdir(parents=True)
    registry = tmp_path / "Heron" / "communication" / "ssh_info.json"
    registry.parent.mkdir()
    registry.write_text("{}")
    assert gu.com_settings(node / "cam_com.py", Settings()).ssh_info == str(registry)
    chosen = Settings(ssh_info="/etc/lab/ssh_info.json")  # what HERON_REMOTE_SSH_INFO set
    assert gu.com_settings(node / "cam_com.py", chosen).ssh_info == "/etc/lab/ssh_info.json"
    assert gu.com_settings(tmp_path / "com.py", Settings()).ssh_info is None  # no Heron tree: the default
