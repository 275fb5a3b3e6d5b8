"""The Ray Tune backend: the same space and sampler, trials spread over a Ray cluster.

Ray Tune runs the trials; Optuna still draws the points. ``OptunaSearch`` drives the
study's own sampler (the one :func:`create_study` sets, seeded per trial) with a
define-by-run function that resolves a point of the space exactly as the Optuna backend
does, so both backends draw the same points in the same order. A point that constraints,
matching or spec validation reject is recorded and never reaches Ray (nor counts toward
the budget); a duplicate of a trained point is recorded with its twin's result, as in the
Optuna backend. Each Ray trial resolves its point again from the sampled values, trains it
with :func:`archspace.train.train` and reports every epoch with ``ray.tune.report``, so
that a scheduler (ASHA, for the ``median`` and ``asha`` pruners) can stop it early.

Results go to the same Optuna store as the Optuna backend: one Optuna trial per Ray
trial, with the same attributes (plus ``backend: ray`` and ``ray_trial_id``), so the
summary, records and later analysis do not care which backend ran. The driver writes the
store (workers need Ray and archspace, not the store); ``owner`` is the worker process that
trained the trial and ``node`` the Ray node it ran on (``id``, ``ip``, ``host``). The budget
counts trained trials, as in the Optuna backend; running again on the same store resumes,
with new draws.

A trial whose worker dies (its node is lost, the process is killed) is retried by Ray Tune,
up to :data:`RETRIES` times, as the same Ray trial: the searcher is told only when it ends,
so it is written once and counted once. The retry continues from the trial's last
checkpoint when its directory is reachable (one machine, or a shared run directory), else it
starts again; ``ray_retries`` and ``ray_failures`` (the node and error of each lost attempt)
record it, and ``resumed_after_epoch`` the epochs taken from the checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from ..errors import SpecError
from ..train.config import TrainConfig
from .optuna_backend import OptunaSuggester, count_trained, create_study, objective_values, open_storage, versions
from .space import FixedSuggester, IntRange, Point
from .study import Study

try:
    import ray
    from ray import tune
    from ray.tune.result import TRAINING_ITERATION
    from ray.tune.search.optuna import OptunaSearch
except ImportError:  # pragma: no cover - the search extra installs it
    ray = tune = None
    OptunaSearch = object

KEY = "archspace_key"  # constant added to each Ray config: the key of the resolved point
RETRIES = 2  # times Ray Tune starts a trial again after its worker died (a lost node): 3 attempts in all
COST = ("params", "flops", "acts")


# -- the trainable (runs in a Ray worker) ---------------------------------------------------------

def _metrics(row: dict, cost: dict[str, float], **extra: Any) -> dict[str, Any]:
    """What a trial reports to Ray: the epoch's numbers, the point's cost and the row as JSON."""
    out: dict[str, Any] = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out.update(cost)
    out["row"] = json.dumps(row)
    out.update(extra)
    return out


def trainable(config: dict[str, Any], study: Study, run_dir: str, threads: int = 1) -> None:
    """One Ray trial: resolve the point from the sampled values, train it, report each epoch.

    The last epoch is reported after training ends, with ``final_status`` (complete or
    diverged); a trial the scheduler stops never reports one. Errors are reported as
    ``final_status: failed`` with the message, not raised, so the store can say what went wrong.
    """
    import torch

    from ..train import train

    torch.set_num_threads(max(1, threads))
    trial_id = tune.get_context().get_trial_id()
    node = {"node_id": ray.get_runtime_context().get_node_id()}  # Ray adds node_ip, hostname and pid
    cost: dict[str, float] = {}
    epochs_done = 0
    reported: set[int] = set()
    plans = []
    try:
        sampled = {k: v for k, v in config.items() if k != KEY}
        point = study.space.resolve(FixedSuggester(strict=True, values=sampled))
        if config.get(KEY) not in (None, point.key):
            raise RuntimeError(f"the point resolved in the worker ({point.key}) is not the one sampled "
                               f"({config[KEY]}): are the archspace versions on the driver and workers the same?")
        cost = {k: float(point.cost[k]) for k in COST}
        last = point.train.epochs
        stopped = []

        def report(row: dict) -> bool:
            nonlocal epochs_done
            epochs_done = row["epoch"]
            reported.add(row["epoch"])
            if row["epoch"] >= last:
                return False  # reported below, with the run's status
            try:
                tune.report(_metrics(row, cost, **node))
            except SystemExit:  # Ray stops the trial (the scheduler pruned it): end the run cleanly
                stopped.append(True)
                return True
            return False

        # resume: a retry of this trial (its worker died) continues from the last checkpoint
        # of the attempt before; a first attempt finds no run there and starts fresh
        result = train(point.spec, point.train, Path(run_dir) / "trials" / f"ray-{trial_id}", resume=True,
                       callback=report, on_start=plans.append)
    except Exception as exc:  # noqa: BLE001 - recorded in the store as a failed trial
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        tune.report({"epoch": epochs_done, "eval_error": 1.0, **cost, "final_status": "failed",
                     "error": f"{type(exc).__name__}: {first}"[:500], **node})
        return
    if stopped:
        raise SystemExit(0)
    extra: dict[str, Any] = dict(node)
    if plans and plans[0].mode != "fresh":  # epochs taken from the checkpoint of a lost attempt
        extra["resumed_after_epoch"] = sum(1 for row in result.history if row["epoch"] not in reported)
    extra["history"] = json.dumps(result.history)  # the driver may have missed a report of a lost attempt
    if result.status == "diverged":
        tune.report({"epoch": result.diverged_epoch, "eval_error": 1.0, **cost, "final_status": "diverged",
                     "diverged_epoch": result.diverged_epoch, **extra})
    else:
        tune.report(_metrics(result.final, cost, final_status=result.status, **extra))


def _trial_dirname(trial) -> str:
    return f"trial-{trial.trial_id}"


# -- the searcher (runs on the driver) ------------------------------------------------------------

@dataclass
class _Live:
    """A point handed to Ray and not finished yet."""

    suggestion: str                       # the id of its trial in the searcher's Optuna study
    point: Point
    params: dict[str, Any]
    distributions: dict[str, Any]
    rows: dict[int, dict] = field(default_factory=dict)
    node: dict[str, Any] | None = None   # where the current attempt runs (from its reports)
    failures: list[dict[str, Any]] = field(default_factory=list)  # attempts lost (their worker died)


@dataclass
class _State:
    study: Study
    ostudy: optuna.Study
    budget: int
    trained: int
    run_dir: Path
    on_trial: Callable | None = None
    on_epoch: Callable | None = None
    max_rejections: int = 500
    max_failures: int = 3
    live: dict[str, _Live] = field(default_factory=dict)
    done_keys: dict[str, optuna.trial.FrozenTrial] = field(default_factory=dict)
    drawn: Any = None
    rejected_streak: int = 0
    failed_streak: int = 0
    last_failure: str = ""
    error: BaseException | None = None
    owner: dict[str, Any] = field(default_factory=lambda: {"host": socket.gethostname(), "pid": os.getpid()})


class ArchspaceSearch(OptunaSearch):
    """An ``OptunaSearch`` that records rejected points and duplicates instead of handing them
    to Ray, keeps the budget, and writes every finished Ray trial to the store (on the driver)."""

    def __init__(self, state: _State, sampler: optuna.samplers.BaseSampler, storage, metric, mode):
        self._arch = state
        super().__init__(space=self._define, metric=metric, mode=mode, sampler=sampler, storage=storage,
                         study_name=state.study.name)

    # Ray pickles the tuner's configuration (and checkpoints searchers); the driver-side
    # state is not needed there: resuming goes through the store.
    def __getstate__(self):
        return {"_metric": self._metric, "_mode": self._mode}

    def save(self, checkpoint_path: str):
        Path(checkpoint_path).write_bytes(b"")

    def restore(self, checkpoint_path: str):
        pass

    def _define(self, trial) -> dict[str, Any] | None:
        st = self._arch
        try:
            point = st.study.space.resolve(OptunaSuggester(trial))
        except SpecError as exc:
            st.drawn = (None, "; ".join(exc.lines()), dict(trial.params), dict(trial.distributions))
            return None
        st.drawn = (point, point.rejected, dict(trial.params), dict(trial.distributions))
        return None if point.rejected else {KEY: point.key}

    def suggest(self, trial_id: str):
        st = self._arch
        try:
            return self._suggest(trial_id)
        except Exception as exc:  # noqa: BLE001 - raised by run_ray once Ray is done
            st.error = exc
            return self.FINISHED

    def _suggest(self, trial_id: str):
        st = self._arch
        for attempt in range(st.max_rejections + 1):
            if st.error is not None:
                return self.FINISHED
            if st.trained + len(st.live) >= st.budget:
                # wait while trials run: one that fails leaves its slot to a new point
                return None if st.live else self.FINISHED
            if st.rejected_streak >= st.max_rejections:
                st.error = SpecError.single(
                    "space.constraints", f"{st.max_rejections} points in a row were rejected: the space "
                                         "is (nearly) empty after constraints and matching")
                return self.FINISHED
            sid = f"{trial_id}/{attempt}"
            st.drawn = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "define-by-run took long": matching is analytic work
                config = super().suggest(sid)
            point, reason, params, dists = st.drawn
            if reason is not None:
                st.rejected_streak += 1
                super().on_trial_complete(sid, None, error=True)
                attrs: dict[str, Any] = {"status": "rejected", "reason": reason}
                if point is not None:
                    attrs.update(_point_attrs(point))
                self._write(sid, TrialState.FAIL, None, params, dists, attrs)
                continue
            st.rejected_streak = 0
            twin = st.done_keys.get(point.key) or next(
                (live for live in st.live.values() if live.point.key == point.key), None)
            if twin is not None:
                self._duplicate(sid, point, params, dists, twin)
                continue
            st.live[trial_id] = _Live(sid, point, params, dists)
            return config
        return None

    def _duplicate(self, sid: str, point: Point, params, dists, twin: "optuna.trial.FrozenTrial | _Live") -> None:
        """Record a point already trained (or training) as a duplicate: never trained again,
        never counted toward the budget; with its twin's values when the twin has finished."""
        attrs: dict[str, Any] = {**_point_attrs(point), "status": "duplicate"}
        if isinstance(twin, _Live):
            attrs["duplicate_of_ray_trial"] = twin.suggestion
        else:
            attrs["duplicate_of"] = twin.number
        if isinstance(twin, _Live) or twin.state != TrialState.COMPLETE or not twin.values:
            super().on_trial_complete(sid, None, error=True)
            self._write(sid, TrialState.FAIL, None, params, dists, attrs)
            return
        super().on_trial_complete(sid, self._result(twin.values))
        self._write(sid, TrialState.COMPLETE, list(twin.values), params, dists, attrs)

    def _result(self, values) -> dict[str, float]:
        names = self.metric if isinstance(self.metric, list) else [self.metric]
        return dict(zip(names, values))

    def on_trial_result(self, trial_id: str, result: dict):
        st = self._arch
        live = st.live.get(trial_id)
        if live is None:
            return
        if result.get("node_id"):
            live.node = _node(result)
        if "row" not in result:
            return
        row = json.loads(result["row"])
        if row["epoch"] in live.rows:
            return
        live.rows[row["epoch"]] = row
        # the step is the epoch: Ray's training_iteration starts again at 1 when a trial is retried
        super().on_trial_result(live.suggestion, {**result, TRAINING_ITERATION: row["epoch"]})
        if st.on_epoch is not None:
            try:
                st.on_epoch(trial_id, row)
            except Exception as exc:  # noqa: BLE001
                st.error = exc

    def on_trial_retry(self, trial_id: str, error: str) -> None:
        """Ray Tune starts the trial again (its worker died): note the lost attempt."""
        live = self._arch.live.get(trial_id)
        if live is not None:
            live.failures.append({"node": live.node, "error": error})
            live.node = None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        st = self._arch
        live = st.live.pop(trial_id, None)
        if live is None:
            return
        try:
            self._finish(trial_id, live, result or {}, error)
        except Exception as exc:  # noqa: BLE001 - raised by run_ray once Ray is done
            st.error = exc

    def _finish(self, trial_id: str, live: _Live, result: dict, error: bool) -> None:
        st = self._arch
        if "row" in result:
            row = json.loads(result["row"])
            live.rows.setdefault(row["epoch"], row)
        if result.get("history"):  # the run's own history: epochs a lost attempt reported are in it
            for row in json.loads(result["history"]):
                live.rows.setdefault(row["epoch"], row)
        history = [live.rows[e] for e in sorted(live.rows)]
        final_status = result.get("final_status")
        attrs = {**_point_attrs(live.point), **_train_attrs(live.point),
                 "run_dir": str(st.run_dir / "trials" / f"ray-{trial_id}"), "history": history}
        if result.get("hostname") and result.get("pid"):
            attrs["owner"] = {"host": result["hostname"], "pid": result["pid"]}
        node = _node(result) if result.get("node_id") else live.node
        if node:
            attrs["node"] = node
        if live.failures:
            attrs["ray_retries"] = len(live.failures)
            attrs["ray_failures"] = live.failures
        if result.get("resumed_after_epoch") is not None:
            attrs["resumed_after_epoch"] = result["resumed_after_epoch"]
        if final_status is None and result.get("done") and history and not error:
            final_status = "pruned"  # stopped by the scheduler
        attrs["final_status"] = final_status or "failed"
        if history:
            attrs.update({k: history[-1][k] for k in ("train_loss", "train_error", "eval_error")
                          if k in history[-1]})
        values: list[float] | None = None
        if final_status in ("complete", "diverged"):
            err = 1.0 if final_status == "diverged" else history[-1]["eval_error"]
            v = objective_values(st.study, err, live.point)
            values = list(v) if isinstance(v, tuple) else [v]
            attrs["status"] = final_status
            if final_status == "diverged":
                attrs["diverged_epoch"] = result.get("diverged_epoch")
            st.trained += 1
            st.failed_streak = 0
            ostate = TrialState.COMPLETE
            super().on_trial_complete(live.suggestion, self._result(values))
        elif final_status == "pruned":
            last = history[-1]["eval_error"]
            values = [last] if last is not None and math.isfinite(last) else None
            attrs["status"] = "pruned"
            st.trained += 1
            st.failed_streak = 0
            ostate = TrialState.PRUNED
            super().on_trial_complete(live.suggestion, None)
        else:
            attrs["status"] = "failed"
            attrs["reason"] = result.get("error") or (
                f"Ray reported an error for this trial (its worker died?) and gave up after "
                f"{len(live.failures)} retries; see Ray's logs"
                if error else "stopped before it finished (interrupted)")
            st.failed_streak += 1
            st.last_failure = attrs["reason"]
            if st.failed_streak >= st.max_failures:
                st.error = RuntimeError(f"{st.max_failures} trials in a row failed; the last: {st.last_failure}")
            ostate = TrialState.FAIL
            super().on_trial_complete(live.suggestion, None, error=True)
        intermediate = {e: r["eval_error"] for e, r in live.rows.items()
                        if isinstance(r.get("eval_error"), float) and math.isfinite(r["eval_error"])}
        frozen = self._write(trial_id, ostate, values, live.params, live.distributions, attrs, intermediate)
        if attrs["status"] in ("complete", "diverged", "pruned"):
            st.done_keys.setdefault(live.point.key, frozen)

    def _write(self, ray_id: str, ostate: TrialState, values, params, dists, attrs: dict,
               intermediate: dict[int, float] | None = None) -> optuna.trial.FrozenTrial:
        st = self._arch
        attrs = {"owner": st.owner, **attrs, "backend": "ray", "ray_trial_id": ray_id}
        st.ostudy.add_trial(optuna.trial.create_trial(
            state=ostate, values=values, params=params, distributions=dists, user_attrs=attrs,
            intermediate_values=intermediate or None))
        frozen = next(t for t in reversed(st.ostudy.get_trials(deepcopy=False))
                      if t.user_attrs.get("ray_trial_id") == ray_id)
        if st.on_trial is not None:
            st.on_trial(st.ostudy, frozen)
        return frozen


