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
from .base import STAGES, Family, FeatureShape, add_blocks, kernel_warning, register

__getattr__, __dir__ = lazy(__name__, globals(), {"BottleneckBlock": ".modules:BottleneckBlock"})


class BottleneckPlan(NamedTuple):
    """Layer plan of one block, shared by its builder and its cost (made by :meth:`make`)."""

    spec: BottleneckStage
    cin: int
    cout: int
    stride: int
    units: tuple[ConvUnit, ConvUnit, ConvUnit]
    shortcut: ConvUnit | None

    @classmethod
    def make(cls, spec: BottleneckStage, cin: int, cout: int, stride: int) -> "BottleneckPlan":
        """The plan of a block from ``cin`` to ``cout`` channels that applies ``stride``."""
        hidden, k, bias, norm, act, groups = spec.hidden(), spec.kernel, spec.bias, spec.norm, spec.act, spec.groups
        depthwise = groups == "depthwise"
        if spec.order == "middle":
            shapes = ((cin, hidden, 1, 1, 1), (hidden, hidden, k, stride, hidden if depthwise else groups),
                      (hidden, cout, 1, 1, 1))
        else:
            shapes = ((cin, cin, k, stride, cin if depthwise else groups), (cin, hidden, 1, 1, 1),
                      (hidden, cout, 1, 1, 1))
        norm_all, acts = spec.norms == "all", spec.activations
        units = []
        for i, (unit_cin, unit_cout, kernel, unit_stride, unit_groups) in enumerate(shapes):
            has_norm = norm_all or i == 0
            has_act = (acts == "all" and i < 2) or (acts == "one" and i == 1)
            units.append(ConvUnit(unit_cin, unit_cout, kernel, unit_stride, unit_groups, bias or not has_norm,
                                  norm if has_norm else "none", act if has_act else "none"))
        shortcut = None if stride == 1 and cin == cout else ConvUnit(cin, cout, 1, stride, 1, bias, norm)
        return cls(spec, cin, cout, stride, tuple(units), shortcut)

    def add_cost(self, t: C.Tally, h: int, w: int) -> tuple[int, int]:
        """Add the block's cost at input ``h × w`` to ``t``; its output size."""
        spec, _, cout, _, units, shortcut = self
        ho, wo = add_units(t, units, h, w)
        if shortcut is not None:
            shortcut.add_cost(t, h, w)
        t.params += layer_scale_params(cout, spec.layer_scale)
        return ho, wo

    def cost(self, h: int, w: int) -> tuple[C.Cost, int, int]:
        return C.tallied(self, h, w)


class SeparateDownsample(NamedTuple):
    """``downsample: separate``: norm then a 2×2 stride-2 conv (or a 1×1 conv to widen);
    ``unit`` is ``None`` where the stage has none (made by :meth:`make`)."""

    spec: BottleneckStage
    cin: int
    unit: ConvUnit | None

    @classmethod
    def make(cls, spec: BottleneckStage, cin: int) -> "SeparateDownsample":
        stride, width = spec.stride, spec.width
        if spec.downsample != "separate" or (stride == 1 and cin == width):
            return cls(spec, cin, None)
        k = 2 if stride == 2 else 1
        return cls(spec, cin, ConvUnit(cin, width, k, stride, 1, True, "none", "none", 0))

    def add_cost(self, t: C.Tally, h: int, w: int) -> tuple[int, int]:
        """Add the cost at input ``h × w`` to ``t``; the output size."""
        unit = self.unit
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
        down, first, rest = self._plans(spec, shape)
        return down, [first] + [rest] * (spec.depth - 1)

    def _plans(self, spec: BottleneckStage, shape: FeatureShape
               ) -> tuple[SeparateDownsample, BottleneckPlan, BottleneckPlan]:
        """The downsample, the first block's plan and the plan of every later block (the same
        object when the first block neither resamples nor widens)."""
        down, width, stride = SeparateDownsample.make(spec, shape.channels), spec.width, spec.stride
        rest = BottleneckPlan.make(spec, width, width, 1)
        if down.unit is not None or (stride == 1 and shape.channels == width):
            return down, rest, rest
        return down, BottleneckPlan.make(spec, shape.channels, width, stride), rest

    def output_shape(self, spec, shape):
        return FeatureShape(spec.width, shape.height // spec.stride, shape.width // spec.stride)

    def check(self, spec, shape, path, index):
        return self._check(spec, self.output_shape(spec, shape), self._plans(spec, shape)[1], path)

    def _check(self, spec: BottleneckStage, out: FeatureShape, first: BottleneckPlan, path: str) -> list[Problem]:
        problems = kernel_warning(f"{path}.kernel", spec.kernel, out)
        for unit in first.units:
            if unit.cin % unit.groups:
                problems.append(Problem(f"{path}.groups", f"{unit.groups} groups do not divide the "
                                                          f"{unit.cin} input channels of the first block"))
        return problems

    def cost(self, spec, shape):
        return self._cost(spec, shape, *self._plans(spec, shape))

    def _cost(self, spec: BottleneckStage, shape: FeatureShape, down: SeparateDownsample, first: BottleneckPlan,
              rest: BottleneckPlan) -> C.Cost:
        t = C.Tally()
        add_blocks(t, first, rest, spec.depth, *down.add_cost(t, shape.height, shape.width))
        return t.cost()

    def part(self, spec, shape, path, index):
        out = self.output_shape(spec, shape)
        down, first, rest = self._plans(spec, shape)
        return self._check(spec, out, first, path), out, self._cost(spec, shape, down, first, rest)

    def build(self, spec, shape, drop_rates):
        from .modules import ConvStageModule, bottleneck_block

        down, plans = self.plans(spec, shape)
        return ConvStageModule([bottleneck_block(p, d) for p, d in zip(plans, drop_rates)], down.build())
