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


class _Reports:
    """What one Ray trial reports: every epoch as it ends but the last, then the last with the
    run's status (``final_status``: complete, diverged or failed) and its whole history.

    ``send`` is ``tune.report`` in a one-process trial, ``ray.train.report`` in each worker of
    a data-parallel trial (every rank sends the same numbers; Ray Tune takes rank 0's)."""

    def __init__(self, send: Callable[[dict], None], study: Study, config: dict[str, Any]):
        self.send = send
        self.study = study
        self.config = config
        self.node = {"node_id": ray.get_runtime_context().get_node_id()}  # Ray adds node_ip, hostname and pid
        self.cost: dict[str, float] = {}
        self.epochs_done = 0
        self.reported: set[int] = set()
        self.plans: list = []
        self.stopped = False
        self.last = 0

    def resolve(self) -> Point:
        """The point of the sampled values, as the driver resolved it."""
        sampled = {k: v for k, v in self.config.items() if k != KEY}
        point = self.study.space.resolve(FixedSuggester(strict=True, values=sampled))
        if self.config.get(KEY) not in (None, point.key):
            raise RuntimeError(f"the point resolved in the worker ({point.key}) is not the one sampled "
                               f"({self.config[KEY]}): are the archspace versions on the driver and workers the same?")
        self.cost = {k: float(point.cost[k]) for k in COST}
        self.last = point.train.epochs
        return point

    def epoch(self, row: dict) -> bool:
        """The training callback: report the epoch; ``True`` stops the run (Ray stopped the trial)."""
        self.epochs_done = row["epoch"]
        self.reported.add(row["epoch"])
        if row["epoch"] >= self.last:
            return False  # reported by finished(), with the run's status
        try:
            self.send(_metrics(row, self.cost, **self.node))
        except SystemExit:  # Ray stops the trial (the scheduler pruned it): end the run cleanly
            self.stopped = True
            return True
        return False

    def failed(self, error: str) -> None:
        self.send({"epoch": self.epochs_done, "eval_error": 1.0, **self.cost, "final_status": "failed",
                   "error": error[:500], **self.node})

    def finished(self, result, **extra: Any) -> None:
        extra = {**self.node, **extra}
        if self.plans and self.plans[0].mode != "fresh":  # epochs taken from the checkpoint of a lost attempt
            extra["resumed_after_epoch"] = sum(1 for row in result.history if row["epoch"] not in self.reported)
        extra["history"] = json.dumps(result.history)  # the driver may have missed a report of a lost attempt
        if result.status == "diverged":
            self.send({"epoch": result.diverged_epoch, "eval_error": 1.0, **self.cost, "final_status": "diverged",
                       "diverged_epoch": result.diverged_epoch, **extra})
        else:
            self.send(_metrics(result.final, self.cost, final_status=result.status, **extra))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _trial_out(run_dir: str, trial_id: str) -> Path:
    return Path(run_dir) / "trials" / f"ray-{trial_id}"


def trainable(config: dict[str, Any], study: Study, run_dir: str, threads: int = 1) -> None:
    """One Ray trial in one process: resolve the point from the sampled values, train it,
    report each epoch (see :class:`_Reports`); a trial the scheduler stops never reports a
    final status. Errors are reported as ``final_status: failed`` with the message, not
    raised, so the store can say what went wrong."""
    import torch

    from ..train import train

    torch.set_num_threads(max(1, threads))
    reports = _Reports(tune.report, study, config)
    try:
        point = reports.resolve()
        # resume: a retry of this trial (its worker died) continues from the last checkpoint
        # of the attempt before; a first attempt finds no run there and starts fresh
        result = train(point.spec, point.train, _trial_out(run_dir, tune.get_context().get_trial_id()), resume=True,
                       callback=reports.epoch, on_start=reports.plans.append)
    except Exception as exc:  # noqa: BLE001 - recorded in the store as a failed trial
        reports.failed(_first_line(exc))
        return
    if reports.stopped:
        raise SystemExit(0)
    reports.finished(result)


def _parallel_worker(loop_config: dict[str, Any]) -> None:
    """One rank of a data-parallel trial, in a Ray Train worker: Ray Train has joined the
    process group and set ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, which the trainer reads."""
    import torch

    from ..train import train
    from ..train.distributed import gather

    torch.set_num_threads(max(1, loop_config["threads"]))
    context = ray.train.get_context()
    reports = _Reports(ray.train.report, loop_config["study"], loop_config["config"])
    group = ray.util.get_current_placement_group()
    if group is not None:  # the driver removes it when the trial ends (a stopped trial leaves it behind)
        reports.node["placement_group"] = group.id.hex()
    point = reports.resolve()
    result = train(point.spec, point.train, _trial_out(loop_config["run_dir"], loop_config["trial_id"]),
                   resume=True, callback=reports.epoch, on_start=reports.plans.append)
    me = {"rank": context.get_world_rank(), "node_id": reports.node["node_id"], "host": socket.gethostname(),
          "pid": os.getpid()}
    reports.finished(result, workers=json.dumps(gather(me)))


