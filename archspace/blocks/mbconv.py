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
from ..layers.common import ConvUnit, add_se, add_shortcut, add_units
from ..layers.norms import norm_params
from ..spec import MBConvStage
from .base import STAGES, Family, FeatureShape, kernel_warning, register

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
        s, mid = self.spec, self.mid
        s1, s2 = (self.stride, 1) if s.downsample == "conv" else (1, self.stride)
        # (cin, cout, kernel, stride, groups, bias, norm, act): positional, as plans are made per block
        return (
            ConvUnit(self.cin, mid, 1, s1, 1, False, s.norm, s.act),
            ConvUnit(mid, mid, s.kernel, s2, mid, False, s.norm, s.act),
            ConvUnit(mid, self.cout, 1, 1, 1, True),
        )

    def add_cost(self, t: C.Tally, h: int, w: int) -> tuple[int, int]:
        """Add the block's cost at input ``h × w`` to ``t``; its output size."""
        expand, dw, project = self.units()
        ho, wo = add_units(t, (expand, dw), h, w)
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
        first = MBConvPlan(spec, shape.channels, spec.width, spec.stride)
        return [first] + [MBConvPlan(spec, spec.width, spec.width, 1)] * (spec.depth - 1)

    def output_shape(self, spec, shape):
        return FeatureShape(spec.width, shape.height // spec.stride, shape.width // spec.stride)

    def check(self, spec, shape, path, index):
        return kernel_warning(f"{path}.kernel", spec.kernel, self.output_shape(spec, shape))

    def cost(self, spec, shape):
        first, *rest = self.plans(spec, shape)
        t = C.Tally()
        h, w = first.add_cost(t, shape.height, shape.width)
        if rest:
            block = C.Tally()
            rest[0].add_cost(block, h, w)
            t.add(block, len(rest))
        return t.cost()

    def build(self, spec, shape, drop_rates):
        from .modules import ConvStageModule, MBConvBlock

        return ConvStageModule([MBConvBlock(p, d) for p, d in zip(self.plans(spec, shape), drop_rates)])
