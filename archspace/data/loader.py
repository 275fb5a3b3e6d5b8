"""Batches of a loaded dataset for one training run, in an order fixed by the seed and epoch.

Every path gives ``uint8`` batches ``(B, C, S, S)`` with their labels:

- ``memory`` and ``baked``: gathered in this process from tensors or from memory-mapped arrays
  (a baked set is read from the page cache, one batch at a time); crops and flips are then
  done on the whole batch on the training device (:class:`~archspace.data.Augment`).
- ``stream``: files decoded by ``torch.utils.data.DataLoader`` worker processes, each sample
  cropped and flipped there (the random resized crop needs the original image), pinned for a
  CUDA device and prefetched.

The epoch's order is ``randperm`` seeded by ``(seed, epoch)`` alone and a streamed sample's
crop by ``(seed, epoch, index)``, so a run resumed in the middle of an epoch sees the same
samples in the same order, whatever the number of workers: the sampler's whole state is the
epoch and the step.
"""

from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .._cpus import usable_cpus
from ..errors import Problem, SpecError
from ._base import DATA_DIR, DataBundle, one_line
from ._decode import eval_crop, random_crop
from .imagefolder import FolderSet

_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
_MASK = (1 << 63) - 1


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s order (0-based), from the run's seed alone."""
    return (seed * _MIX[0] + (epoch + 1) * _MIX[1]) & _MASK


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one streamed sample's crop and flip."""
    return (epoch_seed(seed, epoch) ^ ((index + 1) * _MIX[2])) & _MASK


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of epoch ``epoch``: a permutation of ``range(n)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


def default_workers() -> int:
    """Loader worker processes when ``train.loader_workers`` is unset: the CPUs this process
    may use, at most 8."""
    return max(1, min(8, usable_cpus()))


