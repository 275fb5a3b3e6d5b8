"""Every study in studies/ validates and runs at its tiny scale through to a report."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from archspace.analysis.report import build_report
from archspace.errors import SpecError
from archspace.search.runner import search
from archspace.search.study import load_study

STUDIES = sorted((Path(__file__).resolve().parents[1] / "studies").glob("*.yaml"))


def test_there_are_the_papers_studies():
    names = {p.stem for p in STUDIES}
    assert {"quickstart", "coatnet-layouts", "vitc-edf-adamw", "vitc-edf-sgd", "vitc-training-length",
            "vitc-optimizer", "convnext-roadmap", "cait-depth"} <= names


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_validates_at_every_scale(path):
    study = load_study(path)
    assert study.space.spec.choices
    for scale in study.spec.scales:
        scaled = load_study(path, scale=scale)
        assert scaled.name == f"{study.name}-{scale}"
        assert scaled.n_trials() >= 1


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_runs_tiny_through_to_report(path, tmp_path):
    study = load_study(path, scale="tiny")
    assert study.n_trials() <= 3  # one trial per variant at most (the quickstart has three layouts)
    summary = search(study, run_dir=tmp_path)
    trained = [t for t in summary["trials"] if t["status"] in ("complete", "diverged", "pruned", "duplicate")]
    assert len(trained) == study.n_trials()
    report = build_report(tmp_path)
    text = Path(report["markdown"]).read_text()
    assert f"# Study report: {study.name}" in text
    assert any(p.endswith("edf.png") for p in report["plots"])
    html = Path(report["html"]).read_text()
    assert html.count("data:image/png;base64,") == len(report["plots"])


def test_report_of_a_study_with_no_finished_trials_says_so(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="empty", storage=storage)
    report = build_report(tmp_path)
    assert "No finished trials yet" in Path(report["markdown"]).read_text()
    assert report["plots"] == []


def test_unknown_scale_is_an_error():
    with pytest.raises(SpecError) as err:
        load_study(STUDIES[0], scale="nope")
    assert err.value.problems[0].path == "--scale"