def _node(result: dict) -> dict[str, Any]:
    """The Ray node a result came from: its id (``ray.get_runtime_context().get_node_id()``),
    IP and host name."""
    return {"id": result.get("node_id"), "ip": result.get("node_ip"), "host": result.get("hostname")}


class _Retries(tune.Callback if tune is not None else object):
    """Tells the searcher when Ray Tune starts a trial again after its worker died (the
    searcher itself is only told when the trial ends)."""

    def __init__(self, searcher: "ArchspaceSearch"):
        self._searcher = searcher

    def __getstate__(self):  # pickled with the tuner's configuration; the run uses this object
        return {}

    def on_trial_recover(self, iteration: int, trials: list, trial, **info):
        if getattr(self, "_searcher", None) is not None:
            self._searcher.on_trial_retry(trial.trial_id, _last_error(trial))


def _last_error(trial) -> str:
    """The first line of the trial's last error (Ray writes them to the trial's error file)."""
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        text = ""
    block = text.rsplit("Failure # ", 1)[-1].splitlines()[1:] if "Failure # " in text else []
    lines = [line.strip() for line in block if line.strip()]
    # "The actor died unexpectedly ...", then (a lost node) "The actor died because its node has died. ..."
    why = next((line for line in lines if line.startswith("The actor died because")), None)
    return (why or (lines[0] if lines else "") or "the trial's worker died")[:500]


