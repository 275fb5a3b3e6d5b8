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


def relative_bias_cost(heads: int, grid: tuple[int, int]) -> C.Cost:
    """A ``(2H-1)·(2W-1)`` bias table per head (:class:`.modules.RelativePositionBias`)."""
    return C.params(heads * (2 * grid[0] - 1) * (2 * grid[1] - 1))


def attention_cost(tokens: int, dim_in: int, dim: int, heads: int, qkv_bias: bool, talking_heads: bool = False
                   ) -> C.Cost:
    """Multi-head self-attention (:class:`.modules.Attention`, ``TalkingHeadsAttention``)."""
    c = C.linear(tokens, dim_in, 3 * dim, qkv_bias)
    c = c + C.attention_products(heads, tokens, tokens, dim // heads)
    if talking_heads:
        c = c + C.head_mixing(heads, tokens, tokens) * 2
    return c + C.linear(tokens, dim, dim)


def position_embedding_cost(dim: int, grid: tuple[int, int]) -> C.Cost:
    """A learned absolute position embedding (:class:`.modules.PositionEmbedding`)."""
    return C.params(dim * grid[0] * grid[1])


def class_attention_cost(tokens: int, prefix: int, dim: int, heads: int, qkv_bias: bool) -> C.Cost:
    """CaiT class attention (:class:`.modules.ClassAttention`)."""
    return (
        C.linear(prefix, dim, dim, qkv_bias)
        + C.linear(tokens, dim, dim, qkv_bias) * 2
        + C.attention_products(heads, prefix, tokens, dim // heads)
        + C.linear(prefix, dim, dim)
    )
