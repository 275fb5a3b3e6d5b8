"""Small reusable layers: conv-norm-act, drop path, layer scale, MLP, squeeze-excitation, pooling."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import cost as C
from .norms import act, map_norm, norm_cost


@dataclass(frozen=True, slots=True)
class ConvUnit:
    """One convolution with its norm and activation: the shared plan of builder and cost.

    ``padding`` defaults to ``kernel // 2`` (same-size for odd kernels); stride-``kernel``
    patch convolutions use ``padding=0``.
    """

    cin: int
    cout: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    bias: bool = False
    norm: str = "none"
    act: str = "none"
    padding: int | None = None

    @property
    def pad(self) -> int:
        return self.kernel // 2 if self.padding is None else self.padding

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        return C.conv_out(h, self.kernel, self.stride, self.pad), C.conv_out(w, self.kernel, self.stride, self.pad)

    def cost(self, h: int, w: int) -> tuple[C.Cost, int, int]:
        """Cost at input ``h × w`` and the output size."""
        ho, wo = self.out_size(h, w)
        c = C.conv(self.cin, self.cout, self.kernel, ho, wo, self.groups, self.bias)
        return c + norm_cost(self.norm, self.cout), ho, wo

    def build(self) -> "ConvNormAct":
        return ConvNormAct(self)


class ConvNormAct(nn.Sequential):
    """Conv2d → norm → activation, from a :class:`ConvUnit`."""

    def __init__(self, unit: ConvUnit):
        super().__init__(
            nn.Conv2d(unit.cin, unit.cout, unit.kernel, unit.stride, unit.pad, groups=unit.groups, bias=unit.bias),
            map_norm(unit.norm, unit.cout),
            act(unit.act),
        )


def units_cost(units, h: int, w: int) -> tuple[C.Cost, int, int]:
    """Cost of a chain of conv units and its output size."""
    total = C.ZERO
    for unit in units:
        c, h, w = unit.cost(h, w)
        total = total + c
    return total, h, w


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``rate``."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"


def drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0 else nn.Identity()


class LayerScale(nn.Module):
    """Per-channel learnable scale initialised to ``init`` (CaiT, ConvNeXt).

    ``channel_dim`` is -1 for tokens and 1 for (N, C, H, W) maps.
    """

    def __init__(self, channels: int, init: float, channel_dim: int = -1):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((channels,), float(init)))
        self.shape = (-1, 1, 1) if channel_dim == 1 else (channels,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(self.shape)


def layer_scale(channels: int, init: float | None, channel_dim: int = -1) -> nn.Module:
    return LayerScale(channels, init, channel_dim) if init else nn.Identity()


def layer_scale_cost(channels: int, init: float | None) -> C.Cost:
    return C.params(channels if init else 0)


class Mlp(nn.Module):
    """Linear → activation → linear on tokens."""

    def __init__(self, dim: int, hidden: int, act_name: str = "gelu", dim_out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act(act_name)
        self.fc2 = nn.Linear(hidden, dim_out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

    @staticmethod
    def cost(tokens: int, dim: int, hidden: int, dim_out: int | None = None) -> C.Cost:
        return C.linear(tokens, dim, hidden) + C.linear(tokens, hidden, dim_out or dim)


class SqueezeExcite(nn.Module):
    """Squeeze-excitation: global average → 1×1 reduce → SiLU → 1×1 expand → sigmoid gate."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))

    @staticmethod
    def cost(channels: int, reduced: int) -> C.Cost:
        return C.conv(channels, reduced, 1, 1, 1, bias=True) + C.conv(reduced, channels, 1, 1, 1, bias=True)


POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def pool2x(kind: str) -> nn.Module:
    """A 2×2 stride-2 pooling by name."""
    return POOLS[kind](kernel_size=2, stride=2)


class Shortcut(nn.Sequential):
    """Residual shortcut of a resampling block: pool (stride 2) then 1×1 conv (width change)."""

    def __init__(self, cin: int, cout: int, stride: int, pool: str):
        super().__init__(
            pool2x(pool) if stride == 2 else nn.Identity(),
            nn.Conv2d(cin, cout, 1, bias=True) if cin != cout else nn.Identity(),
        )

    @staticmethod
    def cost(cin: int, cout: int, h_out: int, w_out: int) -> C.Cost:
        return C.conv(cin, cout, 1, h_out, w_out, bias=True) if cin != cout else C.ZERO
