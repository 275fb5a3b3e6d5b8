"""``archspace search`` end to end: real SQLite (and, where available, PostgreSQL) storage, real
training of tiny networks on synthetic data, real processes killed with SIGKILL. No mocks.

Every search runs as its own process (as a user runs it), with the suite's thread budget
(``OMP_NUM_THREADS=1``, set in conftest: two pytest workers on two cores) and
``OMP_WAIT_POLICY=PASSIVE``: with more threads than cores, OpenMP's spinning threads slow the
transformer stages down by 20-30x; passive waiting keeps the suite's time predictable.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from archspace.search.optuna_backend import GRACE_S, HEARTBEAT_S, TRAINED, trial_status

EXE = Path(sys.executable).with_name("archspace")
ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")

TINY = {
    "name": "tiny",
    "space": {
        "base": "coatnet-0",
        "set": {"input.size": 32, "stages[*].depth": 1, "stem.channels": [16, 16]},
        "choices": {"layout": ["C-C-C-C", "C-C-T-T"], "train.lr": {"loguniform": [1.0e-3, 1.0e-2]}},
        "match": {"params": 3.35e5, "tolerance": 0.05},
    },
    "train": {"data": "synthetic", "epochs": 2, "batch_size": 64},
    "sampler": {"kind": "random", "seed": 0},
    "trials": 3,
}
RECORD_ATTRS = ("spec", "train", "cost", "history", "versions", "seed", "key")

optuna.logging.set_verbosity(optuna.logging.ERROR)


# --------------------------------------------------------------------------- helpers


def _epochs_trained(run_dir: Path) -> int:
    """Epochs a trial's run directory records (its metrics.jsonl, one line per epoch)."""
    try:
        return sum(1 for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip())
    except FileNotFoundError:
        return 0


def write_study(folder: Path, name: str = "study.yaml", **changes) -> Path:
    """The tiny study with top-level ``changes`` (``space=`` replaces keys of the space, ``None`` deletes)."""
    data = copy.deepcopy(TINY)
    for key, value in changes.items():
        if key == "space":
            data["space"].update(value)
        elif value is None:
            data.pop(key, None)
        else:
            data[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_search(*args, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), "search", *map(str, args)], capture_output=True, text=True,
                          env={**ENV, **env}, timeout=timeout)


def start_search(*args) -> subprocess.Popen:
    return subprocess.Popen([str(EXE), "search", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def load(url: str, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def trained(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if trial_status(t) in TRAINED]


def holds_no_study(db: Path) -> bool:
    """True if the SQLite file does not exist, or exists without any study in it."""
    if not db.exists():
        return True
    return optuna.study.get_all_study_names(storage=sqlite_url(db)) == []


def assert_ok(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    return json.loads(result.stdout)


def assert_one_line(result, path: str, *fragments: str) -> str:
    """Exit 2, no traceback, exactly one stderr line, starting with ``path: ``."""
    assert result.exception is None, repr(result.exception)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.err_lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines)
    return lines[0]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """An in-process search that gets far enough sets torch's thread count; put it back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def shared_result(request, tmp_path_factory, name: str, build):
    """Build once per test session, also across pytest-xdist workers (``build(folder)``)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):  # an xdist worker
        root = root.parent  # shared by the xdist workers of this session
    folder = root / f"shared-{name}"
    with FileLock(str(root / f"shared-{name}.lock")):
        done = folder / ".done.json"
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            done.write_text(json.dumps(build(folder)))
    return folder, json.loads(done.read_text())


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".done.json"))
    return dst


# --------------------------------------------------------------------------- (1) records, resume, extend


@pytest.fixture(scope="session")
def finished_tiny(request, tmp_path_factory):
    """A folder with study.yaml and out/ (the store) after one complete 3-trial search."""

    def build(folder: Path) -> dict:
        study = write_study(folder)
        result = run_search(study, "--out", folder / "out", "--format", "json")
        return {"rc": result.returncode, "stdout": result.stdout, "stderr": result.stderr[-2000:]}

    return shared_result(request, tmp_path_factory, "tiny", build)


