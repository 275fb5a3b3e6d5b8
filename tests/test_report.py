"""``build_report`` on real SQLite Optuna stores: what enters the EDFs and rankings, per-variant
counts and reasons, the bias warning, the size spread, the HTML. No mocks: each store is written
with Optuna's own ``create_trial``/``add_trial`` the way the search records trials, and one
study is searched for real (tiny networks, synthetic data) and reported.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from archspace.analysis.report import build_report
from archspace.search.optuna_backend import trial_status
from archspace.search.study import StudySpec

optuna.logging.set_verbosity(optuna.logging.ERROR)

LAYOUTS = ["C-C-C-C", "C-C-T-T", "C-T-T-T"]
STUDY = {
    "name": "rep",
    "space": {
        "base": "coatnet-0",
        "set": {"input.size": 32, "stages[*].depth": 1, "stem.channels": [16, 16]},
        "choices": {"layout": LAYOUTS, "train.lr": {"loguniform": [1.0e-3, 1.0e-2]}},
        "match": {"params": 3.0e5, "tolerance": 0.1},
    },
    "train": {"data": "synthetic", "epochs": 3, "batch_size": 64},
    "sampler": {"kind": "random", "seed": 0},
    "trials": 8,
}
DISTRIBUTIONS = {"layout": CategoricalDistribution(LAYOUTS), "train.lr": FloatDistribution(1e-3, 1e-2, log=True)}
STATES = {"complete": TrialState.COMPLETE, "diverged": TrialState.COMPLETE, "duplicate": TrialState.COMPLETE,
          "pruned": TrialState.PRUNED, "failed": TrialState.FAIL, "rejected": TrialState.FAIL,
          "surplus": TrialState.FAIL}


def settings(**changes) -> dict:
    """The ``archspace_study`` attribute the search writes: the StudySpec dump."""
    data = copy.deepcopy(STUDY)
    data.update(changes)
    return StudySpec.model_validate(data).model_dump(mode="json")


def trial(status: str, layout: str, error: float | None = None, params: float = 3.0e5, lr: float = 3e-3,
          state: TrialState | None = None, **attrs) -> optuna.trial.FrozenTrial:
    """A trial as the Optuna backend records it: ``status``, cost, final metrics and history.
    A duplicate is never trained: it holds its twin's value (``error``) and ``duplicate_of``
    only, in state COMPLETE, or FAIL where the twin had no value."""
    epochs = 1 if status == "pruned" else 3
    history = [] if status in ("rejected", "surplus", "failed", "duplicate") else [
        {"epoch": e, "train_loss": 1.5 - 0.2 * e, "train_error": 0.5 - 0.05 * e, "eval_loss": 1.4 - 0.2 * e,
         "eval_error": (error or 0.9) + 0.05 * (epochs - 1 - e), "lr": lr} for e in range(epochs)]
    user_attrs = {"status": status, "cost": {"params": int(params), "flops": int(40 * params), "acts": 100000},
                  "key": f"{layout}-{lr}", "history": history, **attrs}
    if status == "diverged":
        user_attrs["diverged_epoch"] = 1
    elif history:
        last = history[-1]
        user_attrs.update(train_loss=last["train_loss"], train_error=last["train_error"],
                          eval_error=last["eval_error"])
    if status in ("rejected", "failed"):
        user_attrs.setdefault("reason", "match: no width scale brings params within 10% of 300000"
                              if status == "rejected" else "its process died")
    state = state or STATES[status]
    values = None
    if state == TrialState.COMPLETE:
        values = [1.0 if status == "diverged" else error if status == "duplicate" else user_attrs["eval_error"]]
    return create_trial(state=state, values=values, params={"layout": layout, "train.lr": lr},
                        distributions=DISTRIBUTIONS, user_attrs=user_attrs,
                        intermediate_values={h["epoch"]: h["eval_error"] for h in history}
                        if status == "pruned" else None)


def store(folder: Path, trials: list, study: dict | None = None, space: dict | str | None = "inline") -> Path:
    """A run directory holding ``study.db`` with ``trials`` and the study attributes."""
    folder.mkdir(parents=True, exist_ok=True)
    ostudy = optuna.create_study(study_name="rep", storage=f"sqlite:///{folder / 'study.db'}")
    study = settings() if study is None else study
    ostudy.set_user_attr("archspace_study", study)
    if space == "inline":
        space = study["space"]
    if space is not None:
        ostudy.set_user_attr("archspace_space", space)
    for t in trials:
        ostudy.add_trial(t)
    return folder


def markdown(report: dict) -> str:
    return Path(report["markdown"]).read_text()


def table_row(text: str, section: str, variant: str) -> list[str]:
    """The cells of ``variant``'s row in the table under ``## section``."""
    part = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    for line in part.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == variant:
            return cells
    raise AssertionError(f"no row {variant!r} under {section!r}:\n{part}")


