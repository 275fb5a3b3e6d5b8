"""Image datasets, batching and batch augmentation for training.

Five datasets, none downloaded at run time: ``digits`` (scikit-learn's bundled 8×8 digits,
resized), ``synthetic`` (generated, for tests), ``cifar10`` (the python-pickle folder on local
disk), ``imagefolder`` (a class-per-folder tree, held in memory or streamed from the files)
and ``baked`` (a folder made by ``archspace data bake``, memory-mapped; see
:mod:`archspace.data.baked`). A training run takes its batches from
:class:`archspace.data.loader.Batches`::

    from archspace.data import Augment, batches, load_data, normalize
    bundle = load_data("digits", size=32, channels=3)
    augment = Augment(flip=True, mixup=0.2, num_classes=bundle.num_classes, label_smoothing=0.1)
    g = torch.Generator().manual_seed(0)
    for images, labels in batches(bundle.train, 128, shuffle=True, generator=g):
        x, target = augment(normalize(images, bundle), labels, g)

What a dataset fixes about the network (its class count, the channel counts it can give) is
known without loading it: ``describe_data`` answers from the dataset's constant or a listing
of its class folders, and ``fit_spec`` gives a spec the dataset's head, so that what is
matched, costed and recorded is the network that is trained.

Bad input (unknown dataset, missing or malformed data folder) raises :class:`SpecError` with
one-line problems on ``--data`` or ``--data-dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .._lazy import lazy_module

from ._base import CHANNELS, DATA, SIZE, DataBundle, DataInfo, ImageSet, MappedSet, check_size_channels, problem
from .augment import Augment
from .baked import describe_baked, load_baked
from .cifar10 import describe_cifar10, load_cifar10
from .digits import describe_digits, load_digits
from .imagefolder import describe_imagefolder, load_imagefolder
from .synthetic import describe_synthetic, load_synthetic

torch = lazy_module("torch")  # imported on first use: describing a dataset needs no torch

if TYPE_CHECKING:
    from torch import Tensor

    from ..spec import NetworkSpec


@dataclass(frozen=True)
class Dataset:
    """A dataset's two entry points: ``load`` (the images) and ``describe`` (what it fixes, cheaply),
    and the ``train.loader`` settings it takes (``auto`` always)."""

    load: Callable[..., DataBundle]
    describe: Callable[..., DataInfo]
    loaders: tuple[str, ...] = ("auto", "memory")


DATASETS: dict[str, Dataset] = {
    "digits": Dataset(load_digits, describe_digits),
    "synthetic": Dataset(load_synthetic, describe_synthetic),
    "cifar10": Dataset(load_cifar10, describe_cifar10),
    "imagefolder": Dataset(load_imagefolder, describe_imagefolder, ("auto", "memory", "stream")),
    "baked": Dataset(load_baked, describe_baked, ("auto",)),
}


def _dataset(name: str) -> Dataset:
    found = DATASETS.get(name) if isinstance(name, str) else None
    if found is None:
        raise problem(DATA, f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    return found


def describe_data(name: str, *, data_dir: str | Path | None = None, **options: Any) -> DataInfo:
    """Class count and possible channel counts of dataset ``name``, without loading it.

    Raises:
        SpecError: unknown dataset or option, missing or malformed data folder.
    """
    return _dataset(name).describe(data_dir=data_dir, **options)


def fit_spec(spec: "NetworkSpec", info: DataInfo) -> "NetworkSpec":
    """``spec`` with the dataset's class count (its head sized for the data).

    Raises:
        SpecError: on ``input.channels``, when the dataset cannot give the spec's channel count.
    """
    if info.channels is not None and spec.input.channels not in info.channels:
        allowed = " or ".join(str(c) for c in info.channels)
        raise problem(CHANNELS, f"{info.name} gives {allowed} channels, not {spec.input.channels}")
    if info.size is not None and spec.input.size != info.size:
        raise problem(SIZE, f"the {info.name} set is made for input size {info.size}, not {spec.input.size} "
                            f"(set input.size: {info.size}, or bake the data again with --size {spec.input.size})")
    if spec.num_classes == info.num_classes:
        return spec
    return spec.model_copy(update={"num_classes": info.num_classes})


def load_data(name: str, *, size: int, channels: int = 3, data_dir: str | Path | None = None, seed: int = 0,
              loader: str = "auto", **options: Any) -> DataBundle:
    """Load dataset ``name`` with images at ``size × size`` and ``channels`` channels.

    Args:
        name: A key of :data:`DATASETS`.
        size: Image side; images are resized once, here.
        channels: Image channels (digits and synthetic take any count; cifar10 and
            imagefolder take 3, or 1 for grayscale).
        data_dir: Folder of the data, for ``cifar10`` and ``imagefolder``.
        seed: Seed of generated data (``synthetic``); the other datasets' splits are fixed.
        loader: ``auto``, ``memory`` or ``stream`` (imagefolder only): how batches come; the
            bundle's ``path`` and ``note`` say which was taken and why.
        **options: Dataset options (``synthetic``: ``num_classes``, ``n_train``, ``n_val``).

    Raises:
        SpecError: unknown dataset or option, bad size or channels, missing or malformed data.
    """
    dataset = _dataset(name)
    check_size_channels(size, channels)
    if loader not in dataset.loaders:
        raise problem("train.loader", f"{name} takes loader {' or '.join(dataset.loaders)}, not {loader!r}"
                      + (" (stream is for imagefolder)" if loader == "stream" else ""))
    if "stream" in dataset.loaders or name == "baked":
        return dataset.load(size=size, channels=channels, data_dir=data_dir, seed=seed, loader=loader, **options)
    return dataset.load(size=size, channels=channels, data_dir=data_dir, seed=seed, **options)


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


__all__ = ["DATASETS", "Augment", "DataBundle", "DataInfo", "Dataset", "ImageSet", "MappedSet", "batches",
           "describe_data",
           "fit_spec", "load_data", "normalize"]
