"""The Ray Tune backend on a real local Ray runtime: the same store as the Optuna backend,
resume, ASHA early stopping, failures and resources."""

from __future__ import annotations

import copy
import math

import pytest

ray = pytest.importorskip("ray")
optuna = pytest.importorskip("optuna")

from optuna.trial import TrialState  # noqa: E402

from archspace.errors import SpecError  # noqa: E402
from archspace.search.optuna_backend import count_trained, create_study, make_sampler, open_storage  # noqa: E402
from archspace.search.ray_backend import make_scheduler, max_epochs, run_ray  # noqa: E402
from archspace.search.runner import sample_points, search, trial_records  # noqa: E402
from archspace.search.space import FixedSuggester  # noqa: E402
from archspace.search.study import load_study  # noqa: E402

TINY = {
    "name": "tiny",
    "space": {
        "base": "coatnet-0",
        "set": {"input.size": 32, "stages[*].depth": 1, "stem.channels": [16, 16]},
        "choices": {"layout": ["C-C-C-C", "C-C-T-T"], "train.lr": {"loguniform": [1e-3, 1e-2]}},
        "match": {"params": 3.0e5, "tolerance": 0.1},
    },
    "train": {"data": "synthetic", "epochs": 2, "batch_size": 64},
    "sampler": {"kind": "random", "seed": 0},
    "trials": 2,
    "resources": {"cpu": 1},
}


