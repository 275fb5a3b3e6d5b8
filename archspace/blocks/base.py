"""What every stem, stage and head family provides, and the registries that find them.

A family pairs, for one spec kind, its shape rule, its checks, its analytic cost and its
builder. The cost is computed from the same plan (shapes and layer list) the builder
uses, so no module needs to be built to know it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterable, NamedTuple

from .. import cost as C
from ..errors import Problem


class FeatureShape(NamedTuple):
    """The tensor between two parts of a network: a ``channels × height × width`` map,
    plus ``prefix`` class tokens carried beside it; ``positioned`` once an absolute
    position embedding has been added. (A named tuple: lowering makes and hashes several per
    spec, and a tuple is made and hashed in C.)"""

    channels: int
    height: int
    width: int
    prefix: int = 0
    positioned: bool = False

    @property
    def tokens(self) -> int:
        """Number of tokens if the map is flattened (class tokens included)."""
        return self.height * self.width + self.prefix

    def with_(self, **changes: Any) -> "FeatureShape":
        return self._replace(**changes)

    def as_list(self) -> list[int]:
        return [self.channels, self.height, self.width]

    def __str__(self) -> str:
        extra = f" +{self.prefix} cls" if self.prefix else ""
        return f"{self.channels}×{self.height}×{self.width}{extra}"


class Family(ABC):
    """Base of stem and stage families; the ``register`` decorator sets ``kind``."""

    kind: ClassVar[str]
    takes_class_token: ClassVar[bool] = False

    def stride(self, spec: Any) -> int:
        """Spatial reduction of this part."""
        return spec.stride

    @abstractmethod
    def output_shape(self, spec: Any, shape: FeatureShape) -> FeatureShape:
        """Shape of the output for an input of ``shape``."""

    def check(self, spec: Any, shape: FeatureShape, path: str, index: int) -> Iterable[Problem]:
        """Shape-dependent problems (the schema has already checked each field)."""
        return ()

    @abstractmethod
    def cost(self, spec: Any, shape: FeatureShape) -> C.Cost:
        """Analytic params, flops and acts for an input of ``shape``."""

    def part(self, spec: Any, shape: FeatureShape, path: str, index: int
             ) -> tuple[Iterable[Problem], FeatureShape, C.Cost]:
        """:meth:`check`, :meth:`output_shape` and :meth:`cost` in one call (what lowering asks of
        a part). This default calls the three; a family overrides it to make its plans once."""
        return self.check(spec, shape, path, index), self.output_shape(spec, shape), self.cost(spec, shape)

    @abstractmethod
    def build(self, spec: Any, shape: FeatureShape, drop_rates: list[float]):
        """The torch module; ``drop_rates`` has one drop-path rate per block."""


STAGES: dict[str, Family] = {}
STEMS: dict[str, Family] = {}


def register(registry: dict[str, Family], *kinds: str):
    """Class decorator: register one instance of a family under each spec kind."""

    def wrap(cls):
        instance = cls()
        for kind in kinds:
            registry[kind] = instance
        cls.kind = kinds[0]
        return cls

    return wrap


def add_blocks(t: C.Tally, first: Any, rest: Any, depth: int, *size: int) -> Any:
    """Add a stage's blocks to ``t``: ``first``, then ``depth - 1`` blocks planned as ``rest``
    (costed once, counted ``depth - 1`` times; all ``depth`` when ``first is rest``). ``size``
    is the stage's input size for plans costed at a size; returns what ``first.add_cost``
    returned (its output size, or nothing)."""
    if first is rest:
        block = C.Tally()
        out = rest.add_cost(block, *size)
        t.add(block, depth)
        return out
    out = first.add_cost(t, *size)
    if depth > 1:
        block = C.Tally()
        rest.add_cost(block, *(out or ()))
        t.add(block, depth - 1)
    return out


def kernel_warning(path: str, kernel: int, shape: FeatureShape) -> list[Problem]:
    """Warn when a kernel is larger than the map it slides over."""
    if kernel > max(shape.height, shape.width):
        return [Problem(path, f"kernel {kernel} is larger than the {shape.height}×{shape.width} feature map", "warning")]
    return []
