"""Store reads and writes: archspace's ``Store`` against Optuna's own ``RDBStorage``, same file kind.

What a search does to its store per trial, timed on two fresh SQLite stores (one per storage,
in archspace's WAL mode), alternated ``--rounds`` times, medians printed:

* ``study read``   ``study.get_trials()`` with ``--finished`` finished trials (in Optuna's
                   per-process cache) and one running trial (read again every time), as the
                   duplicate check, budget claim, balanced sampler and live view read it
* ``get_trial``    one read of the running trial, as Optuna's ``ask`` and ``tell`` do
* ``suggest``      one ``suggest_*`` call of a new trial drawing the study's three parameters:
                   the parameter written to the store
* ``report read``  a fresh process's read of a whole study of ``--report-trials`` finished
                   trials (3 params, 6 intermediate values, a spec and a history each), as
                   ``archspace report`` reads it

    python benchmarks/store_reads.py
    python benchmarks/store_reads.py --report-trials 5000 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage

from archspace.search import optuna_backend as ob
from archspace.search._rdb import Store

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage")  # ask and tell outside optimize


def plain(url: str) -> RDBStorage:
    """Optuna's storage on a store made as archspace makes it (stamped, WAL, synced at
    checkpoints): only the storage class differs."""
    from sqlalchemy import event

    ob.close_storage(ob.open_storage(url))
    storage = RDBStorage(url)
    event.listen(storage.engine, "connect", ob._sqlite_pragmas())
    storage.engine.dispose()
    return storage


def trial(study: optuna.Study, i: int) -> optuna.trial.Trial:
    t = study.ask()
    t.suggest_float("train.lr", 1e-4, 1e-2, log=True)
    t.suggest_float("train.weight_decay", 1e-3, 1.0, log=True)
    t.suggest_categorical("layout", ["C-C-C-C", "C-C-T-T", "C-T-T-T"])
    t.set_user_attr("spec", {"stages": [{"block": "mbconv", "depth": 2, "width": 64 * (k + 1)} for k in range(4)],
                             "input": {"size": 32}, "seed": i})
    return t


def finish(study: optuna.Study, t: optuna.trial.Trial) -> None:
    for epoch in range(1, 7):
        t.report(0.5 / epoch, epoch)
    t.set_user_attr("history", [{"epoch": e, "eval_error": 0.5 / e, "train_loss": 1.0 / e} for e in range(1, 7)])
    study.tell(t, 0.1)


def per_trial(make, folder: Path, finished: int, reps: int) -> dict[str, float]:
    """ms per study read, get_trial and suggest on a study of ``finished`` trials plus one running."""
    url = f"sqlite:///{folder / f'loop-{time.monotonic_ns()}.db'}"
    study = optuna.create_study(storage=make(url), study_name="bench")
    for i in range(finished):
        finish(study, trial(study, i))
    running = trial(study, finished)
    study.get_trials(deepcopy=False)  # the cache holds the finished ones
    out = {}
    t0 = time.perf_counter()
    for _ in range(reps):
        study.get_trials(deepcopy=False)
    out["study read"] = 1e3 * (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        study._storage.get_trial(running._trial_id)
    out["get_trial"] = 1e3 * (time.perf_counter() - t0) / reps
    spent, calls = 0.0, 0
    while calls < reps:  # new trials, each drawing the study's three parameters
        t = study.ask()
        t0 = time.perf_counter()
        t.suggest_float("train.lr", 1e-4, 1e-2, log=True)
        t.suggest_float("train.weight_decay", 1e-3, 1.0, log=True)
        t.suggest_categorical("layout", ["C-C-C-C", "C-C-T-T", "C-T-T-T"])
        spent, calls = spent + time.perf_counter() - t0, calls + 3
        study.tell(t, 0.1)
    out["suggest"] = 1e3 * spent / calls
    return out


def report_read(make, url: str) -> float:
    """Seconds for a fresh storage to read every trial of the study."""
    t0 = time.perf_counter()
    n = len(optuna.load_study(study_name="bench", storage=make(url)).get_trials(deepcopy=False))
    return time.perf_counter() - t0 if n else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds per storage; medians are printed")
    ap.add_argument("--reps", type=int, default=200, help="calls timed per round")
    ap.add_argument("--finished", type=int, default=30, help="finished trials in the per-trial study")
    ap.add_argument("--report-trials", type=int, default=2000, help="trials in the study a report reads")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    makes = {"optuna RDBStorage": plain, "archspace Store": ob.open_storage}  # a search's storage
    readers = {"optuna RDBStorage": RDBStorage, "archspace Store": Store}     # a report's
    loop: dict[str, list[dict]] = {name: [] for name in makes}
    reports: dict[str, list[float]] = {name: [] for name in makes}
    with tempfile.TemporaryDirectory(prefix="archspace-bench-") as tmp:
        folder = Path(tmp)
        big = f"sqlite:///{folder / 'report.db'}"
        study = optuna.create_study(storage=ob.open_storage(big), study_name="bench")
        for i in range(args.report_trials):
            finish(study, trial(study, i))
        ob.close_storage(study._storage)
        for r in range(args.rounds):  # alternated: this machine's load drifts
            order = list(makes) if r % 2 == 0 else list(reversed(makes))
            for name in order:
                loop[name].append(per_trial(makes[name], folder, args.finished, args.reps))
                reports[name].append(report_read(readers[name], big))
    result = {name: {**{k: statistics.median(r[k] for r in loop[name]) for k in loop[name][0]},
                     "report read s": statistics.median(reports[name])} for name in makes}
    if args.json:
        print(json.dumps({"rounds": args.rounds, "reps": args.reps, "finished": args.finished,
                          "report_trials": args.report_trials, "optuna": optuna.__version__, "result": result}, indent=2))
        return
    print(f"store reads and writes, SQLite (WAL), optuna {optuna.__version__}; median of {args.rounds} alternated "
          f"rounds of {args.reps} calls; {args.finished} finished trials + 1 running; report: "
          f"{args.report_trials} trials")
    print(f"{'':<20} {'study read ms':>14} {'get_trial ms':>13} {'suggest ms':>11} {'report read s':>14}")
    for name, r in result.items():
        print(f"{name:<20} {r['study read']:>14.2f} {r['get_trial']:>13.2f} {r['suggest']:>11.2f} "
              f"{r['report read s']:>14.2f}")
    a, b = result["optuna RDBStorage"], result["archspace Store"]
    print(f"{'ratio':<20} {a['study read'] / b['study read']:>13.1f}x {a['get_trial'] / b['get_trial']:>12.1f}x "
          f"{a['suggest'] / b['suggest']:>10.1f}x {a['report read s'] / b['report read s']:>13.1f}x")


if __name__ == "__main__":
    main()
