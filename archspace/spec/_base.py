"""Base model and shared field types of the spec language."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class SpecModel(BaseModel):
    """Frozen, strict base: unknown keys are errors, values never change after validation,
    and a float field takes no ``inf`` or ``nan``."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class FieldError(ValueError):
    """A cross-field rule broken by one field: the error is reported at that field's path."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


# Bounds on the sizes a spec may ask for: far beyond any network of the papers, small enough
# that a plan, a graph or a message never grows with an absurd value (docs/spec-language.md).
MAX_DEPTH = 4096
"""Blocks in one stage."""
MAX_STAGES = 64
"""Stages in one network."""
MAX_WIDTH = 65536
"""Channels of a stage, a stem conv or the head's hidden layer."""
MAX_STEM_CONVS = 32
"""Convolutions in a conv stem."""
MAX_CLASSES = 1_000_000
"""Classes of the classifier."""
MAX_INPUT_SIZE = 8192
"""Input resolution (pixels per side)."""
MAX_CHANNELS = 1024
"""Input channels."""
MAX_KERNEL = 63
"""Kernel size of a convolution."""
MAX_RATIO = 64.0
"""MLP ratio and expansion factors."""

# The bounds sit on the inner ``int``/``float`` so that pydantic-core checks them natively (after
# a BeforeValidator they would run as two Python validators per field); the before-validator
# wraps that schema, so the checks run in the same order with the same errors.
PositiveInt = Annotated[Annotated[int, Field(gt=0)], BeforeValidator(_not_bool)]
"""A positive integer (``true`` is not 1)."""


def bounded(maximum: int) -> Any:
    """A positive integer type of at most ``maximum``."""
    return Annotated[Annotated[int, Field(gt=0, le=maximum)], BeforeValidator(_not_bool)]


Depth = bounded(MAX_DEPTH)
Width = bounded(MAX_WIDTH)
Kernel = bounded(MAX_KERNEL)
Ratio = Annotated[Annotated[float, Field(gt=0, le=MAX_RATIO)], BeforeValidator(_not_bool)]
Stride = Literal[1, 2]
# Names resolved by registries in archspace.layers (kept torch-free here).
NormName = Literal["batchnorm", "layernorm", "none"]
ActName = Literal["relu", "gelu", "silu", "tanh", "sigmoid", "none"]
PoolName = Literal["max", "avg"]
