"""Design spaces, analytically: complexity matching, conditional choices, constraints, path and
range checks, point hashes and grid spaces. Nothing here trains or touches a store."""

from __future__ import annotations

import optuna
import pytest

from archspace.errors import SpecError
from archspace.search.optuna_backend import OptunaSuggester
from archspace.search.space import FixedSuggester, load_space, spec_hash
from archspace.search.study import load_study

LAYOUTS = ["VIT_REL", "C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T"]
BLOCK = {"C": "mbconv", "T": "transformer"}
TINY_SET = {"input.size": 32, "stages[*].depth": 1, "stem.channels": [16, 16]}


def space(**kw):
    data = {"base": "coatnet-0", "set": {"input.size": 32}}
    data.update(kw)
    return load_space(data)


def blocks(point) -> list[str]:
    return [s.block for s in point.spec.stages]


def expected_blocks(layout: str) -> list[str]:
    return ["transformer"] if layout == "VIT_REL" else [BLOCK[c] for c in layout.split("-")]


def problem_paths(err: pytest.ExceptionInfo) -> list[str]:
    return [p.path for p in err.value.problems]


# --------------------------------------------------------------------------- complexity matching


def _unit(stage) -> int:
    if hasattr(stage, "resolved_heads"):
        return 8 * stage.heads if stage.heads else (stage.head_size or stage.default_head_size)
    return 8


@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize("target", [5e5, 2e6, 1e7])
def test_matching_keeps_networks_sensible_or_rejects_with_the_closest(size, target):
    """A matched variant is the layout with one common width multiplier, each stage rounded
    down or up to its unit (never below one head, or 16 channels), depths untouched; where no
    such variant is within tolerance the point is rejected, saying how close it got."""
    sp = load_space({"base": "coatnet-0", "set": {"input.size": size}, "choices": {"layout": LAYOUTS},
                     "match": {"params": target, "tolerance": 0.05}})
    plain = load_space({"base": "coatnet-0", "set": {"input.size": size}, "choices": {"layout": LAYOUTS}})
    matched = 0
    for layout in LAYOUTS:
        point = sp.resolve(FixedSuggester({"layout": layout}))
        base = plain.resolve(FixedSuggester({"layout": layout}))
        assert blocks(point) == expected_blocks(layout)        # matching scales, never changes the layout
        assert point.spec.input.size == size and point.params == {"layout": layout}
        assert point.spec.num_classes == 10                      # the dataset's head (digits), not the preset's
        if point.rejected:
            assert point.match_scale is None
            assert point.rejected.startswith("match:") and "the closest is" in point.rejected, point.rejected
            continue
        matched += 1
        assert abs(point.cost["params"] / target - 1) <= 0.05, (layout, point.cost["params"])
        assert [s.depth for s in point.spec.stages] == [s.depth for s in base.spec.stages]
        scale = point.match_scale
        for new, old in zip(point.spec.stages, base.spec.stages):
            unit = _unit(new)
            floor = unit if hasattr(new, "resolved_heads") else 16
            assert new.width % unit == 0 and new.width >= floor, (layout, new.width)
            assert new.width == floor or abs(new.width - scale * old.width) < unit, (layout, new.width, scale)
    assert matched >= 3


def test_all_five_layouts_match_where_the_units_allow():
    sp = space(choices={"layout": LAYOUTS}, match={"params": 1.0e7, "tolerance": 0.05})
    sizes = [sp.resolve(FixedSuggester({"layout": layout})).cost["params"] for layout in LAYOUTS]
    assert max(sizes) / min(sizes) <= 1.05, sizes


def test_matching_happens_on_the_trained_network():
    """The 1000-class preset is matched after its head is sized for the dataset: the matched
    params are those of the network that trains (and compiles)."""
    from archspace.compile import compile_network

    sp = space(choices={"layout": ["C-C-T-T"]}, match={"params": 3.35e5, "tolerance": 0.05})
    point = sp.resolve(FixedSuggester({"layout": "C-C-T-T"}))
    assert point.rejected is None and point.spec.num_classes == 10
    built = sum(p.numel() for p in compile_network(point.spec).parameters())
    assert built == point.cost["params"] and abs(built / 3.35e5 - 1) <= 0.05


def test_dataset_that_cannot_be_described_is_an_error_on_the_train_path(tmp_path):
    sp = load_space({"base": "coatnet-0", "set": {"input.size": 32}},
                    {"data": "imagefolder", "data_dir": str(tmp_path / "missing")})
    with pytest.raises(SpecError) as err:
        sp.resolve(FixedSuggester())
    assert problem_paths(err) == ["train.data_dir"], err.value.lines()


