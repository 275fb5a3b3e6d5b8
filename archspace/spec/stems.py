"""Stem specs: how the input image becomes the first feature map."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ._base import MAX_INPUT_SIZE, MAX_STEM_CONVS, ActName, FieldError, Kernel, NormName, SpecModel, Stride, Width, bounded


class PatchifyStem(SpecModel):
    """Non-overlapping ``patch × patch`` convolution with stride ``patch`` (ViT, ConvNeXt, CaiT).

    ``width`` defaults to the first stage's width.
    """

    kind: Literal["patchify"] = "patchify"
    patch: bounded(MAX_INPUT_SIZE) = 16
    width: Width | None = None
    norm: NormName = "none"


class ConvStem(SpecModel):
    """A stack of 3×3 convolutions, each followed by norm and activation (ViT_C, CoAtNet S0).

    ``strides`` default to the ViT_C rule: a conv that doubles the channels (or the first
    one) has stride 2, one that keeps them has stride 1. ``project`` adds a final 1×1
    convolution without norm or activation. ``rule: vitc`` checks the ViT_C pattern.
    ``norm_last: false`` leaves the last conv of ``channels`` bare (no norm, activation or
    bias), as timm's CoAtNet stems do; the paper's stem normalises every conv.
    """

    kind: Literal["conv"] = "conv"
    channels: list[Width] = Field(min_length=1, max_length=MAX_STEM_CONVS)
    strides: list[Stride] | None = Field(None, max_length=MAX_STEM_CONVS)
    kernel: Kernel = 3
    norm: NormName = "batchnorm"
    act: ActName = "relu"
    project: Width | None = None
    rule: Literal["vitc"] | None = None
    norm_last: bool = True

    @model_validator(mode="after")
    def _strides_match(self) -> "ConvStem":
        if not self.norm_last and self.norm == "none" and self.act == "none":
            raise FieldError("norm_last", "false changes nothing when norm and act are none")
        if self.strides is not None and len(self.strides) != len(self.channels):
            raise FieldError(
                "strides",
                f"has {len(self.strides)} entries but channels has {len(self.channels)}",
            )
        if self.kernel % 2 == 0:
            raise FieldError("kernel", f"{self.kernel} must be odd")
        if self.rule == "vitc":
            strides = self.resolved_strides()
            prev = None
            for i, (c, s) in enumerate(zip(self.channels, strides)):
                if prev is not None and not ((s == 2 and c == 2 * prev) or (s == 1 and c == prev)):
                    raise FieldError(
                        "channels",
                        f"conv {i} ({prev} -> {c}, stride {s}) breaks the ViT_C rule: "
                        "stride 2 doubles the channels, stride 1 keeps them",
                    )
                prev = c
        return self

    def resolved_strides(self) -> list[int]:
        """The explicit strides, or the ViT_C rule's."""
        if self.strides is not None:
            return list(self.strides)
        out, prev = [], None
        for c in self.channels:
            out.append(1 if prev is not None and c == prev else 2)
            prev = c
        return out


class ResNetStem(SpecModel):
    """ResNet stem: ``kernel × kernel`` stride-2 conv, norm, activation, 3×3 stride-2 max pool."""

    kind: Literal["resnet"] = "resnet"
    width: Width = 64
    kernel: Kernel = 7
    norm: NormName = "batchnorm"
    act: ActName = "relu"

    @model_validator(mode="after")
    def _odd_kernel(self) -> "ResNetStem":
        if self.kernel % 2 == 0:
            raise FieldError("kernel", f"{self.kernel} must be odd")
        return self
