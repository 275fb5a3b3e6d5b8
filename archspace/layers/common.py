"""Small reusable layers: conv-norm-act, drop path, layer scale, MLP, squeeze-excitation, pooling.

Their plans and analytic costs are here, without torch; the modules (``ConvNormAct``,
``DropPath``, ``LayerScale``, ``Mlp``, ...) are in :mod:`.modules`, imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import cost as C
from .._lazy import lazy
from .norms import norm_cost

__getattr__, __dir__ = lazy(__name__, globals(), {name: f".modules:{name}" for name in (
    "ConvNormAct", "DropPath", "drop_path", "LayerScale", "layer_scale", "Mlp", "SqueezeExcite", "POOLS", "pool2x",
    "Shortcut")})


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

    def build(self):
        from .modules import ConvNormAct

        return ConvNormAct(self)


def units_cost(units, h: int, w: int) -> tuple[C.Cost, int, int]:
    """Cost of a chain of conv units and its output size."""
    total = C.ZERO
    for unit in units:
        c, h, w = unit.cost(h, w)
        total = total + c
    return total, h, w


def layer_scale_cost(channels: int, init: float | None) -> C.Cost:
    return C.params(channels if init else 0)


def mlp_cost(tokens: int, dim: int, hidden: int, dim_out: int | None = None) -> C.Cost:
    """Linear → activation → linear on ``tokens`` tokens (:class:`.modules.Mlp`)."""
    return C.linear(tokens, dim, hidden) + C.linear(tokens, hidden, dim_out or dim)


def se_cost(channels: int, reduced: int) -> C.Cost:
    """Squeeze-excitation (:class:`.modules.SqueezeExcite`)."""
    return C.conv(channels, reduced, 1, 1, 1, bias=True) + C.conv(reduced, channels, 1, 1, 1, bias=True)


def shortcut_cost(cin: int, cout: int, h_out: int, w_out: int) -> C.Cost:
    """Residual shortcut of a resampling block (:class:`.modules.Shortcut`): its 1×1 conv."""
    return C.conv(cin, cout, 1, h_out, w_out, bias=True) if cin != cout else C.ZERO
