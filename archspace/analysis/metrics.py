"""Study analysis as pure functions: EDFs, gaps, scatter data, rankings.

Inputs are plain sequences (errors in [0, 1], a diverged run counts as 1.0 = 100%);
outputs are numpy arrays or plain dicts. Drawing lives in :mod:`archspace.analysis.plots`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

DIVERGED_ERROR = 1.0


def _errors(errors: Iterable[float | None]) -> np.ndarray:
    """Errors as an array; ``None`` / NaN / inf (a diverged run) count as 100% error."""
    out = np.array([DIVERGED_ERROR if e is None else float(e) for e in errors], dtype=float)
    out[~np.isfinite(out)] = DIVERGED_ERROR
    return out


def edf(errors: Sequence[float | None], weights: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Error distribution function: sorted errors ``e`` and ``F(e)`` = (weighted) fraction of
    runs with error ≤ e.

    Raises:
        ValueError: no errors, or weights of another length or not positive.
    """
    e = _errors(errors)
    if e.size == 0:
        raise ValueError("edf needs at least one error")
    w = np.ones_like(e) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != e.shape:
        raise ValueError(f"edf got {e.size} errors but {w.size} weights")
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError("edf weights must be non-negative with a positive sum")
    order = np.argsort(e, kind="stable")
    return e[order], np.cumsum(w[order]) / w.sum()


