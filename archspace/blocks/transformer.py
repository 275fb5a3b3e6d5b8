"""Transformer stages (CoAtNet S3/S4, ViT, CaiT) and CaiT's class-attention stage.

Transformer block: x ← x + LS(Attn(Norm(x))); x ← x + LS(MLP(Norm(x))). In a stride-2
stage the first block pools both branches and projects the shortcut:
x ← Proj(Pool(x)) + Attn(Pool(Norm(x))). Attention is ``relative`` (a 2-D bias table per
head) or ``absolute`` (a position embedding added where the map first becomes tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import cost as C
from ..errors import Problem
from ..layers.attention import (
    Attention,
    ClassAttention,
    ClassToken,
    KeepClassToken,
    NoBias,
    NoPosition,
    PositionEmbedding,
    RelativePositionBias,
    TalkingHeadsAttention,
)
from ..layers.common import Mlp, drop_path, layer_scale, layer_scale_cost
from ..layers.norms import norm_cost, token_norm
from ..spec import ClassAttentionStage, TransformerStage
from .base import STAGES, Family, FeatureShape, register

RELATIVE_TOKENS_WARNING = 4096


@dataclass(frozen=True, slots=True)
class TransformerPlan:
    """One transformer block: widths, stride and output grid, shared by builder and cost."""

    spec: TransformerStage
    cin: int
    cout: int
    stride: int
    grid: tuple[int, int]  # output grid
    prefix: int

    @property
    def heads(self) -> int:
        return self.spec.resolved_heads()

    @property
    def hidden(self) -> int:
        return max(1, round(self.cout * self.spec.mlp_ratio))

    def cost(self) -> C.Cost:
        s, n = self.spec, self.grid[0] * self.grid[1] + self.prefix
        c = norm_cost(s.norm, self.cin) + norm_cost(s.norm, self.cout)
        if self.cin != self.cout:
            c = c + C.linear(n, self.cin, self.cout)
        c = c + Attention.cost(n, self.cin, self.cout, self.heads, s.qkv_bias, s.talking_heads)
        if s.attention == "relative":
            c = c + RelativePositionBias.cost(self.heads, self.grid)
        c = c + Mlp.cost(n, self.cout, self.hidden)
        return c + layer_scale_cost(self.cout, s.layer_scale) * 2


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
        self.shortcut = nn.Linear(plan.cin, plan.cout) if plan.cin != plan.cout else nn.Identity()
        bias = RelativePositionBias(plan.heads, plan.grid) if s.attention == "relative" else NoBias()
        attn = TalkingHeadsAttention if s.talking_heads else Attention
        self.attn = attn(plan.cin, plan.cout, plan.heads, s.qkv_bias, bias)
        self.ls1 = layer_scale(plan.cout, s.layer_scale)
        self.norm2 = token_norm(s.norm, plan.cout)
        self.mlp = Mlp(plan.cout, plan.hidden, s.act)
        self.ls2 = layer_scale(plan.cout, s.layer_scale)
        self.drop_path = drop_path(drop)

    def out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return (size[0] // self.stride, size[1] // self.stride)

    def forward(self, x: torch.Tensor, size: tuple[int, int], prefix: int) -> torch.Tensor:
        out = self.out_size(size)
        y = self.pool(self.norm1(x), size)
        x = self.shortcut(self.pool(x, size)) + self.drop_path(self.ls1(self.attn(y, out, prefix)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class TransformerStageModule(nn.Module):
    """Flattens the map to tokens (adding position embedding / class token where the spec
    says), runs the blocks, and hands back the map and the class token."""

    def __init__(self, blocks: list[TransformerBlock], position: nn.Module, class_token: nn.Module):
        super().__init__()
        self.position = position
        self.class_token = class_token
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, cls: torch.Tensor | None):
        b, _, h, w = x.shape
        size = (h, w)
        tokens = self.position(x.flatten(2).transpose(1, 2), size)
        cls = self.class_token(cls, b)
        prefix = 0 if cls is None else cls.shape[1]
        if cls is not None:
            tokens = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens, size, prefix)
            size = block.out_size(size)
        cls = tokens[:, :prefix] if prefix else None
        x = tokens[:, prefix:].transpose(1, 2).reshape(b, -1, size[0], size[1])
        return x, cls


@register(STAGES, "transformer")
class TransformerFamily(Family):
    takes_class_token = True

    def adds_position(self, spec: TransformerStage, shape: FeatureShape) -> bool:
        return spec.attention == "absolute" and not shape.positioned

    def plans(self, spec: TransformerStage, shape: FeatureShape) -> list[TransformerPlan]:
        out = self.output_shape(spec, shape)
        grid = (out.height, out.width)
        first = TransformerPlan(spec, shape.channels, spec.width, spec.stride, grid, out.prefix)
        return [first] + [TransformerPlan(spec, spec.width, spec.width, 1, grid, out.prefix)] * (spec.depth - 1)

    def output_shape(self, spec, shape):
        return FeatureShape(
            spec.width,
            shape.height // spec.stride,
            shape.width // spec.stride,
            prefix=max(shape.prefix, int(spec.class_token)),
            positioned=shape.positioned or spec.attention == "absolute",
        )

    def check(self, spec, shape, path, index):
        problems = []
        if spec.stride == 2 and (shape.prefix or spec.class_token):
            problems.append(Problem(f"{path}.stride", "cannot downsample tokens that include a class token"))
        if spec.stride == 2 and spec.attention == "absolute":
            problems.append(Problem(f"{path}.stride", "absolute-attention stages must have stride 1"))
        if spec.class_token and shape.prefix:
            problems.append(Problem(f"{path}.class_token", "the input already carries a class token"))
        out = self.output_shape(spec, shape)
        n = out.height * out.width
        if spec.attention == "relative" and n > RELATIVE_TOKENS_WARNING:
            heads = spec.resolved_heads()
            problems.append(Problem(
                f"{path}.attention",
                f"relative attention over {n} tokens: {heads} heads × {n}² = {heads * n * n:,} logits per image per block",
                "warning",
            ))
        return problems

    def cost(self, spec, shape):
        first, *rest = self.plans(spec, shape)
        c = first.cost() + (rest[0].cost() * len(rest) if rest else C.ZERO)
        if self.adds_position(spec, shape):
            c = c + PositionEmbedding.cost(shape.channels, (shape.height, shape.width))
        if spec.class_token and not shape.prefix:
            c = c + C.params(shape.channels)
        return c

    def build(self, spec, shape, drop_rates):
        blocks = [TransformerBlock(p, d) for p, d in zip(self.plans(spec, shape), drop_rates)]
        grid = (shape.height, shape.width)
        position = PositionEmbedding(shape.channels, grid) if self.adds_position(spec, shape) else NoPosition()
        token = ClassToken(shape.channels) if spec.class_token and not shape.prefix else KeepClassToken()
        return TransformerStageModule(blocks, position, token)


class ClassAttentionBlock(nn.Module):
    """cls ← cls + LS(CA(Norm([cls; patches]))); cls ← cls + LS(MLP(Norm(cls)))."""

    def __init__(self, spec: ClassAttentionStage, dim: int, drop: float):
        super().__init__()
        self.norm1 = token_norm(spec.norm, dim)
        self.attn = ClassAttention(dim, spec.resolved_heads(), spec.qkv_bias)
        self.ls1 = layer_scale(dim, spec.layer_scale)
        self.norm2 = token_norm(spec.norm, dim)
        self.mlp = Mlp(dim, max(1, round(dim * spec.mlp_ratio)), spec.act)
        self.ls2 = layer_scale(dim, spec.layer_scale)
        self.drop_path = drop_path(drop)

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        z = self.norm1(torch.cat([cls, patches], dim=1))
        cls = cls + self.drop_path(self.ls1(self.attn(z, cls.shape[1])))
        return cls + self.drop_path(self.ls2(self.mlp(self.norm2(cls))))

    @staticmethod
    def cost(spec: ClassAttentionStage, dim: int, tokens: int, prefix: int) -> C.Cost:
        hidden = max(1, round(dim * spec.mlp_ratio))
        return (
            norm_cost(spec.norm, dim) * 2
            + ClassAttention.cost(tokens, prefix, dim, spec.resolved_heads(), spec.qkv_bias)
            + Mlp.cost(prefix, dim, hidden)
            + layer_scale_cost(dim, spec.layer_scale) * 2
        )


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


@register(STAGES, "class_attention")
class ClassAttentionFamily(Family):
    takes_class_token = True

    def output_shape(self, spec, shape):
        return shape.with_(prefix=max(shape.prefix, 1))

    def check(self, spec, shape, path, index):
        if spec.width != shape.channels:
            return [Problem(f"{path}.width", f"{spec.width} must equal the incoming width {shape.channels} "
                                             "(class attention keeps the token width)")]
        return []

    def cost(self, spec, shape):
        prefix = max(shape.prefix, 1)
        c = ClassAttentionBlock.cost(spec, spec.width, shape.height * shape.width + prefix, prefix) * spec.depth
        return c + (C.params(spec.width) if not shape.prefix else C.ZERO)

    def build(self, spec, shape, drop_rates):
        token = ClassToken(spec.width) if not shape.prefix else KeepClassToken()
        return ClassAttentionStageModule([ClassAttentionBlock(spec, spec.width, d) for d in drop_rates], token)
