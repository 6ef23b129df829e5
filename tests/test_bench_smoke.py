"""The bench runs and writes its files (no timing is checked: figures belong to `heron-remote bench`)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from heron_remote.bench import main
from heron_remote.bench.plot import RunKind, figure
from heron_remote.bench.protocol import Result
from heron_remote.bench.run import MIB, QUICK_ONLY

from .helpers import PYTHON

# Cheap: no SSH host, two small sizes, the whole local path (bench worker, com, forwarder) and
# the local launch latency (a study: runs once, fills its own section).
STREAMS = "zmq,path-local"
ONLY = STREAMS + ",launch-local"
SIZES = [64, 65536]


@pytest.mark.timeout(90)
def test_quick_bench_writes_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--quick", "--out", str(tmp_path), "--only", ONLY, "--sizes", ",".join(map(str, SIZES))])
    out = capsys.readouterr().out

    report = json.loads((tmp_path / "bench.json").read_text())
    assert status == 0, out
    assert {"machine", "config", "results", "ratios", "targets", "plot", "plot_note"} <= report.keys()
    assert {"cpu", "cores", "kernel", "python", "pyzmq", "paramiko", "date"} <= report["machine"].keys()
    assert report["config"]["measurements"] == ONLY.split(",")

    results = {(r["name"], r["size"]): r for r in report["results"]}
    assert set(results) == {(name, size) for name in STREAMS.split(",") for size in SIZES}
    for key, r in results.items():
        assert r["ok"], (key, r["error"])
        assert r["messages"] > 1 and r["msg_per_s"] > 0 and r["mb_per_s"] > 0, key
        # A loaded machine can keep a path's queues full through a quick run's latency phase: then
        # there is no latency figure, and the notes say how many samples were skipped.
        if r["latency_p50_us"] is not None or key[0] == "zmq":
            assert 0 < r["latency_p50_us"] <= r["latency_p99_us"], key
        else:
            assert r["notes"]["latency_skipped"] > 0, key
    ratios = {(r["name"], r["base"], r["size"]) for r in report["ratios"]}
    assert {("path-local", "zmq", size) for size in SIZES} <= ratios
    # A quick run's windows are too short to judge targets by: none is judged, and it says so.
    assert report["targets"] == [] and "not judged on a quick run" in report["targets_note"]
    assert "met " not in out and "MISSED" not in out and "not judged on a quick run" in out
    launch = report["launch"]["launch-local"]["cold"]
    assert launch["runs"] == 2 and 0 < launch["min_s"] <= launch["median_s"] <= launch["max_s"]
    assert 0 < launch["ready_median_s"] <= launch["max_s"]

    if report["plot"]:
        assert (tmp_path / report["plot"]).stat().st_size > 0
    else:  # matplotlib is optional (the bench extra): the note says why there is no plot
        assert report["plot_note"] and (tmp_path / "bench-plot.txt").exists()
    for name in ONLY.split(","):
        assert name in out  # the table


def test_unknown_measurement_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no measurement matches"):
        main(["--quick", "--out", str(tmp_path), "--only", "no-such-path"])


def test_targets_are_judged_on_full_runs() -> None:
    from heron_remote.bench.protocol import Result
    from heron_remote.bench.run import _targets

    fast = Result("path-local", 64, ok=True, msg_per_s=60_000.0)
    slow = Result("path-local", 64, ok=True, msg_per_s=20_000.0)
    for result, met in ((fast, True), (slow, False)):
        (target,) = _targets([result], [], {})
        assert target == {"target": "path-local >= 50000 msg/s (64 B)", "value": result.msg_per_s, "goal": 50_000,
                          "met": met}  # fmt: skip


def test_the_results_directory_is_stated_and_can_be_chosen() -> None:
    from heron_remote.bench.run import build_parser

    parser = build_parser()
    assert parser.parse_args([]).out == Path("bench-results")
    assert parser.parse_args(["--out", "/tmp/x"]).out == Path("/tmp/x")
    assert "--out DIR directory for bench.json and bench.png, made if missing (default: ./bench-results)" in " ".join(
        parser.format_help().split()
    )


@pytest.mark.timeout(120)
def test_a_default_quick_run_takes_under_30_s(tmp_path: Path) -> None:
    """`heron-remote bench --quick` as the user runs it: a process of its own (as root: it makes a namespace
    host, whose names carry the process id, so not in this one, which has made its own)."""
    started = time.monotonic()
    done = subprocess.run(
        [PYTHON, "-m", "heron_remote", "bench", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    took = time.monotonic() - started
    print(f"heron-remote bench --quick took {took:.1f} s")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    assert sorted(report["config"]["measurements"]) == sorted(QUICK_ONLY)
    assert {(r["name"], r["size"]) for r in report["results"]} == {
        ("zmq", 64), ("zmq", MIB), ("path-local", 64), ("path-local", MIB), ("sshtunnel-ns", MIB), ("path-ns", MIB)
    }  # fmt: skip
    assert all(r["ok"] for r in report["results"]), report["results"]
    assert "not judged on a quick run" in done.stdout and "met " not in done.stdout
    assert took < 30 + 10  # the bound, with room for a machine shared by other runs


def _result(name: str, size: int, mb: float) -> Result:
    return Result(name, size, ok=True, mb_per_s=mb, msg_per_s=mb * 1e6 / size, latency_p50_us=500.0,
                  latency_p99_us=900.0)  # fmt: skip


def test_the_plot_explains_itself() -> None:
    paths = (("zmq", 900.0), ("sshtunnel-ns", 90.0), ("path-ns", 400.0))
    results = [_result(name, size, mb) for name, mb in paths for size in (64, MIB)]
    sections = {
        "launch": {"launch-ns": {"cold": _launch(0.6), "warm": _launch(0.4)}},
        "scale": {"frame_bytes": 262144, "fps_per_source": 100, "rows": [_scale(n) for n in (1, 2, 4)]},
    }
    for quick in (True, False):
        fig = figure(results, sections, RunKind(quick=quick, date="2026-11-26T10:00:00+00:00", wall_s=384.0))
        title = fig.get_suptitle()
        assert ("QUICK run: a smoke test, not figures to quote" in title) is quick
        assert ("full run" in title) is not quick
        assert "2026-11-26 10:00:00 UTC, 6.4 min" in title
    panels = " | ".join(ax.get_title(loc="left") for ax in fig.axes)
    for what in ("throughput", "message rate", "latency", "launch", "scale"):
        assert what in panels, panels
    ticks = [t.get_text() for t in fig.axes[2].get_xticklabels()]
    assert ticks == ["zmq", "sshtunnel-ns", "★ path-ns"]  # ours marked
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["64 B", "1 MiB", "★ heron_remote"]
    caption = " ".join(t.get_text() for t in fig.texts)
    for said in (
        "★ hatched = heron_remote",
        "-ns = to a network-namespace host",
        "-lo = to an sshd on loopback",
        "-openssh = heron_remote with its OpenSSH tunnel backend",
        "zmq-paramiko = pyzmq's paramiko tunnel",
    ):
        assert said in caption, said  # fmt: skip


def _launch(median: float) -> dict:
    return {"runs": 5, "median_s": median, "min_s": median - 0.1, "max_s": median + 0.1, "ready_median_s": median}


def _scale(n: int) -> dict:
    return {"sources": n, "mb_per_s": 26.0 * n, "offered_mb_per_s": 26.2 * n}


@pytest.mark.timeout(120)
def test_quick_takeover_study_and_shared_path_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two scripts on fixed ports, the one running the forwarders killed; and a path through another
    process's forwarders."""
    status = main(["--quick", "--out", str(tmp_path), "--only", "path-local-shared,takeover", "--sizes", "65536"])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "bench.json").read_text())
    assert status == 0, out

    shared = report["results"][0]
    assert shared["name"] == "path-local-shared" and shared["ok"] and shared["messages"] > 1, shared
    assert shared["notes"]["forwarders"] == "another process"

    section = report["takeover"]
    assert (section["runs"], section["takeovers"], section["errors"], section["stalled"]) == (1, 1, 0, 0), section
    row = section["rows"][0]
    assert row["stops"] == "A:kill B:term" and row["forwarder_warnings"] == 1, row
    assert len(row["takeover_gaps_s"]) == 1 and 0 < row["takeover_gaps_s"][0] <= row["longest_gap_s"], row
    assert section["longest_takeover_gap_s"] == row["takeover_gaps_s"][0]
    assert 0 < section["longest_gap_s"] == row["longest_gap_s"]
    assert report["targets"] == []  # judged on full runs only
    assert "takeover: 1 runs, 1 takeovers" in out