def parallel_trainable(config: dict[str, Any], study: Study, run_dir: str, workers: int, cpus: float,
                       gpus: float) -> None:
    """One Ray trial over ``workers`` data-parallel processes: a Ray Train ``TorchTrainer``
    inside this Tune trial (gloo on CPUs, nccl on GPUs). Rank 0's reports reach Ray Tune, so
    the scheduler sees the epochs; a stopped trial takes its workers with it, and the driver
    removes their placement group (:meth:`ArchspaceSearch.on_trial_complete`)."""
    from ray.train import FailureConfig as TrainFailures
    from ray.train import RunConfig as TrainRunConfig
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    reports = _Reports(tune.report, study, config)
    try:
        reports.resolve()  # a point the workers cannot resolve fails here, with its message
        trainer = TorchTrainer(
            _parallel_worker,
            train_loop_config={"config": config, "study": study, "run_dir": run_dir, "trial_id": trial_id,
                               "threads": max(1, int(cpus))},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0,
                                         resources_per_worker={"CPU": cpus, **({"GPU": gpus} if gpus else {})}),
            torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo"),
            run_config=TrainRunConfig(name=f"ray-{trial_id}", storage_path=str(Path(run_dir) / "ray-train"),
                                      callbacks=[TuneReportCallback()],
                                      # a lost worker ends the attempt; Ray Tune retries the trial, which resumes
                                      failure_config=TrainFailures(max_failures=0)),
        )
        trainer.fit()
    except Exception as exc:  # noqa: BLE001 - recorded in the store as a failed trial
        failures = getattr(exc, "worker_failures", None) or {}
        cause = next(iter(failures.values()), None) if isinstance(failures, dict) else None
        cause = cause if isinstance(cause, BaseException) else exc
        if type(cause).__module__.split(".")[0] == "ray" and not isinstance(cause, SpecError):
            raise  # a worker or its node was lost: Ray Tune retries the trial, which resumes
        reports.failed(_first_line(cause))


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
    groups: set[str] = field(default_factory=set)  # placement groups of its data-parallel workers


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
    at_once: int | None = None  # trials running at once (None: as many as Ray places)
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
            if st.at_once is not None and len(st.live) >= st.at_once:
                return None  # as many data-parallel trials as the cluster holds are running
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
        if result.get("placement_group"):
            live.groups.add(result["placement_group"])
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
            _release(live.groups)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        st = self._arch
        live = st.live.pop(trial_id, None)
        if live is None:
            return
        if (result or {}).get("placement_group"):
            live.groups.add(result["placement_group"])
        _release(live.groups)  # a stopped data-parallel trial's workers would keep their resources
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
        if result.get("workers"):  # a data-parallel trial: its ranks and where they ran
            attrs["workers"] = json.loads(result["workers"])
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
        trials = st.ostudy.get_trials(deepcopy=False)
        frozen = next(t for t in reversed(trials) if t.user_attrs.get("ray_trial_id") == ray_id)
        if st.on_trial is not None:
            st.on_trial(st.ostudy, frozen, trials)
        return frozen


