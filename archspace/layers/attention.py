"""Attention layers: multi-head self-attention (SDPA), talking heads, 2-D relative bias,
absolute position embedding, class token, and CaiT class attention."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .. import cost as C


@lru_cache(maxsize=64)
def _relative_index(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + h - 1
    dx = xs[:, None] - xs[None, :] + w - 1
    return dy * (2 * w - 1) + dx


class RelativePositionBias(nn.Module):
    """A learned bias per head for each 2-D offset: a ``(2H-1)·(2W-1)`` table (CoAtNet).

    At another resolution the table is resized bilinearly. Class tokens get zero bias.
    """

    def __init__(self, heads: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid
        self.table = nn.Parameter(torch.zeros(heads, 2 * grid[0] - 1, 2 * grid[1] - 1))
        nn.init.trunc_normal_(self.table, std=0.02)

    def forward(self, size: tuple[int, int], prefix: int) -> torch.Tensor:
        h, w = size
        table = self.table
        if (h, w) != self.grid:
            table = F.interpolate(table[None], size=(2 * h - 1, 2 * w - 1), mode="bilinear", align_corners=False)[0]
        index = _relative_index(h, w).to(table.device)
        bias = table.flatten(1)[:, index]
        if prefix:
            bias = F.pad(bias, (prefix, 0, prefix, 0))
        return bias

    @staticmethod
    def cost(heads: int, grid: tuple[int, int]) -> C.Cost:
        return C.params(heads * (2 * grid[0] - 1) * (2 * grid[1] - 1))


class NoBias(nn.Module):
    """Stands in for a relative bias in absolute-position attention."""

    def forward(self, size: tuple[int, int], prefix: int) -> None:
        return None


class Attention(nn.Module):
    """Multi-head self-attention on tokens with ``F.scaled_dot_product_attention``.

    ``qkv`` maps ``dim_in`` to ``3 × dim`` (so a downsampling block can widen), ``proj``
    maps ``dim`` to ``dim``. ``bias`` supplies an additive logit bias or ``None``.
    """

    def __init__(self, dim_in: int, dim: int, heads: int, qkv_bias: bool, bias: nn.Module):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim_in, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.bias = bias

    def _qkv(self, x: torch.Tensor):
        b, n, _ = x.shape
        return self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: torch.Tensor, size: tuple[int, int], prefix: int) -> torch.Tensor:
        q, k, v = self._qkv(x)
        bias = self.bias(size, prefix)
        if bias is not None:
            bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).flatten(2))

    @staticmethod
    def cost(tokens: int, dim_in: int, dim: int, heads: int, qkv_bias: bool, talking_heads: bool = False) -> C.Cost:
        c = C.linear(tokens, dim_in, 3 * dim, qkv_bias)
        c = c + C.attention_products(heads, tokens, tokens, dim // heads)
        if talking_heads:
            c = c + C.head_mixing(heads, tokens, tokens) * 2
        return c + C.linear(tokens, dim, dim)


class TalkingHeadsAttention(Attention):
    """Attention whose heads are mixed by learned linear maps before and after softmax (CaiT)."""

    def __init__(self, dim_in: int, dim: int, heads: int, qkv_bias: bool, bias: nn.Module):
        super().__init__(dim_in, dim, heads, qkv_bias, bias)
        self.mix_logits = nn.Linear(heads, heads)
        self.mix_weights = nn.Linear(heads, heads)

    def forward(self, x: torch.Tensor, size: tuple[int, int], prefix: int) -> torch.Tensor:
        q, k, v = self._qkv(x)
        logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        bias = self.bias(size, prefix)
        if bias is not None:
            logits = logits + bias
        logits = self.mix_logits(logits.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        weights = self.mix_weights(logits.softmax(-1).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        out = weights @ v
        return self.proj(out.transpose(1, 2).flatten(2))


class PositionEmbedding(nn.Module):
    """Learned absolute position embedding of a ``grid`` of patch tokens (ViT).

    Resized bilinearly when the input resolution differs from the spec's.
    """

    def __init__(self, dim: int, grid: tuple[int, int]):
        super().__init__()
        self.grid = grid
        self.pos = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        pos = self.pos
        if tuple(size) != self.grid:
            grid = pos.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
            pos = F.interpolate(grid, size=size, mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
        return tokens + pos

    @staticmethod
    def cost(dim: int, grid: tuple[int, int]) -> C.Cost:
        return C.params(dim * grid[0] * grid[1])


class NoPosition(nn.Module):
    def forward(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return tokens


class ClassToken(nn.Module):
    """A learned class token, prepended where a stage inserts one.

    The token is repeated per sample rather than returned as an expanded view of the
    parameter: a view of a leaf made under ``no_grad`` has no autograd node, which breaks
    hooks that inspect module outputs (``torch.utils.flop_counter.FlopCounterMode``).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.token, std=0.02)

    def forward(self, cls: torch.Tensor | None, batch: int) -> torch.Tensor:
        return self.token.repeat(batch, 1, 1)


class KeepClassToken(nn.Module):
    """Passes on the class token a previous stage inserted (or none)."""

    def forward(self, cls: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        return cls


class ClassAttention(nn.Module):
    """CaiT class attention: the query comes from the class token only; keys and values
    from the class token and the patches."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, z: torch.Tensor, prefix: int) -> torch.Tensor:
        b, n, d = z.shape
        split = lambda t: t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        q = split(self.q(z[:, :prefix]))
        out = F.scaled_dot_product_attention(q, split(self.k(z)), split(self.v(z)))
        return self.proj(out.transpose(1, 2).reshape(b, prefix, d))

    @staticmethod
    def cost(tokens: int, prefix: int, dim: int, heads: int, qkv_bias: bool) -> C.Cost:
        return (
            C.linear(prefix, dim, dim, qkv_bias)
            + C.linear(tokens, dim, dim, qkv_bias) * 2
            + C.attention_products(heads, prefix, tokens, dim // heads)
            + C.linear(prefix, dim, dim)
        )
