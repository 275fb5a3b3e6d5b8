"""Image files: listing a class-per-folder tree, checking and decoding one image with Pillow.

Shared by the in-memory and streamed image folders and by ``archspace data bake``, so that
the three decode an image the same way: the shorter side resized, then a centre crop (no
squashing), or a random resized crop of the original image.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
RATIO = (3.0 / 4.0, 4.0 / 3.0)  # aspect-ratio range of random resized crops
EVAL_CROP = 0.875  # evaluation: the shorter side resized to size / 0.875, then a centre crop
MAX_PIXELS = 120_000_000  # a bigger image is refused before it is decoded (a decompression bomb)
_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"


@dataclass
class Listing:
    """The images of one split: class names, files (sorted per class) and labels.

    Attributes:
        ignored: Files in the class folders that are not images by their extension.
    """

    classes: list[str]
    files: list[str]
    labels: list[int]
    ignored: list[str] = field(default_factory=list)


def class_folders(root: Path) -> list[str]:
    """Names of the class folders under ``root`` (sorted; hidden ones left out)."""
    with os.scandir(root) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def list_split(root: Path, classes: Sequence[str] | None = None) -> tuple[Listing, list[str]]:
    """List ``root/<class>/*``; returns the listing and its problems (one line each).

    With ``classes`` (the train split's), the folder must have exactly those class folders.
    """
    problems: list[str] = []
    names = class_folders(root)
    if not names:
        return Listing([], [], []), [f"no class folders in {root} (expected {root.name}/<class>/*.jpg)"]
    if classes is not None:
        extra = [n for n in names if n not in classes]
        missing = [n for n in classes if n not in names]
        if extra:
            problems.append(f"{root} has class folders that train has not: {', '.join(extra[:5])}"
                            + (f" and {len(extra) - 5} more" if len(extra) > 5 else ""))
        if missing:
            problems.append(f"{root} lacks class folders that train has: {', '.join(missing[:5])}"
                            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    index = {name: i for i, name in enumerate(classes if classes is not None else names)}
    listing = Listing(list(classes) if classes is not None else names, [], [])
    for name in names:
        folder = root / name
        with os.scandir(folder) as it:
            entries = sorted((e.name for e in it if e.is_file() and not e.name.startswith(".")))
        found = [n for n in entries if os.path.splitext(n)[1].lower() in EXTENSIONS]
        images = set(found)
        listing.ignored.extend(str(folder / n) for n in entries if n not in images)
        if not found:
            problems.append(f"class folder {folder} has no images ({', '.join(EXTENSIONS)})")
            continue
        if name in index:
            listing.files.extend(str(folder / n) for n in found)
            listing.labels.extend([index[name]] * len(found))
    return listing, problems


def check_file(path: str) -> str | None:
    """Why ``path`` cannot be an image, from its header and its last bytes (no decoding), or None.

    Catches files that are not images and JPEG / PNG files cut short (no end marker).
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            fmt = img.format
            w, h = img.size
    except Exception as exc:  # Pillow raises many kinds for broken files
        return f"{type(exc).__name__}: {exc}"
    if w * h > MAX_PIXELS:
        return f"{w}x{h} pixels is more than the {MAX_PIXELS:,} an image may have"
    end = {"JPEG": _JPEG_END, "PNG": _PNG_END}.get(fmt or "")
    if end is not None:
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(size - 64, 0))
                tail = f.read()
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
        if end not in tail:
            return f"truncated {fmt} file (no end marker)"
    return None


def _open(path: str):
    """``path`` opened, its header read, nothing decoded yet; a decompression bomb is refused."""
    from PIL import Image

    img = Image.open(path)
    if img.size[0] * img.size[1] > MAX_PIXELS:
        img.close()
        raise ValueError(f"{img.size[0]}x{img.size[1]} pixels is more than the {MAX_PIXELS:,} an image may have")
    return img


def _decoded(img, mode: str, want: tuple[float, float] | None = None):
    """An opened image decoded to ``mode`` (RGB or L). ``want``: the smallest (w, h) the caller
    needs, which lets a JPEG decode at a reduced scale (Pillow's ``draft``)."""
    if want is not None and img.format == "JPEG":
        img.draft(mode if img.mode in ("RGB", "L") else None, (math.ceil(want[0]), math.ceil(want[1])))
    img.load()
    return img if img.mode == mode else img.convert(mode)


def open_image(path: str, mode: str, want: tuple[float, float] | None = None):
    """``path`` decoded to ``mode`` (see ``_decoded``). Raises on a broken file."""
    return _decoded(_open(path), mode, want)


def centre_square(path: str, side: int, mode: str) -> np.ndarray:
    """The image's shorter side resized to ``side`` and the centre ``side × side`` kept:
    ``uint8`` ``(C, side, side)``."""
    from PIL import Image

    with _open(path) as src:
        w, h = src.size
        short = min(w, h)
        img = _decoded(src, mode, (side * w / short, side * h / short))
        w2, h2 = img.size
        s = min(w2, h2)
        box = ((w2 - s) / 2, (h2 - s) / 2, (w2 + s) / 2, (h2 + s) / 2)
        return to_chw(img.resize((side, side), Image.Resampling.BILINEAR, box=box))


def eval_crop(path: str, size: int, mode: str) -> np.ndarray:
    """Evaluation view: the shorter side resized to ``size / 0.875``, then the centre ``size × size``."""
    from PIL import Image

    with _open(path) as src:
        w, h = src.size
        short = min(w, h)
        resized = size / EVAL_CROP
        img = _decoded(src, mode, (resized * w / short, resized * h / short))
        w2, h2 = img.size
        s = min(w2, h2) * EVAL_CROP  # the centre crop, in this image's pixels
        box = ((w2 - s) / 2, (h2 - s) / 2, (w2 + s) / 2, (h2 + s) / 2)
        return to_chw(img.resize((size, size), Image.Resampling.BILINEAR, box=box))


def crop_box(w: int, h: int, scale: tuple[float, float], rng: random.Random,
             ratio: tuple[float, float] = RATIO) -> tuple[float, float, float, float]:
    """A random resized crop's box ``(x0, y0, x1, y1)`` in a ``w × h`` image: area fraction in
    ``scale``, aspect ratio log-uniform in ``ratio``; ten tries, then the centre crop of the
    nearest allowed ratio (the usual recipe)."""
    area = w * h
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        cw = math.sqrt(target * aspect)
        ch = math.sqrt(target / aspect)
        if 0 < cw <= w and 0 < ch <= h:
            x0 = rng.uniform(0, w - cw)
            y0 = rng.uniform(0, h - ch)
            return x0, y0, x0 + cw, y0 + ch
    aspect = w / h
    if aspect < ratio[0]:
        cw, ch = w, w / ratio[0]
    elif aspect > ratio[1]:
        cw, ch = h * ratio[1], h
    else:
        cw, ch = w, h
    return (w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2


def random_crop(path: str, size: int, mode: str, scale: tuple[float, float], flip: bool,
                rng: random.Random) -> np.ndarray:
    """Training view: a random resized crop of the original image to ``size × size``, then a
    left-right flip with probability 0.5 when ``flip``."""
    from PIL import Image

    with _open(path) as src:
        w, h = src.size
        x0, y0, x1, y1 = crop_box(w, h, scale, rng)
        mirror = flip and rng.random() < 0.5
        shrink = min(x1 - x0, y1 - y0) / size  # how far the crop can be reduced at decode time
        img = _decoded(src, mode, (w / shrink, h / shrink) if shrink > 1 else None)
        fx, fy = img.size[0] / w, img.size[1] / h
        out = img.resize((size, size), Image.Resampling.BILINEAR, box=(x0 * fx, y0 * fy, x1 * fx, y1 * fy))
    if mirror:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_chw(out)


def to_chw(img) -> np.ndarray:
    """A Pillow image as ``uint8`` ``(C, H, W)``."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        return arr[None].copy()
    return np.ascontiguousarray(arr.transpose(2, 0, 1))
