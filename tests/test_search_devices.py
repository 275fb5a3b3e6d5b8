"""Workers dealt to devices: ``archspace search --workers N --devices ...`` (optuna backend)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archspace.errors import SpecError
from archspace.search.runner import worker_devices
from test_search import assert_ok, load, run_search, sqlite_url, trained, write_study


def test_devices_are_dealt_round_robin():
    assert worker_devices("cpu", 3) == ["cpu", "cpu", "cpu"]
    assert worker_devices(" cpu , cpu ", 3) == ["cpu", "cpu", "cpu"]
    assert worker_devices(None, 2) == [None, None]  # no accelerator here: each trial's own train.device
    with pytest.raises(SpecError) as excinfo:
        worker_devices("0,1", 2)  # accelerator indices on a machine without one
    assert excinfo.value.problems[0].path == "--devices" and "cuda:0" in excinfo.value.problems[0].message
    with pytest.raises(SpecError) as excinfo:
        worker_devices("cpu,,cpu", 2)
    assert "empty entry" in excinfo.value.problems[0].message


def test_each_worker_trains_on_its_device_and_records_it(tmp_path: Path):
    study_file = write_study(tmp_path, trials=3, train={"data": "synthetic", "epochs": 1, "batch_size": 64})
    out = tmp_path / "out"
    summary = assert_ok(run_search(study_file, "--out", out, "--workers", "2", "--devices", "cpu,cpu",
                                   "--format", "json"))
    # two workers may both draw the last slot: the later one records a surplus trial, untrained
    assert summary["counts"]["complete"] == 3 and set(summary["counts"]) <= {"complete", "surplus"}, summary["counts"]
    done = trained(load(sqlite_url(out / "study.db")))
    assert {t.user_attrs["owner"]["device"] for t in done} == {"cpu"}
    assert len({t.user_attrs["owner"]["pid"] for t in done}) <= 2
    for t in done:
        config = json.loads((Path(t.user_attrs["run_dir"]) / "config.json").read_text())
        assert config["device"] == "cpu"


def test_a_device_this_machine_lacks_is_refused_before_anything_is_written(tmp_path: Path):
    study_file = write_study(tmp_path)
    out = tmp_path / "out"
    r = run_search(study_file, "--out", out, "--workers", "2", "--devices", "0,1")
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("--devices: "), lines
    assert not out.exists()
