"""Data-parallel trials on the optuna backend: ``resources.workers`` runs each trial as
ranks under torchrun (gloo on the CPU), the study's process deciding pruning per epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archspace.errors import SpecError
from archspace.spec import load_spec
from archspace.train import TrainConfig, train
from archspace.train.launch import train_ranks
from test_search import assert_ok, load, run_search, sqlite_url, trained, write_study
from test_train import TINY_CONVNEXT

RECIPE = {"data": "synthetic", "epochs": 2, "batch_size": 32, "lr": 3e-3, "seed": 1}


def test_two_ranks_from_a_process_match_one_and_stop_when_told(tmp_path: Path):
    spec = load_spec(TINY_CONVNEXT)
    config = TrainConfig(**RECIPE)
    one = train(spec, config, tmp_path / "one")
    seen = []
    two = train_ranks(spec, config, tmp_path / "two", nproc=2, callback=lambda row: seen.append(row["epoch"]))
    assert two.status == "complete" and two.device["processes"] == 2 and seen == [1, 2]
    for a, b in zip(one.history, two.history, strict=True):
        for key in ("train_loss", "eval_loss", "eval_error"):
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(a[key])), (key, a[key], b[key])
    # a callback saying stop after epoch 1 prunes the run on every rank: one epoch, status pruned
    pruned = train_ranks(spec, config.model_copy(update={"epochs": 3}), tmp_path / "pruned", nproc=2,
                         callback=lambda row: True)
    assert pruned.status == "pruned" and pruned.epochs == 1
    assert json.loads((tmp_path / "pruned" / "summary.json").read_text())["status"] == "pruned"


def test_the_ranks_problems_come_back_as_spec_errors(tmp_path: Path):
    spec = load_spec(TINY_CONVNEXT)
    with pytest.raises(SpecError) as excinfo:  # the synthetic set has fewer images than one batch
        train_ranks(spec, TrainConfig(**{**RECIPE, "batch_size": 100_000}), tmp_path / "run", nproc=2)
    assert "batch_size" in " ".join(excinfo.value.lines())


def test_a_study_with_two_workers_per_trial(tmp_path: Path):
    study_file = write_study(tmp_path, trials=2, resources={"workers": 2, "cpu": 1},
                             train={"data": "synthetic", "epochs": 2, "batch_size": 32})
    out = tmp_path / "out"
    summary = assert_ok(run_search(study_file, "--out", out, "--format", "json"))
    assert summary["counts"] == {"complete": 2}
    for t in trained(load(sqlite_url(out / "study.db"))):
        run = json.loads((Path(t.user_attrs["run_dir"]) / "summary.json").read_text())
        assert run["device"]["processes"] == 2 and run["params"] == t.user_attrs["cost"]["params"]
        assert [h["epoch"] for h in t.user_attrs["history"]] == [1, 2] and sorted(t.intermediate_values) == [1, 2]


@pytest.mark.parametrize("resources, message", [
    ({"workers": 2, "gpus_per_worker": 1}, "resources.gpus_per_worker: each trial asks for 2 workers x 1 GPUs = 2 "
                                           "GPUs but this machine has 0"),
    ({"workers": 2, "gpu": 0.5}, "resources.gpus_per_worker: 0.5: data-parallel workers take whole GPUs"),
    ({"workers": 0}, "resources.workers: "),
])
def test_resources_this_machine_lacks_are_refused_before_anything_is_written(tmp_path: Path, resources, message):
    study_file = write_study(tmp_path, resources=resources)
    out = tmp_path / "out"
    r = run_search(study_file, "--out", out)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), lines
    assert not out.exists()