def table_header(text: str, section: str) -> list[str]:
    part = text.split(f"## {section}\n", 1)[1]
    line = next(line for line in part.splitlines() if line.startswith("|"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


# --------------------------------------------------------------------------- what enters the analyses


def test_duplicates_are_counted_but_never_enter_the_edfs_or_tables(tmp_path):
    run = store(tmp_path, [trial("complete", "C-C-C-C", 0.20, lr=2e-3),
                           trial("complete", "C-C-C-C", 0.30, lr=5e-3),
                           trial("duplicate", "C-C-C-C", 0.20, lr=2e-3, duplicate_of=0, eval_error=0.20),  # older
                           trial("duplicate", "C-C-C-C", lr=2e-3, duplicate_of=0, state=TrialState.FAIL),
                           trial("complete", "C-C-T-T", 0.25), trial("complete", "C-C-T-T", 0.35)])
    report = build_report(run)
    v = report["variants"]["C-C-C-C"]
    assert (v["completed"], v["duplicate"], v["diverged"]) == (2, 2, 0)
    assert v["median"] == pytest.approx(0.25)  # with the duplicates it would be 0.20
    text = markdown(report)
    header = table_header(text, "Variants")
    assert table_row(text, "Variants", "C-C-C-C")[header.index("completed")] == "2"
    counts = table_header(text, "Trials per variant")
    row = table_row(text, "Trials per variant", "C-C-C-C")
    assert row[counts.index("duplicate")] == "2" and row[counts.index("total")] == "4"
    best = text.split("## Best trials\n", 1)[1].split("\n## ", 1)[0]
    numbers = {int(line.split("|")[1]) for line in best.splitlines() if re.match(r"\| \d+ \|", line)}
    assert numbers == {0, 1, 4, 5}  # trials 2 and 3 are the duplicates
    assert report["counts"] == {"complete": 4, "duplicate": 2}
    assert json.loads((run / "report" / "report.json").read_text())["variants"]["C-C-C-C"]["duplicate"] == 2


def test_pruned_failed_rejected_and_surplus_trials_stay_out_of_the_results(tmp_path):
    run = store(tmp_path, [trial("complete", "C-C-C-C", 0.30), trial("diverged", "C-C-C-C"),
                           trial("pruned", "C-C-C-C", 0.05), trial("failed", "C-C-C-C"),
                           trial("rejected", "C-C-C-C"), trial("surplus", "C-C-C-C", lr=4e-3)])
    report = build_report(run)
    v = report["variants"]["C-C-C-C"]
    assert {k: v[k] for k in ("completed", "diverged", "pruned", "failed", "rejected", "surplus")} == \
        {"completed": 2, "diverged": 1, "pruned": 1, "failed": 1, "rejected": 1, "surplus": 1}
    assert v["best"] == pytest.approx(0.30) and v["median"] == pytest.approx(0.65)  # the pruned 5% is not a result
    text = markdown(report)
    assert "surplus" in table_header(text, "Trials per variant")  # shown because some variant has one
    assert table_row(text, "Trials per variant", "C-C-C-C")[-1] == "6"


def test_a_variant_without_completed_trials_is_listed_with_its_reason(tmp_path):
    run = store(tmp_path, [trial("complete", "C-C-C-C", 0.20), trial("complete", "C-C-C-C", 0.30),
                           trial("pruned", "C-C-T-T", 0.60), trial("pruned", "C-C-T-T", 0.70),
                           trial("failed", "C-C-T-T")])
    report = build_report(run)
    assert list(report["variants"]) == LAYOUTS
    cctt, cttt = report["variants"]["C-C-T-T"], report["variants"]["C-T-T-T"]
    assert cctt["reason"] == "no completed trial: 2 pruned, 1 failed"
    assert (cctt["completed"], cctt["pruned"], cctt["failed"], cctt["best"]) == (0, 2, 1, None)
    assert cttt["reason"] == "not drawn yet" and cttt["completed"] == 0
    text = markdown(report)
    assert table_row(text, "Variants", "C-C-T-T")[-1] == "no completed trial: 2 pruned, 1 failed"
    assert table_row(text, "Variants", "C-T-T-T")[-1] == "not drawn yet"
    header = table_header(text, "Trials per variant")
    assert header[:7] == ["variant", "completed", "diverged", "pruned", "failed", "duplicate", "rejected"]
    assert "surplus" not in header
    assert table_row(text, "Trials per variant", "C-C-T-T")[1:] == ["0", "0", "2", "1", "0", "0", "3"]
    assert table_row(text, "Trials per variant", "C-T-T-T")[1:] == ["0"] * 7


def test_variants_come_from_the_space_attribute_then_the_inline_space_then_the_trials(tmp_path):
    trials = [trial("complete", "C-C-C-C", 0.2), trial("complete", "C-C-T-T", 0.3)]
    # a space file: only the values seen in trials are known
    report = build_report(store(tmp_path / "file", trials, settings(space="my-space.yaml"), space=None))
    assert list(report["variants"]) == ["C-C-C-C", "C-C-T-T"]
    # the resolved space written by the search wins over the study's own
    resolved = dict(STUDY["space"], choices={"layout": [*LAYOUTS, "VIT_REL"]})
    report = build_report(store(tmp_path / "resolved", trials, settings(space="my-space.yaml"), space=resolved))
    assert list(report["variants"]) == [*LAYOUTS, "VIT_REL"] and report["group_by"] == "layout"
    # no archspace_space attribute: the inline space of the study
    report = build_report(store(tmp_path / "inline", trials, space=None))
    assert list(report["variants"]) == LAYOUTS


def test_a_variant_with_a_single_run_has_no_interval(tmp_path):
    run = store(tmp_path, [trial("complete", "C-C-C-C", 0.20), trial("complete", "C-C-C-C", 0.30),
                           trial("complete", "C-C-C-C", 0.25), trial("complete", "C-T-T-T", 0.40)])
    report = build_report(run)
    text = markdown(report)
    header = table_header(text, "Variants")
    interval = next(i for i, h in enumerate(header) if "bootstrap" in h)
    assert "upward" in header[interval]
    single = table_row(text, "Variants", "C-T-T-T")
    assert single[interval] == "—" and single[header.index("rank (interval)")] == "2 (—)"
    several = table_row(text, "Variants", "C-C-C-C")
    lo, hi = re.fullmatch(r"([\d.]+)–([\d.]+)%", several[interval]).groups()
    assert float(lo) == 20.0 and float(hi) >= float(lo)  # one-sided: starts at the observed best
    assert "only reaches upward from it" in text and "luck of a few good runs" in text
    assert any(p.endswith("ranking.png") for p in report["plots"])


# --------------------------------------------------------------------------- what the reader is told


@pytest.mark.parametrize("sampler,pruner,named", [
    ({"kind": "tpe", "seed": 0}, {"kind": "none"}, ["sampler is tpe"]),
    ({"kind": "random", "seed": 0}, {"kind": "median"}, ["pruner is median"]),
    ({"kind": "tpe", "seed": 0}, {"kind": "asha"}, ["sampler is tpe", "pruner is asha"]),
    ({"kind": "random", "seed": 0}, {"kind": "none"}, []),
    ({"kind": "grid", "seed": 0}, {"kind": "none"}, []),
], ids=["tpe", "median", "tpe+asha", "random", "grid"])
def test_the_bias_warning_heads_the_report_when_the_sampler_or_a_pruner_biases_the_edfs(
        tmp_path, sampler, pruner, named):
    run = store(tmp_path, [trial("complete", "C-C-C-C", 0.2), trial("complete", "C-C-T-T", 0.3)],
                settings(sampler=sampler, pruner=pruner))
    report = build_report(run)
    head = "\n".join(markdown(report).splitlines()[:4])
    saved = json.loads((run / "report" / "report.json").read_text())
    assert saved["bias_warning"] == report["bias_warning"]
    if not named:
        assert report["bias_warning"] is None and "unbiased" not in markdown(report)
        return
    assert "not an unbiased estimate" in report["bias_warning"] and report["bias_warning"] in head
    assert "On Network Design Spaces for Visual Recognition" in head
    for cause in named:
        assert cause in head
    for cause in {"sampler is tpe", "pruner is median", "pruner is asha"} - set(named):
        assert cause not in head


def test_params_spread_covers_the_completed_trials_only(tmp_path):
    run = store(tmp_path, [trial("complete", "C-C-C-C", 0.2, params=2.9e5),
                           trial("complete", "C-C-C-C", 0.3, params=3.0e5),
                           trial("diverged", "C-C-T-T", params=3.1e5),
                           trial("complete", "C-C-T-T", 0.4, params=3.05e5),
                           trial("pruned", "C-T-T-T", 0.5, params=5.0e5),
                           trial("duplicate", "C-C-T-T", 0.4, params=9.0e5, duplicate_of=3)])
    report = build_report(run)
    assert report["params_spread"] == pytest.approx(3.1 / 2.9)
    v = report["variants"]
    assert (v["C-C-C-C"]["params_min"], v["C-C-C-C"]["params_max"]) == (290000, 300000)
    assert (v["C-C-T-T"]["params_min"], v["C-C-T-T"]["params_max"]) == (305000, 310000)
    assert v["C-T-T-T"]["params_min"] is None
    lines = markdown(report).splitlines()[:8]
    assert "Params: 0.290M–0.310M across variants, spread 1.07× (max/min) over 4 completed trials; the space " \
           "matches params to 0.300M ± 10%." in lines
    assert table_row(markdown(report), "Variants", "C-C-T-T")[table_header(markdown(report), "Variants")
                                                              .index("params")] == "0.305M–0.310M"


def test_generalization_table_explains_a_negative_gap(tmp_path):
    run = store(tmp_path, [trial("complete", "C-C-C-C", 0.20), trial("complete", "C-C-T-T", 0.30)])
    text = markdown(build_report(run))
    part = text.split("## Generalization (best run per variant)\n", 1)[1].split("\n## ", 1)[0]
    assert "-20.00%" in part  # train error 0.40 (last epoch), eval error 0.20
    assert "can be negative" in part and "augment" in part and "label smoothing" in part and "drop path" in part


def test_html_keeps_yaml_line_breaks_renders_code_and_bold_and_aligns_cells(tmp_path):
    run = store(tmp_path, [trial("complete", "C-C-C-C", 0.20), trial("complete", "C-C-C-C", 0.30),
                           trial("pruned", "C-C-T-T", 0.6)], settings(pruner={"kind": "median"}))
    page = Path(build_report(run)["html"]).read_text()
    pre = re.search(r"<pre>(.*?)</pre>", page, re.S).group(1)
    assert yaml.safe_load(pre.replace("&quot;", '"').replace("&#x27;", "'"))["name"] == "rep"
    assert "\nspace:\n" in pre and "\nsampler:\n" in pre
    assert "<code>layout</code>" in page and "`" not in page.split("<pre>")[0]
    assert "<strong>Biased EDFs.</strong>" in page and "**" not in page
    assert '<td style="text-align:left">C-C-C-C</td>' in page
    assert '<td style="text-align:right">20.00%</td>' in page  # best error
    assert '<td style="text-align:right">20.00–30.00%</td>' in page or \
        re.search(r'<td style="text-align:right">20\.00–\d+\.\d+%</td>', page)  # interval
    assert '<td style="text-align:right">0.300M</td>' in page
    assert '<td style="text-align:right">—</td>' in page
    assert '<td style="text-align:left">no completed trial: 1 pruned</td>' in page
    assert '<th style="text-align:right">completed</th>' in page and '<th style="text-align:left">variant</th>' in page


# --------------------------------------------------------------------------- end to end


def test_a_real_tpe_study_with_a_pruner_reports_its_bias_and_counts(tmp_path):
    from archspace.search.runner import search
    from archspace.search.study import load_study

    from test_search import TINY

    data = copy.deepcopy(TINY)
    # learning rates from useless to good: the median pruner has runs to stop
    data["space"]["choices"]["train.lr"] = {"loguniform": [1.0e-5, 1.0e-1]}
    data.update(name="tiny-tpe", train={**TINY["train"], "epochs": 3}, trials=6,
                sampler={"kind": "tpe", "seed": 0, "startup_trials": 2},
                pruner={"kind": "median", "warmup_epochs": 1})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    run = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        search(load_study(path), run_dir=run)
    finally:
        torch.set_num_threads(threads)  # the search sets its thread budget; the suite runs one thread per worker
    report = build_report(run)
    text = markdown(report)
    pruned = [t for t in optuna.load_study(study_name="tiny-tpe", storage=f"sqlite:///{run / 'study.db'}").trials
              if trial_status(t) == "pruned"]
    assert pruned, "no trial was pruned: the test shows nothing about pruned trials"
    assert sum(v["pruned"] for v in report["variants"].values()) == len(pruned)
    head = "\n".join(text.splitlines()[:4])
    assert "not an unbiased estimate" in head and "sampler is tpe" in head and "pruner is median" in head
    ostudy = optuna.load_study(study_name="tiny-tpe", storage=f"sqlite:///{run / 'study.db'}")
    header = table_header(text, "Trials per variant")
    assert "pruned" in header
    for layout in ("C-C-C-C", "C-C-T-T"):
        mine = [trial_status(t) for t in ostudy.get_trials() if t.params.get("layout") == layout]
        expected = {"completed": sum(s in ("complete", "diverged") for s in mine), "diverged": mine.count("diverged"),
                    "pruned": mine.count("pruned"), "failed": mine.count("failed"),
                    "duplicate": mine.count("duplicate"), "rejected": mine.count("rejected")}
        row = table_row(text, "Trials per variant", layout)
        assert {k: int(row[header.index(k)]) for k in expected} == expected
        assert int(row[header.index("total")]) == len(mine)
        assert {k: report["variants"][layout][k] for k in expected} == expected
