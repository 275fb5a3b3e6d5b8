"""Attention layers: multi-head self-attention (SDPA), talking heads, 2-D relative bias,
absolute position embedding, class token, and CaiT class attention.

Their analytic costs are here, without torch; the modules (``Attention``,
``RelativePositionBias``, ``PositionEmbedding``, ``ClassToken``, ...) are in :mod:`.modules`,
imported on first use.
"""

from __future__ import annotations

from .. import cost as C
from .._lazy import lazy

__getattr__, __dir__ = lazy(__name__, globals(), {name: f".modules:{name}" for name in (
    "RelativePositionBias", "NoBias", "Attention", "TalkingHeadsAttention", "PositionEmbedding", "NoPosition",
    "ClassToken", "KeepClassToken", "ClassAttention")})


def relative_bias_params(heads: int, grid: tuple[int, int]) -> int:
    """A ``(2H-1)·(2W-1)`` bias table per head (:class:`.modules.RelativePositionBias`)."""
    return heads * (2 * grid[0] - 1) * (2 * grid[1] - 1)


def relative_bias_cost(heads: int, grid: tuple[int, int]) -> C.Cost:
    """A ``(2H-1)·(2W-1)`` bias table per head (:class:`.modules.RelativePositionBias`)."""
    return C.params(relative_bias_params(heads, grid))


def add_attention(t: C.Tally, tokens: int, dim_in: int, dim: int, heads: int, qkv_bias: bool,
                  talking_heads: bool = False) -> None:
    """Multi-head self-attention (:class:`.modules.Attention`, ``TalkingHeadsAttention``)."""
    t.linear(tokens, dim_in, 3 * dim, qkv_bias)
    t.attention_products(heads, tokens, tokens, dim // heads)
    if talking_heads:
        t.head_mixing(heads, tokens, tokens, 2)
    t.linear(tokens, dim, dim)


def attention_cost(tokens: int, dim_in: int, dim: int, heads: int, qkv_bias: bool, talking_heads: bool = False
                   ) -> C.Cost:
    """Multi-head self-attention (:class:`.modules.Attention`, ``TalkingHeadsAttention``)."""
    t = C.Tally()
    add_attention(t, tokens, dim_in, dim, heads, qkv_bias, talking_heads)
    return t.cost()


def position_embedding_params(dim: int, grid: tuple[int, int]) -> int:
    """A learned absolute position embedding (:class:`.modules.PositionEmbedding`)."""
    return dim * grid[0] * grid[1]


def position_embedding_cost(dim: int, grid: tuple[int, int]) -> C.Cost:
    """A learned absolute position embedding (:class:`.modules.PositionEmbedding`)."""
    return C.params(position_embedding_params(dim, grid))


def add_class_attention(t: C.Tally, tokens: int, prefix: int, dim: int, heads: int, qkv_bias: bool) -> None:
    """CaiT class attention (:class:`.modules.ClassAttention`)."""
    t.linear(prefix, dim, dim, qkv_bias)
    t.linear(tokens, dim, dim, qkv_bias)
    t.linear(tokens, dim, dim, qkv_bias)
    t.attention_products(heads, prefix, tokens, dim // heads)
    t.linear(prefix, dim, dim)


def class_attention_cost(tokens: int, prefix: int, dim: int, heads: int, qkv_bias: bool) -> C.Cost:
    """CaiT class attention (:class:`.modules.ClassAttention`)."""
    t = C.Tally()
    add_class_attention(t, tokens, prefix, dim, heads, qkv_bias)
    return t.cost()
