"""The bottleneck family: ResNet's bottleneck, the ConvNeXt block, and every step between.

One block = three convolutions (a k×k spatial one and two 1×1) whose order, grouping,
width, norms, activations and downsampling are knobs of :class:`BottleneckStage`, so the
ConvNeXt paper's roadmap (section 2) is a sequence of small spec diffs; ``block:
convnext`` is the family's ConvNeXt setting.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import cost as C
from .._lazy import lazy
from ..errors import Problem
from ..layers.common import ConvUnit, add_units, layer_scale_params
from ..layers.norms import norm_params
from ..spec import BottleneckStage
from .base import STAGES, Family, FeatureShape, kernel_warning, register

__getattr__, __dir__ = lazy(__name__, globals(), {"BottleneckBlock": ".modules:BottleneckBlock"})


class BottleneckPlan(NamedTuple):
    """Layer plan of one block, shared by its builder and its cost."""

    spec: BottleneckStage
    cin: int
    cout: int
    stride: int

    def groups(self, channels: int) -> int:
        return channels if self.spec.groups == "depthwise" else self.spec.groups

    def units(self) -> list[ConvUnit]:
        s, hidden, cin = self.spec, self.spec.hidden(), self.cin
        k = s.kernel
        if s.order == "middle":
            shapes = ((cin, hidden, 1, 1, 1), (hidden, hidden, k, self.stride, self.groups(hidden)),
                      (hidden, self.cout, 1, 1, 1))
        else:
            shapes = ((cin, cin, k, self.stride, self.groups(cin)), (cin, hidden, 1, 1, 1),
                      (hidden, self.cout, 1, 1, 1))
        norm_all, acts = s.norms == "all", s.activations
        units = []
        for i, (cin, cout, kernel, stride, groups) in enumerate(shapes):
            has_norm = norm_all or i == 0
            has_act = (acts == "all" and i < 2) or (acts == "one" and i == 1)
            units.append(ConvUnit(cin, cout, kernel, stride, groups, s.bias or not has_norm,
                                  s.norm if has_norm else "none", s.act if has_act else "none"))
        return units

    def shortcut(self) -> ConvUnit | None:
        if self.stride == 1 and self.cin == self.cout:
            return None
        return ConvUnit(self.cin, self.cout, 1, self.stride, 1, self.spec.bias, self.spec.norm)

    def add_cost(self, t: C.Tally, h: int, w: int) -> tuple[int, int]:
        """Add the block's cost at input ``h × w`` to ``t``; its output size."""
        ho, wo = add_units(t, self.units(), h, w)
        short = self.shortcut()
        if short is not None:
            short.add_cost(t, h, w)
        t.params += layer_scale_params(self.cout, self.spec.layer_scale)
        return ho, wo

    def cost(self, h: int, w: int) -> tuple[C.Cost, int, int]:
        return C.tallied(self, h, w)


class SeparateDownsample(NamedTuple):
    """``downsample: separate``: norm then a 2×2 stride-2 conv (or a 1×1 conv to widen)."""

    spec: BottleneckStage
    cin: int

    def unit(self) -> ConvUnit | None:
        s = self.spec
        if s.downsample != "separate" or (s.stride == 1 and self.cin == s.width):
            return None
        k = 2 if s.stride == 2 else 1
        return ConvUnit(self.cin, s.width, k, s.stride, bias=True, padding=0)

    def add_cost(self, t: C.Tally, h: int, w: int) -> tuple[int, int]:
        """Add the cost at input ``h × w`` to ``t``; the output size."""
        unit = self.unit()
        if unit is None:
            return h, w
        h, w = unit.add_cost(t, h, w)
        t.params += norm_params(self.spec.norm, self.cin)
        return h, w

    def cost(self, h: int, w: int) -> tuple[C.Cost, int, int]:
        return C.tallied(self, h, w)

    def build(self):
        from .modules import separate_downsample

        return separate_downsample(self)


@register(STAGES, "bottleneck", "convnext")
class BottleneckFamily(Family):
    def plans(self, spec: BottleneckStage, shape: FeatureShape) -> tuple[SeparateDownsample, list[BottleneckPlan]]:
        down = SeparateDownsample(spec, shape.channels)
        if down.unit() is not None:
            first = BottleneckPlan(spec, spec.width, spec.width, 1)
        else:
            first = BottleneckPlan(spec, shape.channels, spec.width, spec.stride)
        return down, [first] + [BottleneckPlan(spec, spec.width, spec.width, 1)] * (spec.depth - 1)

    def output_shape(self, spec, shape):
        return FeatureShape(spec.width, shape.height // spec.stride, shape.width // spec.stride)

    def check(self, spec, shape, path, index):
        problems = kernel_warning(f"{path}.kernel", spec.kernel, self.output_shape(spec, shape))
        _, (first, *_) = self.plans(spec, shape)
        for unit in first.units():
            if unit.cin % unit.groups:
                problems.append(Problem(f"{path}.groups", f"{unit.groups} groups do not divide the "
                                                          f"{unit.cin} input channels of the first block"))
        return problems

    def cost(self, spec, shape):
        down, (first, *rest) = self.plans(spec, shape)
        t = C.Tally()
        h, w = down.add_cost(t, shape.height, shape.width)
        h, w = first.add_cost(t, h, w)
        if rest:
            block = C.Tally()
            rest[0].add_cost(block, h, w)
            t.add(block, len(rest))
        return t.cost()

    def build(self, spec, shape, drop_rates):
        from .modules import ConvStageModule, bottleneck_block

        down, plans = self.plans(spec, shape)
        return ConvStageModule([bottleneck_block(p, d) for p, d in zip(plans, drop_rates)], down.build())
