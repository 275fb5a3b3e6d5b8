"""Transformer stages (CoAtNet S3/S4, ViT, CaiT) and CaiT's class-attention stage.

Transformer block: x ← x + LS(Attn(Norm(x))); x ← x + LS(MLP(Norm(x))). In a stride-2
stage the first block pools both branches and projects the shortcut:
x ← Proj(Pool(x)) + Attn(Pool(Norm(x))). Attention is ``relative`` (a 2-D bias table per
head) or ``absolute`` (a position embedding added where the map first becomes tokens).
"""

from __future__ import annotations

from typing import NamedTuple

from .. import cost as C
from .._lazy import lazy
from ..errors import Problem
from ..layers.attention import add_attention, add_class_attention, position_embedding_params, relative_bias_params
from ..layers.common import add_mlp, layer_scale_params
from ..layers.norms import norm_params
from ..spec import ClassAttentionStage, TransformerStage
from .base import STAGES, Family, FeatureShape, add_blocks, register

__getattr__, __dir__ = lazy(__name__, globals(), {name: f".modules:{name}" for name in (
    "TokenPool", "NoPool", "TransformerBlock", "TransformerStageModule", "ClassAttentionBlock",
    "ClassAttentionStageModule")})

RELATIVE_TOKENS_WARNING = 4096


class TransformerPlan(NamedTuple):
    """One transformer block: widths, stride, output grid, heads and MLP width, shared by
    builder and cost (made by :meth:`TransformerFamily.plans`)."""

    spec: TransformerStage
    cin: int
    cout: int
    stride: int
    grid: tuple[int, int]  # output grid
    prefix: int
    heads: int
    hidden: int  # MLP hidden width

    def add_cost(self, t: C.Tally) -> None:
        """Add the block's cost to ``t``."""
        s, cin, cout, _, grid, prefix, heads, hidden = self
        n, norm = grid[0] * grid[1] + prefix, s.norm
        t.params += norm_params(norm, cin) + norm_params(norm, cout)
        if cin != cout:
            t.linear(n, cin, cout)
        add_attention(t, n, cin, cout, heads, s.qkv_bias, s.talking_heads)
        if s.attention == "relative":
            t.params += relative_bias_params(heads, grid)
        add_mlp(t, n, cout, hidden)
        t.params += layer_scale_params(cout, s.layer_scale) * 2

    def cost(self) -> C.Cost:
        return C.tallied(self)