def tiny(**changes) -> dict:
    data = copy.deepcopy(TINY)
    for path, value in changes.items():
        node = data
        *head, last = path.split("__")
        for key in head:
            node = node[key]
        node[last] = value
    return data


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    """One local Ray runtime for the whole module (starting Ray takes seconds); run_ray uses it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def stored(run_dir, name="tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{run_dir / 'study.db'}")


def test_same_store_as_the_optuna_backend(tmp_path):
    # flops at most 1.6e6 rejects every C-C-T-T point (1.77M; C-C-C-C has 1.49M): the store holds rejected points too
    study = load_study(tiny(space__constraints={"flops": [None, 1.6e6]}))
    opt_summary = search(study, run_dir=tmp_path / "optuna", backend="optuna")
    ray_summary = search(study, run_dir=tmp_path / "ray", backend="ray")

    # the same sampler draws the same points; Ray's store lists them as they finish
    def by_point(records):
        return sorted(records, key=lambda r: (r["params"]["layout"], r["params"]["train.lr"]))

    rays, opts = by_point(trial_records(stored(tmp_path / "ray"))), by_point(opt_summary["trials"])
    assert rays == by_point(ray_summary["trials"])
    assert ray_summary["counts"] == opt_summary["counts"]
    assert ray_summary["counts"]["complete"] == 2 and ray_summary["counts"].get("rejected", 0) >= 1
    assert [r.keys() for r in rays] == [r.keys() for r in opts]
    for r, o in zip(rays, opts):
        assert (r["status"], r["params"], r["key"], r["cost"], r["epochs"], r["reason"]) == \
               (o["status"], o["params"], o["key"], o["cost"], o["epochs"], o["reason"])
        assert r["backend"] == "ray" and o["backend"] == "optuna"
        if o["values"] is None:
            assert r["values"] is None
        else:
            assert r["values"] == pytest.approx(o["values"], abs=0.1)
    assert ray_summary["best"]["status"] == "complete"

    # and the same trial attributes, states and intermediate values
    def trials(run_dir):
        return sorted(stored(run_dir).trials, key=lambda t: (t.params["layout"], t.params["train.lr"]))

    for r, o in zip(trials(tmp_path / "ray"), trials(tmp_path / "optuna")):
        assert r.state == o.state
        assert set(r.user_attrs) - {"backend", "ray_trial_id", "node"} == set(o.user_attrs)
        assert r.intermediate_values.keys() == o.intermediate_values.keys()
        if r.user_attrs["status"] == "complete":
            assert [h["epoch"] for h in r.user_attrs["history"]] == [1, 2]
            assert r.user_attrs["history"][0].keys() == o.user_attrs["history"][0].keys()
            assert r.user_attrs["versions"]["ray"] == ray.__version__
            # the node it ran on: this machine's (the module's local Ray runtime has one node)
            assert r.user_attrs["node"]["id"] == ray.get_runtime_context().get_node_id()
            assert (tmp_path / "ray" / "trials" / f"ray-{r.user_attrs['ray_trial_id']}" / "summary.json").is_file()


def test_resume_runs_only_the_missing_trials(tmp_path):
    study = load_study(tiny())
    url = f"sqlite:///{tmp_path / 'study.db'}"
    run_ray(study, url, tmp_path, 2)
    # a resumed run's third trial draws what a fresh run's third trial draws (the sampler is seeded per trial number)
    expected = sample_points(study, 3, make_sampler(study))[2][0]
    calls = []
    ostudy = run_ray(study, url, tmp_path, 3, on_trial=lambda s, t, trials: calls.append(t.number))
    assert count_trained(ostudy) == 3 and len(ostudy.trials) == 3 and calls == [2]
    assert ostudy.trials[2].params == expected
    assert len({t.user_attrs["key"] for t in ostudy.trials}) == 3
    # nothing left to do: returns at once, training nothing
    assert len(run_ray(study, url, tmp_path, 3).trials) == 3


def test_asha_stops_trials_early(tmp_path):
    # one trial at a time (2 CPUs each) so that the rung at epoch 1 decides in a fixed order
    study = load_study(tiny(trials=4, resources={"cpu": 2},
                            pruner={"kind": "asha", "warmup_epochs": 1, "reduction_factor": 2}))
    summary = search(study, run_dir=tmp_path, backend="ray")
    counts = summary["counts"]
    assert set(counts) <= {"complete", "pruned"} and sum(counts.values()) == 4
    assert counts.get("pruned", 0) >= 1
    for t in stored(tmp_path).trials:
        epochs = len(t.user_attrs["history"])
        assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
        if t.user_attrs["status"] == "pruned":
            assert t.state == TrialState.PRUNED and epochs == 1 and t.user_attrs["final_status"] == "pruned"
            assert t.values == [t.intermediate_values[epochs]]
        else:
            assert t.state == TrialState.COMPLETE and epochs == 2


def test_a_diverged_run_counts_as_full_error(tmp_path):
    data = tiny(trials=1, train__optimizer="sgd")
    data["space"]["choices"]["train.lr"] = [1000.0]
    summary = search(load_study(data), run_dir=tmp_path, backend="ray")
    assert summary["counts"] == {"diverged": 1}
    (t,) = stored(tmp_path).trials
    assert t.state == TrialState.COMPLETE and t.values == [1.0]
    assert t.user_attrs["diverged_epoch"] == 1 and t.user_attrs["final_status"] == "diverged"
    assert t.user_attrs["history"] == [] and t.intermediate_values == {}


def test_failing_trials_are_recorded_and_stop_the_search(tmp_path):
    # a sampled batch size larger than the data (a fixed one is refused before the search starts)
    study = load_study(tiny(space__choices={**TINY["space"]["choices"], "train.batch_size": [100_000]}, trials=3))
    with pytest.raises(RuntimeError, match="trials in a row failed.*batch_size"):
        search(study, run_dir=tmp_path, backend="ray")
    failed = [t for t in stored(tmp_path).trials if t.user_attrs.get("status") == "failed"]
    assert len(failed) >= 3
    for t in failed:
        assert t.state == TrialState.FAIL and t.values is None
        assert "batch_size" in t.user_attrs["reason"] and t.user_attrs["backend"] == "ray"


@pytest.mark.parametrize("resources, message", [
    ({"cpu": 1, "gpu": 0.5}, "resources.gpus_per_worker: each trial asks for 0.5 GPUs but the Ray cluster has 0"),
    ({"workers": 2, "gpus_per_worker": 1}, "resources.gpus_per_worker: each trial asks for 2 workers x 1 GPUs = 2 GPUs"),
    ({"workers": 3, "cpu": 1}, "resources.cpus_per_worker: each trial asks for 3 workers x 1 CPUs = 3 CPUs but the "
                               "Ray cluster has 2"),
])
def test_resources_beyond_the_cluster_are_a_spec_error(tmp_path, resources, message):
    study = load_study(tiny(resources=resources))
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        search(study, run_dir=tmp_path / "run", backend="ray")
    assert not (tmp_path / "run").exists()  # nothing written: no run directory, no store


def test_scheduler_and_fixed_suggester():
    assert make_scheduler(load_study(tiny())) is None
    asha = make_scheduler(load_study(tiny(pruner={"kind": "median", "warmup_epochs": 2})))
    assert type(asha).__name__ == "AsyncHyperBandScheduler"
    assert max_epochs(load_study(tiny())) == 2
    more = tiny()
    more["space"]["choices"]["train.epochs"] = [2, 5]
    assert max_epochs(load_study(more)) == 5 and make_scheduler(load_study(
        {**more, "pruner": {"kind": "asha"}}))._max_t == 5
    study = load_study(tiny())
    mem = optuna.create_study(sampler=make_sampler(study))
    from archspace.search.optuna_backend import OptunaSuggester

    trial = mem.ask()
    point = study.space.resolve(OptunaSuggester(trial))
    again = study.space.resolve(FixedSuggester(trial.params, strict=True))
    assert again.key == point.key and again.params == point.params
    assert not math.isnan(again.cost["params"])
    with pytest.raises(KeyError):
        study.space.resolve(FixedSuggester({}, strict=True))
    ostudy = create_study(study, open_storage("sqlite:///:memory:"))
    assert count_trained(ostudy) == 0


def test_per_variant_trains_exactly_n_points_of_each_variant_on_ray(tmp_path):
    # two trials run at once: the balanced sampler counts the running one, so the layouts alternate
    study = load_study(tiny(sampler={"kind": "random", "seed": 3, "per_variant": 2}, trials=None,
                            train__epochs=1))
    summary = search(study, run_dir=tmp_path, backend="ray")
    assert summary["counts"].get("complete") == 4, summary["counts"]
    done = [t for t in stored(tmp_path).trials if t.state == TrialState.COMPLETE]
    per: dict[str, int] = {}
    for t in done:
        per[t.params["layout"]] = per.get(t.params["layout"], 0) + 1
    assert per == {"C-C-C-C": 2, "C-C-T-T": 2}
    assert len({t.params["train.lr"] for t in done}) == 4  # the other choices drawn for each point
