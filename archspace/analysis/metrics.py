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


def generalization(runs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per layout: final train loss, eval error and train/eval error gap of its best run
    (by eval error). Runs: ``model``, ``train_loss``, ``train_error``, ``eval_error``."""
    best: dict[str, Mapping[str, Any]] = {}
    for r in runs:
        if r.get("eval_error") is None:
            continue
        if r["model"] not in best or r["eval_error"] < best[r["model"]]["eval_error"]:
            best[r["model"]] = r
    return {m: {"train_loss": float(r["train_loss"]), "eval_error": float(r["eval_error"]),
                "gap": float(r["eval_error"] - r.get("train_error", 0.0))} for m, r in best.items()}


def ranking(errors_by_model: Mapping[str, Sequence[float | None]], n_boot: int = 1000, seed: int = 0,
            level: float = 0.9) -> list[dict[str, Any]]:
    """Models ranked by best error, with bootstrap intervals of the best error and the rank.

    Each bootstrap round resamples every model's runs with replacement and ranks the
    resampled best errors.

    Returns:
        One row per model, best first: ``model``, ``best``, ``best_lo``/``best_hi``,
        ``rank``, ``rank_lo``/``rank_hi`` (1 = best), ``runs``.
    """
    models = [m for m, e in errors_by_model.items() if len(e)]
    if not models:
        raise ValueError("ranking needs at least one model with runs")
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
        rows.append({"model": m, "best": float(errs[m].min()), "runs": int(errs[m].size),
                     "best_lo": float(np.quantile(boots[:, j], a)), "best_hi": float(np.quantile(boots[:, j], 1 - a)),
                     "rank_lo": int(np.quantile(ranks[:, j], a)), "rank_hi": int(np.quantile(ranks[:, j], 1 - a))})
    rows.sort(key=lambda r: r["best"])
    for i, r in enumerate(rows, start=1):
        r["rank"] = i
    return rows
