"""The Optuna backend: one Optuna study per archspace study, in any Optuna RDB storage.

Each trial resolves a point of the space (analytic constraints and matching first: a
rejected point is recorded and never trained), trains it with the trainer's per-epoch
callback wired to the pruner, and records everything in the trial's attributes.
Heartbeats mark a trial whose process died as failed, and it is retried with the same
parameters. The budget counts trained trials; several processes on one storage share it
and never train more than the budget between them (see :func:`_claim`).
"""

from __future__ import annotations

import platform
import warnings
import time
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from .. import __version__
from ..errors import SpecError
from ..train import train
from .space import Point
from .study import Study

# trial attribute "status": what happened to the point
TRAINED = ("complete", "diverged", "pruned", "duplicate")
HEARTBEAT_S = 5
GRACE_S = 20


class Rejected(Exception):
    """A point that is never trained (constraints, matching, invalid spec, budget reached)."""


class OptunaSuggester:
    def __init__(self, trial: optuna.trial.Trial):
        self.trial = trial

    def categorical(self, name, values):
        return self.trial.suggest_categorical(name, values)

    def int(self, name, low, high, step=1, log=False):
        return self.trial.suggest_int(name, low, high, step=step, log=log)

    def float(self, name, low, high, log=False):
        return self.trial.suggest_float(name, low, high, log=log)


