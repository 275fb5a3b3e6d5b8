"""Analysis functions against hand-computed values."""

import math

import numpy as np
import pytest

from archspace.analysis import (
    complexity_weights, delta_edf, edf, generalization, length_gaps, optimizer_gaps, ranking, scatter, size_spread,
    variant_summary,
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


def test_generalization_gap_is_none_without_a_train_error():
    g = generalization([{"model": "a", "train_loss": 0.5, "train_error": None, "eval_error": 0.2}])
    assert g["a"] == {"train_loss": 0.5, "eval_error": 0.2, "gap": None}


def test_ranking_orders_by_best_and_bootstraps_intervals():
    rows = ranking({"a": [0.1, 0.1, 0.1], "b": [0.5, 0.6], "c": [0.3]}, n_boot=200, seed=1)
    assert [r["model"] for r in rows] == ["a", "c", "b"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    a = rows[0]
    assert a["best_lo"] == a["best_hi"] == 0.1 and a["rank_lo"] == a["rank_hi"] == 1
    b = rows[2]
    assert 0.5 <= b["best_lo"] <= b["best_hi"] <= 0.6
    assert ranking({"a": [0.1, 0.2]}, seed=3) == ranking({"a": [0.1, 0.2]}, seed=3)


def test_ranking_gives_a_single_run_no_interval():
    rows = ranking({"a": [0.1, 0.1, 0.1], "b": [0.5, 0.6], "c": [0.3]}, n_boot=200, seed=1)
    c = rows[1]
    assert c["model"] == "c" and c["runs"] == 1 and c["best"] == 0.3 and c["rank"] == 2
    assert c["best_lo"] is c["best_hi"] is c["rank_lo"] is c["rank_hi"] is None
    # the single run still takes part in the others' ranks: b is always behind a and c
    assert rows[2]["rank_lo"] == rows[2]["rank_hi"] == 3


def test_ranking_interval_of_the_best_only_reaches_upward():
    errors = [0.10, 0.12, 0.30, 0.31, 0.32, 0.33, 0.34, 0.35]
    (row,) = ranking({"a": errors}, n_boot=2000, seed=0)
    assert row["best"] == 0.10 and row["best_lo"] == 0.10  # a resample's best is never below the observed one
    assert row["best_hi"] > 0.10  # two lucky runs: a resample often misses both
    with pytest.raises(ValueError, match="n_boot"):
        ranking({"a": errors}, n_boot=0)
    with pytest.raises(ValueError, match="level"):
        ranking({"a": errors}, level=1.0)


def test_size_spread_is_max_over_min():
    assert size_spread([2.9e5, 3.0e5, 3.1e5]) == pytest.approx(3.1 / 2.9)
    assert size_spread([5]) == 1.0
    with pytest.raises(ValueError, match="at least one"):
        size_spread([])
    with pytest.raises(ValueError, match="positive"):
        size_spread([1.0, 0.0])


def test_variant_summary_counts_every_variant_and_says_why_one_has_no_result():
    trials = [{"variant": "C-C-C-C", "status": "complete", "error": 0.2, "params": 2.9e5},
              {"variant": "C-C-C-C", "status": "diverged", "error": None, "params": 3.0e5},
              {"variant": "C-C-C-C", "status": "duplicate", "error": 0.2, "params": 2.9e5},
              {"variant": "C-C-C-C", "status": "complete", "error": 0.4, "params": 2.9e5},
              {"variant": "C-C-T-T", "status": "pruned", "error": 0.9, "params": 3.1e5},
              {"variant": "C-C-T-T", "status": "pruned", "error": 0.8, "params": 3.1e5},
              {"variant": "C-C-T-T", "status": "failed"},
              {"variant": "odd", "status": "rejected"}]
    s = variant_summary(trials, ["C-C-C-C", "C-C-T-T", "C-T-T-T"])
    assert list(s) == ["C-C-C-C", "C-C-T-T", "C-T-T-T", "odd"]
    c = s["C-C-C-C"]
    assert (c["completed"], c["diverged"], c["duplicate"], c["pruned"]) == (3, 1, 1, 0)
    assert c["best"] == 0.2 and c["median"] == 0.4  # the diverged run is 100%, the duplicate is left out
    assert (c["params_min"], c["params_max"], c["reason"]) == (2.9e5, 3.0e5, None)
    t = s["C-C-T-T"]
    assert (t["completed"], t["pruned"], t["failed"]) == (0, 2, 1)
    assert t["best"] is t["median"] is t["params_min"] is None
    assert t["reason"] == "no completed trial: 2 pruned, 1 failed"
    assert s["C-T-T-T"]["reason"] == "not drawn yet" and s["C-T-T-T"]["completed"] == 0
    assert s["odd"]["reason"] == "no completed trial: 1 rejected"


def test_plot_bars_accepts_bars_without_interval(tmp_path):
    from archspace.analysis.plots import plot_bars

    path = plot_bars({"a": 10.0, "b": 20.0}, tmp_path / "bars.png", title="t", ylabel="y",
                     errors=[(10.0, 12.0), None])
    assert path.is_file() and path.stat().st_size > 0
    with pytest.raises(ValueError, match="2 values but 1 intervals"):
        plot_bars({"a": 10.0, "b": 20.0}, tmp_path / "x.png", title="t", ylabel="y", errors=[None])