def _point_attrs(point: Point) -> dict[str, Any]:
    return {"key": point.key, "cost": {k: point.cost[k] for k in COST}, "match_scale": point.match_scale}


def _train_attrs(point: Point) -> dict[str, Any]:
    return {"claimed": True, "spec": point.spec.model_dump(mode="json", exclude_none=True),
            "train": point.train.model_dump(mode="json"), "seed": point.train.seed,
            "versions": {**versions(), "ray": ray.__version__}}


# -- the searcher's own study ---------------------------------------------------------------------

def _searcher_storage(study: Study, ostudy: optuna.Study) -> optuna.storages.BaseStorage:
    """A copy of the stored finished trials for the searcher's in-memory study: what
    model-based samplers (TPE, NSGA-II) learn from and what the grid sampler skips."""
    storage = optuna.storages.InMemoryStorage()
    own = optuna.create_study(storage=storage, study_name=study.name,
                              directions=["minimize"] * len(study.spec.objectives))
    own.add_trials([t for t in ostudy.get_trials(deepcopy=False) if t.state.is_finished()])
    return storage


def max_epochs(study: Study) -> int:
    choice = study.space.spec.choices.get("train.epochs")
    if isinstance(choice, list):
        return max(int(v) for v in choice)
    if isinstance(choice, IntRange):
        return choice.int[1]
    return int(study.space.train_base.get("epochs", TrainConfig.model_fields["epochs"].default))


