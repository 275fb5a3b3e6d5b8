"""Image datasets held in memory, batching and batch augmentation for training.

Four datasets, none downloaded at run time: ``digits`` (scikit-learn's bundled 8×8 digits,
resized), ``synthetic`` (generated, for tests), ``cifar10`` (the python-pickle folder on local
disk) and ``imagefolder`` (a class-per-folder tree)::

    from archspace.data import Augment, batches, load_data, normalize
    bundle = load_data("digits", size=32, channels=3)
    augment = Augment(flip=True, mixup=0.2, num_classes=bundle.num_classes, label_smoothing=0.1)
    g = torch.Generator().manual_seed(0)
    for images, labels in batches(bundle.train, 128, shuffle=True, generator=g):
        x, target = augment(normalize(images, bundle), labels, g)

Bad input (unknown dataset, missing or malformed data folder) raises :class:`SpecError` with
one-line problems on ``--data`` or ``--data-dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from ._base import DATA, DataBundle, ImageSet, check_size_channels, problem
from .augment import Augment
from .cifar10 import load_cifar10
from .digits import load_digits
from .imagefolder import load_imagefolder
from .synthetic import load_synthetic

DATASETS: dict[str, Callable[..., DataBundle]] = {
    "digits": load_digits,
    "synthetic": load_synthetic,
    "cifar10": load_cifar10,
    "imagefolder": load_imagefolder,
}


def load_data(name: str, *, size: int, channels: int = 3, data_dir: str | Path | None = None, seed: int = 0,
              **options: Any) -> DataBundle:
    """Load dataset ``name`` with images at ``size × size`` and ``channels`` channels.

    Args:
        name: A key of :data:`DATASETS`.
        size: Image side; images are resized once, here.
        channels: Image channels (digits and synthetic take any count; cifar10 and
            imagefolder take 3, or 1 for grayscale).
        data_dir: Folder of the data, for ``cifar10`` and ``imagefolder``.
        seed: Seed of generated data (``synthetic``); the other datasets' splits are fixed.
        **options: Dataset options (``synthetic``: ``num_classes``, ``n_train``, ``n_val``).

    Raises:
        SpecError: unknown dataset or option, bad size or channels, missing or malformed data.
    """
    loader = DATASETS.get(name) if isinstance(name, str) else None
    if loader is None:
        raise problem(DATA, f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    check_size_channels(size, channels)
    return loader(size=size, channels=channels, data_dir=data_dir, seed=seed, **options)


def normalize(images_uint8: Tensor, bundle: DataBundle) -> Tensor:
    """``float32`` ``(x / 255 - mean) / std`` per channel, on the images' device."""
    shape = (1, -1, 1, 1)
    mean = torch.tensor(bundle.mean, dtype=torch.float32, device=images_uint8.device).view(shape)
    std = torch.tensor(bundle.std, dtype=torch.float32, device=images_uint8.device).view(shape)
    return (images_uint8.to(torch.float32) / 255.0 - mean) / std


def batches(split: ImageSet, batch_size: int, *, shuffle: bool, generator: torch.Generator | None,
            drop_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of ``(uint8 images, int64 labels)`` batches over ``split``.

    With ``shuffle``, the order is ``torch.randperm`` drawn from ``generator`` (the global
    generator when ``None``), so a seeded generator gives the same epochs. Every sample comes
    once per epoch, except the last partial batch when ``drop_last``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = len(split)
    stop = n - n % batch_size if drop_last else n
    if shuffle:
        device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator, device=device).to(split.labels.device)
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield split.images[idx.to(split.images.device)], split.labels[idx]
    else:
        for start in range(0, stop, batch_size):
            yield split.images[start:start + batch_size], split.labels[start:start + batch_size]


__all__ = ["DATASETS", "Augment", "DataBundle", "ImageSet", "batches", "load_data", "normalize"]
