"""Analytic cost against built modules: params exactly, flops (multiply-adds) within 2% of
torch's FlopCounterMode, for every preset and for random valid specs."""

from __future__ import annotations

import pytest
import torch
from _specs import BLOCK_SPECS, measured_macs, n_params, networks, spec
from hypothesis import HealthCheck, given, settings

from archspace import compile_network, complexity, load_spec, lower
from archspace.spec import preset_index

PRESETS = sorted(preset_index())
BIG = ["coatnet-0", "vit_c-4gf", "convnext-t", "resnet-50", "cait-xxs24"]
FLOP_TOLERANCE = 0.02


def test_every_preset_is_covered():
    assert len(PRESETS) >= 6
    assert set(BIG) | {"vit_p-4gf"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds_and_runs_on_cpu_with_exact_params_and_flops(name):
    """Every preset compiles on the CPU at 64x64: params equal the analytic count, the forward
    pass gives finite logits, and torch's flop counter agrees with the analytic flops."""
    s = load_spec(name, size=64)
    cost = complexity(s)
    torch.manual_seed(0)
    model = compile_network(s).eval()
    assert cost["params"] == n_params(model)
    assert cost["params"] > 1_000_000
    measured = measured_macs(model, 64)
    assert measured == pytest.approx(cost["flops"], rel=FLOP_TOLERANCE)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, s.num_classes)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", BIG)
def test_preset_flops_match_flop_counter_at_224(name):
    s = load_spec(name)
    assert s.input.size == 224
    cost = complexity(s)
    model = compile_network(s)
    assert cost["params"] == n_params(model)
    measured = measured_macs(model, 224)
    assert measured == pytest.approx(cost["flops"], rel=FLOP_TOLERANCE)
    # and flops are what the papers quote: billions of multiply-adds, not of flops
    assert 1e9 < cost["flops"] < 6e9


def test_params_depend_on_size_only_through_position_tables():
    for name in ("convnext-t", "resnet-50"):
        assert complexity(load_spec(name, size=64))["params"] == complexity(load_spec(name))["params"]
    for name in ("coatnet-0", "vit_p-4gf", "cait-xxs24"):
        assert complexity(load_spec(name, size=64))["params"] < complexity(load_spec(name))["params"]


def test_flash_attention_flops_are_counted():
    """The attention products are in the measurement (the CPU flash kernel is mapped)."""
    s = spec(**BLOCK_SPECS["transformer-absolute"], size=32)
    model = compile_network(s)
    cost = complexity(s)
    measured = measured_macs(model, 32)
    heads, n, d, depth = 4, 4 * 4 + 1, 16, 2
    products = 2 * heads * n * n * d * depth
    assert measured == pytest.approx(cost["flops"], rel=1e-9)
    with torch.utils.flop_counter.FlopCounterMode(display=False) as plain:
        model(torch.randn(1, 3, 32, 32))
    assert plain.get_total_flops() / 2 in (measured, measured - products)


@pytest.mark.parametrize("name", ["deit-s", "cait-xxs24"])
def test_flop_counter_works_on_class_token_networks_in_eval_and_no_grad(name):
    """Counting a class-token network works under ``no_grad`` and gives what autograd mode gives."""
    s = load_spec(name, size=32)
    model = compile_network(s).eval()
    x = torch.randn(1, 3, 32, 32)
    counts = []
    for context in (torch.no_grad, torch.enable_grad):
        with context(), torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
            model(x)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_random_spec_params_equal_built(data):
    s = load_spec(data)  # the strategy only draws valid specs
    cost = complexity(s)
    model = compile_network(s)
    assert cost["params"] == n_params(model)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks(max_size=64))
def test_random_spec_flops_match_flop_counter(data):
    s = load_spec(data)
    cost = complexity(s)
    model = compile_network(s)
    measured = measured_macs(model, s.input.size)
    assert measured == pytest.approx(cost["flops"], rel=FLOP_TOLERANCE)


@pytest.mark.parametrize("name", PRESETS)
def test_parts_sum_to_total_and_acts_positive(name):
    s = load_spec(name)
    cost = complexity(s)
    assert cost["params"] > 0 and cost["flops"] > 0 and cost["acts"] > 0
    parts = cost["parts"]
    assert [p["part"] for p in parts] == ["stem", *(f"stages[{i}]" for i in range(len(s.stages))), "head"]
    for key in ("params", "flops", "acts"):
        assert sum(p[key] for p in parts) == cost[key]
    for p in parts:
        assert p["acts"] > 0, p["part"]
        assert p["flops"] > 0, p["part"]
    stages = cost["stages"]
    assert len(stages) == len(s.stages)
    for row, stage, part in zip(stages, s.stages, parts[1:-1]):
        assert (row["block"], row["depth"], row["width"], row["stride"]) == (
            stage.block, stage.depth, stage.width, stage.stride)
        assert (row["params"], row["flops"], row["acts"]) == (part["params"], part["flops"], part["acts"])


@pytest.mark.parametrize("name", PRESETS)
def test_cost_is_deterministic(name):
    a = complexity(load_spec(name))
    b = complexity(load_spec(name))
    assert a == b
    assert lower(load_spec(name)).cost() == lower(load_spec(name)).cost()


def test_cost_grows_with_depth_width_and_size():
    base = complexity(load_spec("coatnet-0", size=64))
    deeper = complexity(load_spec("coatnet-0", ["stages[2].depth=6"], size=64))
    wider = complexity(load_spec("coatnet-0", ["stages[0].width=128"], size=64))
    larger = complexity(load_spec("coatnet-0", size=128))
    for key in ("params", "flops", "acts"):
        assert deeper[key] > base[key]
        assert wider[key] > base[key]
    assert larger["flops"] > 3 * base["flops"]
    assert larger["acts"] > 3 * base["acts"]


def test_hand_count_of_one_transformer_block():
    """A hand count of one small transformer block, so the analytic formulas are pinned."""
    s = spec({"kind": "patchify", "patch": 8, "width": 32},
             [{"block": "transformer", "depth": 1, "width": 32, "heads": 2, "attention": "absolute",
               "stride": 1, "mlp_ratio": 2}], size=32, head={"pool": "avg", "norm": "none"})
    n, d = 16, 32  # tokens, width (the 2 heads do not change the count)
    stem = 3 * 32 * 8 * 8
    block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * (2 * d)
    head = d * 10
    assert complexity(s)["flops"] == stem * n + block + head
    params = (stem + 32) + (n * d) + 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * 2 * d + 2 * d) + (
        2 * d * d + d) + (d * 10 + 10)
    assert complexity(s)["params"] == params == n_params(compile_network(s))