def test_matching_by_flops():
    target = 1.0e8
    sp = space(choices={"layout": LAYOUTS}, match={"flops": target, "tolerance": 0.05})
    scaled = set()
    for layout in LAYOUTS:
        point = sp.resolve(FixedSuggester({"layout": layout}))
        assert point.rejected is None, (layout, point.rejected)
        assert abs(point.cost["flops"] / target - 1) <= 0.05, (layout, point.cost["flops"])
        scaled.add(tuple(s.width for s in point.spec.stages))
    assert len(scaled) > 1  # each variant gets its own widths


def test_matching_by_depth_changes_depth_only():
    target = 2.5e7
    sp = space(choices={"layout": LAYOUTS}, match={"params": target, "tolerance": 0.1, "by": "depth"})
    plain = space(choices={"layout": LAYOUTS})
    for layout in LAYOUTS:
        point = sp.resolve(FixedSuggester({"layout": layout}))
        base = plain.resolve(FixedSuggester({"layout": layout}))
        assert point.rejected is None, (layout, point.rejected)
        assert abs(point.cost["params"] / target - 1) <= 0.1, (layout, point.cost["params"])
        assert [s.width for s in point.spec.stages] == [s.width for s in base.spec.stages]
        changed = [i for i, (a, b) in enumerate(zip(point.spec.stages, base.spec.stages)) if a.depth != b.depth]
        assert len(changed) <= 1, layout
        assert sum(s.depth for s in point.spec.stages) - sum(s.depth for s in base.spec.stages) == point.match_scale


def test_unreachable_match_target_rejects_the_point_with_a_reason():
    sp = space(match={"params": 1.0e9, "tolerance": 0.05, "by": "depth"})
    point = sp.resolve(FixedSuggester())
    assert point.match_scale is None
    assert point.rejected and point.rejected.startswith("match:")


def test_constraints_apply_to_the_matched_variant():
    sp = space(choices={"layout": LAYOUTS}, match={"params": 2.0e6, "tolerance": 0.05},
               constraints={"params": [None, 1.0e6]})
    for layout in LAYOUTS:
        point = sp.resolve(FixedSuggester({"layout": layout}))
        assert point.rejected, layout
        if point.match_scale is not None:  # matched, then rejected by the bound
            assert point.rejected.startswith("constraints.params"), (layout, point.rejected)


def test_match_needs_exactly_one_target():
    with pytest.raises(SpecError) as err:
        space(match={"params": 1e6, "flops": 1e8})
    assert any(p.startswith("space.match") for p in problem_paths(err)), err.value.lines()


# --------------------------------------------------------------------------- conditional choices


def test_stage_choice_is_sampled_only_where_the_stage_has_that_field():
    sp = load_space({"base": "coatnet-0", "set": TINY_SET,
                     "choices": {"layout": LAYOUTS, "stages[2].head_size": [16, 64]}})
    for layout in LAYOUTS:
        point = sp.resolve(FixedSuggester({"layout": layout, "stages[2].head_size": 64}))
        transformer_at_2 = len(point.spec.stages) > 2 and point.spec.stages[2].block == "transformer"
        assert ("stages[2].head_size" in point.params) == transformer_at_2, (layout, point.params)
        if transformer_at_2:
            assert point.spec.stages[2].head_size == 64
    assert "stages[2].head_size" not in sp.resolve(FixedSuggester({"layout": "C-C-C-C"})).params


def test_conditional_choice_is_not_suggested_to_optuna():
    sp = load_space({"base": "coatnet-0", "set": TINY_SET,
                     "choices": {"layout": ["C-C-C-C", "C-C-T-T"], "stages[2].head_size": [16, 64]}})
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study()
    for layout, present in (("C-C-C-C", False), ("C-C-T-T", True)):
        study.enqueue_trial({"layout": layout, "stages[2].head_size": 16})
        trial = study.ask()
        point = sp.resolve(OptunaSuggester(trial))
        assert ("stages[2].head_size" in trial.params) == present, trial.params
        assert trial.params == point.params
        study.tell(trial, 0.5)


def test_path_valid_under_one_layout_only_is_accepted():
    sp = space(choices={"layout": ["C-C-C-C", "C-T-T-T"], "stages[1].head_size": [16, 32]})
    assert "stages[1].head_size" not in sp.resolve(FixedSuggester({"layout": "C-C-C-C"})).params
    assert sp.resolve(FixedSuggester({"layout": "C-T-T-T", "stages[1].head_size": 16})).spec.stages[1].head_size == 16


