"""The network spec: input, stem, stages, head, drop path."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from ._base import MAX_CHANNELS, MAX_CLASSES, MAX_INPUT_SIZE, MAX_STAGES, ActName, FieldError, NormName, SpecModel, \
    Width, bounded
from .stages import (
    BottleneckStage,
    ClassAttentionStage,
    ConvNeXtStage,
    MBConvStage,
    TransformerStage,
)
from .stems import ConvStem, PatchifyStem, ResNetStem

StemSpec = Annotated[Union[PatchifyStem, ConvStem, ResNetStem], Field(discriminator="kind")]
StageSpec = Annotated[
    Union[MBConvStage, TransformerStage, ClassAttentionStage, BottleneckStage, ConvNeXtStage],
    Field(discriminator="block"),
]
STAGE_MODELS = (MBConvStage, TransformerStage, ClassAttentionStage, BottleneckStage, ConvNeXtStage)
STEM_MODELS = (PatchifyStem, ConvStem, ResNetStem)


class InputSpec(SpecModel):
    """Input images: square ``size × size`` with ``channels`` channels."""

    size: bounded(MAX_INPUT_SIZE) = 224
    channels: bounded(MAX_CHANNELS) = 3


class HeadSpec(SpecModel):
    """Classifier head: pool, norm, optional hidden layer, then the linear classifier.

    ``pool: avg`` averages the feature map (patch tokens only); ``cls`` takes the class
    token, which some stage must have added.
    """

    pool: Literal["avg", "cls"] = "avg"
    norm: NormName = "layernorm"
    hidden: Width | None = None
    hidden_act: ActName = "tanh"
    dropout: float = Field(0.0, ge=0, lt=1)


class DropPathSpec(SpecModel):
    """Stochastic depth: ``rate`` for the last block (``linear``) or every block (``uniform``)."""

    rate: float = Field(0.0, ge=0, lt=1)
    schedule: Literal["linear", "uniform"] = "linear"


class NetworkSpec(SpecModel):
    """One network. Validating checks each part on its own; graph checks come after.

    ``layout`` records the stage-kind shorthand (``C-C-T-T``) this spec was resolved
    with; the loader applies it, and validation requires the stages to agree with it.
    """

    extends: str | None = Field(None, max_length=1024, description="Preset name or relative path this spec extends "
                                "(resolved and removed when loading).")
    set: dict[str, Any] | None = Field(None, description="Spec paths to override after extends, e.g. "
                                       "{'stages[*].act': 'gelu'} (applied and removed when loading).")
    name: str | None = None
    description: str | None = None
    layout: str | None = None
    input: InputSpec = InputSpec()
    num_classes: bounded(MAX_CLASSES) = 1000
    stem: StemSpec
    stages: list[StageSpec] = Field(min_length=1, max_length=MAX_STAGES)
    head: HeadSpec = HeadSpec()
    drop_path: DropPathSpec = DropPathSpec()

    @model_validator(mode="after")
    def _loader_keys_resolved(self) -> "NetworkSpec":
        for key in ("extends", "set"):
            if getattr(self, key) is not None:
                raise FieldError(key, "is resolved when loading; validate the loaded data (archspace.load_spec)")
        return self

    @model_validator(mode="after")
    def _layout_agrees(self) -> "NetworkSpec":
        if self.layout is None:
            return self
        from .layout import layout_letters

        letters = layout_letters(self.layout, len(self.stages))
        for i, (letter, stage) in enumerate(zip(letters, self.stages)):
            if letter is not None and type(stage).letter != letter:
                raise FieldError("layout", f"stage {i} is {stage.block!r} but the layout says {letter!r}")
        return self

    def stem_width(self) -> int:
        """Output channels of the stem."""
        stem = self.stem
        if isinstance(stem, ConvStem):
            return stem.project or stem.channels[-1]
        if isinstance(stem, PatchifyStem):
            return stem.width or self.stages[0].width
        return stem.width
