"""Classifier head: pool (average of the map, or the class token) → norm → hidden → linear.

The analytic cost is here, without torch; the module is :class:`.modules.Head`.
"""

from __future__ import annotations

from .. import cost as C
from .._lazy import lazy
from ..layers.norms import norm_params
from ..spec import HeadSpec

__getattr__, __dir__ = lazy(__name__, globals(), {name: f".modules:{name}" for name in (
    "Head", "VECTOR_NORMS", "AvgPool", "ClassTokenPool", "POOLS")})


def head_cost(spec: HeadSpec, channels: int, num_classes: int) -> C.Cost:
    t = C.Tally()
    t.params += norm_params(spec.norm, channels)
    if spec.hidden:
        t.linear(1, channels, spec.hidden)
    t.linear(1, spec.hidden or channels, num_classes)
    return t.cost()


class HeadFamily:
    """The head's analytic cost and its builder, as a stage family has them (the module is
    :class:`.modules.Head`)."""

    cost = staticmethod(head_cost)

    @staticmethod
    def build(spec: HeadSpec, channels: int, num_classes: int):
        from .modules import Head

        return Head(spec, channels, num_classes)
