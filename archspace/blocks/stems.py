"""Stems: patchify (ViT, ConvNeXt, CaiT), conv (ViT_C, CoAtNet S0), resnet."""

from __future__ import annotations

import math

from .._lazy import lazy
from ..layers.common import ConvUnit, units_cost
from ..spec import ConvStem, PatchifyStem, ResNetStem
from .base import STEMS, Family, FeatureShape, register

__getattr__, __dir__ = lazy(__name__, globals(), {"Stem": ".modules:Stem"})


@register(STEMS, "patchify")
class PatchifyFamily(Family):
    """``width`` must be resolved (the network fills it from the first stage)."""

    def units(self, spec: PatchifyStem, cin: int) -> list[ConvUnit]:
        return [ConvUnit(cin, spec.width, spec.patch, spec.patch, bias=True, norm=spec.norm, padding=0)]

    def stride(self, spec: PatchifyStem) -> int:
        return spec.patch

    def output_shape(self, spec, shape):
        return FeatureShape(spec.width, shape.height // spec.patch, shape.width // spec.patch)

    def cost(self, spec, shape):
        return units_cost(self.units(spec, shape.channels), shape.height, shape.width)[0]

    def build(self, spec, shape, drop_rates):
        from .modules import Stem

        return Stem(*(u.build() for u in self.units(spec, shape.channels)))


@register(STEMS, "conv")
class ConvStemFamily(Family):
    def units(self, spec: ConvStem, cin: int) -> list[ConvUnit]:
        out, prev = [], cin
        last = len(spec.channels) - 1
        for i, (c, s) in enumerate(zip(spec.channels, spec.resolved_strides())):
            if i == last and not spec.norm_last:
                out.append(ConvUnit(prev, c, spec.kernel, s))
            else:
                out.append(ConvUnit(prev, c, spec.kernel, s, bias=spec.norm == "none", norm=spec.norm, act=spec.act))
            prev = c
        if spec.project:
            out.append(ConvUnit(prev, spec.project, 1, bias=True))
        return out

    def stride(self, spec: ConvStem) -> int:
        return math.prod(spec.resolved_strides())

    def output_shape(self, spec, shape):
        s = self.stride(spec)
        return FeatureShape(spec.project or spec.channels[-1], shape.height // s, shape.width // s)

    def cost(self, spec, shape):
        return units_cost(self.units(spec, shape.channels), shape.height, shape.width)[0]

    def build(self, spec, shape, drop_rates):
        from .modules import Stem

        return Stem(*(u.build() for u in self.units(spec, shape.channels)))


@register(STEMS, "resnet")
class ResNetStemFamily(Family):
    def unit(self, spec: ResNetStem, cin: int) -> ConvUnit:
        return ConvUnit(cin, spec.width, spec.kernel, 2, norm=spec.norm, act=spec.act)

    def stride(self, spec: ResNetStem) -> int:
        return 4

    def output_shape(self, spec, shape):
        return FeatureShape(spec.width, shape.height // 4, shape.width // 4)

    def cost(self, spec, shape):
        return self.unit(spec, shape.channels).cost(shape.height, shape.width)[0]

    def build(self, spec, shape, drop_rates):
        from torch import nn

        from .modules import Stem

        return Stem(self.unit(spec, shape.channels).build(), nn.MaxPool2d(3, 2, 1))