def _release(groups: set[str]) -> None:
    """Remove the placement groups of a trial's data-parallel workers that still hold resources.

    Ray Train removes its workers' group when training ends; a trial that Ray Tune stops (the
    scheduler pruned it, or its node was lost) takes its Train controller down with it, and
    the group would hold its CPUs and GPUs until the driver exits (Ray Train's own cleaner
    needs the state API of a cluster with a dashboard)."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    for hex_id in list(groups):
        group = PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id)))
        try:
            if placement_group_table(group).get("state") not in (None, "REMOVED"):
                remove_placement_group(group)
        except Exception:  # noqa: BLE001 - already gone
            pass
        groups.discard(hex_id)


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


def check_resources(study: Study, nodes: list[dict[str, float]]) -> None:
    """Refuse a trial that can never be placed: more CPUs or GPUs than the cluster's nodes
    (``Resources`` of each live node) have together, or a worker bigger than every node."""
    r = study.spec.resources
    for kind, name, each in (("CPU", "cpus_per_worker", r.cpus_per_worker), ("GPU", "gpus_per_worker", r.gpus_per_worker)):
        if each <= 0:
            continue
        total = sum(float(n.get(kind, 0)) for n in nodes)
        biggest = max((float(n.get(kind, 0)) for n in nodes), default=0.0)
        asked = (f"{r.workers} workers x {each:g} {kind}s = {r.workers * each:g}" if r.workers > 1
                 else f"{each:g}")
        if r.workers * each > total:
            raise SpecError.single(f"resources.{name}", f"each trial asks for {asked} {kind}s but the Ray cluster "
                                                        f"has {total:g}")
        if each > biggest:
            raise SpecError.single(f"resources.{name}", f"each worker asks for {each:g} {kind}s but no node of the "
                                                        f"Ray cluster has more than {biggest:g}")


def _trainable(study: Study, run_dir: Path, nodes: list[dict[str, float]]) -> tuple[Any, int | None]:
    """The Tune trainable with its resources, and how many trials may run at once (``None``:
    as many as fit). A data-parallel trial is a Tune trial that asks for almost nothing
    (its TorchTrainer places the workers), so the number at once is what the workers fit."""
    r = study.spec.resources
    if r.workers == 1:
        resources = {"cpu": r.cpus_per_worker, "gpu": r.gpus_per_worker}
        fn = tune.with_parameters(trainable, study=study, run_dir=str(run_dir), threads=max(1, int(r.cpus_per_worker)))
        return tune.with_resources(fn, resources), None
    fits = []
    for kind, each in (("CPU", r.cpus_per_worker), ("GPU", r.gpus_per_worker)):
        if each > 0:
            fits.append(int(sum(math.floor(float(n.get(kind, 0)) / each) for n in nodes) // r.workers))
    fn = tune.with_parameters(parallel_trainable, study=study, run_dir=str(run_dir), workers=r.workers,
                              cpus=r.cpus_per_worker, gpus=r.gpus_per_worker)
    return tune.with_resources(fn, {"cpu": 0, "memory": 1}), max(1, min(fits))


def _live_nodes() -> list[dict[str, float]]:
    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def run_ray(study: Study, storage_url: str, run_dir: Path, budget: int, *, address: str | None = None,
            on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial, list], None] | None = None,
            on_epoch: Callable[[str, dict], None] | None = None,
            prepare: Callable[[], None] | None = None) -> optuna.Study:
    """Run Ray Tune trials until the study's store holds ``budget`` trained trials.

    Args:
        storage_url: the Optuna store (the same one the Optuna backend uses).
        address: the Ray cluster this machine is a node of (``auto``, ``host:6379``); ``None``
            starts Ray on this machine. A Ray session already open in this process is used as
            it is (and left open).
        on_trial: called with (Optuna study, frozen trial, the study's trials as just read)
            after each trial is written.
        on_epoch: called with (Ray trial id, epoch metrics) as epochs are reported.
        prepare: called once Ray is reached and the resources are checked, before the store
            is opened (the caller writes its run directory there).

    Raises:
        SpecError: the space is (nearly) empty, Ray cannot be reached (or is a Ray Client
            address), or a trial asks for more resources than the cluster has.
        RuntimeError: several trials in a row failed.
    """
    run_dir = Path(run_dir).resolve()
    if ray is None:  # pragma: no cover
        raise SpecError.single("backend", "the ray backend needs Ray Tune: pip install 'archspace[search]'")
    if address and address.startswith("ray://"):
        raise SpecError.single("--address", "Ray Client addresses (ray://) are not supported: run the search on a "
                                            "node of the cluster, with --address auto")
    with _ray_errors_to_stderr():  # stdout carries --format json
        started = _start_ray(address)
        try:
            nodes = _live_nodes()
            check_resources(study, nodes)  # before anything is written
            if prepare is not None:
                prepare()
            ostudy = create_study(study, open_storage(storage_url))
            trained = count_trained(ostudy)
            if trained >= budget:
                return ostudy
            fn, at_once = _trainable(study, run_dir, nodes)
            objectives = list(study.spec.objectives)
            metric = objectives[0] if len(objectives) == 1 else objectives
            mode = "min" if len(objectives) == 1 else ["min"] * len(objectives)
            sampler = ostudy.sampler  # the study's sampler, its seed offset as the Optuna backend's (resume draws anew)
            state = _State(study, ostudy, budget, trained, run_dir, on_trial=on_trial, on_epoch=on_epoch,
                           at_once=at_once)
            for t in ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
                if t.user_attrs.get("key") and t.user_attrs.get("status") in ("complete", "diverged", "pruned"):
                    state.done_keys.setdefault(t.user_attrs["key"], t)
            searcher = ArchspaceSearch(state, sampler, _searcher_storage(study, ostudy), metric, mode)
            tuner = tune.Tuner(
                fn,
                # the searcher ends the run (budget reached); reused actors skip a worker start per trial
                # (not for data-parallel trials: a stopped trial's actor must go, with its workers)
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=make_scheduler(study), num_samples=-1,
                                            reuse_actors=at_once is None, trial_dirname_creator=_trial_dirname),
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
