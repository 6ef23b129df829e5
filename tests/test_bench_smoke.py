"""The bench runs and writes its files (no timing is checked: figures belong to `heron-remote bench`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heron_remote.bench import main

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
    assert [t["target"] for t in report["targets"]] == ["path-local >= 50000 msg/s (64 B)"]  # no 1 MiB run here
    launch = report["launch"]["launch-local"]["cold"]
    assert launch["runs"] == 3 and 0 < launch["min_s"] <= launch["median_s"] <= launch["max_s"]
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
    assert any(t["target"].startswith("takeover: longest gap") for t in report["targets"])
    assert "takeover: 1 runs, 1 takeovers" in out
