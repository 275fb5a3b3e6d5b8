"""A class-per-folder image tree: ``train/<class>/*.jpg`` and, optionally, ``val/<class>/...``.

Two paths, picked by ``loader`` (``auto`` picks by the decoded size):

- ``memory``: every image decoded once (shorter side resized to the input size, centre crop)
  and held as a ``uint8`` tensor; the fast choice for small folders.
- ``stream``: nothing decoded up front; loader worker processes decode each image when its
  batch is due (see :mod:`archspace.data.loader`): a random resized crop of the original image
  for training, the shorter side resized to ``size / 0.875`` and a centre crop for evaluation.
  Memory does not grow with the number of images beyond a packed list of their paths.
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._lazy import lazy_module
from ..errors import Problem, SpecError
from ._base import (DATA_DIR, DataBundle, DataInfo, ImageSet, as_path, check_size_channels, channel_stats,
                    make_bundle, one_line, problem, split_indices, take_options)
from ._decode import EXTENSIONS, Listing, centre_square, class_folders, eval_crop, list_split

torch = lazy_module("torch")  # imported on first use: describing a dataset needs no torch

VAL_FRACTION = 0.2
MAX_LISTED = 5  # unreadable images reported one per problem, up to this many
MEMORY_BUDGET = 1 << 30  # auto: a folder whose decoded images fit in this many bytes is held in memory
STATS_SAMPLE = 256  # streamed: images whose evaluation views give the channel statistics
LOADERS = ("auto", "memory", "stream")
LOADER = "train.loader"


class FolderSet:
    """One split of an image folder, decoded on demand: its files packed in one byte buffer
    (no Python object per image, so forked loader workers do not copy them) and its labels."""

    def __init__(self, files: Sequence[str], labels: Sequence[int]):
        encoded = [f.encode("utf-8", "surrogateescape") for f in files]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)
        self.labels = torch.tensor(list(labels), dtype=torch.int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def path(self, i: int) -> str:
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        return self._buffer[start:end].tobytes().decode("utf-8", "surrogateescape")

    def subset(self, idx: torch.Tensor) -> "FolderSet":
        return FolderSet([self.path(int(i)) for i in idx], self.labels[idx].tolist())


def _train_root(data_dir: str | Path | None) -> Path:
    root = as_path(data_dir, "imagefolder", "a folder with train/<class>/ and optionally val/<class>/")
    train_root = root / "train"
    if not train_root.is_dir():
        raise problem(DATA_DIR, f"no train folder in {root} (expected train/<class>/*.jpg and optionally "
                                f"val/<class>/*.jpg)")
    return train_root


def _check_classes(train_root: Path, classes: list[str]) -> None:
    if len(classes) < 2:
        raise problem(DATA_DIR, f"{train_root} has a single class ({classes[0]}); a classifier needs at least 2")


def list_folder(data_dir: str | Path | None) -> tuple[Listing, Listing | None]:
    """The train listing and the val one (``None`` without a val folder).

    Raises:
        SpecError: on ``--data-dir``: missing folders, an empty class folder, class folders
            differing between train and val.
    """
    train_root = _train_root(data_dir)
    train, problems = list_split(train_root)
    if train.classes:
        _check_classes(train_root, train.classes)
    val = None
    val_root = train_root.parent / "val"
    if val_root.is_dir() and train.classes:
        val, more = list_split(val_root, train.classes)
        problems += more
    if problems:
        raise SpecError([Problem(DATA_DIR, one_line(p)) for p in problems])
    return train, val


def describe_imagefolder(*, data_dir: str | Path | None = None, **options: Any) -> DataInfo:
    """One class per folder under ``train`` (the folders are listed, no image is opened); 3 or 1 channels."""
    take_options("imagefolder", options, {}, {})
    train_root = _train_root(data_dir)
    classes = class_folders(train_root)
    if not classes:
        raise problem(DATA_DIR, f"no class folders in {train_root} (expected {train_root.name}/<class>/*.jpg)")
    _check_classes(train_root, classes)
    return DataInfo("imagefolder", len(classes), (3, 1))


def _decode_all(files: list[str], size: int, channels: int) -> torch.Tensor:
    mode = "RGB" if channels == 3 else "L"
    out = torch.empty((len(files), channels, size, size), dtype=torch.uint8)
    errors: list[Problem] = []

    def one(path: str) -> np.ndarray | str:
        try:
            return centre_square(path, size, mode)
        except Exception as exc:  # Pillow raises many kinds for broken files
            return f"{type(exc).__name__}: {exc}"

    workers = min(8, os.cpu_count() or 1, max(len(files), 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, (path, result) in enumerate(zip(files, pool.map(one, files))):
            if isinstance(result, str):
                errors.append(Problem(DATA_DIR, one_line(f"cannot read image {path}: {result}")))
            else:
                out[i] = torch.from_numpy(result)
    if errors:
        if len(errors) > MAX_LISTED:
            extra = len(errors) - MAX_LISTED
            errors = errors[:MAX_LISTED] + [Problem(DATA_DIR, f"... and {extra} more unreadable images")]
        raise SpecError(errors)
    return out


def _splits(train: Listing, val: Listing | None, train_root: Path) -> tuple[tuple[list[str], list[int]], ...]:
    """(files, labels) of the train and val splits; without a val folder, a fixed 80/20 split."""
    if val is not None:
        return (train.files, train.labels), (val.files, val.labels)
    train_idx, val_idx = split_indices(torch.tensor(train.labels, dtype=torch.int64), VAL_FRACTION)
    if val_idx.numel() == 0:
        raise problem(DATA_DIR, f"{train_root} has too few images to hold out a validation split "
                                f"(one per class); add a val folder or more images")
    pick = lambda idx: ([train.files[i] for i in idx.tolist()], [train.labels[i] for i in idx.tolist()])  # noqa: E731
    return pick(train_idx), pick(val_idx)


def choose_loader(loader: str, count: int, size: int, channels: int) -> tuple[str, str]:
    """``memory`` or ``stream`` for a folder of ``count`` images, and why (one line)."""
    if loader not in LOADERS:
        raise problem(LOADER, f"unknown loader {loader!r} (known: {', '.join(LOADERS)})")
    need = count * channels * size * size
    held = f"{count:,} images at {size} px take {need / 2**20:,.0f} MiB decoded"
    if loader == "memory":
        return "memory", f"held in memory (train.loader: memory): {held}"
    if loader == "stream":
        return "stream", "streamed from the files (train.loader: stream)"
    if need <= MEMORY_BUDGET:
        return "memory", f"held in memory (train.loader: auto): {held}, within {MEMORY_BUDGET / 2**30:g} GiB"
    return "stream", f"streamed from the files (train.loader: auto): {held}, more than {MEMORY_BUDGET / 2**30:g} GiB"


def _stream_stats(split: FolderSet, size: int, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Channel statistics of the evaluation views of a fixed sample of the train images."""
    rng = random.Random(0)
    picks = sorted(rng.sample(range(len(split)), min(STATS_SAMPLE, len(split))))
    mode = "RGB" if channels == 3 else "L"

    def one(i: int) -> np.ndarray | None:
        try:
            return eval_crop(split.path(i), size, mode)
        except Exception:  # a broken image is reported when its batch is due
            return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        views = [v for v in pool.map(one, picks) if v is not None]
    if not views:
        return (0.5,) * channels, (0.25,) * channels
    return channel_stats(torch.from_numpy(np.stack(views)))


