"""Analysis functions against hand-computed values."""

import math

import numpy as np
import pytest

from archspace.analysis import (
    complexity_weights, delta_edf, edf, generalization, length_gaps, optimizer_gaps, ranking, scatter,
)


def test_edf_by_hand():
    x, f = edf([0.3, 0.1, 0.2, 0.2])
    assert x.tolist() == [0.1, 0.2, 0.2, 0.3]
    assert f.tolist() == [0.25, 0.5, 0.75, 1.0]


def test_diverged_runs_count_as_100_percent_error():
    x, f = edf([0.2, None, float("nan"), math.inf])
    assert x.tolist() == [0.2, 1.0, 1.0, 1.0]
    assert f[0] == 0.25


def test_delta_edf_subtracts_the_best_error():
    x, f = delta_edf([0.30, 0.25, 0.40])
    assert np.allclose(x, [0.0, 0.05, 0.15])
    assert np.allclose(f, [1 / 3, 2 / 3, 1.0])


def test_weighted_edf_and_complexity_weights():
    # complexities 1, 1, 1, 100 in 2 bins: the lone big model weighs as much as the three small ones
    w = complexity_weights([1, 1, 1, 100], bins=2)
    assert np.allclose(w, [1 / 6, 1 / 6, 1 / 6, 1 / 2])
    x, f = edf([0.1, 0.2, 0.3, 0.05], weights=w)
    assert x.tolist() == [0.05, 0.1, 0.2, 0.3]
    assert np.allclose(f, [0.5, 0.5 + 1 / 6, 0.5 + 2 / 6, 1.0])
    assert np.allclose(complexity_weights([5, 5]), [0.5, 0.5])


def test_edf_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        edf([])
    with pytest.raises(ValueError, match="weights"):
        edf([0.1, 0.2], weights=[1.0])
    with pytest.raises(ValueError, match="positive"):
        complexity_weights([0, 1])


def test_scatter_marks_the_best():
    s = scatter([1e-4, 1e-3, 1e-2], [0.4, 0.2, None])
    assert s.best_index == 1 and s.best_x == 1e-3 and s.best_error == 0.2
    assert s.error.tolist() == [0.4, 0.2, 1.0]


def test_length_and_optimizer_gaps_by_hand():
    runs = [{"model": "vit_p", "epochs": 50, "error": 0.30}, {"model": "vit_p", "epochs": 50, "error": 0.28},
            {"model": "vit_p", "epochs": 100, "error": 0.25}, {"model": "vit_c", "epochs": 50, "error": 0.22},
            {"model": "vit_c", "epochs": 100, "error": 0.21}]
    gaps = length_gaps(runs)
    assert gaps["vit_p"] == pytest.approx({50: 0.03, 100: 0.0})
    assert gaps["vit_c"] == pytest.approx({50: 0.01, 100: 0.0})
    opt = optimizer_gaps([{"model": "vit_p", "optimizer": "adamw", "error": 0.25},
                          {"model": "vit_p", "optimizer": "sgd", "error": None},
                          {"model": "vit_c", "optimizer": "adamw", "error": 0.21},
                          {"model": "vit_c", "optimizer": "sgd", "error": 0.23}])
    assert opt == pytest.approx({"vit_p": 0.75, "vit_c": 0.02})


def test_generalization_uses_each_layouts_best_run():
    g = generalization([{"model": "C-C-T-T", "train_loss": 0.5, "train_error": 0.1, "eval_error": 0.2},
                        {"model": "C-C-T-T", "train_loss": 0.4, "train_error": 0.05, "eval_error": 0.15},
                        {"model": "VIT_REL", "train_loss": 0.3, "train_error": 0.02, "eval_error": 0.3}])
    assert g["C-C-T-T"] == pytest.approx({"train_loss": 0.4, "eval_error": 0.15, "gap": 0.10})
    assert g["VIT_REL"]["gap"] == pytest.approx(0.28)


def test_ranking_orders_by_best_and_bootstraps_intervals():
    rows = ranking({"a": [0.1, 0.1, 0.1], "b": [0.5, 0.6], "c": [0.3]}, n_boot=200, seed=1)
    assert [r["model"] for r in rows] == ["a", "c", "b"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    a = rows[0]
    assert a["best_lo"] == a["best_hi"] == 0.1 and a["rank_lo"] == a["rank_hi"] == 1
    b = rows[2]
    assert 0.5 <= b["best_lo"] <= b["best_hi"] <= 0.6
    assert ranking({"a": [0.1, 0.2]}, seed=3) == ranking({"a": [0.1, 0.2]}, seed=3)
