"""Scale-downs keep a study's comparison: variants stay distinct networks, relative ``set``
values keep the papers' relations (ViT_C = ViT_P with a conv stem and one block fewer)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from archspace.errors import SpecError
from archspace.search.space import FixedSuggester
from archspace.search.study import load_study
from archspace.search.variants import check_variants, variant_keys
from test_search import run_search, write_study

STUDIES = sorted((Path(__file__).parents[1] / "studies").glob("*.yaml"))
SCALED = [(path, scale) for path in STUDIES
          for scale in [None, *(yaml.safe_load(path.read_text()).get("scales") or {})]]


@pytest.mark.parametrize("path, scale", SCALED, ids=[f"{p.stem}-{s}" for p, s in SCALED])
def test_no_study_has_collapsed_variants_at_any_scale(path: Path, scale):
    study = load_study(path, scale=scale)
    check_variants(study)
    for choice in ("base", "layout"):
        values = study.space.spec.choices.get(choice)
        if isinstance(values, list):  # every variant resolved, each to its own network
            keys = variant_keys(study, choice)
            assert len(keys) == len(values) and len(set(keys.values())) == len(values), (choice, keys)


VIT = [(path, scale) for path, scale in SCALED if path.stem.startswith("vitc-")]


@pytest.mark.parametrize("path, scale", VIT, ids=[f"{p.stem}-{s}" for p, s in VIT])
def test_vit_c_costs_what_vit_p_costs_at_every_scale(path: Path, scale):
    study = load_study(path, scale=scale)
    bases = study.space.spec.choices.get("base") or [study.space.spec.base]
    flops = {}
    for base in bases:
        point = study.space.resolve(FixedSuggester({"base": base}), fit_data=False)
        flops[base] = point.cost["flops"]
    depth = {b: study.space.bases[b]["stages"][0]["depth"] for b in bases}
    if len(bases) == 2:
        p, c = sorted(bases, key=lambda b: not b.startswith("vit_p"))
        assert abs(flops[c] / flops[p] - 1) <= 0.03, flops
        assert depth[c] == depth[p] - 1, depth  # the paper's compensation: one block fewer


def test_relative_set_values_apply_to_each_base():
    study = load_study(Path(__file__).parents[1] / "studies" / "convnext-roadmap.yaml", scale="cpu")
    depths = {b: [s["depth"] for s in study.space.bases[b]["stages"]]
              for b in ("roadmap-00-resnet50", "roadmap-01-stage-ratio")}
    assert depths == {"roadmap-00-resnet50": [1, 1, 2, 1], "roadmap-01-stage-ratio": [1, 1, 3, 1]}


def _study(tmp_path: Path, **space) -> Path:
    return write_study(tmp_path, space=space, sampler={"kind": "random", "seed": 0}, trials=2)


def test_collapsed_variants_stop_the_dry_run_and_the_run(tmp_path: Path):
    # at depth 1 everywhere, the roadmap's stage-ratio step is step 00 again
    study = write_study(tmp_path, space={"base": "roadmap-00-resnet50", "set": {"input.size": 32,
                                                                              "stages[*].depth": 1},
                                         "choices": {"base": ["roadmap-00-resnet50", "roadmap-01-stage-ratio"]},
                                         "match": None})
    for args in (["--dry-run"], ["--out", tmp_path / "out"]):
        r = run_search(study, *args)
        assert r.returncode == 2, r.stderr
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("space.choices.base: roadmap-00-resnet50 and "
                                                       "roadmap-01-stage-ratio resolve to the same network"), lines
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, message", [
    ({"add": -20}, "space.set.stages[0].depth: stages[0].depth would be -18 (2 -20): it must stay at least 1"),
    ({"scale": 0.5, "add": 1}, "space.set.stages[0].depth.scale: give exactly one of scale or add"),
    ({"scale": -1}, "space.set.stages[0].depth.scale: "),
])
def test_bad_relative_values_are_one_line(tmp_path: Path, value, message):
    with pytest.raises(SpecError) as excinfo:
        load_study(_study(tmp_path, set={"input.size": 32, "stages[0].depth": value}))
    lines = excinfo.value.lines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


def test_per_variant_trains_exactly_n_points_of_each_variant(tmp_path: Path):
    from test_search import assert_ok, load, sqlite_url, trained

    # the layouts alternate: C-C-C-C's points would otherwise be drawn about half the time
    study = write_study(tmp_path, trials=None, sampler={"kind": "random", "seed": 3, "per_variant": 2},
                        train={"data": "synthetic", "epochs": 1, "batch_size": 64})
    out = tmp_path / "out"
    summary = assert_ok(run_search(study, "--out", out, "--format", "json"))
    assert summary["counts"].get("complete") == 4, summary["counts"]
    done = trained(load(sqlite_url(out / "study.db")))
    per = {}
    for t in done:
        per[t.params["layout"]] = per.get(t.params["layout"], 0) + 1
    assert per == {"C-C-C-C": 2, "C-C-T-T": 2}
    assert len({t.params["train.lr"] for t in done}) == 4  # the other choices drawn for each point


@pytest.mark.parametrize("sampler, trials, message", [
    ({"kind": "tpe", "per_variant": 2}, None, "sampler.per_variant: balanced samples per variant need kind: random"),
    ({"kind": "random", "per_variant": 2}, 5, "trials: 5 is not per_variant x variants = 2 x 2 = 4"),
])
def test_per_variant_needs_random_and_its_own_budget(tmp_path: Path, sampler, trials, message):
    with pytest.raises(SpecError) as excinfo:
        load_study(write_study(tmp_path, sampler=sampler, trials=trials))
    assert excinfo.value.lines()[0].startswith(message), excinfo.value.lines()