def load_imagefolder(*, size: int, channels: int = 3, data_dir: str | Path | None = None, seed: int = 0,
                     loader: str = "auto", **options: Any) -> DataBundle:
    """The folder held in memory or streamed (``loader``: auto, memory or stream).

    Class index = position of the folder name in the sorted ``train`` class folders. Without a
    ``val`` folder, a fixed 80/20 split per class (independent of ``seed``) holds out val.
    """
    size, channels = check_size_channels(size, channels, (3, 1), "imagefolder")
    take_options("imagefolder", options, {}, {})
    train_root = _train_root(data_dir)
    listing, val_listing = list_folder(data_dir)
    (train_files, train_labels), (val_files, val_labels) = _splits(listing, val_listing, train_root)
    path, note = choose_loader(loader, len(train_files) + len(val_files), size, channels)
    if path == "memory":
        train = ImageSet(_decode_all(train_files, size, channels), torch.tensor(train_labels, dtype=torch.int64))
        val = ImageSet(_decode_all(val_files, size, channels), torch.tensor(val_labels, dtype=torch.int64))
        return make_bundle("imagefolder", train, val, num_classes=len(listing.classes), note=note)
    train_set, val_set = FolderSet(train_files, train_labels), FolderSet(val_files, val_labels)
    mean, std = _stream_stats(train_set, size, channels)
    return DataBundle("imagefolder", train_set, val_set, len(listing.classes), channels, mean, std, size=size,
                      path="stream", note=note)


__all__ = ["EXTENSIONS", "FolderSet", "choose_loader", "describe_imagefolder", "list_folder", "load_imagefolder"]
