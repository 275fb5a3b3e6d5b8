"""CIFAR-10 from the standard python-pickle folder on local disk (no download)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .._lazy import lazy_module
from ._base import DATA_DIR, DataBundle, DataInfo, ImageSet, as_path, check_size_channels, make_bundle, problem, \
    resize, take_options, to_channels

torch = lazy_module("torch")  # imported on first use: describing a dataset needs no torch

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
VAL_FILES = ["test_batch"]
NUM_CLASSES = 10
MAX_BATCH_BYTES = 512 * 2**20
"""A batch file larger than this is refused before it is read (the real ones are 31 MB)."""

# The only globals a CIFAR-10 batch pickle names: numpy's array reconstruction (module path of
# numpy 1 and 2). Lists, dicts, bytes, str and int are pickle opcodes and need no global.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles plain containers, bytes, str, numbers and numpy arrays; any other global (a
    function a crafted file would call) is refused before it is looked up."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module[:60]}.{name[:60]} (only numpy arrays, "
                                     f"containers, bytes, str and numbers may appear in a batch file)")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused persistent id")


def find_folder(data_dir: str | Path | None) -> Path:
    """The folder holding the batches: ``data_dir`` itself or its ``cifar-10-batches-py``."""
    root = as_path(data_dir, "cifar10", f"the {FOLDER} folder or its parent")
    nested = root / FOLDER
    folder = nested if nested.is_dir() else root
    missing = [name for name in TRAIN_FILES + VAL_FILES if not (folder / name).is_file()]
    if missing:
        raise problem(DATA_DIR, f"{folder} is not a CIFAR-10 python folder: missing {', '.join(missing)} "
                                f"(expected data_batch_1..5 and test_batch, or a {FOLDER} folder inside)")
    return folder


def _read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file as ``uint8`` ``(N, 3, 32, 32)`` images and ``int64`` labels."""
    try:
        if path.stat().st_size > MAX_BATCH_BYTES:
            raise ValueError(f"{path.stat().st_size:,} bytes, more than the {MAX_BATCH_BYTES:,} a batch may hold")
        with open(path, "rb") as f:
            batch = _BatchUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure means a corrupt (or hostile) file
        raise problem(DATA_DIR, f"cannot read CIFAR-10 batch {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise problem(DATA_DIR, f"CIFAR-10 batch {path} has no b'data' and b'labels' entries")
    try:
        data = torch.as_tensor(_array(batch[b"data"]))
        labels = torch.as_tensor(list(batch[b"labels"])).to(torch.int64)
    except Exception as exc:
        raise problem(DATA_DIR, f"CIFAR-10 batch {path} holds unreadable data: {exc}") from None
    if data.dim() != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.numel():
        raise problem(DATA_DIR, f"CIFAR-10 batch {path}: data must be N × 3072 with N labels, got "
                                f"{tuple(data.shape)} and {labels.numel()} labels")
    if labels.numel() and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise problem(DATA_DIR, f"CIFAR-10 batch {path}: labels must lie in 0..9")
    if data.is_floating_point() or data.dtype == torch.bool or (data.numel() and (data.min() < 0 or data.max() > 255)):
        raise problem(DATA_DIR, f"CIFAR-10 batch {path}: data must be uint8 pixel values")
    return data.to(torch.uint8).reshape(-1, 3, 32, 32), labels


def _array(data: Any) -> Any:
    """Pickled data as something ``torch.as_tensor`` takes (a numpy array, or nested lists)."""
    if isinstance(data, (bytes, bytearray)):
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).reshape(-1, 3 * 32 * 32)
    if isinstance(data, np.ndarray) and data.dtype.kind not in "iub":
        raise ValueError(f"an array of {data.dtype}, not of integers")
    return data


def _read(folder: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [_read_batch(folder / name) for name in names]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def describe_cifar10(*, data_dir: str | Path | None = None, **options: Any) -> DataInfo:
    """10 classes; 3 channels, or 1 (luma). Checks that the folder holds the batches."""
    take_options("cifar10", options, {}, {})
    find_folder(data_dir)
    return DataInfo("cifar10", NUM_CLASSES, (3, 1))


def load_cifar10(*, size: int, channels: int = 3, data_dir: str | Path | None = None, seed: int = 0,
                 **options: Any) -> DataBundle:
    """Train on ``data_batch_1..5``, validate on ``test_batch``; resized to ``size`` when not 32.

    ``channels`` is 3, or 1 for luma. The split is the dataset's own; ``seed`` is not used.
    """
    size, channels = check_size_channels(size, channels, (3, 1), "cifar10")
    take_options("cifar10", options, {}, {})
    folder = find_folder(data_dir)
    sets = []
    for names in (TRAIN_FILES, VAL_FILES):
        images, labels = _read(folder, names)
        if images.shape[0] == 0:
            raise problem(DATA_DIR, f"CIFAR-10 batches {', '.join(names)} in {folder} hold no images")
        sets.append(ImageSet(to_channels(resize(images, size), channels).contiguous(), labels))
    return make_bundle("cifar10", sets[0], sets[1], num_classes=NUM_CLASSES)
