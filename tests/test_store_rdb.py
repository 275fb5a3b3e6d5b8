"""The store's lean reads and parameter writes (``archspace.search._rdb.Store``) do exactly
what Optuna's own RDB storage does on the same file: every kind of parameter, objective value,
intermediate value, attribute and state reads back alike, through every filter a search uses;
parameters are written alike, and refused alike."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from _postgres import PG_AVAILABLE, PG_WANTED
from archspace.search import _rdb
from archspace.search import optuna_backend as ob

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask/tell outside optimize

NAN = "nan"


def _comparable(t: optuna.trial.FrozenTrial) -> dict:
    """A trial's fields, NaN made comparable (it is never equal to itself)."""
    fields = {name.lstrip("_"): value for name, value in vars(t).items()}
    fields["intermediate_values"] = {k: NAN if math.isnan(v) else v for k, v in t.intermediate_values.items()}
    return fields


def _fill(study: optuna.Study) -> None:
    """Trials in every state, with every kind of parameter, value and attribute."""
    for i in range(4):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_float("wd", 0.0, 1.0, step=0.25)
        trial.suggest_int("depth", 1, 8)
        trial.suggest_int("width", 32, 256, step=32)
        trial.suggest_categorical("layout", ["C-C-T-T", None, True, 3, 0.5])
        trial.set_user_attr("spec", {"stages": [{"width": 64, "depth": i}], "name": f"t{i}", "none": None})
        trial.storage.set_trial_system_attr(trial._trial_id, "grid_id", i)
        for step, value in enumerate((0.5, math.inf, -math.inf, math.nan)):
            trial.storage.set_trial_intermediate_value(trial._trial_id, step, value)  # (report: one objective only)
        if i == 0:
            study.tell(trial, [0.25, math.inf])
        elif i == 1:
            study.tell(trial, [-math.inf, 3.0])
        elif i == 2:
            study.tell(trial, state=TrialState.FAIL)
        # trial 3 stays running
    study.enqueue_trial({"lr": 1e-3, "depth": 2})                          # taken by the next ask
    ob.set_user_attrs(study.ask(), {1: 0.125, 2: math.nan}, status="x")    # running, batched write
    study.enqueue_trial({"lr": 1e-2}, user_attrs={"queued": True})         # waiting