def test_int_uniform_and_train_choices_land_in_the_point():
    sp = load_space({"base": "coatnet-0", "set": TINY_SET,
                     "choices": {"stages[1].depth": {"int": [1, 3]}, "train.weight_decay": {"uniform": [0.0, 0.1]},
                                 "train.lr": {"loguniform": [1e-4, 1e-2]}, "train.optimizer": ["adamw", "sgd"]}},
                    train={"data": "synthetic", "epochs": 1})
    point = sp.resolve(FixedSuggester({"stages[1].depth": 3, "train.weight_decay": 0.07, "train.lr": 2e-3,
                                       "train.optimizer": "sgd"}))
    assert point.spec.stages[1].depth == 3
    assert (point.train.weight_decay, point.train.lr, point.train.optimizer) == (0.07, 2e-3, "sgd")
    assert point.train.epochs == 1 and point.train.data == "synthetic"  # the fixed recipe is kept


# --------------------------------------------------------------------------- constraints


def test_flops_upper_bound_rejects_points_with_a_reason():
    sp = space(choices={"layout": LAYOUTS}, constraints={"flops": [None, 3.0e7]})
    for layout in LAYOUTS:
        point = sp.resolve(FixedSuggester({"layout": layout}))
        assert point.rejected is not None and point.rejected.startswith("constraints.flops"), point.rejected
        assert "above" in point.rejected


def test_constraints_keep_points_inside_the_bounds():
    sp = space(choices={"layout": ["C-C-C-C", "C-T-T-T"]}, constraints={"flops": [None, 8.0e7]})
    assert sp.resolve(FixedSuggester({"layout": "C-C-C-C"})).rejected is None      # ~70 MFLOPs
    assert sp.resolve(FixedSuggester({"layout": "C-T-T-T"})).rejected.startswith("constraints.flops")  # ~90
    low = space(constraints={"params": [1.0e9, None]}).resolve(FixedSuggester())
    assert low.rejected.startswith("constraints.params") and "below" in low.rejected


# --------------------------------------------------------------------------- bad paths and ranges


@pytest.mark.parametrize("path", ["stages[9].depth", "stages[0].nope", "train.nope", "stages[0].head_size",
                                  "stages[-9].width"])
def test_choice_at_a_path_that_exists_nowhere_is_a_spec_error(path):
    with pytest.raises(SpecError) as err:
        space(choices={"layout": ["C-C-C-C", "C-C-T-T"], path: [1, 2]})
    assert [p.split("choices.", 1)[-1] for p in problem_paths(err)] == [path], err.value.lines()
    assert all(f"choices.{path}" in line for line in err.value.lines())


@pytest.mark.parametrize("path", ["stem.nope", "head.nope", "nope"])
def test_choice_at_an_unknown_non_stage_key_is_a_spec_error(path):
    with pytest.raises(SpecError) as err:
        space(choices={path: [1, 2]})
    assert any(f"choices.{path}" in line for line in err.value.lines()), err.value.lines()


@pytest.mark.parametrize("path,choice,words", [
    ("train.lr", {"loguniform": [0.0, 1.0e-2]}, "0 < low"),
    ("train.lr", {"loguniform": [-1.0, 1.0]}, "0 < low"),
    ("stages[1].depth", {"int": [5, 2]}, "above high"),
    ("train.weight_decay", {"uniform": [0.2, 0.1]}, "above high"),
])
def test_bad_range_names_its_path(path, choice, words):
    with pytest.raises(SpecError) as err:
        space(choices={path: choice})
    kind = next(iter(choice))
    hits = [line for line in err.value.lines() if f"choices.{path}.{kind}" in line and words in line]
    assert hits, err.value.lines()


def test_bad_range_is_one_problem():
    with pytest.raises(SpecError) as err:
        space(choices={"train.lr": {"loguniform": [0.0, 1.0e-2]}})
    assert len(err.value.problems) == 1, err.value.lines()
    assert err.value.problems[0].path == "space.choices.train.lr.loguniform"


def test_empty_categorical_choice_names_its_path():
    with pytest.raises(SpecError) as err:
        space(choices={"layout": []})
    assert problem_paths(err) == ["space.choices.layout"], err.value.lines()


# --------------------------------------------------------------------------- point hashes


