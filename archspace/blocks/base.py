"""What every stem, stage and head family provides, and the registries that find them.

A family pairs, for one spec kind, its shape rule, its checks, its analytic cost and its
builder. The cost is computed from the same plan (shapes and layer list) the builder
uses, so no module needs to be built to know it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Iterable

from .. import cost as C
from ..errors import Problem


@dataclass(frozen=True, slots=True, init=False)
class FeatureShape:
    """The tensor between two parts of a network: a ``channels × height × width`` map,
    plus ``prefix`` class tokens carried beside it; ``positioned`` once an absolute
    position embedding has been added."""

    channels: int
    height: int
    width: int
    prefix: int = 0
    positioned: bool = False

    def __init__(self, channels: int, height: int, width: int, prefix: int = 0, positioned: bool = False) -> None:
        # The frozen dataclass's own __init__ goes through object.__setattr__ per field;
        # lowering makes several shapes per part, so set the slots directly.
        _set_channels(self, channels)
        _set_height(self, height)
        _set_width(self, width)
        _set_prefix(self, prefix)
        _set_positioned(self, positioned)

    @property
    def tokens(self) -> int:
        """Number of tokens if the map is flattened (class tokens included)."""
        return self.height * self.width + self.prefix

    def with_(self, **changes: Any) -> "FeatureShape":
        return replace(self, **changes)

    def as_list(self) -> list[int]:
        return [self.channels, self.height, self.width]

    def __str__(self) -> str:
        extra = f" +{self.prefix} cls" if self.prefix else ""
        return f"{self.channels}×{self.height}×{self.width}{extra}"


_set_channels, _set_height, _set_width, _set_prefix, _set_positioned = (
    FeatureShape.__dict__[name].__set__ for name in ("channels", "height", "width", "prefix", "positioned"))


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


def kernel_warning(path: str, kernel: int, shape: FeatureShape) -> list[Problem]:
    """Warn when a kernel is larger than the map it slides over."""
    if kernel > max(shape.height, shape.width):
        return [Problem(path, f"kernel {kernel} is larger than the {shape.height}×{shape.width} feature map", "warning")]
    return []
