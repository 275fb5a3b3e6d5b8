"""Drawing the analyses (matplotlib, PNG). Each function takes the analysis functions'
outputs and a path, writes one figure and returns the path."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .metrics import Scatter


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(labels) -> dict[str, str]:
    """The same colour for the same variant in every plot (by sorted name)."""
    return {label: f"C{i % 10}" for i, label in enumerate(sorted(labels))}


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return path


def plot_edfs(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, *, title: str,
              xlabel: str = "top-1 error (%)", percent: bool = True) -> Path:
    """One step curve per variant: x (errors) against F(x)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    scale = 100.0 if percent else 1.0
    colors = _colors(curves)
    for label, (x, f) in sorted(curves.items()):
        xs = np.concatenate([[x[0]], x]) * scale
        fs = np.concatenate([[0.0], f])
        ax.step(xs, fs, where="post", label=f"{label} (n={len(x)})", linewidth=1.8, color=colors[label])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("cumulative prob.")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_scatters(panels: Mapping[str, Mapping[str, Scatter]], path: Path, *, title: str) -> Path:
    """One panel per hyperparameter (lr, wd, lr·wd), one colour per variant, best marked ★."""
    plt = _plt()
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    colors = _colors({v for by_variant in panels.values() for v in by_variant})
    for ax, (xname, by_variant) in zip(axes[0], panels.items()):
        for variant, s in sorted(by_variant.items()):
            color = colors[variant]
            ax.scatter(s.x, 100 * s.error, s=14, alpha=0.7, color=color, label=variant)
            ax.scatter([s.best_x], [100 * s.best_error], marker="*", s=160, color=color, edgecolor="black",
                       zorder=3)
        ax.set_xscale("log")
        # a range under a decade gets matplotlib's minor labels (3×10⁻⁴, 4×10⁻⁴, ...), which overlap
        # at this width: the major ones and the grid suffice
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xname)
        ax.set_ylabel("top-1 error (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_generalization(points: Mapping[str, Mapping[str, float]], path: Path, *, title: str) -> Path:
    """Final train loss against eval error, one point per layout (CoAtNet Figure 1), named by
    the legend (labels beside the points overlap where layouts land close together)."""
    import textwrap

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    colors = _colors(points)
    for variant, p in sorted(points.items()):
        ax.scatter([p["train_loss"]], [100 * p["eval_error"]], s=60, color=colors[variant], label=variant,
                   edgecolor="black", linewidth=0.5, alpha=0.85)
    ax.margins(0.2)
    ax.set_xlabel("final train loss")
    ax.set_ylabel("eval top-1 error (%)")
    ax.set_title(textwrap.fill(title, 55), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_bars(values: Mapping[str, float], path: Path, *, title: str, ylabel: str,
              errors: Sequence[tuple[float, float] | None] | None = None) -> Path:
    """A bar per variant (gaps, best errors with their intervals).

    ``errors`` holds one ``(lo, hi)`` interval per bar, or ``None`` for a bar without one
    (a variant with a single run): that bar gets no error bar.

    Raises:
        ValueError: ``errors`` of another length than ``values``.
    """
    names = list(values)
    if errors is not None and len(errors) != len(names):
        raise ValueError(f"plot_bars got {len(names)} values but {len(errors)} intervals")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(values) + 2), 3.8))
    heights = [values[n] for n in names]
    colors = _colors(names)
    ax.bar(names, heights, color=[colors[n] for n in names])
    with_interval = [i for i in range(len(names)) if errors is not None and errors[i] is not None]
    if with_interval:
        lo = [heights[i] - errors[i][0] for i in with_interval]
        hi = [errors[i][1] - heights[i] for i in with_interval]
        ax.errorbar([names[i] for i in with_interval], [heights[i] for i in with_interval], yerr=[lo, hi],
                    fmt="none", ecolor="black", capsize=4)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10, wrap=True)
    ax.grid(alpha=0.3, axis="y")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    return _save(fig, path)


def plot_lines(series: Mapping[str, Mapping[float, float]], path: Path, *, title: str, xlabel: str,
               ylabel: str) -> Path:
    """One line per variant over a numeric x (e.g. Δ error against schedule length)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    colors = _colors(series)
    for variant, pts in sorted(series.items()):
        xs = sorted(pts)
        ax.plot(xs, [pts[x] for x in xs], marker="o", color=colors[variant], label=variant)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