def make_scheduler(study: Study):
    """ASHA (time in epochs) for the ``median`` and ``asha`` pruners; ``None`` (run every trial
    to the end) for ``none``."""
    from ray.tune.schedulers import ASHAScheduler

    p = study.spec.pruner
    if p.kind == "none":
        return None
    grace = max(1, p.warmup_epochs)
    return ASHAScheduler(time_attr="epoch", metric="eval_error", mode="min", max_t=max(grace, max_epochs(study)),
                         grace_period=grace, reduction_factor=p.reduction_factor, stop_last_trials=False)


# -- the run -----------------------------------------------------------------------------------------

def _start_ray(address: str | None) -> bool:
    """Connect to (or start) Ray unless this process already has a session; True if started here."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"at {address}" if address else "locally"
        raise SpecError.single("--address" if address else "backend", f"cannot start Ray {where}: {first}") from None
    return True


@contextmanager
def _quiet_tune():
    """Keep Ray Tune's own reports off stdout (``--format json`` prints the summary there):
    its current console output prints an experiment banner even at verbosity 0."""
    before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = before


@contextmanager
def _ray_errors_to_stderr():
    """Send the cluster errors Ray's driver prints (``(raylet) The node ... has been marked
    dead``) to stderr: a background thread prints them on stdout whatever ``log_to_driver``
    says, and stdout carries ``--format json``. A no-op where Ray's internals differ."""
    try:
        from ray._private import worker as ray_worker

        original = ray_worker.print_to_stdstream
    except (ImportError, AttributeError):  # pragma: no cover - another Ray version
        yield
        return

    def to_stderr(data, *args, **kwargs):
        return original({**data, "is_err": True}, *args, **kwargs)

    ray_worker.print_to_stdstream = to_stderr
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = original


