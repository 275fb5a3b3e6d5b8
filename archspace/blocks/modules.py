"""The torch modules of the families: stems, bottleneck / MBConv / transformer / class-attention
blocks and stages, and the classifier head.

The families (shape rules, checks, plans, analytic cost) are in :mod:`.bottleneck`,
:mod:`.mbconv`, :mod:`.transformer`, :mod:`.stems` and :mod:`.head`, without torch; their
``build`` imports this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.modules import (
    Attention,
    ClassAttention,
    Linear,
    Mlp,
    NoBias,
    RelativePositionBias,
    Shortcut,
    SqueezeExcite,
    TalkingHeadsAttention,
    act,
    drop_path,
    layer_scale,
    linear,
    map_norm,
    per_sample,
    residual_branch,
    token_norm,
)
from ..spec import ClassAttentionStage, HeadSpec
from .bottleneck import BottleneckPlan, SeparateDownsample
from .head import head_cost
from .mbconv import MBConvPlan
from .transformer import TransformerPlan, class_attention_block_cost

# --- stems ------------------------------------------------------------------------------


class Stem(nn.Sequential):
    """A stem: a chain of conv units (and, for ResNet, a max pool)."""


# --- conv stages ------------------------------------------------------------------------


class ConvStageModule(nn.Module):
    """A stage of map-to-map blocks; class tokens pass through untouched (there are none)."""

    def __init__(self, blocks: list[nn.Module], down: nn.Module | None = None):
        super().__init__()
        self.down = down if down is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, cls: torch.Tensor | None):
        return self.blocks(self.down(x)), cls


class BottleneckBlock(nn.Module):
    def __init__(self, plan: BottleneckPlan, drop: float):
        super().__init__()
        short = plan.shortcut
        self.shortcut = short.build() if short is not None else nn.Identity()
        self.convs = nn.Sequential(*(u.build() for u in plan.units))
        self.layer_scale = layer_scale(plan.cout, plan.spec.layer_scale, channel_dim=1)
        self.drop_path = drop_path(drop, per_sample(self.convs))
        self.act = act(plan.spec.act if plan.spec.activations == "all" else "none", inplace=True)  # on the sum

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(residual_branch(self.shortcut(x), x, self.branch, self.drop_path, self.layer_scale))


class PointwiseTailBlock(BottleneckBlock):
    """A bottleneck block whose first conv ends in a layer norm and whose other convs are all
    1×1 without a norm (ConvNeXt's block): after the first conv, the norm, the pointwise convs
    and their activations run on channels-last tokens (one permute each way, ``linear`` on the
    1×1 weights) instead of a permute pair per norm and 1×1 convolutions on maps. The same
    modules and parameters as :class:`BottleneckBlock`, the same function.
    """

    @staticmethod
    def applies(plan: BottleneckPlan) -> bool:
        first, *rest = plan.units
        return (first.norm == "layernorm" and bool(rest) and all(
            u.kernel == 1 and u.stride == 1 and u.groups == 1 and u.pad == 0 and u.norm == "none" for u in rest))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm, first_act = self.convs[0]
        y = conv(x).permute(0, 2, 3, 1)
        y = first_act(F.layer_norm(y, norm.normalized_shape, norm.weight, norm.bias, norm.eps))
        product = linear if self.training else F.linear
        for pointwise, _, unit_act in self.convs[1:]:
            y = unit_act(product(y, pointwise.weight.flatten(1), pointwise.bias))
        return y.permute(0, 3, 1, 2)


def bottleneck_block(plan: BottleneckPlan, drop: float) -> BottleneckBlock:
    return (PointwiseTailBlock if PointwiseTailBlock.applies(plan) else BottleneckBlock)(plan, drop)


def separate_downsample(down: SeparateDownsample) -> nn.Module:
    """``downsample: separate``: norm then a 2×2 stride-2 conv (or a 1×1 conv to widen)."""
    unit = down.unit
    if unit is None:
        return nn.Identity()
    return nn.Sequential(map_norm(down.spec.norm, down.cin), unit.build())


class MBConvBlock(nn.Module):
    def __init__(self, plan: MBConvPlan, drop: float):
        super().__init__()
        expand, dw, project = plan.units()
        self.shortcut = Shortcut(plan.cin, plan.cout, plan.stride, plan.spec.shortcut_pool)
        self.norm = map_norm(plan.spec.norm, plan.cin)
        self.expand = expand.build()
        self.dw = dw.build()
        self.se = SqueezeExcite(plan.mid, plan.reduced) if plan.reduced else nn.Identity()
        self.project = project.build()
        self.drop_path = drop_path(drop, per_sample(self.norm, self.expand, self.dw, self.se, self.project))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(self.dw(self.expand(self.norm(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual_branch(self.shortcut(x), x, self.branch, self.drop_path)


# --- transformer stages -----------------------------------------------------------------


class TokenPool(nn.Module):
    """2×2 stride-2 pooling of the patch tokens (no class token may be present)."""

    def __init__(self, kind: str):
        super().__init__()
        self.pool = F.max_pool2d if kind == "max" else F.avg_pool2d

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, _, c = x.shape
        grid = x.transpose(1, 2).reshape(b, c, size[0], size[1])
        return self.pool(grid, 2, 2).flatten(2).transpose(1, 2)


class NoPool(nn.Module):
    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return x


class TransformerBlock(nn.Module):
    def __init__(self, plan: TransformerPlan, drop: float):
        super().__init__()
        s = plan.spec
        self.stride = plan.stride
        self.norm1 = token_norm(s.norm, plan.cin)
        self.pool = TokenPool(s.shortcut_pool) if plan.stride == 2 else NoPool()
        self.shortcut = Linear(plan.cin, plan.cout) if plan.cin != plan.cout else nn.Identity()
        bias = RelativePositionBias(plan.heads, plan.grid) if s.attention == "relative" else NoBias()
        attn = TalkingHeadsAttention if s.talking_heads else Attention
        self.attn = attn(plan.cin, plan.cout, plan.heads, s.qkv_bias, bias)
        self.ls1 = layer_scale(plan.cout, s.layer_scale)
        self.norm2 = token_norm(s.norm, plan.cout)
        self.mlp = Mlp(plan.cout, plan.hidden, s.act)
        self.ls2 = layer_scale(plan.cout, s.layer_scale)
        self.drop_path = drop_path(drop, per_sample(self.norm1, self.attn, self.norm2, self.mlp))

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return (size[0] // self.stride, size[1] // self.stride)

    def mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor, size: tuple[int, int], prefix: int) -> torch.Tensor:
        out = self.out_size(size)

        def attention(t: torch.Tensor) -> torch.Tensor:
            return self.attn(self.pool(self.norm1(t), size), out, prefix)

        x = residual_branch(self.shortcut(self.pool(x, size)), x, attention, self.drop_path, self.ls1)
        return residual_branch(x, x, self.mlp_branch, self.drop_path, self.ls2)

    @property
    def supports_prefix(self) -> bool:
        """Whether :meth:`forward_prefix` applies: plain attention, no token pooling."""
        return type(self.attn) is Attention and self.stride == 1

    def forward_prefix(self, x: torch.Tensor, size: tuple[int, int], prefix: int) -> torch.Tensor:
        """:meth:`forward`'s output for the first ``prefix`` tokens (the class tokens) alone:
        what a class-token head reads of the last block. Every token still gives keys and
        values; the other tokens' queries, projections and MLP, whose results nothing reads,
        are not computed. The same values and gradients (``tests/test_blocks.py``)."""
        def attention(t: torch.Tensor) -> torch.Tensor:
            return self.attn.forward_prefix(self.norm1(t), size, prefix)

        x = residual_branch(self.shortcut(x[:, :prefix]), x, attention, self.drop_path, self.ls1)
        return residual_branch(x, x, self.mlp_branch, self.drop_path, self.ls2)


class TransformerStageModule(nn.Module):
    """Flattens the map to tokens (adding position embedding / class token where the spec
    says), runs the blocks, and hands back the map and the class token."""

    def __init__(self, blocks: list[TransformerBlock], position: nn.Module, class_token: nn.Module):
        super().__init__()
        self.position = position
        self.class_token = class_token
        self.blocks = nn.ModuleList(blocks)

    @property
    def supports_class_only(self) -> bool:
        """Whether ``forward(..., class_only=True)`` applies: its last block can give the class
        tokens alone (see :meth:`TransformerBlock.forward_prefix`)."""
        return self.blocks[-1].supports_prefix

    def forward(self, x: torch.Tensor, cls: torch.Tensor | None, class_only: bool = False):
        """The map and class tokens after the blocks. ``class_only``: a head that reads only the
        class tokens follows; the last block computes those alone and no map is returned
        (``None``)."""
        b, _, h, w = x.shape
        size = (h, w)
        tokens = self.position(x.flatten(2).transpose(1, 2), size)
        cls = self.class_token(cls, b)
        prefix = 0 if cls is None else cls.shape[1]
        if cls is not None:
            tokens = torch.cat([cls, tokens], dim=1)
        class_only = class_only and prefix > 0
        for block in self.blocks[:-1] if class_only else self.blocks:
            tokens = block(tokens, size, prefix)
            size = block.out_size(size)
        if class_only:
            return None, self.blocks[-1].forward_prefix(tokens, size, prefix)
        cls = tokens[:, :prefix] if prefix else None
        x = tokens[:, prefix:].transpose(1, 2).reshape(b, -1, size[0], size[1])
        return x, cls


class ClassAttentionBlock(nn.Module):
    """cls ← cls + LS(CA(Norm([cls; patches]))); cls ← cls + LS(MLP(Norm(cls)))."""

    cost = staticmethod(class_attention_block_cost)

    def __init__(self, spec: ClassAttentionStage, dim: int, drop: float):
        super().__init__()
        self.norm1 = token_norm(spec.norm, dim)
        self.attn = ClassAttention(dim, spec.resolved_heads(), spec.qkv_bias)
        self.ls1 = layer_scale(dim, spec.layer_scale)
        self.norm2 = token_norm(spec.norm, dim)
        self.mlp = Mlp(dim, max(1, round(dim * spec.mlp_ratio)), spec.act)
        self.ls2 = layer_scale(dim, spec.layer_scale)
        self.drop_path = drop_path(drop, per_sample(self.norm1, self.attn, self.norm2, self.mlp))

    def mlp_branch(self, cls: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm2(cls))

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        n = cls.shape[1]

        def attention(tokens: torch.Tensor) -> torch.Tensor:
            return self.attn(self.norm1(tokens), n)

        cls = residual_branch(cls, torch.cat([cls, patches], dim=1), attention, self.drop_path, self.ls1)
        return residual_branch(cls, cls, self.mlp_branch, self.drop_path, self.ls2)


class ClassAttentionStageModule(nn.Module):
    def __init__(self, blocks: list[ClassAttentionBlock], class_token: nn.Module):
        super().__init__()
        self.class_token = class_token
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, cls: torch.Tensor | None):
        patches = x.flatten(2).transpose(1, 2)
        cls = self.class_token(cls, x.shape[0])
        for block in self.blocks:
            cls = block(cls, patches)
        return x, cls


# --- head -------------------------------------------------------------------------------

VECTOR_NORMS = {"layernorm": lambda c: nn.LayerNorm(c, eps=1e-6), "batchnorm": nn.BatchNorm1d,
                "none": lambda c: nn.Identity()}


class AvgPool(nn.Module):
    def forward(self, x: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        return x.mean((2, 3))


class ClassTokenPool(nn.Module):
    def forward(self, x: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        return cls[:, 0]


POOLS = {"avg": AvgPool, "cls": ClassTokenPool}


class Head(nn.Module):
    cost = staticmethod(head_cost)

    def __init__(self, spec: HeadSpec, channels: int, num_classes: int):
        super().__init__()
        self.pool = POOLS[spec.pool]()
        self.norm = VECTOR_NORMS[spec.norm](channels)
        hidden = spec.hidden
        self.hidden = nn.Sequential(Linear(channels, hidden), act(spec.hidden_act)) if hidden else nn.Identity()
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()
        self.fc = Linear(hidden or channels, num_classes)

    def pre_logits(self, x: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        return self.hidden(self.norm(self.pool(x, cls)))

    def forward(self, x: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        return self.fc(self.dropout(self.pre_logits(x, cls)))