@pytest.fixture(params=["sqlite", "postgresql"] if PG_WANTED or PG_AVAILABLE else ["sqlite"])
def url(request, tmp_path):
    """A store on SQLite and, where a server can be started, on PostgreSQL (one study per test)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return request.getfixturevalue("postgres_url")


def _name() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def stores(url):
    ours = ob.open_storage(url)
    study = optuna.create_study(storage=ours, study_name=_name(), directions=["minimize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    _fill(study)
    return ours, RDBStorage(url), study._study_id


def test_store_is_used_by_open_storage(tmp_path):
    assert isinstance(ob.open_storage(f"sqlite:///{tmp_path / 'a.db'}"), _rdb.Store)


def test_every_trial_reads_back_as_optuna_reads_it(stores):
    ours, theirs, sid = stores
    mine, optunas = ours.get_all_trials(sid), theirs.get_all_trials(sid)
    assert [t.state for t in optunas] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL,
                                          TrialState.RUNNING, TrialState.RUNNING, TrialState.WAITING]
    assert [_comparable(t) for t in mine] == [_comparable(t) for t in optunas]
    assert mine[0].values == [0.25, math.inf] and set(mine[0].params) == {"lr", "wd", "depth", "width", "layout"}
    assert mine[0].datetime_start is not None and mine[0].datetime_complete is not None
    for t in optunas:
        assert _comparable(ours.get_trial(t._trial_id)) == _comparable(t)


@pytest.mark.parametrize("states", [None, (), (TrialState.RUNNING,), (TrialState.COMPLETE, TrialState.FAIL),
                                    (TrialState.WAITING,)])
@pytest.mark.parametrize("included, greater", [(set(), -1), (set(), 2), ({1, 3}, 2), ({1, 5}, 4), ({2}, -1)])
def test_filtered_reads_equal_optunas(stores, states, included, greater):
    # the filters Optuna's per-process cache uses: unfinished ids, and ids above the last finished one
    ours, theirs, sid = stores
    mine = ours._get_trials(sid, states, included, greater)
    optunas = RDBStorage._get_trials(theirs, sid, states, included, greater)
    assert [_comparable(t) for t in mine] == [_comparable(t) for t in optunas]


def test_reads_in_chunks_equal_one_read(stores, monkeypatch):
    ours, theirs, sid = stores
    monkeypatch.setattr(_rdb, "ID_CHUNK", 2)  # 7 trials: four chunks of ids
    assert [_comparable(t) for t in ours.get_all_trials(sid)] == [_comparable(t) for t in theirs.get_all_trials(sid)]


def test_missing_trial_or_study_raises_as_optuna_does(stores):
    ours, theirs, sid = stores
    for storage in (ours, theirs):
        with pytest.raises(KeyError):
            storage.get_trial(10**9)
        with pytest.raises(KeyError):
            storage.get_all_trials(10**9)


def test_without_the_prebuilt_statements_optunas_own_reads_and_writes_are_used(stores, monkeypatch):
    # another Optuna version whose tables differ: the same answers, the slower way
    ours, theirs, sid = stores
    monkeypatch.setattr(_rdb, "_statements", lambda: None)
    fresh = ob.open_storage(theirs.url)
    assert [_comparable(t) for t in fresh.get_all_trials(sid)] == [_comparable(t) for t in theirs.get_all_trials(sid)]
    running = fresh.get_all_trials(sid, states=(TrialState.RUNNING,))[-1]
    _rdb.set_trial_user_attrs(fresh, running._trial_id, {"status": "y"}, {3: 0.75})
    again = theirs.get_trial(running._trial_id)
    assert again.user_attrs["status"] == "y" and again.intermediate_values[3] == 0.75


def test_a_search_reads_its_own_writes(tmp_path):
    # a trial's attributes written in one transaction are seen by the next read of this process
    storage = ob.open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    ob.set_user_attrs(trial, {1: 0.5}, key="abc", claimed=True)
    (t,) = study.get_trials(deepcopy=False)
    assert t.user_attrs == {"key": "abc", "claimed": True} and t.intermediate_values == {1: 0.5}
    study.tell(trial, 0.1)
    (t,) = study.get_trials(deepcopy=False)
    assert t.state == TrialState.COMPLETE and t.value == 0.1


def _suggest_all(study: optuna.Study) -> optuna.trial.Trial:
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.suggest_int("depth", 1, 8)
    trial.suggest_categorical("layout", ["C-C-T-T", None, True])
    return trial


@pytest.mark.parametrize("make", [ob.open_storage, RDBStorage], ids=["ours", "optunas"])
def test_parameter_writes_and_refusals_are_optunas(url, make):
    study = optuna.create_study(storage=make(url), study_name=_name(), sampler=optuna.samplers.RandomSampler(seed=1))
    first = _suggest_all(study)
    study.tell(first, 0.5)
    second = _suggest_all(study)
    stored = RDBStorage(url).get_all_trials(study._study_id)
    assert [t.params for t in stored] == [first.params, second.params]
    assert [t.distributions for t in stored] == [first.distributions, second.distributions]

    fresh = make(url)  # a new process: no distribution cached, the study's earlier one is read
    with pytest.raises(ValueError):  # the study's "depth" is an int distribution
        fresh._set_trial_param(second._trial_id, "depth", 0.5, optuna.distributions.FloatDistribution(0, 1), None)
    fresh._set_trial_param(second._trial_id, "extra", 0.0, optuna.distributions.CategoricalDistribution(["a"]), None)
    assert RDBStorage(url).get_trial(second._trial_id).params["extra"] == "a"
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        fresh._set_trial_param(first._trial_id, "late", 0.0, optuna.distributions.FloatDistribution(0, 1), None)
    with pytest.raises(KeyError):
        fresh._set_trial_param(10**9, "x", 0.0, optuna.distributions.FloatDistribution(0, 1), None)
    assert "late" not in RDBStorage(url).get_trial(first._trial_id).params


def test_the_store_benchmark_runs_on_both_storages():
    # benchmarks/store_reads.py prints the numbers docs/search.md quotes; here it only has to run
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "store_reads.py"
    out = subprocess.run([sys.executable, str(script), "--rounds", "1", "--reps", "3", "--finished", "2",
                          "--report-trials", "4", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)["result"]
    assert set(result) == {"optuna RDBStorage", "archspace Store"}
    assert all(set(r) == {"study read", "get_trial", "suggest", "report read s"} for r in result.values())


def test_a_failed_batched_write_raises_and_writes_nothing(tmp_path):
    # a trial's record that did not reach the store must not pass for written
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=ob.open_storage(url), study_name="s")
    trial = study.ask()
    con = sqlite3.connect(tmp_path / "study.db")
    con.execute("CREATE TRIGGER refuse BEFORE INSERT ON trial_intermediate_values BEGIN "
                "SELECT RAISE(ABORT, 'refused'); END")
    con.commit()
    con.close()
    with pytest.raises(optuna.exceptions.StorageInternalError, match="refused"):
        ob.set_user_attrs(trial, {1: 0.5}, status="complete")
    assert RDBStorage(url).get_trial(trial._trial_id).user_attrs == {}  # the attributes rolled back too
