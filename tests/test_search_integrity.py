"""A study's numbers mean what they say: matched sizes are those of the trained networks, one
result per point (also with several processes on one store), killed trials resume from their
checkpoint, SIGTERM stops cleanly, logs without a terminal are plain lines.

Real SQLite stores, real training of tiny networks, real processes and signals. No mocks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from archspace.search.optuna_backend import TRAINED, trial_status
from archspace.search.runner import search
from archspace.search.study import load_study
from test_search import TINY, assert_ok, load, run_search, sqlite_url, start_search, write_study

ROOT = Path(__file__).resolve().parents[1]
# a network small enough that a trial takes a second or two, for the tests that start many processes
SMALL = {"base": "coatnet-0", "set": {"input.size": 32, "stages[*].depth": 1, "stem.channels": [8, 8],
                                      "stages[*].width": 32}, "match": None}


def trials_by_status(study: optuna.Study) -> dict[str, list[optuna.trial.FrozenTrial]]:
    out: dict[str, list] = {}
    for t in study.get_trials():
        out.setdefault(trial_status(t), []).append(t)
    return out


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the search ended (exit {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        try:
            value = predicate()
        except Exception:  # the store is not created yet, or a writer holds the lock
            value = None
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def metrics_epochs(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- matched = trained


def test_quickstart_trains_networks_within_its_tolerance_of_each_other(tmp_path):
    """The quickstart's layouts are matched on the 10-class network that trains: the params in
    each trained run's summary.json equal the recorded cost and lie within 5% of each other."""
    # the seeded random sampler's first three draws are the three layouts (see the dry run)
    study = load_study(ROOT / "studies" / "quickstart.yaml", overrides={"trials": 3}, scale="tiny")
    summary = search(study, run_dir=tmp_path)
    done = [r for r in summary["trials"] if r["status"] == "complete"]
    assert len(done) == 3
    sizes, layouts = [], set()
    for r in done:
        trained = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        assert trained["params"] == r["cost"]["params"] and trained["flops"] == r["cost"]["flops"]
        sizes.append(trained["params"])
        layouts.add(r["params"]["layout"])
    target, tol = study.space.spec.match.target, study.space.spec.match.tolerance
    assert layouts == {"C-C-C-C", "C-C-T-T", "C-T-T-T"}, layouts
    assert all(abs(p / target - 1) <= tol for p in sizes), sizes
    assert max(sizes) / min(sizes) <= 1 + tol, sizes
    assert summary["params_spread"]["ratio"] == max(sizes) / min(sizes)


# --------------------------------------------------------------------------- one result per point


def test_study_with_duplicates_trains_exactly_its_budget_of_distinct_points(tmp_path):
    """Four points, a budget of four, a random sampler that repeats itself: every point is
    trained once, the repeats are duplicates that neither train nor count."""
    study_file = write_study(tmp_path, space={**SMALL, "choices": {"layout": ["C-C-C-C", "C-C-T-T"],
                                                                   "train.lr": [1.0e-3, 3.0e-3]}},
                             train={**TINY["train"], "epochs": 1}, trials=4)
    summary = assert_ok(run_search(study_file, "--out", tmp_path / "out", "--format", "json"))
    study = load(sqlite_url(tmp_path / "out" / "study.db"))
    by = trials_by_status(study)
    trained = [t for s in TRAINED for t in by.get(s, [])]
    assert len(trained) == 4 and len({t.user_attrs["key"] for t in trained}) == 4
    assert by.get("duplicate"), "the seeded random sampler repeats a point among its first draws"
    keys = {t.number: t.user_attrs["key"] for t in trained}
    for t in by["duplicate"]:
        assert keys[t.user_attrs["duplicate_of"]] == t.user_attrs["key"]
        assert "history" not in t.user_attrs and "run_dir" not in t.user_attrs   # never trained
    dirs = sorted(p.name for p in (tmp_path / "out" / "trials").iterdir())
    assert dirs == sorted(f"{t.number:05d}" for t in trained)
    assert summary["counts"]["duplicate"] == len(by["duplicate"])
    assert summary["best"]["status"] == "complete"


# --------------------------------------------------------------------------- killed trials resume