def test_search_trains_records_and_resumes(finished_tiny, tmp_path):
    src, first = finished_tiny
    assert first["rc"] == 0, first["stderr"]
    summary = json.loads(first["stdout"])
    assert summary["counts"] == {"complete": 3}, summary["counts"]
    # the store archspace made runs in write-ahead-log mode; the finished search left it whole in one file
    assert sorted(p.name for p in (Path(src) / "out").glob("study.db*")) == ["study.db"]
    folder = copy_run(src, tmp_path / "run")
    con = sqlite3.connect(folder / "out" / "study.db")
    try:
        assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()
    url = sqlite_url(folder / "out" / "study.db")
    study = load(url)
    done = trained(study)
    assert len(done) == 3
    for t in done:
        assert t.state == TrialState.COMPLETE and trial_status(t) == "complete"
        assert len(t.values) == 1 and 0.0 <= t.values[0] <= 1.0
        missing = [a for a in RECORD_ATTRS if a not in t.user_attrs]
        assert not missing, (t.number, missing)
        assert len(t.user_attrs["history"]) == 2                    # one row per epoch
        assert t.user_attrs["eval_error"] == t.values[0]
        assert set(t.params) == {"layout", "train.lr"}
        assert abs(t.user_attrs["cost"]["params"] / 3.35e5 - 1) <= 0.05  # matched
        assert set(t.user_attrs["versions"]) >= {"archspace", "torch", "optuna", "python"}
        assert t.user_attrs["train"]["epochs"] == 2 and t.user_attrs["train"]["lr"] == t.params["train.lr"]
    # the recorded spec and recipe reproduce the recorded key
    from archspace.search.space import spec_hash
    from archspace.spec import load_spec
    from archspace.train import TrainConfig

    for t in done:
        spec = load_spec(copy.deepcopy(t.user_attrs["spec"]))
        assert spec_hash(spec, TrainConfig(**t.user_attrs["train"])) == t.user_attrs["key"]
    before = {t.number: (t.params, t.values, t.user_attrs["key"]) for t in done}

    study_file = folder / "study.yaml"
    out = folder / "out"
    again = assert_ok(run_search(study_file, "--out", out, "--format", "json"))
    assert sum(again["counts"].get(s, 0) for s in TRAINED) == 3
    after = {t.number: (t.params, t.values, t.user_attrs["key"]) for t in trained(load(url))}
    assert after == before                                        # resuming a finished study trains nothing

    more = assert_ok(run_search(study_file, "--out", out, "--format", "json", "--trials", "4"))
    assert sum(more["counts"].get(s, 0) for s in TRAINED) == 4
    final = {t.number: (t.params, t.values, t.user_attrs["key"]) for t in trained(load(url))}
    assert len(final) == 4 and {n: final[n] for n in before} == before


def test_resuming_a_finished_study_adds_no_trial(finished_tiny, tmp_path):
    src, _ = finished_tiny
    folder = copy_run(src, tmp_path / "run")
    url = sqlite_url(folder / "out" / "study.db")
    n = len(load(url).get_trials())
    assert_ok(run_search(folder / "study.yaml", "--out", folder / "out", "--format", "json"))
    assert len(load(url).get_trials()) == n


def test_raising_the_budget_trains_a_new_point(finished_tiny, tmp_path):
    src, _ = finished_tiny
    folder = copy_run(src, tmp_path / "run")
    url = sqlite_url(folder / "out" / "study.db")
    keys = {t.user_attrs["key"] for t in trained(load(url))}
    assert_ok(run_search(folder / "study.yaml", "--out", folder / "out", "--format", "json", "--trials", "4"))
    done = trained(load(url))
    new = [t for t in done if t.user_attrs["key"] not in keys]
    assert len(new) == 1 and trial_status(new[0]) == "complete", [(t.number, trial_status(t)) for t in done]


# --------------------------------------------------------------------------- (2) SIGKILL mid-run, re-run