def delta_edf(errors: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    """EDF of Δerror = error − the best error of the same model (the ViT_C figures)."""
    e = _errors(errors)
    if e.size == 0:
        raise ValueError("delta_edf needs at least one error")
    return edf(e - e.min())


def complexity_weights(complexities: Sequence[float], bins: int = 8) -> np.ndarray:
    """Weights making the complexity distribution uniform over log-spaced bins.

    Each non-empty bin gets the same total weight, shared equally by its runs, so that a
    model family sampled more often at some sizes does not dominate its EDF.

    Raises:
        ValueError: empty input, non-positive complexity, or ``bins < 1``.
    """
    c = np.asarray(complexities, dtype=float)
    if c.size == 0 or bins < 1:
        raise ValueError("complexity_weights needs complexities and at least one bin")
    if np.any(c <= 0):
        raise ValueError("complexities must be positive")
    lo, hi = np.log(c.min()), np.log(c.max())
    if hi == lo:
        return np.full(c.size, 1.0 / c.size)
    idx = np.minimum(((np.log(c) - lo) / (hi - lo) * bins).astype(int), bins - 1)
    counts = np.bincount(idx, minlength=bins)
    filled = np.count_nonzero(counts)
    return 1.0 / (filled * counts[idx])


@dataclass(frozen=True)
class Scatter:
    """Error against one hyperparameter, with the best run marked."""

    x: np.ndarray
    error: np.ndarray
    best_index: int

    @property
    def best_x(self) -> float:
        return float(self.x[self.best_index])

    @property
    def best_error(self) -> float:
        return float(self.error[self.best_index])


def scatter(values: Sequence[float], errors: Sequence[float | None]) -> Scatter:
    """Error vs a hyperparameter (lr, wd, or lr·wd) and the index of the best run."""
    x, e = np.asarray(values, dtype=float), _errors(errors)
    if x.shape != e.shape or x.size == 0:
        raise ValueError(f"scatter needs as many values as errors, got {x.size} and {e.size}")
    return Scatter(x, e, int(np.argmin(e)))


def length_gaps(runs: Iterable[Mapping[str, Any]]) -> dict[str, dict[int, float]]:
    """Training-length stability: for each model and schedule length, best error minus the
    best error at that model's longest schedule (runs: ``model``, ``epochs``, ``error``)."""
    best: dict[str, dict[int, float]] = defaultdict(dict)
    for r in runs:
        err = _errors([r["error"]])[0]
        m, ep = r["model"], int(r["epochs"])
        best[m][ep] = min(best[m].get(ep, np.inf), err)
    out = {}
    for m, by_len in best.items():
        ref = by_len[max(by_len)]
        out[m] = {ep: float(err - ref) for ep, err in sorted(by_len.items())}
    return out


def optimizer_gaps(runs: Iterable[Mapping[str, Any]], first: str = "adamw", second: str = "sgd"
                   ) -> dict[str, float]:
    """Optimizer stability: per model, best error with ``second`` minus best with ``first``
    (positive: ``second`` is worse). Runs: ``model``, ``optimizer``, ``error``."""
    best: dict[str, dict[str, float]] = defaultdict(dict)
    for r in runs:
        err = _errors([r["error"]])[0]
        best[r["model"]][r["optimizer"]] = min(best[r["model"]].get(r["optimizer"], np.inf), err)
    return {m: float(b[second] - b[first]) for m, b in best.items() if first in b and second in b}


def generalization(runs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per layout: final train loss, eval error and eval − train error gap of its best run
    (by eval error). Runs: ``model``, ``train_loss``, ``train_error``, ``eval_error``; the gap
    is ``None`` where the run has no train error."""
    best: dict[str, Mapping[str, Any]] = {}
    for r in runs:
        if r.get("eval_error") is None:
            continue
        if r["model"] not in best or r["eval_error"] < best[r["model"]]["eval_error"]:
            best[r["model"]] = r
    return {m: {"train_loss": float(r["train_loss"]), "eval_error": float(r["eval_error"]),
                "gap": None if r.get("train_error") is None else float(r["eval_error"] - r["train_error"])}
            for m, r in best.items()}


def ranking(errors_by_model: Mapping[str, Sequence[float | None]], n_boot: int = 1000, seed: int = 0,
            level: float = 0.9) -> list[dict[str, Any]]:
    """Models ranked by best error, with bootstrap intervals of the best error and the rank.

    Each bootstrap round resamples every model's runs with replacement and ranks the
    resampled best errors. The interval of the best error is one-sided by construction: a
    resampled minimum is never below the observed one, so ``best_lo`` ≥ ``best`` and the
    interval says how much the best rests on a few lucky runs. A model with a single run
    has no interval (its resamples are all that run): its ``best_lo``/``best_hi`` and
    ``rank_lo``/``rank_hi`` are ``None``; it still takes part in the other models' ranks.

    Returns:
        One row per model, best first: ``model``, ``best``, ``best_lo``/``best_hi``
        (the ``(1 − level)/2`` and ``(1 + level)/2`` quantiles of the resampled best),
        ``rank``, ``rank_lo``/``rank_hi`` (1 = best), ``runs``.

    Raises:
        ValueError: no model with runs, ``n_boot < 1`` or ``level`` outside (0, 1).
    """
    models = [m for m, e in errors_by_model.items() if len(e)]
    if not models:
        raise ValueError("ranking needs at least one model with runs")
    if n_boot < 1:
        raise ValueError(f"ranking needs n_boot >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"ranking needs 0 < level < 1, got {level}")
    rng = np.random.default_rng(seed)
    errs = {m: _errors(errors_by_model[m]) for m in models}
    boots = np.empty((n_boot, len(models)))
    for j, m in enumerate(models):
        e = errs[m]
        boots[:, j] = rng.choice(e, size=(n_boot, e.size), replace=True).min(axis=1)
    ranks = boots.argsort(axis=1).argsort(axis=1) + 1
    a = (1 - level) / 2
    rows = []
    for j, m in enumerate(models):
        row = {"model": m, "best": float(errs[m].min()), "runs": int(errs[m].size),
               "best_lo": None, "best_hi": None, "rank_lo": None, "rank_hi": None}
        if errs[m].size > 1:
            row.update(best_lo=float(np.quantile(boots[:, j], a)), best_hi=float(np.quantile(boots[:, j], 1 - a)),
                       rank_lo=int(np.quantile(ranks[:, j], a)), rank_hi=int(np.quantile(ranks[:, j], 1 - a)))
        rows.append(row)
    rows.sort(key=lambda r: r["best"])
    for i, r in enumerate(rows, start=1):
        r["rank"] = i
    return rows


def edf_bias(sampler: str | None, pruner: str | None) -> str | None:
    """Why EDFs drawn by this sampler and pruner are not an unbiased estimate of the space's
    error distribution, or ``None`` (a uniform sampler, random or grid, and no pruner)."""
    causes = []
    if sampler in ("tpe", "nsga2"):
        causes.append(f"the sampler is {sampler}, which is not uniform (it draws more points where earlier trials "
                      "did well)")
    if pruner not in (None, "none"):
        causes.append(f"the pruner is {pruner}, which stops trials early and leaves the pruned ones out, so the "
                      "EDFs hold only the runs that survived it")
    if not causes:
        return None
    return ("These EDFs are not an unbiased estimate of the space's error distribution: " + "; and ".join(causes)
            + ". An EDF estimates a design space only from points sampled uniformly and all trained to the same "
              "budget (Radosavovic et al., \"On Network Design Spaces for Visual Recognition\", 2019); read these "
              "as the distribution of the runs this study chose and finished.")


def size_spread(sizes: Sequence[float]) -> float:
    """How far apart the trained networks' sizes are: max / min (1.0 = all the same size).

    Raises:
        ValueError: no sizes, or a size that is not positive.
    """
    s = np.asarray(sizes, dtype=float)
    if s.size == 0:
        raise ValueError("size_spread needs at least one size")
    if np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise ValueError("size_spread needs positive finite sizes")
    return float(s.max() / s.min())


# trial statuses, in the order the per-variant counts list them; ``complete`` and ``diverged``
# are the runs trained to the study's budget (a diverged run counts as 100% error)
STATUSES = ("complete", "diverged", "pruned", "failed", "duplicate", "rejected", "surplus", "running", "waiting")
COMPLETED = ("complete", "diverged")


def variant_summary(trials: Iterable[Mapping[str, Any]], variants: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Per variant: trials by status, best and median error and params range of its completed
    runs, and, where it has none, why.

    Args:
        trials: mappings with ``variant``, ``status`` and, for completed runs (status
            ``complete`` or ``diverged``), ``error`` (``None`` / non-finite = 100%) and
            ``params`` (the trained network's, ``None`` or 0 where unknown).
        variants: every value of the group-by choice, in order; a variant without trials
            is kept (reason "not drawn yet"), variants only seen in ``trials`` follow, sorted.

    Returns:
        ``{variant: {"completed" (complete + diverged), "diverged", "pruned", "failed",
        "duplicate", "rejected", "surplus", "running", "waiting", "best", "median",
        "params_min", "params_max", "reason"}}`` (``best`` … ``params_max`` are ``None``
        without a completed run, ``reason`` is ``None`` with one). A status outside
        :data:`STATUSES` gets a count of its own.
    """
    trials = list(trials)
    order = list(dict.fromkeys(str(v) for v in variants))
    order += sorted({str(t["variant"]) for t in trials} - set(order))
    out: dict[str, dict[str, Any]] = {}
    for v in order:
        mine = [t for t in trials if str(t["variant"]) == v]
        counts = {s: 0 for s in STATUSES}
        for t in mine:
            counts[t["status"]] = counts.get(t["status"], 0) + 1
        done = [t for t in mine if t["status"] in COMPLETED]
        errors = _errors(t.get("error") for t in done)
        sizes = [t["params"] for t in done if t.get("params")]
        row: dict[str, Any] = {"completed": len(done), **{s: n for s, n in counts.items() if s != "complete"}}
        row.update(best=float(errors.min()) if done else None, median=float(np.median(errors)) if done else None,
                   params_min=min(sizes) if sizes else None, params_max=max(sizes) if sizes else None)
        if done:
            row["reason"] = None
        elif not mine:
            row["reason"] = "not drawn yet"
        else:
            row["reason"] = "no completed trial: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        out[v] = row
    return out
