"""The training recipe of one trial: a frozen pydantic model (paths ``train.*`` in spaces)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, model_validator

from ..spec._base import FieldError, PositiveInt, SpecModel


class TrainConfig(SpecModel):
    """Everything a training run needs besides the network spec.

    Defaults follow the papers' recipes scaled to small data: AdamW, half-cosine schedule
    with linear warm-up, no weight decay on gains, biases, embeddings, tables, tokens and
    layer scale.
    """

    data: str = Field("digits", description="Dataset name: digits, synthetic, cifar10, imagefolder.")
    data_dir: str | None = Field(None, description="Folder of cifar10 / imagefolder data.")
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1.0e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = Field(0.0, ge=0)
    min_lr: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    mixup: float = Field(0.0, ge=0, description="Mixup Beta(α, α) parameter; 0 disables.")
    cutmix: float = Field(0.0, ge=0, description="CutMix Beta(α, α) parameter; 0 disables.")
    random_resized_crop: bool = False
    flip: bool = False
    ema: float | None = Field(None, gt=0, lt=1, description="EMA decay of the weights (e.g. 0.999); off if unset.")
    clip_grad: float | None = Field(None, gt=0, description="Clip the gradient norm to this value.")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = Field(False, description="Wrap the model in torch.compile.")
    eval_batch_size: PositiveInt = 256
    checkpoint: bool = Field(True, description="Write a checkpoint after every epoch (needed by --resume).")

    @model_validator(mode="after")
    def _warmup_fits(self) -> "TrainConfig":
        if self.warmup_epochs > self.epochs:
            raise FieldError("warmup_epochs", f"{self.warmup_epochs} is longer than the {self.epochs} epochs")
        if self.min_lr > self.lr:
            raise FieldError("min_lr", f"{self.min_lr} is above lr {self.lr}")
        return self


def load_config(**values) -> TrainConfig:
    """Validate a recipe; every problem is reported under ``train.<field>``.

    Raises:
        SpecError: one problem per bad value.
    """
    from ..errors import SpecError
    from ..spec.io import problems_from_validation

    try:
        return TrainConfig.model_validate(values)
    except ValidationError as exc:
        raise SpecError(problems_from_validation(exc, ("train",))) from None
