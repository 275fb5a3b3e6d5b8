"""Small reusable layers: conv-norm-act, drop path, layer scale, MLP, squeeze-excitation, pooling.

Their plans and analytic costs are here, without torch; the modules (``ConvNormAct``,
``DropPath``, ``LayerScale``, ``Mlp``, ...) are in :mod:`.modules`, imported on first use.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import cost as C
from .._lazy import lazy
from .norms import norm_params

__getattr__, __dir__ = lazy(__name__, globals(), {name: f".modules:{name}" for name in (
    "ConvNormAct", "DropPath", "drop_path", "LayerScale", "layer_scale", "NoScale", "residual", "Mlp", "SqueezeExcite",
    "POOLS", "pool2x", "Shortcut")})


class ConvUnit(NamedTuple):
    """One convolution with its norm and activation: the shared plan of builder and cost.

    ``padding`` defaults to ``kernel // 2`` (same-size for odd kernels); stride-``kernel``
    patch convolutions use ``padding=0``. (A named tuple: plans make several per block.)
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
        k, s, pad = self.kernel, self.stride, self.pad
        return C.conv_out(h, k, s, pad), C.conv_out(w, k, s, pad)

    def add_cost(self, t: C.Tally, h: int, w: int) -> tuple[int, int]:
        """Add the cost at input ``h × w`` to ``t``; the output size."""
        cin, cout, k, s, groups, bias, norm, _, padding = self  # one unpacking: units are costed by the thousand
        pad = k // 2 if padding is None else padding  # self.pad, without the property call
        ho = C.conv_out(h, k, s, pad)
        wo = ho if w == h else C.conv_out(w, k, s, pad)
        t.conv(cin, cout, k, ho, wo, groups, bias)
        t.params += norm_params(norm, cout)
        return ho, wo

    def cost(self, h: int, w: int) -> tuple[C.Cost, int, int]:
        """Cost at input ``h × w`` and the output size."""
        return C.tallied(self, h, w)

    def build(self):
        from .modules import ConvNormAct

        return ConvNormAct(self)


def add_units(t: C.Tally, units, h: int, w: int) -> tuple[int, int]:
    """Add the cost of a chain of conv units to ``t``; its output size."""
    for unit in units:
        h, w = unit.add_cost(t, h, w)
    return h, w


def units_cost(units, h: int, w: int) -> tuple[C.Cost, int, int]:
    """Cost of a chain of conv units and its output size."""
    t = C.Tally()
    h, w = add_units(t, units, h, w)
    return t.cost(), h, w


def layer_scale_params(channels: int, init: float | None) -> int:
    return channels if init else 0


def layer_scale_cost(channels: int, init: float | None) -> C.Cost:
    return C.params(layer_scale_params(channels, init))


def add_mlp(t: C.Tally, tokens: int, dim: int, hidden: int, dim_out: int | None = None) -> None:
    """Linear → activation → linear on ``tokens`` tokens (:class:`.modules.Mlp`)."""
    t.linear(tokens, dim, hidden)
    t.linear(tokens, hidden, dim_out or dim)


def mlp_cost(tokens: int, dim: int, hidden: int, dim_out: int | None = None) -> C.Cost:
    """Linear → activation → linear on ``tokens`` tokens (:class:`.modules.Mlp`)."""
    t = C.Tally()
    add_mlp(t, tokens, dim, hidden, dim_out)
    return t.cost()


def add_se(t: C.Tally, channels: int, reduced: int) -> None:
    """Squeeze-excitation (:class:`.modules.SqueezeExcite`)."""
    t.conv(channels, reduced, 1, 1, 1, bias=True)
    t.conv(reduced, channels, 1, 1, 1, bias=True)


def se_cost(channels: int, reduced: int) -> C.Cost:
    """Squeeze-excitation (:class:`.modules.SqueezeExcite`)."""
    t = C.Tally()
    add_se(t, channels, reduced)
    return t.cost()


def add_shortcut(t: C.Tally, cin: int, cout: int, h_out: int, w_out: int) -> None:
    """Residual shortcut of a resampling block (:class:`.modules.Shortcut`): its 1×1 conv."""
    if cin != cout:
        t.conv(cin, cout, 1, h_out, w_out, bias=True)


def shortcut_cost(cin: int, cout: int, h_out: int, w_out: int) -> C.Cost:
    """Residual shortcut of a resampling block (:class:`.modules.Shortcut`): its 1×1 conv."""
    t = C.Tally()
    add_shortcut(t, cin, cout, h_out, w_out)
    return t.cost()
