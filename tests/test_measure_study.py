"""The verdict rules of docs/measure_study.py and the page section drawn from its record."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))

import gen_study_pages  # noqa: E402
import measure_study as ms  # noqa: E402


def report(**variants):
    return {"variants": {v: {"completed": len(e), "best": min(e), "median": sorted(e)[len(e) // 2]}
                         for v, e in variants.items()},
            "generalization": {v: {"gap": min(e) / 2, "train_loss": 1 - min(e)} for v, e in variants.items()}}


def test_better_needs_both_best_and_median_by_the_margin():
    check = ms.Better("c", "p")
    assert check(report(c=[0.10, 0.12, 0.20], p=[0.15, 0.20, 0.30]))[0] == "agrees"
    assert check(report(c=[0.15, 0.20, 0.30], p=[0.10, 0.12, 0.20]))[0] == "disagrees"
    # better median, worse best: no verdict
    assert check(report(c=[0.12, 0.13, 0.14], p=[0.10, 0.20, 0.30]))[0] == "inconclusive"
    # within the margin (0.5 points) is not a difference
    assert check(report(c=[0.100, 0.120], p=[0.103, 0.123]))[0] == "inconclusive"
    # one run each: no spread to judge a difference by
    verdict, figures = check(report(c=[0.10], p=[0.30]))
    assert verdict == "inconclusive" and "fewer than 2 runs of c, p" in figures
    verdict, figures = check(report(c=[0.1]))
    assert verdict == "inconclusive" and "no completed run of p" in figures


def test_ordered_uses_spearman_against_the_papers_order():
    check = ms.Ordered(("a", "b", "c", "d"), "best", "best error")
    assert check(report(a=[0.1], b=[0.2], c=[0.3], d=[0.4]))[0] == "agrees"
    assert check(report(a=[0.4], b=[0.3], c=[0.2], d=[0.1]))[0] == "disagrees"
    assert check(report(a=[0.2], b=[0.4], c=[0.1], d=[0.3]))[0] == "inconclusive"
    assert check(report(a=[0.1], b=[0.2]))[0] == "inconclusive"  # two variants cannot be ordered
    verdict, figures = ms.Ordered(("a", "b", "c"), "gap", "gap")(report(a=[0.1], b=[0.2], c=[0.3]))
    assert verdict == "agrees" and "ρ with the paper's order +1.00" in figures
    assert ms.spearman([1, 2, 3], [5, 5, 5]) is None
    assert ms.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_every_claim_names_variants_of_its_study():
    import yaml

    for name, claims in ms.CLAIMS.items():
        study = yaml.safe_load((ROOT / "studies" / f"{name}.yaml").read_text())
        choices = study["space"]["choices"]
        values = {str(v) for key in ("base", "layout") for v in choices.get(key, [])}
        for claim in claims:
            verdict, figures = claim.check({"variants": {}, "generalization": {}})
            assert verdict == "inconclusive"
            assert set(claim.check.variants) <= values, f"{name}: {claim.text}"


def test_the_page_shows_a_record(tmp_path, monkeypatch):
    record = {"study": "coatnet-layouts", "scale": "cpu", "command": "archspace search studies/coatnet-layouts.yaml",
              "date": "2026-11-22", "commit": "abc1234", "machine": "x86_64, 2 cores, Linux", "search_wall_s": 600.0,
              "trials_trained": 15, "trials_span_s": 540.0, "counts": {"complete": 15}, "group_by": "layout",
              "variants": {"C-C-C-C": {"completed": 3, "diverged": 0, "best": 0.0123, "median": 0.02,
                                       "params_min": 922230, "params_max": 922230}},
              "generalization": {"C-C-C-C": {"train_loss": 0.01, "eval_error": 0.0123, "gap": 0.01}},
              "claims": [{"text": "A claim.", "verdict": "agrees", "figures": "the figures"}]}
    folder = tmp_path / "docs" / "studies" / "measured"
    folder.mkdir(parents=True)
    (folder / "coatnet-layouts.json").write_text(json.dumps(record))
    monkeypatch.setattr(gen_study_pages, "ROOT", tmp_path)
    text = "\n".join(gen_study_pages.measured("coatnet-layouts"))
    assert "## Measured at the `cpu` scale" in text
    assert "15 trials trained in 9.0 min" in text
    assert "| C-C-C-C | 3 | 0 | 1.23% | 2.00% | 0.92M | 1.00% |" in text
    assert "- A claim. — **agrees**: the figures." in text
    assert gen_study_pages.measured("vitc-edf-sgd") == []
