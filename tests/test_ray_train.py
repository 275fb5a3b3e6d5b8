"""Data-parallel trials on the Ray backend: ``resources.workers`` runs each Ray Tune trial as
a Ray Train ``TorchTrainer`` (a file of its own, so that the suite's workers share the Ray
tests)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from archspace.search.runner import search  # noqa: E402
from archspace.search.study import load_study  # noqa: E402
from test_search_ray import stored, tiny  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    """A local 2-CPU Ray runtime. Ray Train checks its workers every 0.5 s (not 2 s), and its
    spot-preemption watcher (an actor per data-parallel trial) is off: a local cluster is not
    preempted."""
    os.environ.update(RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.5", RAY_TRAIN_ENABLE_PREEMPTION_WATCHER="0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_data_parallel_trials_run_over_two_workers(tmp_path):
    """resources.workers: 2 runs each trial as a TorchTrainer over 2 CPU workers (gloo); the
    trials ASHA stops release their workers' placement group, else the next trial would wait
    for ever on this 2-CPU cluster."""
    from ray.util.placement_group import placement_group_table

    study = load_study(tiny(trials=3, resources={"workers": 2, "cpu": 1}, train__batch_size=32,
                            pruner={"kind": "asha", "warmup_epochs": 1, "reduction_factor": 2}))
    summary = search(study, run_dir=tmp_path, backend="ray")
    counts = summary["counts"]
    assert set(counts) <= {"complete", "pruned"} and sum(counts.values()) == 3 and counts.get("pruned", 0) >= 1, counts
    for t in stored(tmp_path).trials:
        epochs = len(t.user_attrs["history"])
        assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
        if t.user_attrs["status"] == "complete":
            workers = t.user_attrs["workers"]
            assert [w["rank"] for w in workers] == [0, 1] and len({w["pid"] for w in workers}) == 2
            run = json.loads((Path(t.user_attrs["run_dir"]) / "summary.json").read_text())
            assert run["device"]["processes"] == 2 and run["epochs"] == 2
        else:
            assert t.user_attrs["status"] == "pruned" and epochs == 1
    states = {g["state"] for g in placement_group_table().values()}
    assert states <= {"REMOVED"}, states
