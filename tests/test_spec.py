"""The spec language: paths, deep merge, extends, layout shorthand, overrides, schema, round trip."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from archspace.errors import SpecError
from archspace.spec import (
    ClassAttentionStage,
    ConvStem,
    MBConvStage,
    NetworkSpec,
    PatchifyStem,
    TransformerStage,
    apply_overrides,
    deep_merge,
    dump_spec,
    format_path,
    get_path,
    load_raw,
    load_spec,
    parse_path,
    preset_index,
    set_path,
)

TINY = """
name: tiny
input: {size: 32}
num_classes: 10
stem: {kind: patchify, patch: 4}
stages:
  - {block: mbconv, depth: 1, width: 32}
  - {block: transformer, depth: 2, width: 64, head_size: 32}
"""


def problems(exc_info) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in exc_info.value.problems]


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "text, keys",
    [
        ("name", ("name",)),
        ("stages[2].depth", ("stages", 2, "depth")),
        ("input.size", ("input", "size")),
        ("stem.channels[0]", ("stem", "channels", 0)),
        ("a[0][1].b_c", ("a", 0, 1, "b_c")),
        ("stages[-1].width", ("stages", -1, "width")),
    ],
)
def test_parse_and_format_path_round_trip(text, keys):
    assert parse_path(text) == keys
    assert format_path(keys) == text


@pytest.mark.parametrize(
    "text", ["", "[0]", "stages.", "stages..depth", "stages[x", "stages[1]x", "1abc", "stages[ 1]", "stages[2]depth",
             "stages[]", "a b"],
)
def test_parse_path_rejects_malformed(text):
    with pytest.raises(ValueError, match="malformed path"):
        parse_path(text)


def test_parse_path_rejects_leading_dot():
    with pytest.raises(ValueError):
        parse_path(".stages[0].depth")


def test_format_path_empty_is_empty():
    assert format_path(()) == ""


def test_get_path_reads_nested_values_and_names_missing_parts():
    data = {"stages": [{"depth": 2}, {"depth": 3}], "input": {"size": 224}}
    assert get_path(data, ("stages", 1, "depth")) == 3
    assert get_path(data, ("stages", -1, "depth")) == 3
    assert get_path(data, ("input", "size")) == 224
    with pytest.raises(KeyError, match=r"input\.channels does not exist"):
        get_path(data, ("input", "channels"))
    with pytest.raises(KeyError, match=r"stages\[5\] is out of range \(2 items\)"):
        get_path(data, ("stages", 5, "depth"))
    with pytest.raises(KeyError, match="input is not a list"):
        get_path(data, ("input", 0))
    with pytest.raises(KeyError, match=r"input\.size is not a mapping"):
        get_path(data, ("input", "size", "x"))


def test_set_path_sets_creates_mappings_but_not_list_items():
    data = {"stages": [{"depth": 2}], "input": {"size": 224}}
    set_path(data, ("stages", 0, "depth"), 7)
    set_path(data, ("input", "size"), 96)
    set_path(data, ("head", "pool"), "cls")  # missing mapping created
    set_path(data, ("stages", 0), {"depth": 1})
    assert data == {"stages": [{"depth": 1}], "input": {"size": 96}, "head": {"pool": "cls"}}
    with pytest.raises(KeyError, match="out of range"):
        set_path(data, ("stages", 1, "depth"), 1)
    with pytest.raises(KeyError, match="out of range"):
        set_path(data, ("stages", 3), {})
    with pytest.raises(KeyError, match="not a mapping"):
        set_path(data, ("input", "size", "x"), 1)
    assert data["stages"] == [{"depth": 1}]


# --------------------------------------------------------------------------- deep merge


def test_deep_merge_merges_mappings_replaces_others_and_copies():
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "l": [1, 2], "s": 1}
    over = {"a": {"y": {"q": 3}, "z": 4}, "l": [9], "t": {"n": 1}}
    out = deep_merge(base, over)
    assert out == {"a": {"x": 1, "y": {"p": 1, "q": 3}, "z": 4}, "l": [9], "s": 1, "t": {"n": 1}}
    # inputs untouched, result independent of them
    assert base == {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "l": [1, 2], "s": 1}
    out["t"]["n"] = 2
    out["a"]["y"]["p"] = 5
    assert over["t"]["n"] == 1 and base["a"]["y"]["p"] == 1


def test_deep_merge_mapping_replaces_scalar_and_vice_versa():
    assert deep_merge({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}
    assert deep_merge({"a": {"b": 2}}, {"a": None}) == {"a": None}


# --------------------------------------------------------------------------- extends


def test_extends_preset_name(spec_file):
    path = spec_file("""
        extends: coatnet-0
        name: my-coatnet
        num_classes: 10
    """)
    spec = load_spec(path)
    base = load_spec("coatnet-0")
    assert spec.name == "my-coatnet" and spec.num_classes == 10
    assert spec.stages == base.stages and spec.stem == base.stem and spec.head == base.head
    assert "extends" not in load_raw(path)


def test_extends_relative_path_from_the_files_folder(spec_file, tmp_path, monkeypatch):
    spec_file(TINY, "bases/base.yaml")
    child = spec_file("""
        extends: ../bases/base.yaml
        num_classes: 5
    """, "nets/child.yaml")
    monkeypatch.chdir(tmp_path / "bases")  # resolution must not depend on the working folder
    spec = load_spec(child)
    assert spec.name == "tiny" and spec.num_classes == 5 and len(spec.stages) == 2


def test_extends_chain_of_two(spec_file):
    spec_file("""
        extends: coatnet-0
        name: middle
        input: {size: 256}
    """, "middle.yaml")
    top = spec_file("""
        extends: middle.yaml
        name: top
        num_classes: 100
    """, "top.yaml")
    spec = load_spec(top)
    assert spec.name == "top"
    assert spec.input.size == 256
    assert spec.num_classes == 100
    assert [s.depth for s in spec.stages] == [2, 3, 5, 2]


def test_extends_deep_merge_keeps_sibling_keys(spec_file):
    path = spec_file("""
        extends: coatnet-0
        head: {dropout: 0.3}
        stem: {act: relu}
        input: {channels: 1}
    """)
    spec = load_spec(path)
    assert spec.head.dropout == 0.3
    assert spec.head.hidden == 768 and spec.head.norm == "layernorm"  # siblings kept from the preset
    assert isinstance(spec.stem, ConvStem)
    assert spec.stem.act == "relu" and spec.stem.channels == [64, 64] and spec.stem.strides == [2, 1]
    assert spec.input.channels == 1 and spec.input.size == 224


def test_extends_unknown_and_cyclic_are_errors_at_extends(spec_file):
    bad = spec_file("extends: no-such-preset\n", "bad.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    assert [p for p, _ in problems(info)] == ["extends"]
    assert "no-such-preset" in info.value.problems[0].message
    spec_file("extends: b.yaml\n", "a.yaml")
    b = spec_file("extends: a.yaml\n", "b.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(b)
    assert [p for p, _ in problems(info)] == ["extends"]
    assert "cyclic" in info.value.problems[0].message


def test_presets_are_indexed_and_load():
    index = preset_index()
    for name in ("coatnet-0", "vit_c-4gf", "vit_p-4gf", "cait-xxs24", "convnext-t", "resnet-50"):
        assert name in index
        assert load_spec(name).name == name


def test_archspace_presets_folder_is_searched_first(tmp_path, monkeypatch):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "coatnet-0.yaml").write_text(TINY.replace("name: tiny", "name: coatnet-0"))
    monkeypatch.setenv("ARCHSPACE_PRESETS", str(user))
    assert preset_index()["coatnet-0"] == user / "coatnet-0.yaml"
    assert len(load_spec("coatnet-0").stages) == 2


# --------------------------------------------------------------------------- layout


def test_layout_switches_block_kind_and_keeps_depth_and_width(spec_file):
    path = spec_file("""
        extends: coatnet-0
        layout: C-C-T-T
        stages:
          - {block: transformer, depth: 2, width: 96, head_size: 32}
          - {block: transformer, depth: 3, width: 192, head_size: 32}
          - {block: mbconv, depth: 5, width: 384}
          - {block: mbconv, depth: 2, width: 768}
    """)
    spec = load_spec(path)
    assert [type(s) for s in spec.stages] == [MBConvStage, MBConvStage, TransformerStage, TransformerStage]
    assert [(s.depth, s.width) for s in spec.stages] == [(2, 96), (3, 192), (5, 384), (2, 768)]
    assert spec.stages[2].attention == "relative"
    assert spec.layout == "C-C-T-T"


def test_layout_on_a_preset_changes_only_the_switched_stages(spec_file):
    base = load_spec("coatnet-0")
    spec = load_spec(spec_file("extends: coatnet-0\nlayout: C-T-T-T\n"))
    assert [s.block for s in spec.stages] == ["mbconv", "transformer", "transformer", "transformer"]
    assert [(s.depth, s.width, s.stride) for s in spec.stages] == [(s.depth, s.width, s.stride) for s in base.stages]
    assert spec.stages[0] == base.stages[0]
    assert spec.stages[2:] == base.stages[2:]
    assert spec.stages[1].attention == "relative"


def test_layout_vit_rel_gives_patchify_stem_and_one_relative_stage(spec_file):
    spec = load_spec(spec_file("extends: coatnet-0\nlayout: VIT_REL\n"))
    assert isinstance(spec.stem, PatchifyStem) and spec.stem.patch == 16
    assert len(spec.stages) == 1
    (stage,) = spec.stages
    assert isinstance(stage, TransformerStage)
    assert stage.attention == "relative"
    assert stage.depth == 2 + 3 + 5 + 2
    assert stage.width == 384  # the deepest stage's width
    assert stage.stride == 1
    assert spec.head.hidden == 768  # the rest of the spec is kept


@pytest.mark.parametrize(
    "layout, fragment",
    [("C-C-T", "names 3 stages but the spec has 4"), ("C-C-T-T-T", "names 5 stages"),
     ("C-C-Q-T", "unknown layout letter"), ("c-c-t-t", "unknown layout letter"), ("VIT_ABS", "unknown layout")],
)
def test_bad_layout_is_an_error_at_layout(spec_file, layout, fragment):
    with pytest.raises(SpecError) as info:
        load_spec(spec_file(f"extends: coatnet-0\nlayout: {layout}\n"))
    assert [p for p, _ in problems(info)] == ["layout"]
    assert fragment in info.value.problems[0].message


def test_layout_disagreeing_with_stages_fails_direct_validation():
    data = yaml.safe_load(TINY)
    data["layout"] = "T-T"
    spec = load_spec(data)  # the loader applies the layout
    assert [s.block for s in spec.stages] == ["transformer", "transformer"]
    with pytest.raises(Exception, match="layout"):
        NetworkSpec.model_validate(data)  # without the loader, stage 0 disagrees


def test_set_overrides_survive_vit_rel(spec_file):
    path = spec_file("extends: coatnet-0\nlayout: VIT_REL\n")
    spec = load_spec(path, ["stem.patch=8", "stages[0].qkv_bias=false"])
    assert spec.stem.patch == 8
    assert spec.stages[0].qkv_bias is False


# --------------------------------------------------------------------------- --set overrides


def test_set_int_float_list_nested_and_list_index():
    spec = load_spec("coatnet-0", [
        "stages[2].depth=6",
        "drop_path.rate=0.35",
        "stem.channels=[32, 48]",
        "stem.strides[1]=2",
        "head.hidden=512",
        "input.size=256",
    ])
    assert spec.stages[2].depth == 6
    assert spec.drop_path.rate == pytest.approx(0.35)
    assert spec.stem.channels == [32, 48]
    assert spec.stem.strides == [2, 2]
    assert spec.head.hidden == 512
    assert spec.input.size == 256
    # untouched values stay
    assert spec.stages[3].depth == 2 and spec.num_classes == 1000


def test_set_wildcard_sets_every_list_item():
    assert parse_path("stages[*].act") == ("stages", "*", "act")
    assert format_path(("stages", "*", "act")) == "stages[*].act"
    spec = load_spec("coatnet-0", ["stages[*].depth=1", "stages[*].stride=1"])
    assert [(s.depth, s.stride) for s in spec.stages] == [(1, 1)] * 4
    with pytest.raises(SpecError) as info:
        load_spec("coatnet-0", ["input[*].x=1"])
    assert problems(info) == [("input[*].x", "--set cannot reach this path: input is not a list")]


def test_set_trailing_wildcard_sets_every_item():
    spec = load_spec("coatnet-0", ["stem.channels[*]=32"])
    assert spec.stem.channels == [32, 32]


def test_set_mapping_in_a_spec_file(spec_file):
    path = spec_file("""
        extends: coatnet-0
        set:
          stages[*].act: silu
          stages[2].depth: 4
    """)
    spec = load_spec(path)
    assert [s.act for s in spec.stages] == ["silu"] * 4
    assert [s.depth for s in spec.stages] == [2, 3, 4, 2]
    bad = spec_file("extends: coatnet-0\nset:\n  stages[9].depth: 1\n", "bad.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    assert [p for p, _ in problems(info)] == ["stages[9].depth"]


def test_extends_in_raw_mapping():
    spec = load_spec({"extends": "coatnet-0", "num_classes": 7})
    assert spec.num_classes == 7 and len(spec.stages) == 4


def test_set_values_are_yaml_typed():
    data = apply_overrides({"a": {"b": 1}}, ["a.b=2", "a.c=0.5", "a.d=[1, 2]", "a.e=true", "a.f=hello", "a.g=",
                                             "a.h={x: 1}", "a.i=[1"])
    assert data == {"a": {"b": 2, "c": 0.5, "d": [1, 2], "e": True, "f": "hello", "g": None, "h": {"x": 1},
                          "i": "[1"}}


def test_set_accepts_key_value_pairs_and_does_not_touch_input():
    data = {"stages": [{"depth": 1}]}
    out = apply_overrides(data, [(("stages", 0, "depth"), 4)])
    assert out == {"stages": [{"depth": 4}]} and data == {"stages": [{"depth": 1}]}


def test_set_later_override_wins_and_size_wins_over_set():
    spec = load_spec("coatnet-0", ["stages[0].depth=3", "stages[0].depth=4", "input.size=256"], size=192)
    assert spec.stages[0].depth == 4
    assert spec.input.size == 192


def test_set_bad_paths_are_all_reported():
    with pytest.raises(SpecError) as info:
        load_spec("coatnet-0", ["stages[9].depth=1", "stages[x=1", "nodepth", "name.x=1"])
    got = problems(info)
    assert [p for p, _ in got] == ["stages[9].depth", "--set", "--set", "name.x"]
    assert "out of range (4 items)" in got[0][1]
    assert "malformed path" in got[1][1]
    assert "PATH=VALUE" in got[2][1]


# --------------------------------------------------------------------------- validation problems carry paths


def test_validation_reports_every_problem_with_its_path():
    with pytest.raises(SpecError) as info:
        load_spec("coatnet-0", ["stages[0].depth=0", "stages[1].width=-3", "stages[2].width=200", "stages[3].foo=1",
                                "stem.kind=bogus", "head.pool=max"])
    paths = [p for p, _ in problems(info)]
    assert sorted(paths) == sorted(["stages[0].depth", "stages[1].width", "stages[2].width", "stages[3].foo",
                                    "stem", "head.pool"])
    msgs = dict(problems(info))
    assert msgs["stages[2].width"] == "200 is not a multiple of head_size 32"
    assert "unknown key" in msgs["stages[3].foo"]
    assert "bogus" in msgs["stem"]


def test_spec_models_are_frozen_and_strict():
    spec = load_spec("coatnet-0")
    with pytest.raises(Exception):
        spec.num_classes = 3  # type: ignore[misc]
    with pytest.raises(SpecError):
        load_spec({**yaml.safe_load(TINY), "extra": 1})


def test_class_attention_defaults():
    stage = ClassAttentionStage(depth=2, width=192)
    assert stage.stride == 1 and stage.resolved_heads() == 4 and stage.layer_scale == pytest.approx(1e-5)


# --------------------------------------------------------------------------- schema and round trip


def test_json_schema_names_every_block_and_stem_kind():
    schema = NetworkSpec.model_json_schema()
    text = json.dumps(schema)
    for tag in ("mbconv", "transformer", "class_attention", "bottleneck", "convnext", "patchify", "conv", "resnet"):
        assert f'"{tag}"' in text
    assert schema["additionalProperties"] is False
    assert {"stem", "stages", "input", "head", "num_classes", "layout"} <= set(schema["properties"])
    assert "stem" in schema["required"]
    assert "block" in json.dumps(schema["properties"]["stages"])


@pytest.mark.parametrize("name", ["coatnet-0", "vit_c-4gf", "cait-xxs24", "convnext-t", "resnet-50"])
def test_dump_then_load_gives_an_equal_spec(name, tmp_path):
    spec = load_spec(name)
    path = tmp_path / f"{name}-dump.yaml"
    path.write_text(dump_spec(spec))
    again = load_spec(path)
    assert again == spec
    assert dump_spec(again) == dump_spec(spec)


@pytest.mark.parametrize("layout", ["C-T-T-T", "VIT_REL"])
def test_dump_round_trip_with_layout(spec_file, tmp_path, layout):
    spec = load_spec(spec_file(f"extends: coatnet-0\nlayout: {layout}\n"))
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_spec(spec))
    assert "layout" in yaml.safe_load(path.read_text())
    assert load_spec(path) == spec


def test_load_spec_from_mapping_does_not_mutate_it():
    data = yaml.safe_load(TINY)
    before = json.dumps(data, sort_keys=True)
    spec = load_spec(data, ["stages[0].depth=3"])
    assert spec.stages[0].depth == 3
    assert json.dumps(data, sort_keys=True) == before


# -- dump_spec round trip ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(preset_index()))
def test_dump_spec_loads_back_into_the_same_spec(name):
    from archspace.spec.io import validate

    spec = load_spec(name)
    assert validate(yaml.safe_load(dump_spec(spec))) == spec


def test_an_explicit_null_that_is_not_the_default_survives_the_dump():
    """No LayerScale on a class-attention stage (default 1e-5) is written as null, not left out:
    the spec.yaml of a trial must describe the network that was trained."""
    spec = load_spec("cait-xxs24", ["stages[1].layer_scale=null"])
    assert spec.stages[1].layer_scale is None
    text = dump_spec(spec)
    assert yaml.safe_load(text)["stages"][1]["layer_scale"] is None
    assert "description" not in yaml.safe_load(text)          # a None that is the default stays out
    assert load_spec(yaml.safe_load(text)).stages[1].layer_scale is None


def test_norm_last_false_leaves_the_last_stem_conv_bare_in_module_and_cost():
    from archspace import compile_network, complexity

    paper, timm_style = load_spec("coatnet-0", size=32), load_spec("coatnet-0", ["stem.norm_last=false"], size=32)
    last = compile_network(timm_style).stem[-1]
    assert isinstance(last[1], torch.nn.Identity) and isinstance(last[2], torch.nn.Identity)
    assert last[0].bias is None
    assert complexity(paper)["params"] - complexity(timm_style)["params"] == 2 * 64  # the norm's gain and bias
    with pytest.raises(SpecError) as exc:
        load_spec("coatnet-0", ["stem.norm_last=false", "stem.norm=none", "stem.act=none"])
    assert problems(exc) == [("stem.norm_last", "false changes nothing when norm and act are none")]


def test_timm_style_coatnet_flops():
    """The paper's CoAtNet-0 and timm's differ by where MBConv strides (docs/models-coatnet.md)."""
    from archspace import complexity

    assert round(complexity(load_spec("coatnet-0"))["flops"] / 1e9, 2) == 4.14
    assert round(complexity(load_spec("coatnet-0-timm"))["flops"] / 1e9, 2) == 4.55
    timm_style = load_spec("coatnet-0-timm")
    assert timm_style.stem.norm_last is False
    assert [s.downsample for s in timm_style.stages[:2]] == ["depthwise", "depthwise"]
    assert {s.shortcut_pool for s in timm_style.stages} == {"avg"}
