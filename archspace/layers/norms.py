"""Norms and activations by name, for feature maps (N, C, H, W) and tokens (N, L, C)."""

from __future__ import annotations

import torch
from torch import nn

from .. import cost as C


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class BatchNormTokens(nn.BatchNorm1d):
    """BatchNorm over the channels of (N, L, C) tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _identity(channels: int) -> nn.Module:
    return nn.Identity()


def _ln(channels: int) -> nn.Module:
    return nn.LayerNorm(channels, eps=1e-6)


def _ln2d(channels: int) -> nn.Module:
    return LayerNorm2d(channels, eps=1e-6)


MAP_NORMS = {"batchnorm": nn.BatchNorm2d, "layernorm": _ln2d, "none": _identity}
TOKEN_NORMS = {"batchnorm": BatchNormTokens, "layernorm": _ln, "none": _identity}
ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "none": nn.Identity,
}


def map_norm(name: str, channels: int) -> nn.Module:
    """A norm for (N, C, H, W) maps by name."""
    return MAP_NORMS[name](channels)


def token_norm(name: str, channels: int) -> nn.Module:
    """A norm for (N, L, C) tokens by name."""
    return TOKEN_NORMS[name](channels)


def act(name: str) -> nn.Module:
    """An activation by name."""
    return ACTIVATIONS[name]()


def norm_cost(name: str, channels: int) -> C.Cost:
    """Learnable gain and bias of a norm (none for ``none``)."""
    return C.params(0 if name == "none" else 2 * channels)
