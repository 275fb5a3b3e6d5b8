"""The Optuna backend: one Optuna study per archspace study, in any Optuna RDB storage.

Each trial resolves a point of the space (analytic constraints and matching first: a
rejected point is recorded and never trained), trains it with the trainer's per-epoch
callback wired to the pruner, and records everything in the trial's attributes. Writes are
batched: each of a trial's decisions is one transaction (see :func:`set_trial_user_attrs`).

One result per point: a trial whose point (its key: the hash of the resolved spec and
recipe) is already trained, being trained or queued by a lower-numbered trial is recorded
as a ``duplicate`` and trained by nobody (see :func:`_twin`). The budget counts trained
trials (complete, diverged, pruned), never duplicates; several processes on one storage
share it and never train more than the budget between them (see :func:`_claim`).

A trial whose process died (pid gone on this machine, heartbeat stale on another) or that
was interrupted is failed and queued again with the same parameters and run directory; the
process that picks it up resumes it from its last checkpoint (see :func:`retry_trial`).
Every process waits for the others' trials, so a study that loses a process mid-trial still
ends with exactly its budget.

The sampler is seeded anew for every trial from the study's seed and the trial number
(which the storage makes unique), so processes sharing a study draw different points and a
fresh run draws the same points as its dry run.
"""

from __future__ import annotations

import os
import platform
import socket
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import optuna
from optuna.samplers import BaseSampler
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from .. import __version__
from ..errors import SpecError
from ._rdb import Store, set_trial_user_attrs
from .rundir import STORE_APPLICATION_ID, sqlite_file
from .space import Point
from .study import Study

# trial attribute "status": what happened to the point; these used a slot of the budget
TRAINED = ("complete", "diverged", "pruned")
HEARTBEAT_S = 5
GRACE_S = 20
MAX_RETRIES = 2          # a dead or interrupted trial is queued again at most this many times
KEY_WAIT_S = 2 * GRACE_S  # how long a trial waits for lower-numbered ones to name their point
PROGRESS_WRITE_S = 2.0
"""Without a pruner, a training trial writes its epochs' values (Optuna's intermediate values:
progress for whoever reads the store) at most this often; the rest go with its final record,
in the same transaction. A pruner gets every epoch's value as it comes. Each write is an
SQLite transaction (~2 ms): written per epoch, a quickstart trial's six epochs cost 0.2% of it."""


class Rejected(Exception):
    """A point that is never trained (constraints, matching, invalid spec, duplicate, budget reached)."""


class Interrupted(Exception):
    """Raised in the search process by SIGTERM: the running trial is failed and queued again."""


class OptunaSuggester:
    def __init__(self, trial: optuna.trial.Trial):
        self.trial = trial

    def categorical(self, name, values):
        return self.trial.suggest_categorical(name, values)

    def int(self, name, low, high, step=1, log=False):
        return self.trial.suggest_int(name, low, high, step=step, log=log)

    def float(self, name, low, high, log=False):
        return self.trial.suggest_float(name, low, high, log=log)


