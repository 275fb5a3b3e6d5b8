"""The command line: every kind of bad input exits 2 with one line per problem naming its path;
and the happy paths of build / list / schema / export."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import networkx as nx
import pytest
import torch

SMALL_VIT = """
stem: {kind: patchify, patch: 16}
stages:
  - {block: transformer, depth: 2, width: 96, stride: 1%s}
"""


def assert_invalid(result, expected: list[tuple[str, str]]):
    """Exit 2, no traceback, exactly one stderr line per expected ``(path, fragment)``, in any order."""
    assert result.exception is None, repr(result.exception)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    lines = result.err_lines
    assert len(lines) == len(expected), lines
    remaining = list(lines)
    for path, fragment in expected:
        match = next((ln for ln in remaining if ln.startswith(f"{path}: ") and fragment in ln), None)
        assert match is not None, (path, fragment, lines)
        remaining.remove(match)
    return lines


# --------------------------------------------------------------------------- bad input, one test each


def test_malformed_yaml(cli, spec_file):
    path = spec_file("name: [unclosed\nstages: 1\n")
    lines = assert_invalid(cli("build", path), [(str(path), "malformed YAML")])
    assert re.search(r"at line \d+, column \d+", lines[0])


def test_yaml_that_is_not_a_mapping(cli, spec_file):
    path = spec_file("- just\n- a list\n")
    assert_invalid(cli("build", path), [(str(path), "must hold a mapping")])


def test_unknown_key_in_a_stage(cli, spec_file):
    path = spec_file("""
        extends: coatnet-0
        stages:
          - {block: mbconv, depth: 2, width: 96}
          - {block: mbconv, depth: 3, width: 192, foo: 1}
          - {block: transformer, depth: 5, width: 384}
          - {block: transformer, depth: 2, width: 768}
    """)
    assert_invalid(cli("build", path), [("stages[1].foo", "unknown key")])


def test_unknown_top_level_key(cli, spec_file):
    path = spec_file("extends: coatnet-0\nwidht: 3\n")
    assert_invalid(cli("build", path), [("widht", "unknown key")])


def test_wrong_type(cli, spec_file):
    path = spec_file(SMALL_VIT.replace("width: 96", "width: abc") % "")
    assert_invalid(cli("build", path), [("stages[0].width", "valid integer")])


@pytest.mark.parametrize("depth", [0, -2])
def test_zero_or_negative_depth(cli, depth):
    assert_invalid(cli("build", "coatnet-0", "--set", f"stages[1].depth={depth}"),
                   [("stages[1].depth", "greater than 0")])


def test_zero_width(cli):
    assert_invalid(cli("build", "coatnet-0", "--set", "stages[0].width=0"), [("stages[0].width", "greater than 0")])


def test_width_not_divisible_by_heads(cli, spec_file):
    path = spec_file(SMALL_VIT % ", heads: 5")
    assert_invalid(cli("build", path), [("stages[0].width", "96 is not a multiple of heads 5")])


def test_width_not_divisible_by_head_size(cli):
    assert_invalid(cli("build", "coatnet-0", "--set", "stages[2].width=200"),
                   [("stages[2].width", "200 is not a multiple of head_size 32")])


def test_resolution_not_divisible_by_total_stride(cli):
    assert_invalid(cli("build", "coatnet-0", "--size", "100"),
                   [("input.size", "100 is not divisible by the network's total stride 32")])


def test_resolution_smaller_than_total_stride(cli):
    assert_invalid(cli("build", "coatnet-0", "--size", "16"), [("input.size", "no tokens would remain")])


def test_class_attention_not_last(cli, spec_file):
    path = spec_file("""
        stem: {kind: patchify, patch: 16}
        stages:
          - {block: transformer, depth: 1, width: 96, stride: 1, class_token: true}
          - {block: class_attention, depth: 1, width: 96}
          - {block: class_attention, depth: 1, width: 96}
        head: {pool: cls}
    """)
    assert_invalid(cli("build", path), [("stages[1].block", "must be the last stage")])


def test_cls_pool_without_class_token(cli, spec_file):
    path = spec_file("extends: coatnet-0\nhead: {pool: cls}\n")
    assert_invalid(cli("build", path), [("head.pool", "class token")])


def test_unknown_preset(cli):
    assert_invalid(cli("build", "coatnet-99"), [("coatnet-99", "unknown preset 'coatnet-99'")])


def test_missing_spec_file(cli, tmp_path):
    path = tmp_path / "nowhere.yaml"
    assert_invalid(cli("build", path), [(str(path), "no spec file")])


def test_unknown_preset_in_extends(cli, spec_file):
    path = spec_file("extends: coatnet-99\n")
    assert_invalid(cli("build", path), [("extends", "unknown preset 'coatnet-99'")])


def test_missing_file_in_extends(cli, spec_file):
    path = spec_file("extends: ./missing.yaml\n")
    assert_invalid(cli("build", path), [("extends", "no spec file")])


def test_cyclic_extends(cli, spec_file):
    a = spec_file("extends: b.yaml\nname: a\n", "a.yaml")
    spec_file("extends: a.yaml\nname: b\n", "b.yaml")
    assert_invalid(cli("build", a), [("extends", "cyclic extends: a.yaml -> b.yaml -> a.yaml")])


def test_self_extends_is_cyclic(cli, spec_file):
    a = spec_file("extends: a.yaml\n", "a.yaml")
    assert_invalid(cli("build", a), [("extends", "cyclic")])


def test_set_malformed_path(cli):
    assert_invalid(cli("build", "coatnet-0", "--set", "stages[x=1"), [("--set", "malformed path 'stages[x'")])


def test_set_without_value(cli):
    assert_invalid(cli("build", "coatnet-0", "--set", "stages[x"), [("--set", "PATH=VALUE")])


def test_set_index_out_of_range(cli):
    assert_invalid(cli("build", "coatnet-0", "--set", "stages[9].depth=1"),
                   [("stages[9].depth", "stages[9] is out of range (4 items)")])


def test_set_through_a_scalar(cli):
    assert_invalid(cli("build", "coatnet-0", "--set", "num_classes.x=1"), [("num_classes.x", "not a mapping")])


def test_bad_layout(cli, spec_file):
    path = spec_file("extends: coatnet-0\nlayout: C-C-T\n")
    assert_invalid(cli("build", path), [("layout", "names 3 stages but the spec has 4")])


def test_unknown_block_kind(cli):
    assert_invalid(cli("build", "coatnet-0", "--set", "stages[3].block=lstm"), [("stages[3]", "unknown kind 'lstm'")])


def test_several_problems_are_all_reported(cli, spec_file):
    path = spec_file("""
        extends: coatnet-0
        num_classes: 0
        stages:
          - {block: mbconv, depth: 0, width: 96}
          - {block: mbconv, depth: 3, width: 192, kernel: 4}
          - {block: transformer, depth: 5, width: 200}
          - {block: transformer, depth: 2, width: 768, bogus: true}
    """)
    assert_invalid(cli("build", path), [
        ("num_classes", "greater than 0"),
        ("stages[0].depth", "greater than 0"),
        ("stages[1].kernel", "4 must be odd"),
        ("stages[2].width", "not a multiple of the default head_size 32"),
        ("stages[3].bogus", "unknown key"),
    ])


def test_several_set_problems_are_all_reported(cli):
    assert_invalid(cli("build", "coatnet-0", "--set", "stages[9].depth=1", "--set", "stages[x=1",
                       "--set", "stages[7]=1"),
                   [("stages[9].depth", "out of range"), ("--set", "malformed"), ("stages[7]", "out of range")])


def test_several_graph_problems_are_all_reported(cli, spec_file):
    path = spec_file("""
        stem: {kind: patchify, patch: 16}
        stages:
          - {block: transformer, depth: 1, width: 96, stride: 1, class_token: true}
          - {block: class_attention, depth: 1, width: 96}
          - {block: class_attention, depth: 1, width: 96}
          - {block: class_attention, depth: 1, width: 96}
    """)
    assert_invalid(cli("build", path), [("stages[1].block", "must be the last stage"),
                                        ("stages[2].block", "must be the last stage")])


def test_export_without_file(cli):
    assert_invalid(cli("build", "coatnet-0", "--export", "onnx"), [("--export", "needs a FILE")])


def test_weights_larger_than_memory_are_refused_quickly(cli, spec_file):
    path = spec_file("""
        stem: {kind: patchify, patch: 16}
        stages:
          - {block: transformer, depth: 64, width: 65536, stride: 1}
    """)
    start = time.perf_counter()
    result = cli("build", path)
    elapsed = time.perf_counter() - start
    (line,) = assert_invalid(result, [(str(path), "GiB")])
    match = re.search(r"weights alone need ([\d.]+) GiB", line)
    assert match, line
    # 64 blocks × ~12 × 65536² float32 weights ≈ 12 TiB
    assert 11_000 < float(match.group(1)) < 14_000
    assert elapsed < 5, f"took {elapsed:.1f}s: something was allocated"


def test_usage_error_is_exit_2_without_traceback(cli):
    result = cli("build", "coatnet-0", "--format", "yaml")
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr + result.stdout


# --------------------------------------------------------------------------- happy paths


@pytest.fixture(scope="module")
def coatnet_json():
    from typer.testing import CliRunner

    from archspace.cli.app import app

    result = CliRunner().invoke(app, ["build", "coatnet-0", "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def build_json(cli, *args) -> dict:
    result = cli("build", *args, "--format", "json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.json()


def test_build_json_shape(coatnet_json):
    report = coatnet_json
    assert report["name"] == "coatnet-0"
    for key in ("params", "flops", "acts"):
        assert isinstance(report[key], int) and not isinstance(report[key], bool) and report[key] > 0
    # CoAtNet-0: 25M params, 4.2 GFLOPs in the paper
    assert 23e6 < report["params"] < 27e6
    assert 3.8e9 < report["flops"] < 4.6e9
    stages = report["stages"]
    assert [s["block"] for s in stages] == ["mbconv", "mbconv", "transformer", "transformer"]
    assert [s["depth"] for s in stages] == [2, 3, 5, 2]
    assert [s["width"] for s in stages] == [96, 192, 384, 768]
    assert [s["output"] for s in stages] == [[96, 56, 56], [192, 28, 28], [384, 14, 14], [768, 7, 7]]
    for s in stages:
        assert set(s) >= {"block", "depth", "width", "output", "params", "flops"}
        assert s["params"] > 0 and s["flops"] > 0
    assert sum(s["params"] for s in stages) < report["params"]
    assert sum(p["params"] for p in report["parts"]) == report["params"]
    assert sum(p["flops"] for p in report["parts"]) == report["flops"]


def test_build_json_is_one_object(cli):
    result = cli("build", "coatnet-0", "--format", "json")
    assert result.exit_code == 0
    assert len(result.stdout.strip().splitlines()) == 1
    assert isinstance(json.loads(result.stdout), dict)


def test_set_depth_changes_params(cli, coatnet_json):
    report = build_json(cli, "coatnet-0", "--set", "stages[2].depth=6")
    assert report["stages"][2]["depth"] == 6
    assert report["params"] > coatnet_json["params"]
    assert report["stages"][2]["params"] == pytest.approx(coatnet_json["stages"][2]["params"] * 6 / 5, rel=0.05)
    assert report["stages"][3]["params"] == coatnet_json["stages"][3]["params"]


def test_size_grows_flops(cli, coatnet_json):
    report = build_json(cli, "coatnet-0", "--size", "384")
    assert report["input"] == [3, 384, 384]
    assert report["stages"][3]["output"] == [768, 12, 12]
    assert report["flops"] > 2.5 * coatnet_json["flops"]
    # only the relative-position tables depend on the size: the stem and conv stages do not
    assert report["stages"][0]["params"] == coatnet_json["stages"][0]["params"]
    assert report["stages"][1]["params"] == coatnet_json["stages"][1]["params"]


def test_table_has_every_stage_row(cli):
    result = cli("build", "coatnet-0")
    assert result.exit_code == 0, result.stderr
    rows = [ln for ln in result.stdout.splitlines() if "stages[" in ln]
    assert len(rows) == 4
    for i, block in enumerate(["mbconv", "mbconv", "transformer", "transformer"]):
        row = next(r for r in rows if f"stages[{i}]" in r)
        assert block in row
    assert "stem" in result.stdout and "head" in result.stdout and "total" in result.stdout
    assert "25.04M" in result.stdout  # total params


def test_schema_is_valid_json(cli):
    result = cli("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "NetworkSpec"
    text = json.dumps(schema)
    for tag in ("mbconv", "transformer", "class_attention", "convnext", "bottleneck"):
        assert tag in text


def test_list_json_has_coatnet_with_params(cli, coatnet_json):
    result = cli("list", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    names = {r["name"] for r in rows}
    assert {"coatnet-0", "vit_c-4gf", "cait-xxs24", "convnext-t", "resnet-50"} <= names
    row = next(r for r in rows if r["name"] == "coatnet-0")
    assert row["family"] == "coatnet"
    assert "error" not in row
    assert row["params"] == coatnet_json["params"] and row["flops"] == coatnet_json["flops"]


def test_list_family_filter(cli):
    rows = json.loads(cli("list", "--family", "vit", "--format", "json").stdout)
    names = {r["name"] for r in rows}
    assert {"vit_c-4gf", "vit_p-4gf"} <= names
    assert all(r["family"] == "vit" for r in rows)
    assert "coatnet-0" not in names


def test_export_graphml(cli, tmp_path):
    out = tmp_path / "net.graphml"
    result = cli("build", "coatnet-0", "--export", "graphml", out, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["export"] == {"format": "graphml", "file": str(out)}
    graph = nx.read_graphml(out)
    assert list(nx.topological_sort(graph)) == ["input", "stem", "stages[0]", "stages[1]", "stages[2]",
                                                "stages[3]", "head"]
    assert graph.nodes["stages[2]"]["kind"] == "transformer"
    assert sum(d["params"] for _, d in graph.nodes(data=True)) == result.json()["params"]


def test_export_torchscript(cli, spec_file, tmp_path):
    # a small CoAtNet-like net (conv stem, mbconv, relative attention) keeps tracing fast
    path = spec_file("""
        extends: coatnet-0
        stem: {channels: [16, 16]}
        stages:
          - {block: mbconv, depth: 1, width: 32}
          - {block: mbconv, depth: 1, width: 32}
          - {block: transformer, depth: 1, width: 64}
          - {block: transformer, depth: 1, width: 64}
        head: {hidden: 64}
        num_classes: 10
    """)
    out = tmp_path / "net.pt"
    result = cli("build", path, "--size", "64", "--export", "torchscript", out, "--format", "json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["export"] == {"format": "torchscript", "file": str(out)}
    model = torch.jit.load(str(out))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == report["params"]


def test_export_table_format_says_where(cli, tmp_path):
    out = tmp_path / "net.graphml"
    result = cli("build", "coatnet-0", "--export", "graphml", out)
    assert result.exit_code == 0, result.stderr
    assert f"wrote graphml to {out}" in result.stdout
    assert out.stat().st_size > 0


# --------------------------------------------------------------------------- the real console script


def test_console_script_bad_spec_exits_2_without_traceback(tmp_path):
    exe = Path(sys.executable).parent / "archspace"
    assert exe.exists(), exe
    spec = tmp_path / "bad.yaml"
    spec.write_text("extends: coatnet-0\nstages:\n  - {block: mbconv, depth: 0, width: 96}\n")
    proc = subprocess.run([str(exe), "build", str(spec), "--set", "num_classes=0"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert sorted(lines) == sorted([
        "num_classes: input should be greater than 0 (got 0)",
        "stages[0].depth: input should be greater than 0 (got 0)",
    ])