@register(STAGES, "transformer")
class TransformerFamily(Family):
    takes_class_token = True

    def adds_position(self, spec: TransformerStage, shape: FeatureShape) -> bool:
        return spec.attention == "absolute" and not shape.positioned

    def plans(self, spec: TransformerStage, shape: FeatureShape) -> list[TransformerPlan]:
        first, rest = self._first_and_rest(spec, shape, self.output_shape(spec, shape))
        return [first] + [rest] * (spec.depth - 1)

    def _first_and_rest(self, spec: TransformerStage, shape: FeatureShape, out: FeatureShape
                        ) -> tuple[TransformerPlan, TransformerPlan]:
        """The first block's plan and the plan of every later one (the same object when the
        first block neither resamples nor widens)."""
        grid, width = (out.height, out.width), spec.width
        heads, hidden = spec.resolved_heads(), max(1, round(width * spec.mlp_ratio))
        rest = TransformerPlan(spec, width, width, 1, grid, out.prefix, heads, hidden)
        if spec.stride == 1 and shape.channels == width:
            return rest, rest
        return TransformerPlan(spec, shape.channels, width, spec.stride, grid, out.prefix, heads, hidden), rest

    def output_shape(self, spec, shape):
        return FeatureShape(
            spec.width,
            shape.height // spec.stride,
            shape.width // spec.stride,
            max(shape.prefix, int(spec.class_token)),
            shape.positioned or spec.attention == "absolute",
        )

    def check(self, spec, shape, path, index):
        return self._check(spec, shape, self.output_shape(spec, shape), path)

    def _check(self, spec: TransformerStage, shape: FeatureShape, out: FeatureShape, path: str) -> list[Problem]:
        problems = []
        if spec.stride == 2 and (shape.prefix or spec.class_token):
            problems.append(Problem(f"{path}.stride", "cannot downsample tokens that include a class token"))
        if spec.stride == 2 and spec.attention == "absolute":
            problems.append(Problem(f"{path}.stride", "absolute-attention stages must have stride 1"))
        if spec.class_token and shape.prefix:
            problems.append(Problem(f"{path}.class_token", "the input already carries a class token"))
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
        return self._cost(spec, shape, self.output_shape(spec, shape))

    def _cost(self, spec: TransformerStage, shape: FeatureShape, out: FeatureShape) -> C.Cost:
        t = C.Tally()
        add_blocks(t, *self._first_and_rest(spec, shape, out), spec.depth)
        if self.adds_position(spec, shape):
            t.params += position_embedding_params(shape.channels, (shape.height, shape.width))
        if spec.class_token and not shape.prefix:
            t.params += shape.channels
        return t.cost()

    def part(self, spec, shape, path, index):
        out = self.output_shape(spec, shape)
        return self._check(spec, shape, out, path), out, self._cost(spec, shape, out)

    def build(self, spec, shape, drop_rates):
        from ..layers.modules import ClassToken, KeepClassToken, NoPosition, PositionEmbedding
        from .modules import TransformerBlock, TransformerStageModule

        blocks = [TransformerBlock(p, d) for p, d in zip(self.plans(spec, shape), drop_rates)]
        grid = (shape.height, shape.width)
        position = PositionEmbedding(shape.channels, grid) if self.adds_position(spec, shape) else NoPosition()
        token = ClassToken(shape.channels) if spec.class_token and not shape.prefix else KeepClassToken()
        return TransformerStageModule(blocks, position, token)


def add_class_attention_block(t: C.Tally, spec: ClassAttentionStage, dim: int, tokens: int, prefix: int) -> None:
    """One class-attention block (:class:`.modules.ClassAttentionBlock`)."""
    hidden = max(1, round(dim * spec.mlp_ratio))
    t.params += norm_params(spec.norm, dim) * 2
    add_class_attention(t, tokens, prefix, dim, spec.resolved_heads(), spec.qkv_bias)
    add_mlp(t, prefix, dim, hidden)
    t.params += layer_scale_params(dim, spec.layer_scale) * 2


def class_attention_block_cost(spec: ClassAttentionStage, dim: int, tokens: int, prefix: int) -> C.Cost:
    """One class-attention block (:class:`.modules.ClassAttentionBlock`)."""
    t = C.Tally()
    add_class_attention_block(t, spec, dim, tokens, prefix)
    return t.cost()


@register(STAGES, "class_attention")
class ClassAttentionFamily(Family):
    takes_class_token = True

    def output_shape(self, spec, shape):
        return FeatureShape(shape.channels, shape.height, shape.width, max(shape.prefix, 1), shape.positioned)

    def check(self, spec, shape, path, index):
        if spec.width != shape.channels:
            return [Problem(f"{path}.width", f"{spec.width} must equal the incoming width {shape.channels} "
                                             "(class attention keeps the token width)")]
        return []

    def cost(self, spec, shape):
        prefix = max(shape.prefix, 1)
        block = C.Tally()
        add_class_attention_block(block, spec, spec.width, shape.height * shape.width + prefix, prefix)
        t = C.Tally()
        t.add(block, spec.depth)
        if not shape.prefix:
            t.params += spec.width
        return t.cost()

    def build(self, spec, shape, drop_rates):
        from ..layers.modules import ClassToken, KeepClassToken
        from .modules import ClassAttentionBlock, ClassAttentionStageModule

        token = ClassToken(spec.width) if not shape.prefix else KeepClassToken()
        return ClassAttentionStageModule([ClassAttentionBlock(spec, spec.width, d) for d in drop_rates], token)