@pytest.mark.timeout(150)
def test_quick_heron_layout_runs_here_and_over_ssh(tmp_path: Path) -> None:
    """Heron's layout: a com started as the editor starts it, `heron-remote forwarders` and a plain
    pyzmq subscriber, each a process; the worker here and on a namespace host over SSH (a bench
    process of its own: its namespace host's names carry its process id)."""
    only = "zmq,heron-local,heron-local-comrelay,heron-ns"
    done = subprocess.run(
        [PYTHON, "-m", "heron_remote", "bench", "--quick", "--out", str(tmp_path), "--only", only, "--sizes", "65536"],
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "bench.json").read_text())

    results = {r["name"]: r for r in report["results"]}
    assert set(results) == set(only.split(","))
    for name in ("heron-local", "heron-ns"):
        r = results[name]
        assert r["ok"] and r["messages"] > 1, r
        assert r["notes"]["layout"] == "com, forwarders and subscriber in three processes"
        for key in ("forwarders_pid", "com_pid"):  # both stopped and reaped when the run ended
            assert not Path(f"/proc/{r['notes'][key]}").exists(), (name, key)
        assert r["notes"]["relay"] == "forwarders process", r  # two hops: the forwarders relay
    # and the measurement of what that saves: the com relaying in its own process
    assert results["heron-local-comrelay"]["ok"] and results["heron-local-comrelay"]["notes"]["relay"] == "com process"
    ratios = {(r["name"], r["base"]) for r in report["ratios"]}
    assert {("heron-local", "zmq"), ("heron-ns", "zmq")} <= ratios
    assert "heron-local" in done.stdout and "heron-ns" in done.stdout


