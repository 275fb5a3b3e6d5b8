"""Base model and shared field types of the spec language."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class SpecModel(BaseModel):
    """Frozen, strict base: unknown keys are errors, values never change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class FieldError(ValueError):
    """A cross-field rule broken by one field: the error is reported at that field's path."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


PositiveInt = Annotated[int, Field(gt=0, strict=False)]
Stride = Literal[1, 2]
# Names resolved by registries in archspace.layers (kept torch-free here).
NormName = Literal["batchnorm", "layernorm", "none"]
ActName = Literal["relu", "gelu", "silu", "tanh", "sigmoid", "none"]
PoolName = Literal["max", "avg"]
