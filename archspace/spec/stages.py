"""Stage specs, one pydantic model per block kind, tagged by ``block:``.

Every stage has ``depth`` blocks of ``width`` channels; its first block applies
``stride``. A class may declare a layout ``letter`` (``C``, ``T``) so that
``layout: C-C-T-T`` can switch a stage to that kind.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ._base import ActName, Depth, FieldError, Kernel, NormName, PoolName, Ratio, SpecModel, Stride, Width


class _Stage(SpecModel):
    letter: ClassVar[str | None] = None
    layout_defaults: ClassVar[dict[str, Any]] = {}

    depth: Depth
    width: Width
    stride: Stride = 2


class _AttentionStage(_Stage):
    """Fields shared by attention stages: ``heads`` or ``head_size`` (one of them, width must
    divide evenly), MLP ratio, qkv bias, layer scale, norm and activation."""

    default_head_size: ClassVar[int] = 32

    heads: Width | None = None
    head_size: Width | None = None
    mlp_ratio: Ratio = 4.0
    qkv_bias: bool = True
    layer_scale: float | None = Field(None, gt=0)
    norm: NormName = "layernorm"
    act: ActName = "gelu"

    def resolved_heads(self) -> int:
        """Number of heads: ``heads``, or ``width / head_size`` (default head size if neither)."""
        if self.heads is not None:
            return self.heads
        return self.width // (self.head_size or self.default_head_size)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "_AttentionStage":
        if self.heads is not None and self.head_size is not None:
            raise FieldError("heads", "set heads or head_size, not both")
        if self.heads is not None:
            if self.width % self.heads:
                raise FieldError("width", f"{self.width} is not a multiple of heads {self.heads}")
            return self
        size = self.head_size or self.default_head_size
        if self.width % size:
            which = "head_size" if self.head_size else "the default head_size"
            raise FieldError("width", f"{self.width} is not a multiple of {which} {size}")
        return self


class MBConvStage(_Stage):
    """Inverted-residual MBConv blocks with squeeze-excitation (CoAtNet S1/S2).

    ``downsample: conv`` puts the stride in the first 1×1 convolution (the CoAtNet paper);
    ``depthwise`` puts it in the depthwise convolution.
    """

    letter: ClassVar[str | None] = "C"
    block: Literal["mbconv"] = "mbconv"
    expansion: Ratio = 4.0
    kernel: Kernel = 3
    se_ratio: float = Field(0.25, ge=0, le=1)
    norm: NormName = "batchnorm"
    act: ActName = "gelu"
    downsample: Literal["conv", "depthwise"] = "conv"
    shortcut_pool: PoolName = "max"

    @model_validator(mode="after")
    def _odd_kernel(self) -> "MBConvStage":
        if self.kernel % 2 == 0:
            raise FieldError("kernel", f"{self.kernel} must be odd")
        return self


class TransformerStage(_AttentionStage):
    """Pre-norm transformer blocks (CoAtNet S3/S4, ViT, CaiT self-attention).

    ``attention: relative`` adds a learned 2-D relative-position bias per head;
    ``absolute`` adds a learned position embedding where the map becomes tokens.
    ``class_token`` prepends a learned class token at the start of the stage.
    """

    letter: ClassVar[str | None] = "T"
    layout_defaults: ClassVar[dict[str, Any]] = {"attention": "relative"}
    block: Literal["transformer"] = "transformer"
    attention: Literal["relative", "absolute"] = "relative"
    talking_heads: bool = False
    class_token: bool = False
    shortcut_pool: PoolName = "max"


class ClassAttentionStage(_AttentionStage):
    """CaiT class-attention blocks: only the class token is updated; must be the last stage."""

    default_head_size: ClassVar[int] = 48
    block: Literal["class_attention"] = "class_attention"
    stride: Literal[1] = 1
    layer_scale: float | None = Field(1.0e-5, gt=0)


class BottleneckStage(_Stage):
    """Residual conv blocks with knobs spanning ResNet's bottleneck to the ConvNeXt block.

    Each block has three convolutions: a ``kernel × kernel`` spatial one (grouped or
    depthwise) and two 1×1 ones with ``width × expansion`` hidden channels. ``order``
    places the spatial conv in the ``middle`` (ResNet) or ``first`` (ConvNeXt).
    ``norms``/``activations``: ``all`` after every conv (and the activation after the
    residual sum), ``one`` only a norm after the first conv and an activation after the
    second. ``downsample: block`` strides the block with a projection shortcut (ResNet);
    ``separate`` puts a norm and a 2×2 stride-2 conv before the stage (ConvNeXt).
    """

    block: Literal["bottleneck"] = "bottleneck"
    expansion: Ratio = 0.25
    kernel: Kernel = 3
    groups: Width | Literal["depthwise"] = 1
    order: Literal["middle", "first"] = "middle"
    norm: NormName = "batchnorm"
    norms: Literal["all", "one"] = "all"
    act: ActName = "relu"
    activations: Literal["all", "one"] = "all"
    downsample: Literal["block", "separate"] = "block"
    layer_scale: float | None = Field(None, gt=0)
    bias: bool = False

    @model_validator(mode="after")
    def _shape_rules(self) -> "BottleneckStage":
        if self.kernel % 2 == 0:
            raise FieldError("kernel", f"{self.kernel} must be odd")
        if isinstance(self.groups, int) and self.groups > 1:
            channels = self.spatial_channels(self.width)
            if channels % self.groups:
                raise FieldError(
                    "groups", f"{self.groups} does not divide the {channels} channels of the spatial conv"
                )
        return self

    def hidden(self) -> int:
        """Hidden channels of the block: ``round(width × expansion)``."""
        return max(1, round(self.width * self.expansion))

    def spatial_channels(self, cin: int) -> int:
        """Channels of the spatial conv: the hidden width in the middle, the input width first."""
        return self.hidden() if self.order == "middle" else cin


class ConvNeXtStage(BottleneckStage):
    """ConvNeXt blocks: the bottleneck family's ConvNeXt setting."""

    letter: ClassVar[str | None] = "X"
    block: Literal["convnext"] = "convnext"  # type: ignore[assignment]
    expansion: Ratio = 4.0
    kernel: Kernel = 7
    groups: Width | Literal["depthwise"] = "depthwise"
    order: Literal["middle", "first"] = "first"
    norm: NormName = "layernorm"
    norms: Literal["all", "one"] = "one"
    act: ActName = "gelu"
    activations: Literal["all", "one"] = "one"
    downsample: Literal["block", "separate"] = "separate"
    layer_scale: float | None = Field(1.0e-6, gt=0)
    bias: bool = True
