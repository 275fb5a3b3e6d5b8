"""Generated images for tests: one smooth oriented grating per class, plus noise."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .._lazy import lazy_module
from ._base import DataBundle, DataInfo, ImageSet, check_size_channels, make_bundle, take_options

torch = lazy_module("torch")  # imported on first use: describing a dataset needs no torch

DEFAULTS = {"num_classes": 10, "n_train": 512, "n_val": 128}
MINIMUM = {"num_classes": 2, "n_train": 1, "n_val": 1}
NOISE = 0.08  # std of the pixel noise, in [0, 1] units


def _split(n: int, num_classes: int, size: int, channels: int, generator: torch.Generator) -> ImageSet:
    """``n`` images with balanced labels drawn from ``generator``."""
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]
    k = labels.to(torch.float64).view(n, 1, 1, 1)
    # Class k: a grating at angle pi·k/K with 2, 3 or 4 cycles across the image and a
    # class-specific tint per channel; phase, contrast and noise vary per image.
    angle = math.pi * k / num_classes
    cycles = 2.0 + (k % 3)
    phase = 2 * math.pi * torch.rand(n, 1, 1, 1, generator=generator, dtype=torch.float64)
    contrast = 0.3 + 0.1 * torch.rand(n, 1, 1, 1, generator=generator, dtype=torch.float64)
    coords = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    yy, xx = coords.view(1, 1, size, 1), coords.view(1, 1, 1, size)
    wave = torch.sin(2 * math.pi * cycles * (xx * torch.cos(angle) + yy * torch.sin(angle)) + phase)
    c = torch.arange(channels, dtype=torch.float64).view(1, channels, 1, 1)
    tint = 0.1 * torch.cos(2 * math.pi * (k / num_classes + c / max(channels, 1)))
    noise = NOISE * torch.randn(n, channels, size, size, generator=generator, dtype=torch.float64)
    pixels = 0.5 + tint + contrast * wave + noise
    images = (pixels * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return ImageSet(images, labels.to(torch.int64))


def describe_synthetic(*, data_dir: str | Path | None = None, **options: Any) -> DataInfo:
    """``num_classes`` classes (10 by default), any channel count."""
    taken = take_options("synthetic", options, DEFAULTS, MINIMUM)
    return DataInfo("synthetic", taken["num_classes"], train_images=taken["n_train"])


def load_synthetic(*, size: int, channels: int = 3, data_dir: str | Path | None = None, seed: int = 0,
                   **options: Any) -> DataBundle:
    """Options ``num_classes`` (10), ``n_train`` (512), ``n_val`` (128); deterministic from ``seed``.

    Train and val come from separate streams, so changing ``n_train`` leaves val unchanged.
    ``data_dir`` is not used.
    """
    size, channels = check_size_channels(size, channels)
    opts = take_options("synthetic", options, DEFAULTS, MINIMUM)
    seed = int(seed)
    train = _split(opts["n_train"], opts["num_classes"], size, channels,
                   torch.Generator().manual_seed(2 * seed))
    val = _split(opts["n_val"], opts["num_classes"], size, channels,
                 torch.Generator().manual_seed(2 * seed + 1))
    return make_bundle("synthetic", train, val, num_classes=opts["num_classes"])