def make_sampler(study: Study, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler; ``offset`` varies the seed so that a resumed run or another
    worker does not replay the same draws (0 for a fresh single-process run)."""
    s = study.spec.sampler
    seed = s.seed + offset
    samplers = {
        "grid": lambda: optuna.samplers.GridSampler(study.grid(), seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.startup_trials),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
    }
    return samplers[s.kind]()


def make_pruner(study: Study) -> optuna.pruners.BasePruner:
    p = study.spec.pruner
    pruners = {
        "none": lambda: optuna.pruners.NopPruner(),
        "median": lambda: optuna.pruners.MedianPruner(n_warmup_steps=p.warmup_epochs, n_startup_trials=2),
        "asha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, p.warmup_epochs),
                                                              reduction_factor=p.reduction_factor),
    }
    return pruners[p.kind]()


def default_storage(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'study.db').resolve()}"


def open_storage(url: str) -> RDBStorage:
    """An RDB storage with heartbeats; an unreachable URL is a one-line error on ``--storage``."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    except Exception as exc:  # sqlalchemy / driver errors: the URL is the user's
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError.single("--storage", f"cannot open {url}: {first}") from None


def check_reachable(url: str) -> None:
    """Fail early, before anything is written, if the storage cannot be reached."""
    if url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise SpecError.single("--storage", f"cannot open {url}: folder {folder} does not exist")
        return
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError.single("--storage", f"cannot open {url}: {first}") from None


def create_study(study: Study, storage: RDBStorage, worker: int = 0) -> optuna.Study:
    """Create or load the Optuna study; the sampler's seed is offset by the trials already
    stored and the worker index, so resumed and parallel runs draw new points."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["minimize"] * len(study.spec.objectives)
    ostudy = optuna.create_study(study_name=study.name, storage=storage, pruner=make_pruner(study),
                                 directions=directions, load_if_exists=True)
    offset = 7919 * len(ostudy.get_trials(deepcopy=False)) + 104729 * worker
    ostudy.sampler = make_sampler(study, offset)
    return ostudy


def versions() -> dict[str, str]:
    import torch

    return {"archspace": __version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "python": platform.python_version()}


def trial_status(t: optuna.trial.FrozenTrial) -> str:
    """complete | diverged | pruned | duplicate | rejected | surplus | failed | running."""
    if t.state == TrialState.RUNNING:
        return "running"
    if t.state == TrialState.WAITING:
        return "waiting"
    return t.user_attrs.get("status", "failed" if t.state == TrialState.FAIL else t.state.name.lower())


def _claimed(t: optuna.trial.FrozenTrial) -> bool:
    return trial_status(t) in TRAINED or (t.state == TrialState.RUNNING and bool(t.user_attrs.get("claimed")))


def count_trained(study: optuna.Study) -> int:
    """Trials that used (or hold) a slot of the budget: trained, or claimed and running."""
    return sum(1 for t in study.get_trials(deepcopy=False) if _claimed(t))


def fail_dead_trials(study: optuna.Study) -> int:
    """Fail running trials whose process is gone: at once for this machine's (by pid), and by
    heartbeat for other machines'. Each is retried with the same parameters. Returns how many."""
    import os
    import socket

    host = socket.gethostname()
    storage = study._storage
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner") or {}
        if owner.get("host") != host or owner.get("pid") == os.getpid():
            continue
        try:
            os.kill(int(owner["pid"]), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except (PermissionError, KeyError, TypeError, ValueError):
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "status", "failed")
            storage.set_trial_user_attr(t._trial_id, "reason", "its process died")
            changed = storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        if changed:
            RetryHeartbeatStaleTrialCallback(max_retry=2)(study, study._storage.get_trial(t._trial_id))
            n += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return n


def _claim(trial: optuna.trial.Trial, budget: int) -> None:
    """Take a slot of the budget, or raise :class:`Rejected` ("surplus").

    Trial numbers are assigned by the storage in order. A trial goes ahead only if fewer
    than ``budget`` lower-numbered trials are trained, claimed, or still undecided
    (running without a decision): every trial that will train is counted by every
    higher-numbered one, so processes sharing a storage never train more than the budget.
    """
    trial.set_user_attr("claimed", True)
    ahead = 0
    for t in trial.study.get_trials(deepcopy=False):
        if t.number >= trial.number:
            continue
        if _claimed(t) or (t.state == TrialState.RUNNING and "status" not in t.user_attrs):
            ahead += 1
    if ahead >= budget:
        trial.set_user_attr("claimed", False)
        trial.set_user_attr("status", "surplus")
        raise Rejected("budget reached")


def _duplicate(trial: optuna.trial.Trial, key: str) -> optuna.trial.FrozenTrial | None:
    for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("key") == key and t.number != trial.number:
            return t
    return None


def objective_values(study: Study, eval_error: float, point: Point) -> tuple[float, ...] | float:
    values = []
    for name in study.spec.objectives:
        values.append(eval_error if name == "eval_error" else float(point.cost[name]))
    return values[0] if len(values) == 1 else tuple(values)


def make_objective(study: Study, run_dir: Path, budget: int,
                   on_epoch: Callable[[int, dict], None] | None = None) -> Callable[[optuna.trial.Trial], Any]:
    import os
    import socket

    owner = {"host": socket.gethostname(), "pid": os.getpid()}

    def objective(trial: optuna.trial.Trial):
        trial.set_user_attr("owner", owner)
        try:
            point = study.space.resolve(OptunaSuggester(trial))
        except SpecError as exc:
            trial.set_user_attr("status", "rejected")
            trial.set_user_attr("reason", "; ".join(exc.lines()))
            raise Rejected("invalid spec") from None
        trial.set_user_attr("key", point.key)
        trial.set_user_attr("cost", {k: point.cost[k] for k in ("params", "flops", "acts")})
        trial.set_user_attr("match_scale", point.match_scale)
        if point.rejected:
            trial.set_user_attr("status", "rejected")
            trial.set_user_attr("reason", point.rejected)
            raise Rejected(point.rejected)
        _claim(trial, budget)
        trial.set_user_attr("spec", point.spec.model_dump(mode="json", exclude_none=True))
        trial.set_user_attr("train", point.train.model_dump(mode="json"))
        trial.set_user_attr("seed", point.train.seed)
        trial.set_user_attr("versions", versions())
        twin = _duplicate(trial, point.key)
        if twin is not None:
            trial.set_user_attr("status", "duplicate")
            trial.set_user_attr("duplicate_of", twin.number)
            for k in ("history", "eval_error", "train_loss", "final_status"):
                if k in twin.user_attrs:
                    trial.set_user_attr(k, twin.user_attrs[k])
            return twin.values[0] if len(twin.values) == 1 else tuple(twin.values)
        single = len(study.spec.objectives) == 1

        def report(row: dict) -> bool:
            if on_epoch is not None:
                on_epoch(trial.number, row)
            if single:
                trial.report(row["eval_error"], row["epoch"])
                return trial.should_prune()
            return False

        out = run_dir / "trials" / f"{trial.number:05d}"
        trial.set_user_attr("run_dir", str(out))
        result = train(point.spec, point.train, out, callback=report)
        trial.set_user_attr("history", result.history)
        trial.set_user_attr("final_status", result.status)
        final = result.final
        if final:
            trial.set_user_attr("train_loss", final["train_loss"])
            trial.set_user_attr("train_error", final["train_error"])
            trial.set_user_attr("eval_error", final["eval_error"])
        if result.status == "diverged":
            trial.set_user_attr("status", "diverged")
            trial.set_user_attr("diverged_epoch", result.diverged_epoch)
            return objective_values(study, 1.0, point)  # a diverged run counts as 100% error
        if result.status == "pruned":
            trial.set_user_attr("status", "pruned")
            raise optuna.TrialPruned()
        trial.set_user_attr("status", "complete")
        return objective_values(study, final["eval_error"], point)

    return objective


def run_worker(study: Study, storage_url: str, run_dir: Path, budget: int,
               on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
               on_epoch: Callable[[int, dict], None] | None = None, max_rejections: int = 500,
               max_failures: int = 3, wait_for_others: bool = False) -> optuna.Study:
    """Run trials in this process until the study holds ``budget`` trained trials."""
    import os

    storage = open_storage(storage_url)
    ostudy = create_study(study, storage, int(os.environ.get("ARCHSPACE_WORKER_INDEX", "0")))
    fail_dead_trials(ostudy)
    ostudy.set_user_attr("archspace_study", study.spec.model_dump(mode="json"))
    streak = {"rejected": 0, "failed": 0, "last": ""}

    def stop_when_done(s: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        status = trial_status(t)
        streak["last"] = status
        for kind in ("rejected", "failed"):
            streak[kind] = streak[kind] + 1 if status == kind else 0
        if on_trial is not None:
            on_trial(s, t)
        if (count_trained(s) >= budget or status == "surplus" or streak["rejected"] >= max_rejections
                or streak["failed"] >= max_failures):
            s.stop()

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    while True:
        if count_trained(ostudy) >= budget:
            running = [t for t in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                       if t.user_attrs.get("claimed")]
            if not running or not wait_for_others:
                break
            # other processes hold the last slots: wait for them, failing any that died
            time.sleep(HEARTBEAT_S)
            fail_dead_trials(ostudy)
            continue
        ostudy.optimize(make_objective(study, run_dir, budget, on_epoch), n_trials=None, catch=(Rejected,),
                        callbacks=[stop_when_done], gc_after_trial=False)
        if streak["rejected"] >= max_rejections:
            raise SpecError.single("space.constraints", f"{max_rejections} points in a row were rejected: "
                                                        "the space is (nearly) empty after constraints and matching")
        if streak["failed"] >= max_failures:
            raise RuntimeError(f"{max_failures} trials in a row failed; see the trial attributes in the store")
        if streak["last"] == "surplus":  # other workers hold the last slots; wait for them to decide
            time.sleep(1.0)
    return ostudy
