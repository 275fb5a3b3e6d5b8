"""How timm names the weights of each family, and how its tensors become archspace's.

One :class:`Table` per family: rules from a timm key (a regular expression matched in
full) to an archspace key (a template), each with the conversion its tensor needs. Named
groups fill the template; two are special:

* ``flat_<block>``: timm numbers the blocks of a ViT or CaiT straight through
  (``blocks.13``); archspace counts per stage. The number is located among the stages of
  that block kind and gives ``{s}`` (stage) and ``{b}`` (block).
* ``layer``: ResNet's 1-based ``layerN`` gives stage ``{s}`` = N - 1.

A 1-based group ``i`` also gives ``{i0}`` = i - 1; ``{cls}`` is the stage that inserts the
class token and ``{pos}`` the stage that adds the position table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..spec import NetworkSpec

Convert = Callable[[torch.Tensor, Any], torch.Tensor]


def keep(t: torch.Tensor, stage: Any) -> torch.Tensor:
    return t


def linear_to_conv(t: torch.Tensor, stage: Any) -> torch.Tensor:
    """A linear weight (out, in) as a 1×1 convolution's (out, in, 1, 1)."""
    return t.reshape(*t.shape, 1, 1) if t.ndim == 2 else t


def conv_to_linear(t: torch.Tensor, stage: Any) -> torch.Tensor:
    """A 1×1 convolution's weight (out, in, 1, 1) as a linear one (out, in)."""
    return t.flatten(1) if t.ndim == 4 else t


def qkv_heads_first(t: torch.Tensor, stage: Any) -> torch.Tensor:
    """timm's 2-D attention orders the qkv rows head by head (q, k, v of head 0, then of
    head 1, ...); archspace orders them q of every head, then k, then v."""
    t = conv_to_linear(t, stage)
    heads = stage.resolved_heads()
    rest = t.shape[1:]
    return t.reshape(heads, 3, -1, *rest).transpose(0, 1).reshape(t.shape[0], *rest)


def relative_table(t: torch.Tensor, stage: Any) -> torch.Tensor:
    """timm's relative bias table ((2H-1)·(2W-1), heads) as archspace's (heads, 2H-1, 2W-1)."""
    if t.ndim != 2:
        return t
    side = math.isqrt(t.shape[0])
    if side * side != t.shape[0]:
        return t
    return t.transpose(0, 1).reshape(t.shape[1], side, side)


@dataclass(frozen=True, slots=True)
class Rule:
    """``pattern`` (a timm key) → ``target`` (an archspace key) through ``convert``;
    ``block`` limits the rule to stages of that block kind."""

    pattern: str
    target: str
    convert: Convert = keep
    block: str | None = None


def _always(spec: NetworkSpec) -> bool:
    return True


def _no_change(state: dict[str, torch.Tensor], spec: NetworkSpec) -> dict[str, torch.Tensor]:
    return state


@dataclass(frozen=True)
class Table:
    """The timm names of one family; ``matches`` says whether a spec is of this family and
    ``prepare`` rewrites what one key cannot do alone (the class row of a ViT position table)."""

    name: str
    rules: tuple[Rule, ...]
    matches: Callable[[NetworkSpec], bool] = _always
    prepare: Callable[[dict, NetworkSpec], dict] = _no_change
    compiled: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "compiled", tuple((re.compile(r.pattern), r) for r in self.rules))

    def locate(self, key: str, spec: NetworkSpec) -> tuple[str, Convert, Any] | None:
        """The archspace key, conversion and stage spec for a timm key; ``None`` when no rule
        matches (or a block number lies beyond the network)."""
        for regex, rule in self.compiled:
            m = regex.fullmatch(key)
            if m is None:
                continue
            fields = {"cls": _first(spec, _inserts_class_token), "pos": _first(spec, _adds_position),
                      **m.groupdict()}
            for name, value in m.groupdict().items():
                if name.startswith("flat_"):
                    where = _flat(spec, name[len("flat_"):], int(value))
                    if where is None:
                        return None
                    fields["s"], fields["b"] = where
                elif name == "layer":
                    fields["s"] = int(value) - 1
                elif name == "i":
                    fields["i0"] = int(value) - 1
            stage = int(fields["s"]) if "s" in fields else None
            stage_spec = spec.stages[stage] if stage is not None and 0 <= stage < len(spec.stages) else None
            if rule.block is not None and (stage_spec is None or stage_spec.block != rule.block):
                continue
            return rule.target.format(**fields), rule.convert, stage_spec
        return None


def _flat(spec: NetworkSpec, block: str, n: int) -> tuple[int, int] | None:
    for s, stage in enumerate(spec.stages):
        if stage.block != block:
            continue
        if n < stage.depth:
            return s, n
        n -= stage.depth
    return None


def _inserts_class_token(stage) -> bool:
    return stage.block == "class_attention" or getattr(stage, "class_token", False)


def _adds_position(stage) -> bool:
    return getattr(stage, "attention", None) == "absolute"


def _first(spec: NetworkSpec, test: Callable[[Any], bool]) -> int:
    return next((i for i, stage in enumerate(spec.stages) if test(stage)), 0)