def test_kill_9_mid_search_then_rerun_finishes_the_budget(tmp_path):
    # Five epochs a trial: the window "one trial complete, the next one training" lasts several
    # epochs, so the watcher sees it even on a loaded machine (three were once too few).
    study_file = write_study(tmp_path, train={**TINY["train"], "epochs": 5}, trials=4)
    out = tmp_path / "out"
    url = sqlite_url(out / "study.db")
    proc = start_search(study_file, "--out", out, "--format", "json")
    deadline, snapshot, study = time.time() + 180, None, None
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            try:
                study = study or load(url)  # one storage, opened once: each poll is one query
                trials = study.get_trials()
            except Exception:  # not created yet, or the writer holds the lock
                continue
            running = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("claimed")
                       and _epochs_trained(Path(t.user_attrs["run_dir"]))]
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            if complete and running:
                snapshot = trials
                break
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert snapshot is not None, (f"never saw a complete trial and a running one (exit {proc.returncode}): "
                                  f"{err[-1000:]}")
    before = {t.number: (t.params, t.values, t.user_attrs["key"]) for t in snapshot if trial_status(t) in TRAINED}
    killed = [t.number for t in load(url).get_trials() if t.state == TrialState.RUNNING]
    assert len(killed) == 1, killed

    limit = GRACE_S + HEARTBEAT_S + 90  # waiting out one heartbeat grace period is fine; forever is not
    try:
        again = run_search(study_file, "--out", out, "--format", "json", timeout=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the re-run after SIGKILL did not finish within {limit} s")
    assert again.returncode == 0, again.stderr[-2000:]
    study = load(url)
    trials = study.get_trials()
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len(trained(study)) == 4, [(t.number, trial_status(t)) for t in trials]
    by_number = {t.number: t for t in trials}
    for number, (params, values, key) in before.items():   # nothing completed was lost or changed
        t = by_number[number]
        assert (t.params, t.values, t.user_attrs["key"]) == (params, values, key)
    assert by_number[killed[0]].state == TrialState.FAIL   # failed by the heartbeat (and maybe retried)
    keys = [t.user_attrs["key"] for t in trained(study) if trial_status(t) == "complete"]
    assert len(keys) == len(set(keys))                      # no point trained twice


# --------------------------------------------------------------------------- (3) several workers on one store


@pytest.fixture(scope="session")
def two_processes(request, tmp_path_factory):
    """Two ``archspace search`` processes on one SQLite study with a budget of 4.

    The second starts as soon as the first has created the study (both run trials at the same
    time). Started at the very same instant on a fresh file, one of them can lose the race to
    create the schema (see the report); that is not what this fixture is about.
    """

    def build(folder: Path) -> dict:
        study_file = write_study(folder, trials=4)
        db = folder / "out" / "study.db"
        (folder / "out").mkdir()
        args = (study_file, "--out", folder / "out", "--storage", sqlite_url(db), "--format", "json")
        first = start_search(*args)
        deadline = time.time() + 60
        while time.time() < deadline and first.poll() is None:
            try:
                if optuna.study.get_all_study_names(storage=sqlite_url(db)) == ["tiny"]:
                    break
            except Exception:
                pass
            time.sleep(0.05)
        second = start_search(*args)
        results = []
        for p in (first, second):
            stdout, stderr = p.communicate(timeout=300)
            results.append({"rc": p.returncode, "stdout": stdout, "stderr": stderr[-2000:]})
        return {"results": results, "url": sqlite_url(db)}

    return shared_result(request, tmp_path_factory, "two", build)


def test_two_processes_share_one_budget(two_processes):
    _, info = two_processes
    for r in info["results"]:
        assert r["rc"] == 0, r["stderr"]
    study = load(info["url"])
    done = trained(study)
    assert len(done) == 4, [(t.number, trial_status(t)) for t in study.get_trials()]
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    assert len({t.number for t in done}) == 4


def test_two_processes_train_four_different_points(two_processes):
    _, info = two_processes
    done = trained(load(info["url"]))
    assert [trial_status(t) for t in done] == ["complete"] * 4
    assert len({t.user_attrs["key"] for t in done}) == 4


def test_workers_flag_runs_the_budget_exactly_once_each_worker_on_its_share_of_the_cores(tmp_path):
    study_file = write_study(tmp_path, trials=4, train={**TINY["train"], "epochs": 1})
    result = run_search(study_file, "--out", tmp_path / "out", "--workers", "2", "--format", "json",
                        OMP_NUM_THREADS="4")                             # a budget of 4 threads: 2 per worker
    summary = assert_ok(result)
    assert sum(summary["counts"].get(s, 0) for s in TRAINED) == 4
    done = trained(load(sqlite_url(tmp_path / "out" / "study.db")))
    assert len(done) == 4
    for t in done:
        run = json.loads((Path(t.user_attrs["run_dir"]) / "summary.json").read_text())
        assert run["device"]["threads"] == 2, (t.user_attrs["owner"], run["device"])


# --------------------------------------------------------------------------- (4) divergence


def test_diverging_trial_is_recorded_and_the_study_goes_on(tmp_path):
    study_file = write_study(tmp_path, space={"choices": {"layout": ["C-C-T-T"], "train.lr": [1000.0, 3.0e-3]}},
                             train={**TINY["train"], "optimizer": "sgd"}, sampler={"kind": "grid"}, trials=None)
    summary = assert_ok(run_search(study_file, "--out", tmp_path / "out", "--format", "json"))
    assert summary["counts"] == {"diverged": 1, "complete": 1}, summary["counts"]
    study = load(sqlite_url(tmp_path / "out" / "study.db"))
    by_lr = {t.params["train.lr"]: t for t in trained(study)}
    bad, good = by_lr[1000.0], by_lr[3.0e-3]
    assert trial_status(bad) == "diverged" and bad.state == TrialState.COMPLETE and bad.values == [1.0]
    assert bad.user_attrs["final_status"] == "diverged" and bad.user_attrs["diverged_epoch"] == 1
    assert bad.user_attrs["history"] == []                       # no half-finished epoch recorded
    assert json.loads((Path(bad.user_attrs["run_dir"]) / "summary.json").read_text())["status"] == "diverged"
    assert trial_status(good) == "complete" and 0.0 <= good.values[0] < 1.0
    assert summary["best"]["number"] == good.number


# --------------------------------------------------------------------------- (5) bad input: exit 2, one line, no store


def test_choice_at_a_missing_path_writes_nothing(cli, tmp_path):
    choices = {**TINY["space"]["choices"], "stages[9].depth": [1, 2]}
    study_file = write_study(tmp_path, space={"choices": choices})
    assert_one_line(cli("search", study_file, "--out", tmp_path / "out", "--format", "json"),
                    "space.choices.stages[9].depth", "does not exist")
    assert holds_no_study(tmp_path / "out" / "study.db")


def test_empty_space_after_constraints_writes_nothing(cli, tmp_path):
    study_file = write_study(tmp_path, space={"constraints": {"params": [None, 10]}})
    assert_one_line(cli("search", study_file, "--out", tmp_path / "out", "--format", "json"),
                    "space", "constraints.params")
    assert holds_no_study(tmp_path / "out" / "study.db")


def test_bad_input_in_table_format_is_one_line_too(cli, tmp_path):
    study_file = write_study(tmp_path, space={"constraints": {"params": [None, 10]}})
    assert_one_line(cli("search", study_file, "--out", tmp_path / "out"), "space", "constraints.params")


def test_unreachable_sqlite_storage(cli, tmp_path):
    study_file = write_study(tmp_path)
    assert_one_line(cli("search", study_file, "--storage", "sqlite:////nonexistent/dir/x.db", "--out",
                        tmp_path / "out", "--format", "json"), "--storage", "/nonexistent/dir")
    assert not Path("/nonexistent").exists()
    assert holds_no_study(tmp_path / "out" / "study.db")


@pytest.mark.parametrize("url,driver", [("postgresql://nobody@127.0.0.1:1/x", "psycopg"),
                                        ("postgresql+psycopg2://nobody@127.0.0.1:1/x", "psycopg2")])
def test_unreachable_postgresql_storage(cli, tmp_path, url, driver):
    study_file = write_study(tmp_path)
    result = cli("search", study_file, "--storage", url, "--out", tmp_path / "out", "--format", "json")
    line = assert_one_line(result, "--storage", url)
    if importlib.util.find_spec(driver) is None:
        assert driver in line, line          # the missing driver is named
    else:
        assert "127.0.0.1" in line or "onnect" in line, line  # connection refused, in the driver's words
    assert holds_no_study(tmp_path / "out" / "study.db")


def test_unknown_sampler_kind(cli, tmp_path):
    study_file = write_study(tmp_path, sampler={"kind": "bayes", "seed": 0})
    assert_one_line(cli("search", study_file, "--out", tmp_path / "out", "--format", "json"), "sampler.kind", "bayes")
    assert holds_no_study(tmp_path / "out" / "study.db")


def test_bad_range_names_its_path(cli, tmp_path):
    choices = {"layout": ["C-C-C-C"], "train.lr": {"loguniform": [0.0, 1.0e-2]}}
    study_file = write_study(tmp_path, space={"choices": choices})
    result = cli("search", study_file, "--out", tmp_path / "out", "--format", "json")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert any(line.startswith("space.") and "choices.train.lr.loguniform: needs 0 < low" in line
               for line in result.err_lines), result.err_lines
    assert holds_no_study(tmp_path / "out" / "study.db")


def test_bad_range_is_one_line(cli, tmp_path):
    choices = {"layout": ["C-C-C-C"], "train.lr": {"loguniform": [0.0, 1.0e-2]}}
    study_file = write_study(tmp_path, space={"choices": choices})
    assert_one_line(cli("search", study_file, "--out", tmp_path / "out", "--format", "json"),
                    "space.choices.train.lr.loguniform", "0 < low")


def test_continuous_choice_under_the_grid_sampler(cli, tmp_path):
    study_file = write_study(tmp_path, sampler={"kind": "grid"}, trials=None)
    assert_one_line(cli("search", study_file, "--out", tmp_path / "out", "--format", "json"),
                    "space.choices.train.lr", "grid")
    assert holds_no_study(tmp_path / "out" / "study.db")


# --------------------------------------------------------------------------- (6) dry run


def test_dry_run_lists_variants_and_writes_nothing(cli, tmp_path):
    study_file = write_study(tmp_path, space={"constraints": {"flops": [None, 1.6e6]}}, trials=6)
    result = cli("search", study_file, "--out", tmp_path / "out", "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.stderr
    dry = result.json()
    rows = dry["rows"]
    assert dry["budget"] == 6
    for row in rows:
        assert set(row["sampled"]) == {"layout", "train.lr"}
        assert row["params"] > 0 and row["flops"] > 0 and row["key"]
        if row["sampled"]["layout"] == "C-C-T-T":                # ~1.77 MFLOPs: above the bound
            assert row["status"] == "rejected" and row["reason"].startswith("constraints.flops")
        else:
            assert row["status"] == "ok" and row["reason"] is None
    assert sum(r["status"] == "ok" for r in rows) == 6            # drawn until the budget's worth of points
    assert {r["sampled"]["layout"] for r in rows} == {"C-C-C-C", "C-C-T-T"}
    ok = [r["params"] for r in rows if r["status"] == "ok"]
    assert dry["params_spread"] == {"min": min(ok), "max": max(ok), "ratio": max(ok) / min(ok)}
    table = cli("search", study_file, "--out", tmp_path / "out", "--dry-run")
    assert table.exit_code == 0 and "C-C-C-C" in table.stdout and "rejected" in table.stdout
    assert "spread" in table.stdout
    assert not (tmp_path / "out").exists()


def test_dry_run_marks_duplicates_and_draws_on(cli, tmp_path):
    """Two layouts and two learning rates make four points; a budget of four needs more draws
    than four from the random sampler, and the repeats are marked as duplicates."""
    choices = {"layout": ["C-C-C-C", "C-C-T-T"], "train.lr": [1.0e-3, 3.0e-3]}
    study_file = write_study(tmp_path, space={"choices": choices}, trials=4)
    dry = cli("search", study_file, "--dry-run", "--format", "json").json()
    rows = dry["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    dup = [r for r in rows if r["status"] == "duplicate"]
    assert len(ok) == 4 and len({r["key"] for r in ok}) == 4
    assert dup, "four draws from four points with replacement repeat one"  # the seed is fixed: it does
    for r in dup:
        assert rows[r["duplicate_of"]]["key"] == r["key"] and rows[r["duplicate_of"]]["status"] == "ok"
    table = cli("search", study_file, "--dry-run")
    assert "duplicate of #" in table.stdout


def test_dry_run_of_a_grid_study(cli, tmp_path):
    choices = {"layout": ["C-C-C-C", "C-C-T-T"], "train.lr": [1.0e-3, 3.0e-3]}
    study_file = write_study(tmp_path, space={"choices": choices}, sampler={"kind": "grid"}, trials=None)
    result = cli("search", study_file, "--out", tmp_path / "out", "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert sorted((r["sampled"]["layout"], r["sampled"]["train.lr"]) for r in result.json()["rows"]) == \
        sorted((a, b) for a in choices["layout"] for b in choices["train.lr"])


# --------------------------------------------------------------------------- (7) pruners


@pytest.mark.parametrize("pruner", ["median", "asha"])
def test_pruned_runs_finish_their_budget(tmp_path, pruner):
    study_file = write_study(tmp_path, pruner={"kind": pruner}, trials=4, train={**TINY["train"], "epochs": 3})
    summary = assert_ok(run_search(study_file, "--out", tmp_path / "out", "--format", "json"))
    study = load(sqlite_url(tmp_path / "out" / "study.db"))
    done = trained(study)
    assert len(done) == 4, summary["counts"]
    assert set(summary["counts"]) <= {"complete", "pruned", "diverged", "duplicate", "rejected"}, summary["counts"]
    for t in done:
        epochs = len(t.user_attrs.get("history") or [])
        if trial_status(t) == "pruned":
            assert t.state == TrialState.PRUNED and 1 <= epochs < 3
        elif trial_status(t) == "complete":
            assert epochs == 3 and sorted(t.intermediate_values) == [1, 2, 3]
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]


# --------------------------------------------------------------------------- (8) NSGA-II


def test_nsga2_records_two_objectives(tmp_path):
    study_file = write_study(tmp_path, sampler={"kind": "nsga2", "seed": 0}, objectives=["eval_error", "flops"],
                             train={**TINY["train"], "epochs": 1})
    assert_ok(run_search(study_file, "--out", tmp_path / "out", "--format", "json"))
    study = load(sqlite_url(tmp_path / "out" / "study.db"))
    assert len(study.directions) == 2
    done = trained(study)
    assert len(done) == 3
    for t in done:
        assert len(t.values) == 2
        assert 0.0 <= t.values[0] <= 1.0 and t.values[0] == t.user_attrs["eval_error"]
        assert t.values[1] == float(t.user_attrs["cost"]["flops"])
    assert study.best_trials


# --------------------------------------------------------------------------- (9) grid


def test_grid_study_runs_every_point_without_a_budget(tmp_path):
    choices = {"layout": ["C-C-C-C", "C-C-T-T"], "train.lr": [1.0e-3, 3.0e-3]}
    study_file = write_study(tmp_path, space={"choices": choices}, sampler={"kind": "grid"}, trials=None,
                             train={**TINY["train"], "epochs": 1})
    summary = assert_ok(run_search(study_file, "--out", tmp_path / "out", "--format", "json"))
    study = load(sqlite_url(tmp_path / "out" / "study.db"))
    done = trained(study)
    assert len(done) == 4 and len(study.get_trials()) == 4, summary["counts"]
    assert sorted((t.params["layout"], t.params["train.lr"]) for t in done) == \
        sorted((a, b) for a in choices["layout"] for b in choices["train.lr"])
    assert all(trial_status(t) == "complete" for t in done)


# --------------------------------------------------------------------------- (10) PostgreSQL
#
# Collected where a PostgreSQL server and the psycopg2 driver are installed, or when
# ARCHSPACE_PG=1 (then a server that cannot be started fails the test loudly).

from _postgres import PG_AVAILABLE, PG_WANTED  # noqa: E402

if PG_WANTED or PG_AVAILABLE:

    def test_two_processes_share_one_budget_on_postgresql(postgres_url, tmp_path):
        study_file = write_study(tmp_path, trials=4, train={**TINY["train"], "epochs": 1})
        args = (study_file, "--out", tmp_path / "out", "--storage", postgres_url, "--format", "json")
        first = start_search(*args)
        deadline = time.time() + 60
        while time.time() < deadline and first.poll() is None:
            try:
                if "tiny" in optuna.study.get_all_study_names(storage=postgres_url):
                    break
            except Exception:
                pass
            time.sleep(0.05)
        second = start_search(*args)
        for p in (first, second):
            _, stderr = p.communicate(timeout=300)
            assert p.returncode == 0, stderr[-2000:]
        study = load(postgres_url)
        assert len(trained(study)) == 4, [(t.number, trial_status(t)) for t in study.get_trials()]
        assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]
