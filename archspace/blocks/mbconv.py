"""MBConv (CoAtNet S1/S2): pre-norm inverted residual with depthwise conv and SE.

Block: norm → 1×1 expand (×``expansion`` of the output width) → norm → act → k×k
depthwise → norm → act → SE (reduced to ``se_ratio`` × output width) → 1×1 project.
The first block of a stride-2 stage downsamples in the first 1×1 conv (paper) or in the
depthwise conv; its shortcut is pool then 1×1 conv when the width changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import cost as C
from .._lazy import lazy
from ..layers.common import ConvUnit, se_cost, shortcut_cost, units_cost
from ..layers.norms import norm_cost
from ..spec import MBConvStage
from .base import STAGES, Family, FeatureShape, kernel_warning, register

__getattr__, __dir__ = lazy(__name__, globals(), {name: f".modules:{name}" for name in (
    "MBConvBlock", "ConvStageModule")})


@dataclass(frozen=True, slots=True)
class MBConvPlan:
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
        s = self.spec
        s1, s2 = (self.stride, 1) if s.downsample == "conv" else (1, self.stride)
        return (
            ConvUnit(self.cin, self.mid, 1, s1, norm=s.norm, act=s.act),
            ConvUnit(self.mid, self.mid, s.kernel, s2, groups=self.mid, norm=s.norm, act=s.act),
            ConvUnit(self.mid, self.cout, 1, bias=True),
        )

    def cost(self, h: int, w: int) -> tuple[C.Cost, int, int]:
        expand, dw, project = self.units()
        c, ho, wo = units_cost((expand, dw), h, w)
        c = c + norm_cost(self.spec.norm, self.cin) + project.cost(ho, wo)[0]
        if self.reduced:
            c = c + se_cost(self.mid, self.reduced)
        return c + shortcut_cost(self.cin, self.cout, ho, wo), ho, wo


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
        c, h, w = first.cost(shape.height, shape.width)
        return c + (rest[0].cost(h, w)[0] * len(rest) if rest else C.ZERO)

    def build(self, spec, shape, drop_rates):
        from .modules import ConvStageModule, MBConvBlock

        return ConvStageModule([MBConvBlock(p, d) for p, d in zip(self.plans(spec, shape), drop_rates)])