def _blocks(spec: NetworkSpec) -> set[str]:
    return {s.block for s in spec.stages}


def _fold_class_row(state: dict, spec: NetworkSpec) -> dict:
    """timm's ViT adds its position table to the class token too: row 0 of ``pos_embed``
    belongs to the class token. archspace adds positions to the patches only, so that row is
    added into the class token once, and the table keeps the patch rows."""
    pos, cls = state.get("pos_embed"), state.get("cls_token")
    if pos is None or cls is None or pos.ndim != 3:
        return state
    rows = pos.shape[1] - cls.shape[1]
    if rows <= 0 or math.isqrt(rows) ** 2 != rows:
        return state
    state = dict(state)
    prefix = cls.shape[1]
    state["cls_token"] = cls + pos[:, :prefix]
    state["pos_embed"] = pos[:, prefix:]
    return state


_SA = r"blocks\.(?P<flat_transformer>\d+)"
_SA_T = "stages.{s}.blocks.{b}"
_TRANSFORMER = (
    Rule(_SA + r"\.norm1\.(?P<p>weight|bias)", _SA_T + ".norm1.{p}"),
    Rule(_SA + r"\.attn\.qkv\.(?P<p>weight|bias)", _SA_T + ".attn.qkv.{p}"),
    Rule(_SA + r"\.attn\.proj\.(?P<p>weight|bias)", _SA_T + ".attn.proj.{p}"),
    Rule(_SA + r"\.norm2\.(?P<p>weight|bias)", _SA_T + ".norm2.{p}"),
    Rule(_SA + r"\.mlp\.(?P<fc>fc1|fc2)\.(?P<p>weight|bias)", _SA_T + ".mlp.{fc}.{p}"),
)
_PATCHES = (
    Rule(r"patch_embed\.proj\.(?P<p>weight|bias)", "stem.0.0.{p}"),
    Rule(r"pos_embed", "stages.{pos}.position.pos"),
    Rule(r"norm\.(?P<p>weight|bias)", "head.norm.{p}"),
    Rule(r"head\.(?P<p>weight|bias)", "head.fc.{p}"),
)

VIT = Table(
    "vit",
    _PATCHES + _TRANSFORMER + (Rule(r"cls_token", "stages.{cls}.class_token.token"),),
    matches=lambda spec: spec.stem.kind == "patchify" and _blocks(spec) == {"transformer"},
    prepare=_fold_class_row,
)

_CA = r"blocks_token_only\.(?P<flat_class_attention>\d+)"
CAIT = Table(
    "cait",
    _PATCHES + _TRANSFORMER + (
        Rule(_SA + r"\.attn\.proj_l\.(?P<p>weight|bias)", _SA_T + ".attn.mix_logits.{p}"),
        Rule(_SA + r"\.attn\.proj_w\.(?P<p>weight|bias)", _SA_T + ".attn.mix_weights.{p}"),
        Rule(_SA + r"\.gamma_(?P<i>[12])", _SA_T + ".ls{i}.gamma"),
        Rule(r"cls_token", "stages.{cls}.class_token.token"),
        Rule(_CA + r"\.(?P<part>norm1|norm2)\.(?P<p>weight|bias)", _SA_T + ".{part}.{p}"),
        Rule(_CA + r"\.attn\.(?P<lin>q|k|v|proj)\.(?P<p>weight|bias)", _SA_T + ".attn.{lin}.{p}"),
        Rule(_CA + r"\.mlp\.(?P<fc>fc1|fc2)\.(?P<p>weight|bias)", _SA_T + ".mlp.{fc}.{p}"),
        Rule(_CA + r"\.gamma_(?P<i>[12])", _SA_T + ".ls{i}.gamma"),
    ),
    matches=lambda spec: "class_attention" in _blocks(spec),
)


_ST = r"stages\.(?P<s>\d+)"
_BLK = _ST + r"\.blocks\.(?P<b>\d+)"
_BLK_T = "stages.{s}.blocks.{b}"
CONVNEXT = Table(
    "convnext",
    (
        Rule(r"stem\.0\.(?P<p>weight|bias)", "stem.0.0.{p}"),
        Rule(r"stem\.1\.(?P<p>weight|bias)", "stem.0.1.{p}"),
        Rule(_ST + r"\.downsample\.0\.(?P<p>weight|bias)", "stages.{s}.down.0.{p}"),
        Rule(_ST + r"\.downsample\.1\.(?P<p>weight|bias)", "stages.{s}.down.1.0.{p}"),
        Rule(_BLK + r"\.conv_dw\.(?P<p>weight|bias)", _BLK_T + ".convs.0.0.{p}"),
        Rule(_BLK + r"\.norm\.(?P<p>weight|bias)", _BLK_T + ".convs.0.1.{p}"),
        Rule(_BLK + r"\.mlp\.fc1\.(?P<p>weight|bias)", _BLK_T + ".convs.1.0.{p}", linear_to_conv),
        Rule(_BLK + r"\.mlp\.fc2\.(?P<p>weight|bias)", _BLK_T + ".convs.2.0.{p}", linear_to_conv),
        Rule(_BLK + r"\.gamma", _BLK_T + ".layer_scale.gamma"),
        Rule(r"head\.(?P<part>norm|fc)\.(?P<p>weight|bias)", "head.{part}.{p}"),
    ),
    matches=lambda spec: spec.stem.kind == "patchify" and _blocks(spec) <= {"convnext", "bottleneck"},
)

