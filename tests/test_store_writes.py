"""How the Optuna backend writes a trial: several attributes and epoch values in one SQLite
transaction, and, without a pruner, the epochs' values at most every PROGRESS_WRITE_S while
the trial trains (a pruner gets every epoch's value as it comes)."""

from __future__ import annotations

import math

import optuna
import pytest
from sqlalchemy import event

from archspace.search import optuna_backend as ob
from archspace.search.runner import search
from archspace.search.study import load_study

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask/tell outside optimize

TINY = {
    "name": "writes",
    "space": {"base": "coatnet-0", "set": {"input.size": 32, "stages[*].depth": 1, "stem.channels": [16, 16]},
              "choices": {"layout": ["C-C-C-C"], "train.lr": [1.0e-3]}},
    "train": {"data": "synthetic", "epochs": 2, "batch_size": 64},
    "sampler": {"kind": "random", "seed": 0},
    "trials": 1,
}


def _store(tmp_path):
    storage = ob.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    commits = []
    event.listen(getattr(storage, "_backend", storage).engine, "commit", lambda conn: commits.append(1))
    return storage, study, commits


def _reread(tmp_path) -> optuna.trial.FrozenTrial:
    """The trial as another process reads it: a fresh storage on the same file."""
    (trial,) = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}").get_trials()
    return trial


def test_attributes_and_epoch_values_are_written_in_one_transaction(tmp_path):
    storage, study, commits = _store(tmp_path)
    trial = study.ask()
    del commits[:]
    ob.set_user_attrs(trial, {1: 0.5, 2: math.inf, 3: math.nan}, status="complete", history=[{"epoch": 1}])
    assert len(commits) == 1
    stored = _reread(tmp_path)
    assert stored.user_attrs == {"status": "complete", "history": [{"epoch": 1}]}
    assert stored.intermediate_values[1] == 0.5 and stored.intermediate_values[2] == math.inf
    assert math.isnan(stored.intermediate_values[3]) and sorted(stored.intermediate_values) == [1, 2, 3]
    assert trial._cached_frozen_trial.intermediate_values.keys() == {1, 2, 3}   # the trial's own view too

    ob.set_user_attrs(trial, {2: 0.25}, status="pruned")                      # rewrites, as Optuna's setters
    assert len(commits) == 2
    stored = _reread(tmp_path)
    assert stored.user_attrs["status"] == "pruned" and stored.intermediate_values[2] == 0.25
    assert stored.intermediate_values[1] == 0.5


def test_a_finished_trial_is_not_written(tmp_path):
    storage, study, commits = _store(tmp_path)
    trial = study.ask()
    study.tell(trial, 0.1)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        ob.set_user_attrs(trial, {1: 0.5}, status="late")
    stored = _reread(tmp_path)
    assert "status" not in stored.user_attrs and stored.intermediate_values == {}


def _visible_while_training(tmp_path, monkeypatch, progress_s: float) -> list[int]:
    """Train one 2-epoch trial without a pruner; at each epoch, how many of its epoch values
    another process reading the store sees. At the end it sees them all, equal to the history."""
    monkeypatch.setattr(ob, "PROGRESS_WRITE_S", progress_s)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    reader: list[optuna.Study] = []
    seen = []

    def on_epoch(number, row):
        reader[:] = reader or [optuna.load_study(study_name="writes", storage=url)]
        (t,) = reader[0].get_trials(deepcopy=False)
        seen.append(len(t.intermediate_values))

    summary = search(load_study(TINY), run_dir=tmp_path, storage=url, on_epoch=on_epoch)
    assert summary["counts"] == {"complete": 1}
    (t,) = optuna.load_study(study_name="writes", storage=url).get_trials()
    history = {row["epoch"]: row["eval_error"] for row in t.user_attrs["history"]}
    assert t.intermediate_values == history and sorted(history) == [1, 2]
    return seen


@pytest.mark.parametrize("progress_s, seen", [
    (1e9, [0, 0]),       # no progress write due: every value goes with the final record
    (0.0, [0, 1]),       # one due at every epoch: each value as it comes
])
def test_epoch_values_reach_the_store_as_often_as_they_are_due(tmp_path, monkeypatch, progress_s, seen):
    # the callback runs before the epoch's own value is written: it sees the epochs before it.
    # (With a pruner every value is written as it comes: the pruned-search tests need that.)
    assert _visible_while_training(tmp_path, monkeypatch, progress_s) == seen