def test_trial_killed_after_epoch_2_resumes_at_the_next_epoch(tmp_path):
    EPOCHS = 6  # killed once epoch 2 is written: a window of several epochs (~0.2 s each) before the end
    study_file = write_study(tmp_path, space={**SMALL, "choices": {"layout": ["C-C-C-C"]}},
                             train={**TINY["train"], "epochs": EPOCHS}, trials=1)
    out = tmp_path / "out"
    trial_dir = out / "trials" / "00000"
    proc = start_search(study_file, "--out", out, "--format", "json")
    try:
        wait_for(lambda: len(metrics_epochs(trial_dir)) >= 2, 120, "epoch 2", proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    done_before = metrics_epochs(trial_dir)
    assert 2 <= len(done_before) < EPOCHS and done_before == list(range(1, len(done_before) + 1)), done_before
    again = assert_ok(run_search(study_file, "--out", out, "--format", "json"))
    assert again["counts"].get("complete") == 1, again["counts"]
    study = load(sqlite_url(out / "study.db"))
    by = trials_by_status(study)
    (resumed,) = by["complete"]
    (killed,) = by["failed"]
    all_epochs = list(range(1, EPOCHS + 1))
    assert killed.number == 0 and resumed.user_attrs["retry_of"] == 0
    assert resumed.user_attrs["run_dir"] == str(trial_dir) == killed.user_attrs["run_dir"]
    assert resumed.user_attrs["resumed_after_epoch"] == len(done_before)
    assert metrics_epochs(trial_dir) == all_epochs                          # no epoch repeated
    assert [r["epoch"] for r in resumed.user_attrs["history"]] == all_epochs
    assert sorted(resumed.intermediate_values) == all_epochs
    assert not (out / "trials" / f"{resumed.number:05d}").exists()        # no second directory


def test_survivor_takes_over_a_dead_process_trial_and_ends_with_the_budget(tmp_path):
    """Two processes share a study; one is killed mid-trial. The other fails that trial,
    resumes it from its checkpoint and ends with exactly the budget, in this same run."""
    EPOCHS = 8  # the kill lands within the first few: a window of several epochs (~0.2 s each), not one
    choices = {"layout": ["C-C-C-C"], "train.lr": [1.0e-3, 2.0e-3, 3.0e-3, 4.0e-3]}
    study_file = write_study(tmp_path, space={**SMALL, "choices": choices}, train={**TINY["train"], "epochs": EPOCHS},
                             trials=3)
    (tmp_path / "out").mkdir()
    url = sqlite_url(tmp_path / "out" / "study.db")
    args = (study_file, "--out", tmp_path / "out", "--storage", url, "--format", "json")
    first = start_search(*args)
    wait_for(lambda: load(url).get_trials(), 120, "the first process to create the study", first)
    second = start_search(*args)
    wait_for(lambda: any(t.user_attrs.get("owner", {}).get("pid") == second.pid for t in load(url).get_trials()),
             120, "the second process to start a trial", second)

    watcher = load(url)  # opened once: each poll is one read

    def first_mid_trial():
        return next((t for t in watcher.get_trials() if t.state == TrialState.RUNNING
                     and t.user_attrs.get("owner", {}).get("pid") == first.pid
                     and 1 <= len(metrics_epochs(Path(t.user_attrs.get("run_dir", "/nonexistent")))) <= EPOCHS // 2),
                    None)

    seen = wait_for(first_mid_trial, 120, "the first process to train an epoch of a trial", first)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()
    _, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr[-2000:]
    study = load(url)
    by = trials_by_status(study)
    trained = [t for s in TRAINED for t in by.get(s, [])]
    assert len(trained) == 3 and len({t.user_attrs["key"] for t in trained}) == 3, by
    assert not [t for t in study.get_trials() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    (victim,) = [t for t in by.get("failed", []) if t.user_attrs["owner"]["pid"] == first.pid]
    assert victim.number == seen.number  # the trial seen mid-run, not one begun after it finished
    assert victim.user_attrs["reason"] == "its process died"
    taken = [t for t in trained if t.user_attrs.get("retry_of") == victim.number]
    assert len(taken) == 1 and taken[0].user_attrs["owner"]["pid"] == second.pid
    assert taken[0].user_attrs["resumed_after_epoch"] >= 1
    assert metrics_epochs(Path(taken[0].user_attrs["run_dir"])) == list(range(1, EPOCHS + 1))
    assert sorted(taken[0].intermediate_values) == list(range(1, EPOCHS + 1))


# --------------------------------------------------------------------------- logs and SIGTERM


def test_plain_lines_without_a_terminal_and_a_clean_sigterm(tmp_path):
    EPOCHS = 8
    study_file = write_study(tmp_path, space={**SMALL, "choices": {"layout": ["C-C-C-C"],
                                                                   "train.lr": [1.0e-3, 2.0e-3]}},
                             train={**TINY["train"], "epochs": EPOCHS}, trials=2)
    out = tmp_path / "out"
    url = sqlite_url(out / "study.db")

    watcher: list[optuna.Study] = []

    def second_trial_mid_run() -> bool:  # a window of EPOCHS - 1 epochs: the tiny epochs take ~0.2 s
        watcher[:] = watcher or [load(url)]  # opened once the store exists: each poll is one read
        trials = watcher[0].get_trials()
        return any(t.state == TrialState.COMPLETE for t in trials) and any(
            t.state == TrialState.RUNNING and metrics_epochs(Path(t.user_attrs.get("run_dir", "/nonexistent")))
            for t in trials)

    proc = start_search(study_file, "--out", out)                      # table format, stdout is a pipe
    wait_for(second_trial_mid_run, 180, "one finished trial and one trained epoch of the next", proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, (proc.returncode, stderr[-2000:])
    assert "Traceback" not in stderr
    lines = [line for line in stdout.splitlines() if line.startswith("trial ")]
    assert len(lines) == 1 and "complete" in lines[0] and "eval error" in lines[0] and "params" in lines[0]
    assert " s" in lines[0]                                           # its time
    assert f"To go on: archspace search {study_file} --out {out}" in stderr
    study = load(url)
    interrupted = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert len(interrupted) == 1 and "interrupted" in interrupted[0].user_attrs["reason"]
    assert [t.state for t in study.get_trials()].count(TrialState.WAITING) == 1
    again = run_search(study_file, "--out", out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "params of the trained networks" in again.stdout
    study = load(url)
    resumed = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == interrupted[0].number]
    assert len(resumed) == 1 and trial_status(resumed[0]) == "complete"
    assert resumed[0].user_attrs["resumed_after_epoch"] >= 1
    assert metrics_epochs(Path(resumed[0].user_attrs["run_dir"])) == list(range(1, EPOCHS + 1))
