"""MBConv (CoAtNet S1/S2): pre-norm inverted residual with depthwise conv and SE.

Block: norm → 1×1 expand (×``expansion`` of the output width) → norm → act → k×k
depthwise → norm → act → SE (reduced to ``se_ratio`` × output width) → 1×1 project.
The first block of a stride-2 stage downsamples in the first 1×1 conv (paper) or in the
depthwise conv; its shortcut is pool then 1×1 conv when the width changes.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import cost as C
from .._lazy import lazy
from ..layers.common import ConvUnit, add_se, add_shortcut
from ..layers.norms import norm_params
from ..spec import MBConvStage
from .base import STAGES, Family, FeatureShape, add_blocks, kernel_warning, register

__getattr__, __dir__ = lazy(__name__, globals(), {name: f".modules:{name}" for name in (
    "MBConvBlock", "ConvStageModule")})


class MBConvPlan(NamedTuple):
    """Layer plan of one block, shared by its builder and its cost."""

    spec: MBConvStage
    cin: int
    cout: int
    stride: int

    @property
    def mid(self) -> int:
        return max(1, round(self.cout * self.spec.expansion))

    @property
    def reduced(self) -> int:
        return max(1, int(self.cout * self.spec.se_ratio)) if self.spec.se_ratio > 0 else 0

    def units(self) -> tuple[ConvUnit, ConvUnit, ConvUnit]:
        s, cin, cout, stride = self
        mid, norm, act = self.mid, s.norm, s.act
        s1, s2 = (stride, 1) if s.downsample == "conv" else (1, stride)
        # (cin, cout, kernel, stride, groups, bias, norm, act): positional, as plans are made per block
        return (
            ConvUnit(cin, mid, 1, s1, 1, False, norm, act),
            ConvUnit(mid, mid, s.kernel, s2, mid, False, norm, act),
            ConvUnit(mid, cout, 1, 1, 1, True),
        )

    def add_cost(self, t: C.Tally, h: int, w: int) -> tuple[int, int]:
        """Add the block's cost at input ``h × w`` to ``t``; its output size."""
        expand, dw, project = self.units()
        ho, wo = dw.add_cost(t, *expand.add_cost(t, h, w))
        t.params += norm_params(self.spec.norm, self.cin)
        project.add_cost(t, ho, wo)
        reduced = self.reduced
        if reduced:
            add_se(t, project.cin, reduced)  # project.cin: the expanded width (mid)
        add_shortcut(t, self.cin, self.cout, ho, wo)
        return ho, wo

    def cost(self, h: int, w: int) -> tuple[C.Cost, int, int]:
        return C.tallied(self, h, w)


@register(STAGES, "mbconv")
class MBConvFamily(Family):
    def plans(self, spec: MBConvStage, shape: FeatureShape) -> list[MBConvPlan]:
        first, rest = self._first_and_rest(spec, shape)
        return [first] + [rest] * (spec.depth - 1)

    def _first_and_rest(self, spec: MBConvStage, shape: FeatureShape) -> tuple[MBConvPlan, MBConvPlan]:
        """The first block's plan and the plan of every later one (the same object when the
        first block neither resamples nor widens)."""
        rest = MBConvPlan(spec, spec.width, spec.width, 1)
        if spec.stride == 1 and shape.channels == spec.width:
            return rest, rest
        return MBConvPlan(spec, shape.channels, spec.width, spec.stride), rest

    def output_shape(self, spec, shape):
        return FeatureShape(spec.width, shape.height // spec.stride, shape.width // spec.stride)

    def check(self, spec, shape, path, index):
        return kernel_warning(f"{path}.kernel", spec.kernel, self.output_shape(spec, shape))

    def cost(self, spec, shape):
        t = C.Tally()
        add_blocks(t, *self._first_and_rest(spec, shape), spec.depth, shape.height, shape.width)
        return t.cost()

    def part(self, spec, shape, path, index):
        out = self.output_shape(spec, shape)
        return kernel_warning(f"{path}.kernel", spec.kernel, out), out, self.cost(spec, shape)

    def build(self, spec, shape, drop_rates):
        from .modules import ConvStageModule, MBConvBlock

        return ConvStageModule([MBConvBlock(p, d) for p, d in zip(self.plans(spec, shape), drop_rates)])