def test_the_cost_of_authentication_is_judged_against_the_same_path_without_keys() -> None:
    from heron_remote.bench.run import _targets

    ratios = [
        {"name": "path-local", "base": "path-local-noauth", "size": MIB, "ratio": 0.97},
        {"name": "path-local", "base": "path-local-noauth", "size": 64, "ratio": 0.85},
        {"name": "path-ns", "base": "path-ns-noauth", "size": MIB, "ratio": 0.94},
    ]
    judged = {t["target"]: t["met"] for t in _targets([], ratios, {})}
    assert judged == {
        "path-local >= 0.95 x path-local-noauth (1 MiB)": True,
        "path-local >= 0.9 x path-local-noauth (64 B)": False,
        "path-ns >= 0.95 x path-ns-noauth (1 MiB)": False,
    }


def test_heron_layout_is_judged_against_the_source_path_on_the_same_transport() -> None:
    from heron_remote.bench.run import MEASUREMENTS, _ratios, _targets

    def measured(name: str, rounds: list[float]) -> Result:
        result = Result(name, MIB, ok=True, mb_per_s=sorted(rounds)[1])
        result.notes["rounds"] = {"mb_per_s": rounds, "msg_per_s": [0, 0, 0]}
        return result

    results = [
        measured("path-ns", [400.0, 500.0, 450.0]),
        measured("path-ns-direct", [1000.0, 900.0, 950.0]),
        measured("heron-ns", [360.0, 420.0, 400.0]),
        measured("heron-ns-direct", [700.0, 750.0, 730.0]),
    ]
    ratios = _ratios(results, MEASUREMENTS)
    judged = {t["target"]: (round(t["value"], 3), t["met"]) for t in _targets([], ratios, {}) if "heron" in t["target"]}
    # Heron's layout over direct against the Source over direct, not against the slower tunnel.
    assert judged == {
        "heron-ns >= 0.8 x path-ns (1 MiB)": (round(400 / 450, 3), True),
        "heron-ns-direct >= 0.8 x path-ns-direct (1 MiB)": (round(730 / 950, 3), False),
    }
    paired = {(r["name"], r["base"]): r["rounds"] for r in ratios}
    assert paired[("heron-ns-direct", "path-ns-direct")] == [0.7, 0.83, 0.77]  # each round's two sides
    assert paired[("heron-ns-direct", "path-ns")] == [1.75, 1.5, 1.62]  # still shown, not judged


