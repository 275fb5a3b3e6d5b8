"""Batch augmentation in torch alone, on the batch's device, drawn from a given generator."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from .._lazy import lazy_module

from ..errors import Problem, SpecError

torch = lazy_module("torch")  # imported on first use: describing a dataset needs no torch
F = lazy_module("torch.nn.functional")

if TYPE_CHECKING:
    from torch import Tensor

RATIO = (3.0 / 4.0, 4.0 / 3.0)  # aspect-ratio range of random resized crops


def _rand(generator: torch.Generator, *shape: int) -> Tensor:
    """Uniform [0, 1) numbers from ``generator`` (on the generator's device)."""
    return torch.rand(shape, generator=generator, device=generator.device)


def _randn(generator: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(shape, generator=generator, device=generator.device)


def sample_gamma(alpha: float, generator: torch.Generator) -> float:
    """One Gamma(alpha, 1) draw (Marsaglia–Tsang), from ``generator`` alone."""
    boost = 1.0
    if alpha < 1.0:
        # Gamma(a) = Gamma(a + 1) · U^(1/a)
        boost = float(_rand(generator, 1)) ** (1.0 / alpha)
        alpha += 1.0
    d = alpha - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = float(_randn(generator, 1))
        v = (1.0 + c * x) ** 3
        if v <= 0:
            continue
        u = float(_rand(generator, 1))
        if math.log(max(u, 1e-300)) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v * boost


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw from ``generator``."""
    a = sample_gamma(alpha, generator)
    b = sample_gamma(alpha, generator)
    return 0.5 if a + b == 0 else a / (a + b)


def crop_grid(sx: Tensor, cx: Tensor, sy: Tensor, cy: Tensor, out_h: int, out_w: int) -> Tensor:
    """The sampling grid ``(N, out_h, out_w, 2)`` of per-image scales and shifts: what
    ``F.affine_grid`` gives for ``theta = [[sx, 0, cx], [0, sy, cy]]`` (``align_corners=False``),
    built without its batched matrix product (the crop's main cost on a CPU)."""
    n = sx.shape[0]
    bx = torch.linspace(-1.0, 1.0, out_w, device=sx.device, dtype=sx.dtype) * ((out_w - 1) / out_w)
    by = torch.linspace(-1.0, 1.0, out_h, device=sx.device, dtype=sx.dtype) * ((out_h - 1) / out_h)
    gx = cx[:, None] + sx[:, None] * bx[None, :]
    gy = cy[:, None] + sy[:, None] * by[None, :]
    return torch.stack((gx[:, None, :].expand(n, out_h, out_w), gy[:, :, None].expand(n, out_h, out_w)), dim=-1)


class Augment:
    """Random resized crop, horizontal flip, label smoothing, mixup and cutmix on a float batch.

    Calling it on images ``(N, C, H, W)`` (float, any device) and int labels ``(N,)`` returns the
    augmented images and soft targets ``(N, num_classes)`` (float32, rows summing to 1). Every
    random draw comes from the generator passed in, so the same generator state gives the same
    batch. Crop and flip act per image; mixup or cutmix (one of them per batch, each with
    probability 0.5 when both are on) mixes the batch with a random permutation of itself using
    one Beta(alpha, alpha) weight.

    Args:
        random_resized_crop: Crop a random area fraction in ``scale`` with aspect ratio in
            [3/4, 4/3] and resize it back to the input size (bilinear).
        scale: Area-fraction range of the crop.
        flip: Mirror each image left-right with probability 0.5.
        mixup: Beta alpha of mixup (0 = off).
        cutmix: Beta alpha of cutmix (0 = off).
        num_classes: Width of the targets.
        label_smoothing: ``eps``: targets are ``1 - eps + eps/K`` on the label, ``eps/K`` elsewhere.
        size: Side of the images out (``None``: the side in). Bigger images in are cut to it:
            the random resized crop is taken from the whole image, else the centre is kept.
    """

    def __init__(self, *, random_resized_crop: bool = False, scale: Sequence[float] = (0.35, 1.0),
                 flip: bool = False, mixup: float = 0.0, cutmix: float = 0.0, num_classes: int,
                 label_smoothing: float = 0.0, size: int | None = None):
        problems = []
        try:
            lo, hi = (float(s) for s in scale)
        except (TypeError, ValueError):
            lo, hi = -1.0, -1.0
        if not 0.0 < lo <= hi <= 1.0:
            problems.append(Problem("--crop-scale", f"crop scale must be two numbers with 0 < min <= max <= 1, "
                                                    f"got {scale!r}"))
        if not mixup >= 0.0:
            problems.append(Problem("--mixup", f"mixup alpha must be >= 0, got {mixup!r}"))
        if not cutmix >= 0.0:
            problems.append(Problem("--cutmix", f"cutmix alpha must be >= 0, got {cutmix!r}"))
        if not 0.0 <= label_smoothing < 1.0:
            problems.append(Problem("--label-smoothing", f"label smoothing must lie in [0, 1), "
                                                         f"got {label_smoothing!r}"))
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            problems.append(Problem("num_classes", f"must be a positive integer, got {num_classes!r}"))
        if problems:
            raise SpecError(problems)
        self.random_resized_crop = bool(random_resized_crop)
        self.scale = (lo, hi)
        self.flip = bool(flip)
        self.mixup = float(mixup)
        self.cutmix = float(cutmix)
        self.num_classes = num_classes
        self.label_smoothing = float(label_smoothing)
        self.size = size

    def __repr__(self) -> str:
        return (f"Augment(random_resized_crop={self.random_resized_crop}, scale={self.scale}, flip={self.flip}, "
                f"mixup={self.mixup}, cutmix={self.cutmix}, num_classes={self.num_classes}, "
                f"label_smoothing={self.label_smoothing}, size={self.size})")

    def targets(self, y: Tensor) -> Tensor:
        """Smoothed one-hot targets ``(N, num_classes)`` of int labels ``y``."""
        eps = self.label_smoothing
        off = eps / self.num_classes
        out = torch.full((y.shape[0], self.num_classes), off, dtype=torch.float32, device=y.device)
        return out.scatter_(1, y.long().view(-1, 1), 1.0 - eps + off)

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"Augment needs a float batch (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        target = self.targets(y.to(x.device))
        if self.random_resized_crop:
            x = self._crop(x, generator)
        else:
            if self.size is not None and x.shape[-1] != self.size:
                lo = (x.shape[-1] - self.size) // 2
                x = x[..., lo:lo + self.size, lo:lo + self.size]
            if self.flip:
                x = self._flip(x, generator)
        use_mixup, use_cutmix = self.mixup > 0, self.cutmix > 0
        if use_mixup and use_cutmix:
            use_mixup = float(_rand(generator, 1)) < 0.5
            use_cutmix = not use_mixup
        if (use_mixup or use_cutmix) and x.shape[0] > 1:
            perm = torch.randperm(x.shape[0], generator=generator, device=generator.device).to(x.device)
            if use_mixup:
                lam = sample_beta(self.mixup, generator)
                x = x * lam + x[perm] * (1.0 - lam)
            else:
                x, lam = self._cutmix(x, perm, sample_beta(self.cutmix, generator), generator)
            target = target * lam + target[perm] * (1.0 - lam)
        return x, target

    def _flip(self, x: Tensor, generator: torch.Generator) -> Tensor:
        flip = (_rand(generator, x.shape[0]) < 0.5).to(x.device).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(-1), x)

    def _crop(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Random resized crop (and flip, when on) as one affine resampling per image."""
        n, _, h, w = x.shape
        lo, hi = self.scale
        u = _rand(generator, n, 4).to(device=x.device, dtype=torch.float32)
        area = lo + (hi - lo) * u[:, 0]
        log_ratio = math.log(RATIO[0]) + (math.log(RATIO[1]) - math.log(RATIO[0])) * u[:, 1]
        ratio = log_ratio.exp()  # crop width / height, in pixels
        # Crop size as fractions of the image: cw·W × ch·H = area·W·H with cw·W / (ch·H) = ratio.
        cw = (area * ratio * h / w).sqrt().clamp(max=1.0)
        ch = (area / ratio * w / h).sqrt().clamp(max=1.0)
        # Crop centre in [-1, 1] coordinates, so that the crop stays inside the image.
        cx = (2 * u[:, 2] - 1) * (1 - cw)
        cy = (2 * u[:, 3] - 1) * (1 - ch)
        sx = cw
        if self.flip:
            flip = _rand(generator, n).to(x.device) < 0.5
            sx = torch.where(flip, -cw, cw)
        grid = crop_grid(sx, cx, ch, cy, self.size or h, self.size or w).to(x.dtype)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _cutmix(self, x: Tensor, perm: Tensor, lam: float, generator: torch.Generator) -> tuple[Tensor, float]:
        """Paste one random box of the permuted batch; return the images and the kept-area weight."""
        h, w = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        bh, bw = int(round(h * cut)), int(round(w * cut))
        centre = _rand(generator, 2)
        cy, cx = int(float(centre[0]) * h), int(float(centre[1]) * w)
        y0, y1 = max(cy - bh // 2, 0), min(cy - bh // 2 + bh, h)
        x0, x1 = max(cx - bw // 2, 0), min(cx - bw // 2 + bw, w)
        out = x.clone()
        if y1 > y0 and x1 > x0:
            out[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        return out, lam
