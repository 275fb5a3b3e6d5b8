"""A class-per-folder image tree: ``train/<class>/*.png`` and, optionally, ``val/<class>/...``."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from ..errors import Problem, SpecError
from ._base import DATA_DIR, DataBundle, DataInfo, ImageSet, as_path, check_size_channels, make_bundle, one_line, \
    problem, split_indices, take_options

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VAL_FRACTION = 0.2
MAX_LISTED = 5  # unreadable images reported one per problem, up to this many


def _class_folders(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)


def _images_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in EXTENSIONS),
                  key=lambda p: p.name)


def _scan(root: Path, classes: list[str] | None) -> tuple[list[str], list[Path], list[int]]:
    """Class names, image files and labels under ``root`` (class names fixed by ``classes`` if given)."""
    folders = _class_folders(root)
    if not folders:
        raise problem(DATA_DIR, f"no class folders in {root} (expected {root.name}/<class>/*.png)")
    names = [f.name for f in folders]
    if classes is not None:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise problem(DATA_DIR, f"{root} has class folders not in train: {', '.join(unknown)}")
    files: list[Path] = []
    labels: list[int] = []
    index = {name: i for i, name in enumerate(classes if classes is not None else names)}
    for folder in folders:
        found = _images_in(folder)
        if not found:
            raise problem(DATA_DIR, f"class folder {folder} has no images ({', '.join(EXTENSIONS)})")
        files.extend(found)
        labels.extend([index[folder.name]] * len(found))
    return names, files, labels


def _decode(path: Path, size: int, mode: str) -> torch.Tensor | str:
    """One image as ``uint8`` ``(C, size, size)``, or why it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
            pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except Exception as exc:  # PIL raises many kinds for broken files
        return f"{type(exc).__name__}: {exc}"
    channels = 3 if mode == "RGB" else 1
    return pixels.reshape(size, size, channels).permute(2, 0, 1)


def _load(files: list[Path], size: int, channels: int) -> torch.Tensor:
    mode = "RGB" if channels == 3 else "L"
    out = torch.empty((len(files), channels, size, size), dtype=torch.uint8)
    errors: list[Problem] = []
    workers = min(8, os.cpu_count() or 1, max(len(files), 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, (path, result) in enumerate(zip(files, pool.map(lambda p: _decode(p, size, mode), files))):
            if isinstance(result, str):
                errors.append(Problem(DATA_DIR, one_line(f"cannot read image {path}: {result}")))
            else:
                out[i] = result
    if errors:
        if len(errors) > MAX_LISTED:
            extra = len(errors) - MAX_LISTED
            errors = errors[:MAX_LISTED] + [Problem(DATA_DIR, f"... and {extra} more unreadable images")]
        raise SpecError(errors)
    return out


def _train_root(data_dir: str | Path | None) -> Path:
    root = as_path(data_dir, "imagefolder", "a folder with train/<class>/ and optionally val/<class>/")
    train_root = root / "train"
    if not train_root.is_dir():
        raise problem(DATA_DIR, f"no train folder in {root} (expected train/<class>/*.png and optionally "
                                f"val/<class>/*.png)")
    return train_root


def _check_classes(train_root: Path, classes: list[str]) -> None:
    if len(classes) < 2:
        raise problem(DATA_DIR, f"{train_root} has a single class ({classes[0]}); a classifier needs at least 2")


def describe_imagefolder(*, data_dir: str | Path | None = None, **options: Any) -> DataInfo:
    """One class per folder under ``train`` (the folders are listed, no image is opened); 3 or 1 channels."""
    take_options("imagefolder", options, {}, {})
    train_root = _train_root(data_dir)
    classes = [f.name for f in _class_folders(train_root)]
    if not classes:
        raise problem(DATA_DIR, f"no class folders in {train_root} (expected {train_root.name}/<class>/*.png)")
    _check_classes(train_root, classes)
    return DataInfo("imagefolder", len(classes), (3, 1))


def load_imagefolder(*, size: int, channels: int = 3, data_dir: str | Path | None = None, seed: int = 0,
                     **options: Any) -> DataBundle:
    """Images decoded with PIL (RGB, or L when ``channels`` is 1) and resized to ``size × size``.

    Class index = position of the folder name in the sorted ``train`` class folders. Without a
    ``val`` folder, a fixed 80/20 split per class (independent of ``seed``) holds out val.
    """
    size, channels = check_size_channels(size, channels, (3, 1), "imagefolder")
    take_options("imagefolder", options, {}, {})
    train_root = _train_root(data_dir)
    root = train_root.parent
    classes, files, labels = _scan(train_root, None)
    _check_classes(train_root, classes)
    images = _load(files, size, channels)
    targets = torch.tensor(labels, dtype=torch.int64)
    val_root = root / "val"
    if val_root.is_dir():
        _, val_files, val_labels = _scan(val_root, classes)
        train = ImageSet(images, targets)
        val = ImageSet(_load(val_files, size, channels), torch.tensor(val_labels, dtype=torch.int64))
    else:
        train_idx, val_idx = split_indices(targets, VAL_FRACTION)
        if val_idx.numel() == 0:
            raise problem(DATA_DIR, f"{train_root} has too few images to hold out a validation split "
                                    f"(one per class); add a val folder or more images")
        train = ImageSet(images[train_idx].contiguous(), targets[train_idx])
        val = ImageSet(images[val_idx].contiguous(), targets[val_idx])
    return make_bundle("imagefolder", train, val, num_classes=len(classes))