_BN = r"(?P<p>weight|bias|running_mean|running_var|num_batches_tracked)"
_LAYER = r"layer(?P<layer>\d+)\.(?P<b>\d+)"
RESNET = Table(
    "resnet",
    (
        Rule(r"conv1\.weight", "stem.0.0.weight"),
        Rule(r"bn1\." + _BN, "stem.0.1.{p}"),
        Rule(_LAYER + r"\.conv(?P<i>[123])\.weight", _BLK_T + ".convs.{i0}.0.weight"),
        Rule(_LAYER + r"\.bn(?P<i>[123])\." + _BN, _BLK_T + ".convs.{i0}.1.{p}"),
        Rule(_LAYER + r"\.downsample\.(?P<i>[01])\." + r"(?P<p>weight|bias|running_mean|running_var|"
             r"num_batches_tracked)", _BLK_T + ".shortcut.{i}.{p}"),
        Rule(r"fc\.(?P<p>weight|bias)", "head.fc.{p}"),
    ),
    matches=lambda spec: spec.stem.kind == "resnet" and _blocks(spec) == {"bottleneck"},
)

_MB = _BLK
COATNET = Table(
    "coatnet",
    (
        Rule(r"stem\.conv(?P<i>[12])\.(?P<p>weight|bias)", "stem.{i0}.0.{p}"),
        Rule(r"stem\.norm(?P<i>[12])\." + _BN, "stem.{i0}.1.{p}"),
        # MBConv blocks
        Rule(_MB + r"\.shortcut\.expand\.(?P<p>weight|bias)", _BLK_T + ".shortcut.1.{p}", block="mbconv"),
        Rule(_MB + r"\.pre_norm\." + _BN, _BLK_T + ".norm.{p}", block="mbconv"),
        Rule(_MB + r"\.conv1_1x1\.weight", _BLK_T + ".expand.0.weight"),
        Rule(_MB + r"\.norm1\." + _BN, _BLK_T + ".expand.1.{p}", block="mbconv"),
        Rule(_MB + r"\.conv2_kxk\.weight", _BLK_T + ".dw.0.weight"),
        Rule(_MB + r"\.norm2\." + _BN, _BLK_T + ".dw.1.{p}", block="mbconv"),
        Rule(_MB + r"\.se\.fc1\.(?P<p>weight|bias)", _BLK_T + ".se.reduce.{p}"),
        Rule(_MB + r"\.se\.fc2\.(?P<p>weight|bias)", _BLK_T + ".se.expand.{p}"),
        Rule(_MB + r"\.conv3_1x1\.(?P<p>weight|bias)", _BLK_T + ".project.0.{p}"),
        # transformer blocks (2-D: 1×1 convolutions and layer norms over channels)
        Rule(_MB + r"\.norm1(\.norm)?\.(?P<p>weight|bias)", _BLK_T + ".norm1.{p}", block="transformer"),
        Rule(_MB + r"\.norm2\.(?P<p>weight|bias)", _BLK_T + ".norm2.{p}", block="transformer"),
        Rule(_MB + r"\.shortcut\.expand\.(?P<p>weight|bias)", _BLK_T + ".shortcut.{p}", conv_to_linear,
             block="transformer"),
        Rule(_MB + r"\.attn\.qkv\.weight", _BLK_T + ".attn.qkv.weight", qkv_heads_first, block="transformer"),
        Rule(_MB + r"\.attn\.qkv\.bias", _BLK_T + ".attn.qkv.bias", qkv_heads_first, block="transformer"),
        Rule(_MB + r"\.attn\.proj\.(?P<p>weight|bias)", _BLK_T + ".attn.proj.{p}", conv_to_linear),
        Rule(_MB + r"\.attn\.rel_pos\.relative_position_bias_table", _BLK_T + ".attn.bias.table", relative_table,
             block="transformer"),
        Rule(_MB + r"\.mlp\.(?P<fc>fc1|fc2)\.(?P<p>weight|bias)", _BLK_T + ".mlp.{fc}.{p}", conv_to_linear),
        Rule(r"head\.norm\.(?P<p>weight|bias)", "head.norm.{p}"),
        Rule(r"head\.pre_logits\.fc\.(?P<p>weight|bias)", "head.hidden.0.{p}"),
        Rule(r"head\.fc\.(?P<p>weight|bias)", "head.fc.{p}"),
    ),
    matches=lambda spec: (spec.stem.kind == "conv" and "mbconv" in _blocks(spec)
                          and _blocks(spec) <= {"mbconv", "transformer"}),
)

TABLES = (CONVNEXT, RESNET, CAIT, VIT, COATNET)
