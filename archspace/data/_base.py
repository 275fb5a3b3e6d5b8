"""Shared pieces of the datasets: the split and bundle types, resizing, statistics, problems."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .._lazy import lazy_module

from ..errors import Problem, SpecError

torch = lazy_module("torch")  # imported on first use: describing a dataset needs no torch
F = lazy_module("torch.nn.functional")

DATA = "--data"
DATA_DIR = "--data-dir"
SIZE = "input.size"
CHANNELS = "input.channels"

# Images are resized in chunks of this many so that the float copy stays small.
_CHUNK = 4096


@dataclass(frozen=True)
class ImageSet:
    """One split held in memory.

    Attributes:
        images: ``uint8`` tensor ``(N, C, H, W)``, already at the requested size.
        labels: ``int64`` tensor ``(N,)`` of class indices.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"ImageSet.images must be uint8 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"ImageSet.labels must be int64 (N,) with N = {self.images.shape[0]}, got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def side(self) -> int:
        """Side of the stored (square) images."""
        return int(self.images.shape[-1])

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """The ``uint8`` images at ``idx`` (a 1-D int64 tensor), in that order."""
        return self.images[idx.to(self.images.device)]


@dataclass(frozen=True, eq=False)
class MappedSet:
    """One split read from a memory-mapped ``uint8`` array on disk (a baked dataset).

    The array is never copied whole into the process: a batch reads its images from the
    mapping (the page cache, shared by every process that maps the same file).

    Attributes:
        images: ``numpy`` memory map ``(N, C, S, S)`` of ``uint8``, opened read-only.
        labels: ``int64`` tensor ``(N,)`` (small: held in memory).
    """

    images: Any
    labels: torch.Tensor

    def __post_init__(self) -> None:
        shape = tuple(self.images.shape)
        if str(self.images.dtype) != "uint8" or len(shape) != 4:
            raise ValueError(f"MappedSet.images must be uint8 (N, C, S, S), got {self.images.dtype} {shape}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (shape[0],):
            raise ValueError(f"MappedSet.labels must be int64 (N,) with N = {shape[0]}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def side(self) -> int:
        return int(self.images.shape[-1])

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """The images at ``idx``, read from the mapping in ascending file order and returned in
        the order of ``idx`` (one small copy: the batch)."""
        import numpy as np

        order = idx.numpy()
        ascending = np.argsort(order, kind="stable")
        batch = np.empty((len(order), *self.images.shape[1:]), dtype=np.uint8)
        batch[ascending] = self.images[order[ascending]]
        return torch.from_numpy(batch)


@dataclass(frozen=True)
class DataBundle:
    """A dataset's train and validation splits with what a trainer needs to know about them.

    Attributes:
        name: Dataset name (a key of ``DATASETS``).
        train, val: The two splits.
        num_classes: Number of classes; labels lie in ``[0, num_classes)``.
        channels: Image channels (``C`` of both splits).
        mean, std: Per-channel statistics of the train images in ``[0, 1]`` units
            (``std`` is 1.0 for a constant channel).
        size: Side of the images given to the network (0: the stored images' side). Stored
            images larger than ``size`` are cropped to it: a random resized crop or a centre
            crop for training, a centre crop for evaluation.
        path: How batches reach the trainer: ``memory`` (tensors in this process), ``baked``
            (memory-mapped arrays) or ``stream`` (files decoded by loader worker processes).
        note: Why this path (one line, for the run's summary).
    """

    name: str
    train: Any  # ImageSet, MappedSet or a streamed FolderSet
    val: Any
    num_classes: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size: int = 0
    path: str = "memory"
    note: str = ""

    @property
    def info(self) -> "DataInfo":
        """What this loaded dataset fixes about a network (see ``fit_spec``)."""
        return DataInfo(self.name, self.num_classes, (self.channels,), self.size if self.path == "baked" else None)

    @property
    def input_size(self) -> int:
        """Side of the images the network gets."""
        return self.size or int(self.train.side)


@dataclass(frozen=True)
class DataInfo:
    """What a dataset fixes about a network, known without loading an image.

    Attributes:
        name: Dataset name (a key of ``DATASETS``).
        num_classes: Number of classes (the network's ``num_classes``).
        channels: Channel counts the dataset can give (``None``: any count).
        size: The only input size the dataset can give (a baked set), or ``None``: any size.
        train_images: Training images, where known without loading them (else ``None``).
    """

    name: str
    num_classes: int
    channels: tuple[int, ...] | None = None
    size: int | None = None
    train_images: int | None = None


def one_line(text: object) -> str:
    """``text`` as a single line (exception messages can span several)."""
    return " ".join(str(text).split()) or type(text).__name__


def problem(path: str, message: str) -> SpecError:
    """A SpecError with one problem."""
    return SpecError([Problem(path, one_line(message))])


def check_size_channels(size: Any, channels: Any, allowed_channels: Iterable[int] | None = None,
                        dataset: str = "") -> tuple[int, int]:
    """Check the requested image size and channel count; return them as ints."""
    problems = []
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        problems.append(Problem(SIZE, f"image size must be a positive integer, got {size!r}"))
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        problems.append(Problem(CHANNELS, f"channels must be a positive integer, got {channels!r}"))
    elif allowed_channels is not None and channels not in allowed_channels:
        allowed = " or ".join(str(c) for c in allowed_channels)
        problems.append(Problem(CHANNELS, f"{dataset} gives {allowed} channels, not {channels}"))
    if problems:
        raise SpecError(problems)
    return size, channels


def take_options(dataset: str, options: Mapping[str, Any], defaults: Mapping[str, int],
                 minimum: Mapping[str, int]) -> dict[str, int]:
    """Integer options of a dataset, with defaults; unknown or bad ones are problems."""
    problems = []
    values = dict(defaults)
    for key, value in options.items():
        if key not in defaults:
            known = ", ".join(defaults) if defaults else "none"
            problems.append(Problem(DATA, f"{dataset} has no option {key!r} (options: {known})"))
            continue
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and value.strip().lstrip("+").isdigit():
            number = int(value)
        if number is None or number < minimum.get(key, 1):
            problems.append(Problem(DATA, f"{dataset} option {key} must be an integer >= "
                                          f"{minimum.get(key, 1)}, got {value!r}"))
            continue
        values[key] = number
    if problems:
        raise SpecError(problems)
    return values


def resize(images: torch.Tensor, size: int, *, antialias: bool | None = None) -> torch.Tensor:
    """Bilinearly resize ``uint8`` images ``(N, C, h, w)`` to ``size × size`` (rounded, ``uint8``).

    ``antialias`` defaults to on when shrinking. Images already at the size are returned as is.
    """
    if images.shape[-2:] == (size, size):
        return images
    if antialias is None:
        antialias = size < max(images.shape[-2:])
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start:start + _CHUNK].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=antialias)
        out[start:start + _CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Give ``uint8`` images ``channels`` channels: replicate a single channel, or RGB to luma."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:
        return images.expand(-1, channels, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        out = torch.empty((images.shape[0], 1, *images.shape[2:]), dtype=torch.uint8)
        for start in range(0, images.shape[0], _CHUNK):
            gray = (images[start:start + _CHUNK].float() * weights).sum(1, keepdim=True)
            out[start:start + _CHUNK] = gray.round_().clamp_(0, 255).to(torch.uint8)
        return out
    raise ValueError(f"cannot turn {have} channels into {channels}")


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``uint8`` images in ``[0, 1]`` units (std 1.0 where constant)."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start:start + _CHUNK].to(torch.float64).div_(255.0)
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = max(images.shape[0] * images.shape[2] * images.shape[3], 1)
    mean = total / count
    var = (squares / count - mean.square()).clamp_(min=0.0)
    std = var.sqrt()
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def make_bundle(name: str, train: ImageSet, val: ImageSet, num_classes: int, note: str = "") -> DataBundle:
    """A bundle held in memory, with statistics computed on ``train``."""
    mean, std = channel_stats(train.images)
    return DataBundle(name=name, train=train, val=val, num_classes=num_classes,
                      channels=int(train.images.shape[1]), mean=mean, std=std,
                      note=note or f"{name} is held in memory")


def held_out(n: int, val_fraction: float = 0.2) -> int:
    """How many of a class's ``n`` samples :func:`split_indices` holds out for validation."""
    if n < 2:
        return 0
    return min(max(int(round(val_fraction * n)), 1), n - 1)


def split_indices(labels: torch.Tensor, val_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed stratified split: per class, a fixed shuffle and ``round(fraction × n)`` held out.

    A class with two or more samples keeps at least one in each split. Independent of any seed;
    returns sorted train and val indices.
    """
    generator = torch.Generator().manual_seed(0)
    train, val = [], []
    for cls in torch.unique(labels, sorted=True).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        n_val = held_out(idx.numel(), val_fraction)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def as_path(data_dir: str | Path | None, dataset: str, what: str) -> Path:
    """``data_dir`` as an existing folder, or a problem on ``--data-dir``."""
    if data_dir is None or str(data_dir) == "":
        raise problem(DATA_DIR, f"{dataset} needs --data-dir ({what})")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise problem(DATA_DIR, f"no such folder: {path}")
    if not path.is_dir():
        raise problem(DATA_DIR, f"not a folder: {path}")
    return path
