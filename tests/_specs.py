"""Shared helpers for the block and cost tests: small specs of every kind, a hypothesis
strategy of random valid specs, and a flop counter that also counts the CPU flash kernel.

Imported as ``_specs`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from archspace import load_spec

NUM_CLASSES = 10


def spec(stem: dict, stages: list[dict], size: int = 32, head: dict | None = None, **extra: Any):
    """A validated spec from its parts (small input, 10 classes)."""
    data = {"input": {"size": size, "channels": 3}, "num_classes": NUM_CLASSES, "stem": stem, "stages": stages}
    if head is not None:
        data["head"] = head
    data.update(extra)
    return load_spec(data)


# ---------------------------------------------------------------------------------------------
# Small specs of every block kind (input 32, a few thousand to a few hundred thousand params).

CONV_STEM = {"kind": "conv", "channels": [16], "strides": [2]}

BLOCK_SPECS: dict[str, dict] = {
    "mbconv-conv": dict(
        stem=CONV_STEM,
        stages=[{"block": "mbconv", "depth": 2, "width": 32, "downsample": "conv"},
                {"block": "mbconv", "depth": 1, "width": 32, "downsample": "conv", "shortcut_pool": "avg"}],
    ),
    "mbconv-depthwise": dict(
        stem=CONV_STEM,
        stages=[{"block": "mbconv", "depth": 2, "width": 32, "downsample": "depthwise", "kernel": 5},
                {"block": "mbconv", "depth": 1, "width": 48, "downsample": "depthwise", "se_ratio": 0}],
    ),
    "transformer-relative": dict(
        stem=CONV_STEM,
        stages=[{"block": "mbconv", "depth": 1, "width": 32},
                {"block": "transformer", "depth": 2, "width": 64, "attention": "relative", "head_size": 32},
                {"block": "transformer", "depth": 1, "width": 64, "attention": "relative", "head_size": 16,
                 "stride": 1, "talking_heads": True, "layer_scale": 0.1}],
    ),
    "transformer-relative-cls": dict(
        stem=CONV_STEM,
        stages=[{"block": "transformer", "depth": 2, "width": 32, "attention": "relative", "heads": 2,
                 "stride": 1, "class_token": True, "talking_heads": True, "layer_scale": 0.1}],
        head={"pool": "cls"},
    ),
    "transformer-absolute": dict(
        stem={"kind": "patchify", "patch": 8},
        stages=[{"block": "transformer", "depth": 2, "width": 64, "heads": 4, "mlp_ratio": 3,
                 "attention": "absolute", "stride": 1, "class_token": True, "talking_heads": True,
                 "layer_scale": 0.1}],
        head={"pool": "cls"},
    ),
    "class-attention": dict(
        stem={"kind": "patchify", "patch": 8},
        stages=[{"block": "transformer", "depth": 2, "width": 64, "heads": 2, "attention": "absolute",
                 "stride": 1, "talking_heads": True, "layer_scale": 0.1},
                {"block": "class_attention", "depth": 2, "width": 64, "heads": 2, "layer_scale": 0.1}],
        head={"pool": "cls"},
    ),
    "bottleneck": dict(
        stem={"kind": "resnet", "width": 16},
        stages=[{"block": "bottleneck", "depth": 2, "width": 64, "stride": 1},
                {"block": "bottleneck", "depth": 2, "width": 128}],
        head={"pool": "avg", "norm": "none"},
    ),
    "convnext": dict(
        stem={"kind": "patchify", "patch": 4, "norm": "layernorm"},
        stages=[{"block": "convnext", "depth": 2, "width": 32, "stride": 1},
                {"block": "convnext", "depth": 1, "width": 64}],
    ),
    "bottleneck-roadmap": dict(
        stem={"kind": "patchify", "patch": 4},
        stages=[{"block": "bottleneck", "depth": 2, "width": 32, "stride": 1, "order": "first",
                 "groups": "depthwise", "norms": "one", "activations": "one", "downsample": "separate",
                 "expansion": 4, "kernel": 7, "norm": "layernorm", "act": "gelu", "layer_scale": 0.1},
                {"block": "bottleneck", "depth": 1, "width": 64, "order": "first", "groups": "depthwise",
                 "norms": "one", "activations": "one", "downsample": "separate", "expansion": 4}],
    ),
}

STEM_SPECS: dict[str, dict] = {
    "patchify": {"kind": "patchify", "patch": 4, "width": 24, "norm": "layernorm"},
    "conv": {"kind": "conv", "channels": [8, 16], "strides": [2, 2]},
    "conv-project": {"kind": "conv", "channels": [8, 16, 16], "project": 24, "rule": "vitc"},
    "resnet": {"kind": "resnet", "width": 16, "kernel": 7},
}


# ---------------------------------------------------------------------------------------------
# Measured flops.

def _flash_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """The CPU flash kernel FlopCounterMode leaves out: Q·Kᵀ and A·V, 2 flops per multiply-add."""
    return sdpa_flop_count(query, key, value)


CUSTOM_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _flash_cpu_flops}


def measured_macs(model: torch.nn.Module, size: int, channels: int = 3, device: str = "cpu") -> float:
    """Multiply-adds of one eval-mode, no-grad forward pass of a batch-1 image, measured by torch."""
    model.eval()
    x = torch.randn(1, channels, size, size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOPS) as counter:
        model(x)
    return counter.get_total_flops() / 2


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Random valid specs.

ACTS = ["relu", "gelu", "silu"]


@st.composite
def stems(draw) -> tuple[dict, int]:
    """A stem and its stride."""
    kind = draw(st.sampled_from(["patchify", "conv", "resnet"]))
    if kind == "patchify":
        patch = draw(st.sampled_from([2, 4]))
        stem = {"kind": "patchify", "patch": patch, "norm": draw(st.sampled_from(["none", "layernorm"]))}
        if draw(st.booleans()):
            stem["width"] = draw(st.sampled_from([16, 32]))
        return stem, patch
    if kind == "conv":
        n = draw(st.integers(1, 3))
        channels = draw(st.lists(st.sampled_from([8, 16, 32]), min_size=n, max_size=n))
        strides = draw(st.lists(st.sampled_from([1, 2]), min_size=n, max_size=n))
        stem = {"kind": "conv", "channels": channels, "strides": strides,
                "norm": draw(st.sampled_from(["batchnorm", "none"])), "act": draw(st.sampled_from(ACTS))}
        if draw(st.booleans()):
            stem["project"] = draw(st.sampled_from([16, 32]))
        return stem, math.prod(strides)
    stem = {"kind": "resnet", "width": draw(st.sampled_from([16, 32])), "kernel": draw(st.sampled_from([3, 7]))}
    return stem, 4


def _heads(draw, width: int) -> dict:
    if draw(st.booleans()):
        return {"heads": draw(st.sampled_from([h for h in (1, 2, 4) if width % h == 0]))}
    return {"head_size": draw(st.sampled_from([s for s in (16, 32) if width % s == 0]))}


@st.composite
def networks(draw, max_size: int = 128) -> dict:
    """Raw data of a small valid network: a stem, 1-4 stages, maybe a final class_attention."""
    stem, stride = draw(stems())
    stages, prefix, positioned = [], False, False
    for _ in range(draw(st.integers(1, 4))):
        # after a class token only transformer stages of stride 1 may follow
        kind = "transformer" if prefix else draw(st.sampled_from(["mbconv", "transformer", "convnext", "bottleneck"]))
        depth = draw(st.integers(1, 3))
        s = draw(st.sampled_from([1, 2]))
        if kind == "mbconv":
            width = draw(st.sampled_from([16, 32, 48]))
            stage = {"block": "mbconv", "downsample": draw(st.sampled_from(["conv", "depthwise"])),
                     "expansion": draw(st.sampled_from([2, 4])), "se_ratio": draw(st.sampled_from([0, 0.25])),
                     "kernel": draw(st.sampled_from([3, 5])), "shortcut_pool": draw(st.sampled_from(["max", "avg"]))}
        elif kind == "transformer":
            width = draw(st.sampled_from([32, 64]))
            attention = draw(st.sampled_from(["relative", "absolute"]))
            if attention == "absolute" or prefix:
                s = 1
            stage = {"block": "transformer", "attention": attention, **_heads(draw, width),
                     "mlp_ratio": draw(st.sampled_from([2, 3, 4])), "talking_heads": draw(st.booleans()),
                     "qkv_bias": draw(st.booleans()),
                     "layer_scale": draw(st.sampled_from([None, 1e-5]))}
            if not prefix and s == 1 and draw(st.integers(0, 3)) == 0:
                stage["class_token"] = True
                prefix = True
            positioned = positioned or attention == "absolute"
        else:
            width = draw(st.sampled_from([16, 32, 64]))
            stage = {"block": kind}
            if kind == "bottleneck":
                stage.update(
                    expansion=draw(st.sampled_from([0.25, 1, 4])), order=draw(st.sampled_from(["middle", "first"])),
                    groups=draw(st.sampled_from([1, 2, "depthwise"])), norms=draw(st.sampled_from(["all", "one"])),
                    activations=draw(st.sampled_from(["all", "one"])),
                    downsample=draw(st.sampled_from(["block", "separate"])),
                    norm=draw(st.sampled_from(["batchnorm", "layernorm"])), kernel=draw(st.sampled_from([1, 3, 5])),
                    layer_scale=draw(st.sampled_from([None, 1e-6])), bias=draw(st.booleans()),
                )
            else:
                stage.update(kernel=draw(st.sampled_from([3, 7])), expansion=draw(st.sampled_from([2, 4])))
        stage.update(depth=depth, width=width, stride=s)
        stride *= s
        stages.append(stage)
    if draw(st.integers(0, 2)) == 0:
        width = stages[-1]["width"]
        stages.append({"block": "class_attention", "depth": draw(st.integers(1, 2)), "width": width,
                       "heads": draw(st.sampled_from([h for h in (1, 2, 4) if width % h == 0])),
                       "layer_scale": draw(st.sampled_from([None, 1e-5]))})
        prefix = True
    sizes = [stride * m for m in (1, 2, 3, 4) if stride * m <= max(max_size, stride)]
    head = {"pool": "cls" if prefix and draw(st.booleans()) else "avg",
            "norm": draw(st.sampled_from(["layernorm", "none"])),
            "hidden": draw(st.sampled_from([None, 32]))}
    return {"input": {"size": draw(st.sampled_from(sizes)), "channels": 3}, "num_classes": NUM_CLASSES,
            "stem": stem, "stages": stages, "head": head}
