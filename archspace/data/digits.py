"""scikit-learn's bundled 8×8 handwritten digits (1797 images, 10 classes; no download)."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

from .._lazy import lazy_module
from ._base import DATA, DataBundle, DataInfo, ImageSet, check_size_channels, held_out, make_bundle, problem, resize, \
    split_indices, take_options, to_channels

torch = lazy_module("torch")  # imported on first use: describing a dataset needs no torch

VAL_FRACTION = 0.2
NUM_CLASSES = 10
SKLEARN_MISSING = "digits needs scikit-learn (pip install 'archspace[data]')"
# images per class of scikit-learn's digits (the fixed set it bundles): the training split's size
# is counted from them, without loading the images (tests/test_data.py checks them against the data)
CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


def describe_digits(*, data_dir: str | Path | None = None, **options: Any) -> DataInfo:
    """10 classes, any channel count (the gray images are replicated)."""
    take_options("digits", options, {}, {})
    if importlib.util.find_spec("sklearn") is None:
        raise problem(DATA, SKLEARN_MISSING)
    return DataInfo("digits", NUM_CLASSES, train_images=sum(n - held_out(n, VAL_FRACTION) for n in CLASS_COUNTS))


DIGITS_FILE = ("datasets", "data", "digits.csv.gz")  # in scikit-learn's package folder
DIGITS_SHAPE = (1797, 65)  # 64 pixels (0..16) and the label per row


def _digits_file() -> Path | None:
    """scikit-learn's digits file, found without importing scikit-learn (whose import takes
    ~2 s: a search process would pay it before its first digits trial); ``None`` when not there."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise problem(DATA, SKLEARN_MISSING)
    for root in spec.submodule_search_locations or ():
        path = Path(root).joinpath(*DIGITS_FILE)
        if path.is_file():
            return path
    return None


def _table():
    """The digits as scikit-learn's ``load_digits`` reads them: a float array, 64 pixels and
    the label per row (read from its file, else through scikit-learn)."""
    import numpy as np

    path = _digits_file()
    if path is not None:
        table = np.loadtxt(path, delimiter=",")
        if table.shape == DIGITS_SHAPE:
            return table
    from sklearn.datasets import load_digits as sklearn_digits  # the file moved: ask scikit-learn

    digits = sklearn_digits()
    return np.column_stack([digits.data, digits.target])


@lru_cache(maxsize=1)
def _raw() -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as ``uint8`` ``(1797, 1, 8, 8)`` in 0..255, and their labels."""
    table = _table()
    pixels = torch.as_tensor(table[:, :-1], dtype=torch.float64).reshape(-1, 1, 8, 8)
    images = (pixels * (255.0 / 16.0)).round_().clamp_(0, 255).to(torch.uint8)
    labels = torch.as_tensor(table[:, -1].astype("int64"))
    return images, labels


def load_digits(*, size: int, channels: int = 3, data_dir: str | Path | None = None, seed: int = 0,
                **options: Any) -> DataBundle:
    """The digits, resized to ``size`` (bilinear, no antialiasing), replicated to ``channels``.

    The split is fixed and stratified (80/20 per class) and does not depend on ``seed``, so
    every trial sees the same images. ``data_dir`` is not used.
    """
    size, channels = check_size_channels(size, channels)
    take_options("digits", options, {}, {})
    images, labels = _raw()
    train_idx, val_idx = split_indices(labels, VAL_FRACTION)
    images = to_channels(resize(images, size, antialias=False), channels)
    train = ImageSet(images[train_idx].contiguous(), labels[train_idx].contiguous())
    val = ImageSet(images[val_idx].contiguous(), labels[val_idx].contiguous())
    return make_bundle("digits", train, val, num_classes=NUM_CLASSES)