@pytest.mark.timeout(90)
def test_the_bench_measures_the_path_without_the_links_key_beside_the_path_with_it(tmp_path: Path) -> None:
    from heron_remote._linkkeys import LinkKeys

    only = "path-local-noauth,path-local"
    assert main(["--quick", "--out", str(tmp_path), "--only", only, "--sizes", "65536"]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    notes = {r["name"]: r["notes"] for r in report["results"]}
    assert notes["path-local-noauth"]["auth"] == "none (bench only)" and "auth" not in notes["path-local"]
    assert ("path-local", "path-local-noauth", 65536) in {(r["name"], r["base"], r["size"]) for r in report["ratios"]}
    assert LinkKeys.make().mechanism == "plain"  # the switch ended with the measurement


def test_rounds_keep_each_measurements_median_round_and_a_failed_round_fails_it() -> None:
    from heron_remote.bench.rounds import median_round

    runs = [Result("zmq", 64, ok=True, mb_per_s=v, msg_per_s=v * 10) for v in (30.0, 10.0, 20.0, 40.0)]
    kept = median_round(runs[:3])
    assert kept is runs[2] and kept.notes["rounds"] == {"kept": 3, "mb_per_s": [30.0, 10.0, 20.0],
                                                        "msg_per_s": [300, 100, 200]}  # fmt: skip
    assert median_round(runs).mb_per_s == 20.0  # even: the lower of the two middle rounds
    alone = Result("zmq", 64, ok=True, mb_per_s=5.0)
    assert median_round([alone]) is alone and "rounds" not in alone.notes
    broken = Result("zmq", 64, error="TimeoutError: no data")
    failed = median_round([Result("zmq", 64, ok=True, mb_per_s=1.0), broken])
    assert not failed.ok and failed.error == "round 2 of 2: TimeoutError: no data"
    with pytest.raises(ValueError, match="no round"):
        median_round([])


@pytest.mark.timeout(90)
def test_a_run_in_rounds_measures_each_path_every_round(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--quick", "--rounds", "2", "--out", str(tmp_path), "--only", STREAMS, "--sizes", "65536"])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "bench.json").read_text())
    assert status == 0, out
    assert report["config"]["rounds"] == 2 and "round 1 of 2" in out and "round 2 of 2" in out
    assert [r["name"] for r in report["results"]] == STREAMS.split(",")  # one row each: the median round
    for r in report["results"]:
        rounds = r["notes"]["rounds"]
        # Two rounds: the lower of the two is the median kept.
        assert len(rounds["mb_per_s"]) == 2 and round(r["mb_per_s"], 1) == min(rounds["mb_per_s"])
        assert all(v > 0 for v in rounds["mb_per_s"]) and rounds["kept"] in (1, 2)
    assert "rounds " in out.split("path-local", 1)[1]  # the table shows the spread
    with pytest.raises(SystemExit):
        main(["--rounds", "0", "--out", str(tmp_path)])


@pytest.mark.timeout(120)
def test_a_terminated_bench_stops_its_hosts_and_processes(tmp_path: Path) -> None:
    """`kill` (or `timeout`) on a bench mid-measurement: its namespace hosts, their sshds and the
    measurement's processes go, as with Ctrl-C."""
    import shutil
    import signal
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("heron-bench-*"))
    bench = subprocess.Popen(
        [PYTHON, "-m", "heron_remote", "bench", "--only", "path-ns", "--sizes", str(MIB), "--seconds", "60",
         "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    hosts = f"hr{bench.pid}-"
    try:
        deadline = time.monotonic() + 60
        streaming = False
        while time.monotonic() < deadline and bench.poll() is None:
            # Streaming: the bench worker runs on the namespace host.
            found = subprocess.run(["pgrep", "-f", "heron_remote.bench.worker"], capture_output=True, text=True)
            if found.stdout.strip():
                streaming = True
                break
            time.sleep(0.2)
        assert streaming, "the bench never started its worker"
        time.sleep(2)
        made = set(Path(tempfile.gettempdir()).glob("heron-bench-*")) - before
        assert made and any(hosts in line for line in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.splitlines())  # fmt: skip
        bench.send_signal(signal.SIGTERM)
        out, err = bench.communicate(timeout=60)
        assert bench.returncode == 130, out + err
        assert "interrupted" in err, err
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        assert hosts not in netns, netns
        assert not any(p.exists() for p in made), made  # the hosts' folders (sshd configs, keys)
        left = subprocess.run(["pgrep", "-af", "|".join(str(p) for p in made)], capture_output=True, text=True)
        assert not left.stdout.strip(), left.stdout  # sshds of those hosts
        worker = subprocess.run(["pgrep", "-f", "heron_remote.bench.worker"], capture_output=True, text=True)
        assert not worker.stdout.strip(), worker.stdout
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(10)
        # Whatever a failed run left: its sshds, namespaces and folders.
        for folder in set(Path(tempfile.gettempdir()).glob("heron-bench-*")) - before:
            subprocess.run(["pkill", "-f", str(folder)], check=False)
            shutil.rmtree(folder, ignore_errors=True)
        for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith(hosts):
                subprocess.run(["ip", "netns", "del", line.split()[0]], check=False)