def tiny_space(**choices):
    return load_space({"base": "coatnet-0", "set": TINY_SET,
                       "choices": choices or {"layout": ["C-C-C-C", "C-C-T-T"],
                                              "train.lr": {"loguniform": [1e-3, 1e-2]}}},
                      train={"data": "synthetic", "epochs": 2, "batch_size": 64})


def test_spec_hash_is_equal_for_equal_points():
    a = tiny_space().resolve(FixedSuggester({"layout": "C-C-T-T", "train.lr": 3e-3}))
    b = tiny_space().resolve(FixedSuggester({"layout": "C-C-T-T", "train.lr": 3e-3}))
    assert a.key == b.key == spec_hash(a.spec, a.train)
    renamed = a.spec.model_copy(update={"name": "another-name", "description": "same network"})
    assert spec_hash(renamed, a.train) == a.key  # names and descriptions are not part of the point


def test_spec_hash_changes_when_anything_changes():
    sp = tiny_space()
    ref = sp.resolve(FixedSuggester({"layout": "C-C-T-T", "train.lr": 3e-3}))
    keys = {ref.key}
    variants = [
        sp.resolve(FixedSuggester({"layout": "C-C-C-C", "train.lr": 3e-3})).key,              # layout
        sp.resolve(FixedSuggester({"layout": "C-C-T-T", "train.lr": 3.000001e-3})).key,       # lr, barely
        spec_hash(ref.spec, ref.train.model_copy(update={"epochs": 3})),                     # recipe
        spec_hash(ref.spec, ref.train.model_copy(update={"seed": 1})),                       # seed
        spec_hash(ref.spec.model_copy(update={"num_classes": 7}), ref.train),                # network field
    ]
    other_size = load_space({"base": "coatnet-0", "set": {**TINY_SET, "input.size": 64},
                             "choices": {"layout": ["C-C-T-T"]}}, train={"data": "synthetic", "epochs": 2,
                                                                          "batch_size": 64, "lr": 3e-3})
    variants.append(other_size.resolve(FixedSuggester()).key)                               # input size
    for key in variants:
        assert key not in keys
        keys.add(key)


# --------------------------------------------------------------------------- grid spaces


def grid_study(choices, **extra):
    data = {"name": "g", "space": {"base": "coatnet-0", "set": TINY_SET, "choices": choices},
            "train": {"data": "synthetic", "epochs": 1}, "sampler": {"kind": "grid"}}
    data.update(extra)
    return load_study(data)


def test_grid_space_from_lists_and_int_ranges():
    study = grid_study({"layout": ["C-C-C-C", "C-C-T-T"], "stages[1].depth": {"int": [1, 5], "step": 2},
                        "train.lr": [1e-3, 3e-3, 1e-2]})
    assert study.grid() == {"layout": ["C-C-C-C", "C-C-T-T"], "stages[1].depth": [1, 3, 5],
                            "train.lr": [1e-3, 3e-3, 1e-2]}
    assert study.n_trials() == 2 * 3 * 3
    assert study.n_trials(5) == 5
    assert grid_study({"stages[0].depth": {"int": [1, 4]}}).grid() == {"stages[0].depth": [1, 2, 3, 4]}


def test_grid_sampler_visits_every_grid_point_once():
    from archspace.search.optuna_backend import make_sampler

    study = grid_study({"layout": ["C-C-C-C", "C-C-T-T"], "train.lr": [1e-3, 3e-3]})
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    mem = optuna.create_study(sampler=make_sampler(study))
    seen = []

    def objective(trial):
        point = study.space.resolve(OptunaSuggester(trial))
        seen.append((point.params["layout"], point.params["train.lr"]))
        return 0.0

    mem.optimize(objective, n_trials=study.n_trials() + 3)  # the grid sampler stops the study when done
    assert sorted(seen) == sorted((a, b) for a in ["C-C-C-C", "C-C-T-T"] for b in [1e-3, 3e-3])


@pytest.mark.parametrize("choice", [{"loguniform": [1e-3, 1e-2]}, {"uniform": [1e-3, 1e-2]}])
def test_grid_sampler_rejects_continuous_choices(choice):
    study = grid_study({"layout": ["C-C-C-C"], "train.lr": choice})
    with pytest.raises(SpecError) as err:
        study.grid()
    assert problem_paths(err) == ["space.choices.train.lr"], err.value.lines()
    with pytest.raises(SpecError):
        study.n_trials()


def test_non_grid_sampler_needs_a_budget():
    with pytest.raises(SpecError) as err:
        grid_study({"layout": ["C-C-C-C"]}, sampler={"kind": "random"})
    assert problem_paths(err) == ["trials"], err.value.lines()
