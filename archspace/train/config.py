"""The training recipe of one trial: a frozen pydantic model (paths ``train.*`` in spaces)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, model_validator

from ..spec._base import FieldError, PositiveInt, SpecModel

MAX_SEED = 2**32 - 1
"""Largest seed (numpy's and Optuna's samplers take 32-bit seeds)."""
MAX_ALPHA = 100.0
"""Largest mixup / cutmix Beta parameter (beyond it the mix is 0.5 to any precision)."""


class TrainConfig(SpecModel):
    """Everything a training run needs besides the network spec.

    Defaults follow the papers' recipes scaled to small data: AdamW, half-cosine schedule
    with linear warm-up, no weight decay on gains, biases, embeddings, tables, tokens and
    layer scale.
    """

    data: str = Field("digits", description="Dataset name: digits, synthetic, cifar10, imagefolder, baked.")
    data_dir: str | None = Field(None, description="Folder of cifar10 / imagefolder data, or of a baked set.")
    loader: Literal["auto", "memory", "stream"] = Field(
        "auto", description="imagefolder: hold the decoded images in memory, or stream the files through loader "
                            "workers; auto holds a folder whose decoded images fit in 1 GiB.")
    loader_workers: int | None = Field(None, ge=0, description="Loader worker processes of a streamed folder "
                                                               "(default: the CPUs, at most 8; 0 decodes in the "
                                                               "training process).")
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
    mixup: float = Field(0.0, ge=0, le=MAX_ALPHA, description="Mixup Beta(α, α) parameter; 0 disables.")
    cutmix: float = Field(0.0, ge=0, le=MAX_ALPHA, description="CutMix Beta(α, α) parameter; 0 disables.")
    random_resized_crop: bool = False
    crop_scale: tuple[float, float] = Field((0.35, 1.0), description="Area-fraction range of the random resized "
                                                                     "crop (the papers' ImageNet recipe: 0.08, 1).")
    flip: bool = False
    ema: float | None = Field(None, gt=0, lt=1, description="EMA decay of the weights (e.g. 0.999); off if unset.")
    clip_grad: float | None = Field(None, gt=0, description="Clip the gradient norm to this value.")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = Field("auto", pattern=r"^(auto|cpu|[a-z_]+(:[0-9]+)?)$",
                        description="auto (the accelerator torch sees, else the cpu), cpu, or a device such as "
                                    "cuda, cuda:1, xpu, mps.")
    precision: Literal["fp32", "bf16", "fp16"] | None = Field(
        None, description="Autocast precision of the forward pass (default: bf16 on an accelerator, fp32 on the "
                          "cpu); fp16 adds a gradient scaler and needs an accelerator.")
    channels_last: bool | None = Field(None, description="Channels-last memory format (default: on an accelerator, and on the cpu "
                                         "for networks with convolutions in their stages).")
    compile: bool = Field(False, description="Wrap the model in torch.compile (inductor; runs on the cpu too).")
    eval_batch_size: PositiveInt = 256
    checkpoint: bool = Field(True, description="Write a checkpoint after every epoch (needed by --resume).")
    checkpoint_steps: PositiveInt | None = Field(None, description="Also write a checkpoint every this many steps "
                                                                   "inside an epoch (long epochs): a killed run "
                                                                   "resumes at that step, same sample order.")

    @model_validator(mode="after")
    def _warmup_fits(self) -> "TrainConfig":
        if self.warmup_epochs > self.epochs:
            raise FieldError("warmup_epochs", f"{self.warmup_epochs} is longer than the {self.epochs} epochs")
        if self.min_lr > self.lr:
            raise FieldError("min_lr", f"{self.min_lr} is above lr {self.lr}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise FieldError("crop_scale", f"must be two numbers with 0 < min <= max <= 1, got [{lo}, {hi}]")
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


def read_config(path) -> dict:
    """A recipe file's values (YAML or JSON: an exported ``recipe.yaml`` or a run's
    ``config.json``), checked as a whole: every bad field is one problem under ``train.<field>``.

    Raises:
        SpecError: unreadable or malformed file (on ``--config``), or bad fields.
    """
    from pathlib import Path

    from ..errors import Problem, SpecError
    from ..spec.io import read_yaml

    try:
        data = read_yaml(Path(path))  # JSON is YAML
    except SpecError as exc:
        raise SpecError([Problem("--config", p.message) for p in exc.problems]) from None
    load_config(**data)
    return data


def check_batch(batch_size: int, train_images: int, dataset: str) -> None:
    """Refuse a batch larger than the training set (no full batch could be drawn)."""
    from ..errors import SpecError

    if batch_size > train_images:
        raise SpecError.single("train.batch_size", f"{batch_size} is larger than the {train_images} "
                                                   f"training images of {dataset}")
