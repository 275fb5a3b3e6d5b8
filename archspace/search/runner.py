"""Running a study: checks before anything is written, dry runs, workers, results.

``search(study, ...)`` is what ``archspace search`` calls. Everything that can be wrong
with the input (study, space, recipe, storage, an empty space) is found before the store
is touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna

from .._cpus import share
from ..errors import SpecError
from .space import Point
from .study import Study
from .variants import DESIGN_CHOICES, check_variants

PREFLIGHT_POINTS = 64


def _in_memory(study: Study, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=study.spec.sampler.seed),
                               directions=["minimize"] * len(study.spec.objectives))


def sample_points(study: Study, n: int, sampler: optuna.samplers.BaseSampler | None = None
                  ) -> list[tuple[dict[str, Any], Point | None, str | None]]:
    """``n`` points drawn by ``sampler`` (random by default) in memory: (sampled values,
    point or None, why it is rejected or None). Nothing is trained or stored."""
    from .optuna_backend import OptunaSuggester

    mem = _in_memory(study, sampler)
    out: list[tuple[dict[str, Any], Point | None, str | None]] = []

    class _Drawn(Exception):
        pass

    def objective(trial: optuna.trial.Trial) -> float:
        try:
            point = study.space.resolve(OptunaSuggester(trial))
            out.append((dict(trial.params), point, point.rejected))
            if point.rejected is None:  # what a balanced sampler counts as trained
                trial.set_user_attr("status", "complete")
        except SpecError as exc:
            out.append((dict(trial.params), None, "; ".join(exc.lines())))
        raise _Drawn()

    mem.optimize(objective, n_trials=n, catch=(_Drawn,))
    return out


def preflight(study: Study, n: int = PREFLIGHT_POINTS) -> None:
    """Raise if the recipe's data cannot be used, if variants the study compares are one
    network (:func:`check_variants`), or if no sampled point of the space can be trained
    (constraints, matching, shapes)."""
    study.check_recipe()
    check_variants(study)
    if study.spec.sampler.kind == "grid":
        study.grid()  # every choice must be a list or an int range
    points = sample_points(study, n)
    if not any(reason is None for _, _, reason in points):
        reasons = sorted({reason for _, _, reason in points})
        raise SpecError.single("space", f"none of {n} sampled points can be trained; e.g. {reasons[0]}"
                               + (f" (and {len(reasons) - 1} other reasons)" if len(reasons) > 1 else ""))


def dry_run(study: Study, n: int, max_draws: int | None = None) -> list[dict[str, Any]]:
    """The points the study's sampler would draw first, with their analytic cost: draws go on
    until ``n`` distinct trainable points (what a fresh run trains), at most ``max_draws``
    (default ``4 n + 64``). A draw whose point an earlier draw already has is marked
    ``duplicate`` with ``duplicate_of`` (its row index): a run would not train it.

    Raises:
        SpecError: the fixed recipe's data cannot be used (see :meth:`Study.check_recipe`).
    """
    from .optuna_backend import make_sampler

    study.check_recipe()
    check_variants(study)
    limit = max_draws if max_draws is not None else 4 * n + 64
    rows: list[dict[str, Any]] = []
    first: dict[str, int] = {}
    distinct = 0
    drawn = 0
    while distinct < n and drawn < limit:
        batch = sample_points(study, min(limit, max(n, 2 * drawn)), make_sampler(study))[drawn:]
        if not batch:
            break
        for sampled, point, reason in batch:
            drawn += 1
            row: dict[str, Any] = {"sampled": sampled, "status": "rejected" if reason else "ok", "reason": reason}
            if point is not None:
                row.update({k: point.cost[k] for k in ("params", "flops", "acts")}, match_scale=point.match_scale,
                           key=point.key, stages=[f"{s.block}:{s.depth}x{s.width}" for s in point.spec.stages])
                if reason is None and point.key in first:
                    row.update(status="duplicate", duplicate_of=first[point.key])
                elif reason is None:
                    first[point.key] = len(rows)
                    distinct += 1
            rows.append(row)
            if distinct >= n:
                break
    return rows



def edf_bias(study: Study) -> str | None:
    """The warning for a study that compares variants of a design choice (layout, base) by
    their EDFs while its sampler or pruner biases them, or ``None``."""
    from ..analysis.metrics import edf_bias as why

    grouped = [c for c in DESIGN_CHOICES if c in study.space.spec.choices]
    reason = why(study.spec.sampler.kind, study.spec.pruner.kind) if grouped else None
    if reason is None:
        return None
    return (f"this study compares {grouped[0]}s; {reason[0].lower()}{reason[1:]} For EDF comparisons use "
            f"sampler: random or grid, and pruner: none.")


def size_spread(params: list[float]) -> dict[str, float] | None:
    """Smallest and largest params of the trained networks and their ratio (max / min)."""
    from ..analysis.metrics import size_spread as ratio

    values = [float(p) for p in params if p]
    if not values:
        return None
    return {"min": min(values), "max": max(values), "ratio": ratio(values)}


def worker_devices(devices: str | None, workers: int, ranks: int = 1) -> list[str | None]:
    """The device of each of ``workers`` workers: ``devices`` (comma-separated: ``0,1`` on this
    machine's accelerator, or names such as ``cuda:1``, ``cpu``) dealt round-robin; by default
    every accelerator device of this machine, or none (the trials' own ``train.device``).
    With ``ranks`` data-parallel ranks per trial, each worker gets ``ranks`` distinct devices
    (comma-separated), dealt in blocks.

    Raises:
        SpecError: on ``--devices``: an empty entry or a device this machine lacks; on
            ``resources.workers``: fewer devices than ranks.
    """
    from ..train.device import accelerator, resolve_device

    found = accelerator()
    if devices is None:
        if found is None:
            return [None] * workers
        count = torch_device_count()
        names = [f"{found.type}:{i}" for i in range(count)]
    else:
        names = []
        for part in devices.split(","):
            part = part.strip()
            if not part:
                raise SpecError.single("--devices", f"an empty entry in {devices!r} (e.g. 0,1 or cuda:0,cuda:1)")
            names.append(f"{found.type if found is not None else 'cuda'}:{part}" if part.isdigit() else part)
        for name in names:
            try:
                resolve_device(name)
            except SpecError as exc:
                raise SpecError.single("--devices", exc.problems[0].message) from None
    if ranks == 1:
        return [names[i % len(names)] for i in range(workers)]
    if len(names) < ranks:
        raise SpecError.single("resources.workers", f"each trial runs {ranks} data-parallel ranks, one device each, "
                                                    f"but {len(names)} devices are {'given' if devices else 'here'}")
    return [",".join(names[(i * ranks + j) % len(names)] for j in range(ranks)) for i in range(workers)]


def check_devices(study: Study) -> None:
    """On the optuna backend, trials train on this machine: refuse GPUs it does not have."""
    import math

    from ..train.device import accelerator

    r = study.spec.resources
    need = math.ceil(r.trial_gpus)
    have = torch_device_count() if need and accelerator() is not None else 0
    if need > have:
        asked = f"{r.workers} workers x {r.gpus_per_worker:g} GPUs = {r.trial_gpus:g}" if r.workers > 1 \
            else f"{r.gpus_per_worker:g}"
        raise SpecError.single("resources.gpus_per_worker", f"each trial asks for {asked} GPUs but this machine has "
                                                            f"{have} (the optuna backend trains here; the ray backend "
                                                            "spreads trials over a cluster)")


def torch_device_count() -> int:
    import torch

    return torch.accelerator.device_count() if hasattr(torch, "accelerator") else torch.cuda.device_count()


def spawn_workers(argv: list[str], n: int, storage: str, devices: list[str | None] | None = None
                  ) -> list[subprocess.Popen]:
    """Start ``n`` more worker processes on the same storage (the same command line); worker
    ``i`` trains on ``devices[i]`` when given."""
    from .optuna_backend import DEVICE_ENV

    exe = [sys.executable, "-m", "archspace.cli.app", "search"]
    procs = []
    for i in range(n):
        env = dict(os.environ, ARCHSPACE_WORKER="1", OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(share(n + 1)))
        if devices and devices[i]:
            env[DEVICE_ENV] = devices[i]
        procs.append(subprocess.Popen([*exe, *argv, "--workers", "1", "--storage", storage, "--format", "json"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    return procs


def trial_records(ostudy: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial] | None = None
                  ) -> list[dict[str, Any]]:
    """One plain record per trial (what analysis and ``--format json`` use); ``trials``: the
    study's trials as just read, if the caller has them (else read here)."""
    from .optuna_backend import trial_status

    rows = []
    for t in ostudy.get_trials(deepcopy=False) if trials is None else trials:
        a = t.user_attrs
        rows.append({
            "number": t.number, "status": trial_status(t), "values": t.values, "params": t.params,
            "cost": a.get("cost"), "key": a.get("key"), "eval_error": a.get("eval_error"),
            "train_loss": a.get("train_loss"), "epochs": len(a.get("history") or []), "reason": a.get("reason"),
            "duplicate_of": a.get("duplicate_of"), "backend": a.get("backend", "optuna"),
            "run_dir": a.get("run_dir"), "resumed_after_epoch": a.get("resumed_after_epoch"),
        })
    return rows


def summarize(ostudy: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial] | None = None) -> dict[str, Any]:
    """Counts per status, the best completed trial, the size spread of the trained networks
    and every trial's record (of ``trials``, the study's trials as just read, if given).
    Duplicates count as such, never as results."""
    records = trial_records(ostudy, trials)
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    finished = [r for r in records if r["status"] in ("complete", "diverged") and r["values"]]
    best = min(finished, key=lambda r: r["values"][0]) if finished else None
    spread = size_spread([r["cost"]["params"] for r in records
                          if r["status"] in ("complete", "diverged", "pruned") and r["cost"]])
    return {"study": ostudy.study_name, "counts": counts, "best": best, "params_spread": spread, "trials": records}


def check_inputs(study: Study, storage: str | None, run_dir: Path | None = None) -> None:
    """Every check before anything is written: the run directory belongs to this store and
    study, the storage is reachable, the space is not empty, the grid is well formed."""
    from .optuna_backend import check_reachable
    from .rundir import check_run_dir, check_store_file, default_storage

    if storage is not None:
        check_store_file(storage)
    elif run_dir is not None:
        check_store_file(default_storage(run_dir), "--out")
    if run_dir is not None:
        check_run_dir(run_dir, storage or default_storage(run_dir), study.name)
    if storage is not None:
        check_reachable(storage)
    preflight(study)


def search(study: Study, *, run_dir: Path, storage: str | None = None, trials: int | None = None,
           backend: str | None = None, workers: int = 1, argv: list[str] | None = None,
           on_trial: Callable | None = None, on_epoch: Callable | None = None, address: str | None = None,
           checked: bool = False, devices: str | None = None) -> dict[str, Any]:
    """Run (or resume) a study until it holds its budget of trained trials.

    Args:
        devices: Devices dealt round-robin to the workers of the optuna backend (see
            :func:`worker_devices`); several workers on one device pack small trials onto it.
        checked: :func:`check_inputs` has already run.
    """
    from .optuna_backend import close_storage, run_worker
    from .rundir import default_storage, write_manifest

    budget = study.n_trials(trials)
    backend = backend or study.spec.backend
    url = storage or default_storage(run_dir)
    if not checked:
        check_inputs(study, storage, run_dir)  # before anything is written
    # a spawned worker has its device in its environment; here, worker 0 is this process
    if backend == "ray":
        from .ray_backend import run_ray

        def prepare() -> None:  # once the cluster can hold a trial
            run_dir.mkdir(parents=True, exist_ok=True)
            write_manifest(run_dir, url, study.name)

        ostudy = run_ray(study, url, run_dir.resolve(), budget, address=address, on_trial=on_trial,
                         on_epoch=on_epoch, prepare=prepare)
        return summarize(ostudy)
    check_devices(study)
    ranks = study.spec.resources.workers
    dealt = [None] * workers if os.environ.get("ARCHSPACE_WORKER") == "1" else worker_devices(devices, workers, ranks)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(run_dir, url, study.name)
    run_dir = run_dir.resolve()  # trial records name their directories absolutely
    procs = spawn_workers(argv or [], workers - 1, url, dealt[1:]) if workers > 1 else []
    threads = share(workers)  # a started worker's budget is its share; with ranks per trial: each rank's, set at launch
    import torch

    torch.set_num_threads(threads)
    try:
        ostudy = run_worker(study, url, run_dir, budget, on_trial=on_trial, on_epoch=on_epoch, device=dealt[0])
    except BaseException:  # interrupted (SIGTERM, Ctrl-C) or failed: stop the workers cleanly too
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    for p in procs:
        _, err = p.communicate()
        if p.returncode not in (0, None):
            raise RuntimeError(f"a worker failed (exit {p.returncode}): {err.decode().strip()[-500:]}")
    summary = summarize(ostudy)
    close_storage(ostudy._storage)  # an SQLite store is one file again (see optuna_backend._sqlite_pragmas)
    return summary