class _EpochSampler:
    """Batch sampler of the streamed path: the batches of one epoch from a given step, each a
    list of ``(index, sample seed)``."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.start = 0, 0

    def set(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.n // self.batch_size - self.start

    def __iter__(self):
        order = epoch_order(self.n, self.seed, self.epoch).tolist()
        local = self.batch_size // self.world
        for b in range(self.start, self.n // self.batch_size):
            chunk = order[b * self.batch_size:(b + 1) * self.batch_size][self.rank * local:(self.rank + 1) * local]
            yield [(i, sample_seed(self.seed, self.epoch, i)) for i in chunk]


class _StreamView(Dataset):
    """Decodes one image of a :class:`FolderSet` (in a loader worker): the training view
    (random resized crop or centre crop, flip) for ``(index, seed)`` keys, the evaluation view
    for plain indices. A broken file gives a zero image and its error, reported by the trainer."""

    def __init__(self, split: FolderSet, size: int, channels: int, crop: bool, scale: tuple[float, float],
                 flip: bool):
        self.split, self.size, self.mode = split, size, "RGB" if channels == 3 else "L"
        self.channels, self.crop, self.scale, self.flip = channels, crop, tuple(scale), flip

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        path = self.split.path(index)
        try:
            if seed is None:
                image = eval_crop(path, self.size, self.mode)
            else:
                rng = random.Random(seed)
                scale = self.scale if self.crop else (1.0, 1.0)
                if self.crop:
                    image = random_crop(path, self.size, self.mode, scale, self.flip, rng)
                else:
                    image = eval_crop(path, self.size, self.mode)
                    if self.flip and rng.random() < 0.5:
                        image = np.ascontiguousarray(image[:, :, ::-1])
            error = ""
        except Exception as exc:  # Pillow raises many kinds for broken files
            image = np.zeros((self.channels, self.size, self.size), dtype=np.uint8)
            error = one_line(f"cannot read image {path}: {type(exc).__name__}: {exc}")
        return torch.from_numpy(image), int(self.split.labels[index]), error


def _checked(batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for x, y, errors in batches:
        broken = [e for e in errors if e]
        if broken:
            raise SpecError([Problem(DATA_DIR, e) for e in broken[:5]])
        yield x, y


class Batches:
    """Train and evaluation batches of ``bundle`` for one run.

    Args:
        bundle: The loaded dataset.
        batch_size / eval_batch_size: Batch sizes (training drops the last partial batch).
        seed: The run's seed: fixes every epoch's order (and streamed crops).
        crop, scale, flip: The streamed path's per-sample training view (random resized crop
            with area fraction in ``scale``, left-right flip); the other paths crop and flip on
            the device.
        workers: Loader worker processes of the streamed path (``None``: :func:`default_workers`).
        pin_memory: Pin streamed batches (for a CUDA device).
        rank, world: A data-parallel run's rank and size: each step's global batch of
            ``batch_size`` is split into ``world`` equal parts, this rank taking part ``rank``.
    """

    def __init__(self, bundle: DataBundle, *, batch_size: int, eval_batch_size: int, seed: int, crop: bool = False,
                 scale: tuple[float, float] = (0.35, 1.0), flip: bool = False, workers: int | None = None,
                 pin_memory: bool = False, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} does not split into {world} equal parts")
        self.bundle, self.batch_size, self.eval_batch_size, self.seed = bundle, batch_size, eval_batch_size, seed
        self.rank, self.world = rank, world
        self.steps_per_epoch = len(bundle.train) // batch_size
        self.workers = default_workers() if workers is None else workers
        self._train_loader = self._val_loader = None
        if bundle.path == "stream":
            size, channels = bundle.input_size, bundle.channels
            self._sampler = _EpochSampler(len(bundle.train), batch_size, seed, rank, world)
            common = dict(num_workers=self.workers, pin_memory=pin_memory, persistent_workers=self.workers > 0)
            if self.workers > 0:
                common["prefetch_factor"] = 4
            self._train_loader = DataLoader(_StreamView(bundle.train, size, channels, crop, scale, flip),
                                            batch_sampler=self._sampler, **common)
            self._val_loader = DataLoader(_StreamView(bundle.val, size, channels, False, scale, False),
                                          batch_size=eval_batch_size, shuffle=False, **common)

    @property
    def per_sample(self) -> bool:
        """Whether crops and flips are done per sample by the loader (the streamed path)."""
        return self.bundle.path == "stream"

    def train(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of epoch ``epoch`` (0-based) from step ``start``."""
        if self._train_loader is not None:
            self._sampler.set(epoch, start)
            yield from _checked(self._train_loader)
            return
        split, bs = self.bundle.train, self.batch_size
        order = epoch_order(len(split), self.seed, epoch)
        local = bs // self.world
        for b in range(start, self.steps_per_epoch):
            idx = order[b * bs:(b + 1) * bs][self.rank * local:(self.rank + 1) * local]
            yield split.gather(idx), split.labels[idx]

    def val(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The evaluation batches, in the split's order (centre crops)."""
        if self._val_loader is not None:
            yield from _checked(self._val_loader)
            return
        split, bs = self.bundle.val, self.eval_batch_size
        size = self.bundle.input_size
        for start in range(0, len(split), bs):
            idx = torch.arange(start, min(start + bs, len(split)))
            yield centre(split.gather(idx), size), split.labels[idx]

    def close(self) -> None:
        """Stop the loader workers (a streamed run keeps them between epochs)."""
        for loader in (self._train_loader, self._val_loader):
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
        self._train_loader = self._val_loader = None


def centre(images: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size × size`` of square images ``(N, C, S, S)`` (as is when ``S == size``)."""
    side = images.shape[-1]
    if side == size:
        return images
    if side < size:
        raise ValueError(f"images of side {side} cannot be cropped to {size}")
    lo = (side - size) // 2
    return images[..., lo:lo + size, lo:lo + size]


__all__ = ["Batches", "centre", "default_workers", "epoch_order", "epoch_seed", "sample_seed"]