class TrialSeededSampler(BaseSampler):
    """The study's sampler, made anew for every trial with a seed drawn from (study seed, trial
    number): draws are reproducible per trial and differ between processes sharing a study,
    because the storage gives every trial its own number. The samplers keep no state between
    trials that the storage does not hold, so nothing is lost by remaking them."""

    def __init__(self, make: Callable[[int], BaseSampler], seed: int):
        self._make = make
        self._seed = seed
        self._inner = make(self.seed_for(0))

    def seed_for(self, number: int) -> int:
        return int(np.random.SeedSequence([abs(self._seed), int(self._seed < 0), number]).generate_state(1)[0])

    def before_trial(self, study, trial) -> None:
        self._inner = self._make(self.seed_for(trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values: Sequence[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


class BalancedSampler(BaseSampler):
    """Equal samples per variant (``sampler.per_variant``): the variant choice (``base`` or
    ``layout``) takes the value with the fewest points trained or training so far (the first
    such value in its list); every other choice is drawn by ``inner`` (random, seeded per
    trial), independently of the variant. Points rejected or drawn twice do not count, so the
    same variant is drawn again until one of its points trains."""

    def __init__(self, inner: BaseSampler, choice: str, values: list[Any]):
        self._inner = inner
        self.choice = choice
        self.values = list(values)

    def counts(self, study: optuna.Study, number: int) -> list[int]:
        """Points of each variant trained (complete, diverged, pruned) or still running."""
        counts = [0] * len(self.values)
        for t in study.get_trials(deepcopy=False):
            if t.number == number or self.choice not in t.params or t.params[self.choice] not in self.values:
                continue
            status = t.user_attrs.get("status")
            counted = (status in TRAINED if status is not None
                       else t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
            if counted:
                counts[self.values.index(t.params[self.choice])] += 1
        return counts

    def before_trial(self, study, trial) -> None:
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name != self.choice:
            return self._inner.sample_independent(study, trial, param_name, param_distribution)
        counts = self.counts(study, trial.number)
        return self.values[counts.index(min(counts))]

    def after_trial(self, study, trial, state, values: Sequence[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def make_sampler(study: Study) -> BaseSampler:
    """The study's sampler, seeded per trial (see :class:`TrialSeededSampler`); balanced over
    the variants with ``per_variant`` (:class:`BalancedSampler`)."""
    s = study.spec.sampler
    samplers: dict[str, Callable[[int], BaseSampler]] = {
        # the grid's order is shuffled by its seed, so it keeps the study's: grid point = trial number
        "grid": lambda seed: optuna.samplers.GridSampler(study.grid(), seed=s.seed),
        "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
        "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.startup_trials),
        "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
    }
    sampler = TrialSeededSampler(samplers[s.kind], s.seed)
    if s.per_variant is not None:
        choice = study.variant_choice
        return BalancedSampler(sampler, choice, study.space.spec.choices[choice])
    return sampler


def make_pruner(study: Study) -> optuna.pruners.BasePruner:
    p = study.spec.pruner
    pruners = {
        "none": lambda: optuna.pruners.NopPruner(),
        "median": lambda: optuna.pruners.MedianPruner(n_warmup_steps=p.warmup_epochs, n_startup_trials=2),
        "asha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, p.warmup_epochs),
                                                              reduction_factor=p.reduction_factor),
    }
    return pruners[p.kind]()


SQLITE_WAL_ENV = "ARCHSPACE_SQLITE_WAL"
"""Write-ahead-log mode for SQLite stores (see :func:`_sqlite_pragmas`). Unset: a store file
that archspace creates is made in WAL mode, and a store already in WAL mode stays so; a store
file that exists in another mode is left in it. ``1``: every SQLite store is switched to WAL.
``0``: no store is (for a store on a network file system, where WAL cannot work)."""


def _sqlite_pragmas() -> Callable[[Any, Any], None]:
    """A connect hook: a store in write-ahead-log mode (see :func:`_prepare_store_file`) is synced at
    checkpoints rather than at every commit. A commit then costs ~1 ms instead of ~3-5 (a
    trial makes ~17). Committed data survives a killed process; an OS crash or power loss may
    lose the last commits but never corrupts the file. While processes have
    the store open, recent commits live in ``study.db-wal`` beside it (with ``study.db-shm``);
    the last connection to close writes them into ``study.db`` and removes both, so a finished
    search leaves one file. WAL needs the processes sharing the file on one machine (no network
    file systems: set ``ARCHSPACE_SQLITE_WAL=0`` there)."""

    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                cursor.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.OperationalError:
            pass  # busy (another process switching the mode): this connection syncs every commit
        finally:
            cursor.close()

    return on_connect


def _fresh(path: Path) -> bool:
    """Whether the store file is still to be made (missing or empty): decided before the store is
    opened, since opening creates it."""
    return not path.exists() or path.stat().st_size == 0


_SCHEMA_RACE = ("already exists", "unique constraint", "duplicate key", "database is locked")


def _lost_schema_race(exc: BaseException) -> bool:
    """Whether creating Optuna's tables failed only because another process sharing a fresh store
    created them (or stamped their version) at the same moment: opening again then succeeds."""
    from sqlalchemy.exc import DBAPIError

    return isinstance(exc, DBAPIError) and any(word in str(exc).lower() for word in _SCHEMA_RACE)


def _rdb_storage(url: str, kwargs: dict[str, Any], attempts: int = 8) -> RDBStorage:
    """Optuna's RDB storage; processes that open one fresh store together race to create its
    tables (``table studies already exists``, ``UNIQUE constraint failed: alembic_version``). The
    losers wait a moment, with jitter, and open the tables the winner made."""
    rng = np.random.default_rng()
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return Store(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                  heartbeat_stale_trial_callback=retry_trial)
        except Exception as exc:
            if attempt == attempts - 1 or not _lost_schema_race(exc):
                raise
            time.sleep(min(0.05 * 2 ** attempt, 2.0) * (0.5 + rng.random()))
    raise AssertionError("unreachable")


def open_storage(url: str) -> RDBStorage:
    """An RDB storage with heartbeats; an unreachable URL is a one-line error on ``--storage``."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    try:
        path = sqlite_file(url)
        setting = os.environ.get(SQLITE_WAL_ENV, "")
        if path is not None and (setting == "1" or _fresh(path)):  # before Optuna makes its tables
            _prepare_store_file(path, stamp=_fresh(path), wal=setting != "0")
        storage = _rdb_storage(url, kwargs)
        if path is not None and setting != "0":
            from sqlalchemy import event

            event.listen(storage.engine, "connect", _sqlite_pragmas())
            storage.engine.dispose()  # the connections made so far: remade with the pragmas
        return storage
    except Exception as exc:  # sqlalchemy / driver errors: the URL is the user's
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError.single("--storage", f"cannot open {url}: {first}") from None


def _prepare_store_file(path: Path, stamp: bool, wal: bool, attempts: int = 8) -> None:
    """Make an SQLite store file (its folder must exist) before Optuna makes its tables: with
    ``stamp``, mark it as archspace's (:data:`~archspace.search.rundir.STORE_APPLICATION_ID`, so
    that a process of the same search that looks at it before its tables exist knows it for a
    store being made, not another program's database); with ``wal``, put it in WAL mode (the
    mode stays with the file). Processes that open one fresh store together race here (the
    switch needs the file to itself: "database is locked"): the losers wait a moment, with
    jitter, and try again (the winner's switch serves them). A store that cannot be switched
    stays in its mode: slower commits, nothing lost."""
    if not path.parent.is_dir():
        return  # opening the store then fails, saying which folder is missing
    rng = np.random.default_rng()
    for attempt in range(attempts):
        con = sqlite3.connect(str(path), timeout=60)
        try:
            if stamp:
                con.execute(f"PRAGMA application_id = {STORE_APPLICATION_ID}")
                stamp = False
            if not wal or str(con.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal":
                return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        finally:
            con.close()
        time.sleep(min(0.05 * 2 ** attempt, 2.0) * (0.5 + rng.random()))


def close_storage(storage: Any) -> None:
    """Close the storage's connections: an SQLite store in WAL mode is then whole in its one
    file again (the last connection to close checkpoints the log and removes it)."""
    backend = getattr(storage, "_backend", storage)
    if isinstance(backend, RDBStorage):
        backend.engine.dispose()


def set_user_attrs(trial: optuna.trial.Trial, intermediate: dict[int, float] | None = None, **attrs: Any) -> None:
    """``trial.set_user_attr`` for several keys, and ``trial.report`` for several epochs
    (``intermediate``: epoch -> value), in one storage transaction (see
    :func:`set_trial_user_attrs`); the trial's own view of its attributes is updated too."""
    set_trial_user_attrs(trial.storage, trial._trial_id, attrs, intermediate)
    trial._cached_frozen_trial.user_attrs.update(attrs)
    trial._cached_frozen_trial.intermediate_values.update(intermediate or {})


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


def create_study(study: Study, storage: RDBStorage) -> optuna.Study:
    """Create or load the Optuna study, with the study's per-trial seeded sampler and pruner,
    and record the study and its space (what the report reads)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["minimize"] * len(study.spec.objectives)
    ostudy = optuna.create_study(study_name=study.name, storage=storage, pruner=make_pruner(study),
                                 sampler=make_sampler(study), directions=directions, load_if_exists=True)
    ostudy.set_user_attr("archspace_study", study.spec.model_dump(mode="json"))
    ostudy.set_user_attr("archspace_space", study.space.spec.model_dump(mode="json"))
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


def count_trained(study: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial] | None = None) -> int:
    """Trials that used (or hold) a slot of the budget: trained, or claimed and running (of
    ``trials``, the study's trials as just read, if given)."""
    return sum(1 for t in (study.get_trials(deepcopy=False) if trials is None else trials) if _claimed(t))


def retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a failed trial again (WAITING) with its parameters, grid point, key and run
    directory, so that whoever picks it up resumes it from its last checkpoint; at most
    :data:`MAX_RETRIES` times per original trial. Also the storage's heartbeat callback."""
    history = list(trial.user_attrs.get("retry_history", [])) + [trial.number]
    if len(history) > MAX_RETRIES:
        return
    attrs = {k: trial.user_attrs[k] for k in ("key", "run_dir") if k in trial.user_attrs}
    system = {k: trial.system_attrs[k] for k in ("grid_id", "search_space") if k in trial.system_attrs}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={**attrs, "retry_of": trial.number, "retry_history": history},
        system_attrs={**system, "failed_trial": history[0], "retry_history": history}))


def fail_dead_trials(study: optuna.Study, stale: bool = True,
                     trials: Sequence[optuna.trial.FrozenTrial] | None = None) -> int:
    """Fail running trials whose process is gone: at once for this machine's (by pid, with the
    reason "its process died"), and, with ``stale``, by heartbeat for other machines'. Each is
    queued again (:func:`retry_trial`). ``trials``: the study's trials as just read, if given
    (else read here). Returns how many were failed by pid."""
    host = socket.gethostname()
    storage = study._storage
    n = 0
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
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
            set_trial_user_attrs(storage, t._trial_id, {"status": "failed", "reason": "its process died"})
            changed = storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        if changed:
            retry_trial(study, study._storage.get_trial(t._trial_id))
            n += 1
    if stale:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    return n


def _claim(trial: optuna.trial.Trial, budget: int, trials: Sequence[optuna.trial.FrozenTrial] | None = None,
           **attrs: Any) -> None:
    """Take a slot of the budget, writing ``claimed`` and ``attrs`` (one transaction), or
    raise :class:`Rejected` ("surplus").

    Trial numbers are assigned by the storage in order. A trial goes ahead only if fewer
    than ``budget`` lower-numbered trials are trained, claimed, or still undecided
    (running without a decision): every trial that will train is running without a decision
    from its creation until it is trained, so it is counted by every higher-numbered one and
    processes sharing a storage never train more than the budget. ``trials``: the study's
    trials as read after this trial wrote its key (the duplicate check's read, see
    :func:`_twin`); lower-numbered trials only get decided since, so the count can only be
    high, never low.
    """
    if trials is None:
        trials = trial.study.get_trials(deepcopy=False)
    ahead = 0
    for t in trials:
        if t.number >= trial.number:
            continue
        if _claimed(t) or (t.state == TrialState.RUNNING and "status" not in t.user_attrs):
            ahead += 1
    if ahead >= budget:
        set_user_attrs(trial, claimed=False, status="surplus")
        raise Rejected("budget reached")
    set_user_attrs(trial, claimed=True, **attrs)


def _twin(trial: optuna.trial.Trial, key: str, wait_s: float = KEY_WAIT_S
          ) -> tuple[optuna.trial.FrozenTrial | None, list[optuna.trial.FrozenTrial]]:
    """The lower-numbered trial that has this point: trained (complete, diverged, pruned), or
    live (running or queued, not decided otherwise), or ``None``; and the study's trials as
    read (for :func:`_claim`).

    Every trial writes its key before it looks, and only looks below its own number, so of
    the trials that draw one point at the same time exactly the lowest-numbered one trains. A
    lower-numbered trial that is still resolving its point (no key yet) is waited for, up to
    ``wait_s`` seconds (resolving is analytic: milliseconds).
    """
    deadline = time.monotonic() + wait_s
    while True:
        pending = False
        trials = trial.study.get_trials(deepcopy=False)
        for t in trials:
            if t.number >= trial.number:
                continue
            live = t.state in (TrialState.RUNNING, TrialState.WAITING)
            if live and "key" not in t.user_attrs:
                pending = t.state == TrialState.RUNNING
                continue
            if t.user_attrs.get("key") != key:
                continue
            status = t.user_attrs.get("status")
            if (live and status is None) or status in TRAINED:
                return t, trials
        if not pending or time.monotonic() > deadline:
            return None, trials
        time.sleep(0.1)


def objective_values(study: Study, eval_error: float, point: Point) -> tuple[float, ...] | float:
    values = []
    for name in study.spec.objectives:
        values.append(eval_error if name == "eval_error" else float(point.cost[name]))
    return values[0] if len(values) == 1 else tuple(values)


DEVICE_ENV = "ARCHSPACE_DEVICE"
"""A worker's device (``cuda:1``, ``cpu``, ...), set per worker by ``archspace search --devices``:
its trials train there (``train.device`` does not change what is trained)."""


def worker_device() -> str | None:
    return os.environ.get(DEVICE_ENV) or None


def train(*args: Any, **kwargs: Any):
    """:func:`archspace.train.train`, imported on first use: sampling, resolving and planning a
    study need no torch (a module-level name, so benchmarks and tests can stand in for it)."""
    from ..train import train as run

    return run(*args, **kwargs)


def _train_trial(point: Point, out: Path, resume: bool, report: Callable[[dict], bool], device: str | None,
                 workers: int):
    """Train a trial's point in this process, or as ``workers`` data-parallel ranks under
    torchrun (``device``: the worker's devices, comma-separated, one per rank)."""
    if workers == 1:
        recipe = point.train.model_copy(update={"device": device}) if device else point.train
        return train(point.spec, recipe, out, resume=resume, callback=report)
    import torch

    from ..train.launch import RanksFailed, train_ranks

    recipe, visible = point.train, None
    if device:  # cuda:2,cuda:3 -> the ranks see devices 2 and 3 as cuda:0 and cuda:1
        names = device.split(",")
        recipe = point.train.model_copy(update={"device": names[0].split(":")[0]})
        visible = ",".join(n.split(":")[1] for n in names if ":" in n) or None
    try:
        return train_ranks(point.spec, recipe, out, nproc=workers, resume=resume, callback=report,
                           visible_devices=visible, threads=max(1, torch.get_num_threads() // workers))
    except RanksFailed as exc:
        raise RuntimeError(str(exc)) from None


def make_objective(study: Study, run_dir: Path, budget: int,
                   on_epoch: Callable[[int, dict], None] | None = None,
                   device: str | None = None) -> Callable[[optuna.trial.Trial], Any]:
    device = device or worker_device()
    owner = {"host": socket.gethostname(), "pid": os.getpid(), **({"device": device} if device else {})}
    run_versions = versions()
    prunes = study.spec.pruner.kind != "none"  # the pruner reads each epoch's value as it comes

    def objective(trial: optuna.trial.Trial):
        try:
            point = study.space.resolve(OptunaSuggester(trial))
        except SpecError as exc:
            set_user_attrs(trial, owner=owner, status="rejected", reason="; ".join(exc.lines()))
            raise Rejected("invalid spec") from None
        resumed_dir = trial.user_attrs.get("run_dir") if trial.user_attrs.get("key") == point.key else None
        found = {"owner": owner, "key": point.key, "cost": {k: point.cost[k] for k in ("params", "flops", "acts")},
                 "match_scale": point.match_scale}
        if point.rejected:
            set_user_attrs(trial, **found, status="rejected", reason=point.rejected)
            raise Rejected(point.rejected)
        set_user_attrs(trial, **found)  # the key before looking for twins: see _twin
        twin, trials = _twin(trial, point.key)
        if twin is not None:
            set_user_attrs(trial, status="duplicate", duplicate_of=twin.number)
            if twin.state == TrialState.COMPLETE and twin.values:  # model-based samplers see the point's value
                return twin.values[0] if len(twin.values) == 1 else tuple(twin.values)
            raise Rejected(f"duplicate of trial {twin.number}")
        out = Path(resumed_dir) if resumed_dir else run_dir / "trials" / f"{trial.number:05d}"
        _claim(trial, budget, trials, spec=point.spec.model_dump(mode="json", exclude_none=True),
               train=point.train.model_dump(mode="json"), seed=point.train.seed, versions=run_versions,
               run_dir=str(out))
        single = len(study.spec.objectives) == 1
        reported: set[int] = set()
        unwritten: dict[int, float] = {}  # epoch -> eval error, not yet in the store
        written = [time.monotonic()]

        def report(row: dict) -> bool:
            reported.add(row["epoch"])
            if on_epoch is not None:
                on_epoch(trial.number, row)
            if not single:
                return False
            if not prunes:  # progress for whoever reads the store, at most every PROGRESS_WRITE_S
                unwritten[row["epoch"]] = row["eval_error"]
                if time.monotonic() - written[0] >= PROGRESS_WRITE_S:
                    set_user_attrs(trial, unwritten)
                    unwritten.clear()
                    written[0] = time.monotonic()
                return False
            trial.report(row["eval_error"], row["epoch"])
            return trial.should_prune()

        try:
            result = _train_trial(point, out, resumed_dir is not None, report, device, study.spec.resources.workers)
        except (Interrupted, KeyboardInterrupt):
            set_user_attrs(trial, unwritten, status="failed",
                           reason="interrupted; queued again, to resume from its last checkpoint")
            retry_trial(trial.study, trial.study._storage.get_trial(trial._trial_id))
            raise
        if result.params != point.cost["params"]:
            raise RuntimeError(f"trial {trial.number} trained {result.params:,} params but recorded "
                               f"{point.cost['params']:,}: the trained network is not the resolved point")
        restored = [row for row in result.history if row["epoch"] not in reported]  # from the checkpoint
        if single:
            unwritten.update({row["epoch"]: row["eval_error"] for row in restored})
        record: dict[str, Any] = {"resumed_after_epoch": len(restored)} if resumed_dir else {}
        record.update(history=result.history, final_status=result.status)
        final = result.final
        if final:
            record.update({k: final[k] for k in ("train_loss", "train_error", "eval_error")})
        if result.status == "diverged":
            set_user_attrs(trial, unwritten, **record, status="diverged", diverged_epoch=result.diverged_epoch)
            return objective_values(study, 1.0, point)  # a diverged run counts as 100% error
        if result.status == "pruned":
            set_user_attrs(trial, unwritten, **record, status="pruned")
            raise optuna.TrialPruned()
        set_user_attrs(trial, unwritten, **record, status="complete")
        return objective_values(study, final["eval_error"], point)

    return objective


def grid_exhausted(study: Study, ostudy: optuna.Study) -> bool:
    """Under the grid sampler: every grid point has a decided trial (trained, duplicate or
    rejected), so no new draw can add a distinct point."""
    if study.spec.sampler.kind != "grid":
        return False
    done = {t.system_attrs.get("grid_id") for t in ostudy.get_trials(deepcopy=False)
            if t.state.is_finished() and trial_status(t) in (*TRAINED, "duplicate", "rejected")}
    return done >= set(range(study.n_trials()))


def run_worker(study: Study, storage_url: str, run_dir: Path, budget: int,
               on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial, list], None] | None = None,
               on_epoch: Callable[[int, dict], None] | None = None, max_rejections: int = 500,
               max_failures: int = 3, device: str | None = None) -> optuna.Study:
    """Run trials in this process until the study holds ``budget`` trained trials.

    Queued trials (retries of dead or interrupted ones) are taken first. When the budget is
    held but other processes still run trials, this one waits, failing and taking over any
    whose process dies, so that the study ends with its budget in this run.
    """
    ostudy = create_study(study, open_storage(storage_url))
    streak = {"rejected": 0, "failed": 0, "duplicate": 0, "last": ""}

    def stop_when_done(s: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        status = trial_status(t)
        streak["last"] = status
        for kind in ("rejected", "failed", "duplicate"):
            streak[kind] = streak[kind] + 1 if status == kind else 0
        # before optimize's next trial fails stale trials by heartbeat alone (no reason recorded):
        # a trial of this machine whose process died is failed here, saying so
        trials = s.get_trials(deepcopy=False)  # one read for all three (read again if one failed)
        if fail_dead_trials(s, stale=False, trials=trials):
            trials = s.get_trials(deepcopy=False)
        if on_trial is not None:
            on_trial(s, t, trials)
        if (count_trained(s, trials) >= budget or status == "surplus"
                or streak["rejected"] >= max_rejections
                or streak["duplicate"] >= max_rejections or streak["failed"] >= max_failures):
            s.stop()

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    while True:
        fail_dead_trials(ostudy)
        if grid_exhausted(study, ostudy):
            break
        waiting = ostudy.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if count_trained(ostudy) >= budget and not waiting:
            running = [t for t in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                       if t.user_attrs.get("claimed")]
            if not running:
                break
            time.sleep(1.0)  # other processes hold the last slots: wait, taking over any that dies
            continue
        ostudy.optimize(make_objective(study, run_dir, budget, on_epoch, device), n_trials=None, catch=(Rejected,),
                        callbacks=[stop_when_done], gc_after_trial=False)
        if streak["rejected"] >= max_rejections:
            raise SpecError.single("space.constraints", f"{max_rejections} points in a row were rejected: "
                                                        "the space is (nearly) empty after constraints and matching")
        if streak["duplicate"] >= max_rejections:
            distinct = len({t.user_attrs.get("key") for t in ostudy.get_trials(deepcopy=False)
                            if trial_status(t) in TRAINED})
            raise SpecError.single("trials", f"{max_rejections} draws in a row were points already trained: the "
                                             f"space seems to hold {distinct} distinct points, fewer than the "
                                             f"budget of {budget}")
        if streak["failed"] >= max_failures:
            raise RuntimeError(f"{max_failures} trials in a row failed; see the trial attributes in the store")
        if streak["last"] == "surplus":  # other workers hold the last slots; wait for them to decide
            time.sleep(1.0)
    return ostudy