def _check_resources(study: Study) -> dict[str, float]:
    r = study.spec.resources
    wanted = {"cpu": float(r.cpu), "gpu": float(r.gpu)}
    total = ray.cluster_resources()
    have = {"cpu": float(total.get("CPU", 0)), "gpu": float(total.get("GPU", 0))}
    for kind in ("cpu", "gpu"):
        if wanted[kind] > have[kind]:
            raise SpecError.single(f"resources.{kind}", f"each trial asks for {wanted[kind]:g} {kind.upper()}s "
                                                        f"but the Ray cluster has {have[kind]:g}")
    return wanted


def run_ray(study: Study, storage_url: str, run_dir: Path, budget: int, *, address: str | None = None,
            on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
            on_epoch: Callable[[str, dict], None] | None = None) -> optuna.Study:
    """Run Ray Tune trials until the study's store holds ``budget`` trained trials.

    Args:
        storage_url: the Optuna store (the same one the Optuna backend uses).
        address: the Ray cluster this machine is a node of (``auto``, ``host:6379``); ``None``
            starts Ray on this machine. A Ray session already open in this process is used as
            it is (and left open).
        on_trial: called with (Optuna study, frozen trial) after each trial is written.
        on_epoch: called with (Ray trial id, epoch metrics) as epochs are reported.

    Raises:
        SpecError: the space is (nearly) empty, Ray cannot be reached (or is a Ray Client
            address), or a trial asks for more resources than the cluster has.
        RuntimeError: several trials in a row failed.
    """
    run_dir = Path(run_dir).resolve()
    ostudy = create_study(study, open_storage(storage_url))
    trained = count_trained(ostudy)
    if trained >= budget:
        return ostudy
    if ray is None:  # pragma: no cover
        raise SpecError.single("backend", "the ray backend needs Ray Tune: pip install 'archspace[search]'")
    if address and address.startswith("ray://"):
        raise SpecError.single("--address", "Ray Client addresses (ray://) are not supported: run the search on a "
                                            "node of the cluster, with --address auto")
    with _ray_errors_to_stderr():  # stdout carries --format json
        started = _start_ray(address)
        try:
            resources = _check_resources(study) if address is None else {
                "cpu": float(study.spec.resources.cpu), "gpu": float(study.spec.resources.gpu)}
            objectives = list(study.spec.objectives)
            metric = objectives[0] if len(objectives) == 1 else objectives
            mode = "min" if len(objectives) == 1 else ["min"] * len(objectives)
            sampler = ostudy.sampler  # the study's sampler, its seed offset as the Optuna backend's (resume draws anew)
            state = _State(study, ostudy, budget, trained, run_dir, on_trial=on_trial, on_epoch=on_epoch)
            for t in ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
                if t.user_attrs.get("key") and t.user_attrs.get("status") in ("complete", "diverged", "pruned"):
                    state.done_keys.setdefault(t.user_attrs["key"], t)
            searcher = ArchspaceSearch(state, sampler, _searcher_storage(study, ostudy), metric, mode)
            fn = tune.with_parameters(trainable, study=study, run_dir=str(run_dir),
                                      threads=max(1, int(resources["cpu"])))
            tuner = tune.Tuner(
                tune.with_resources(fn, resources),
                # the searcher ends the run (budget reached); reused actors skip a worker start per trial
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=make_scheduler(study), num_samples=-1,
                                            reuse_actors=True, trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                          storage_path=str(run_dir / "ray"), verbose=0, callbacks=[_Retries(searcher)],
                                          # a trial whose worker dies (a lost node) runs again, as the same trial
                                          failure_config=tune.FailureConfig(max_failures=RETRIES)),
            )
            with warnings.catch_warnings(), _quiet_tune():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                tuner.fit()
        finally:
            if started:
                ray.shutdown()
    if state.error is not None:
        raise state.error
    if state.trained < budget:
        raise RuntimeError(f"Ray Tune stopped with {state.trained} of {budget} trials trained (interrupted?); "
                           "run the same command again to resume")
    return ostudy
