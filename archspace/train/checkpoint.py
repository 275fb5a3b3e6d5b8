"""Atomic files: checkpoints (loaded with ``weights_only=True``), JSON, JSON lines and text.

Each file (but :func:`append_jsonl`'s lines) is written to a temp file ``.<name>.<random>.tmp``
beside it and renamed over it, so a reader (or a resume after a kill) sees the old file or the
new one, never a torn one; a kill mid-write can leave the temp file behind (:func:`temp_files`,
removed by :func:`remove_temp_files` when the run starts again).

A checkpoint carries a SHA-256 checksum of its contents (every tensor's bytes, dtype and
shape, and every other value), computed when it is written and verified when it is read, so
a damaged file (flipped bytes inside the tensor data) is refused rather than trained on.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .._lazy import lazy_module

torch = lazy_module("torch")  # imported on first use: a run directory is read without torch

_UMASK = os.umask(0o022)  # read once, at import (os.umask can only be read by setting it)
os.umask(_UMASK)


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # the mode of a file written plainly, not mkstemp's 0600
        except OSError:
            pass
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


CHECKSUM = "checksum"
"""The key of a checkpoint's checksum (``sha256:<hex>``)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, damaged (checksum mismatch) or malformed."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` with its checksum so that a reader sees the old file or the new one, never
    a torn one."""
    stamped = {**state, CHECKSUM: checksum(state)}
    _atomic(Path(path), lambda f: torch.save(stamped, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's state, its checksum verified (a checkpoint written before checksums
    existed has none and is read as it is).

    Raises:
        CheckpointError: unreadable file, not a checkpoint, or contents that do not match the checksum.
    """
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged zip or pickle
        text = str(exc).strip()
        first = text.splitlines()[0].split(". ")[0][:120] if text else "unreadable"
        raise CheckpointError(f"not a checkpoint archspace can read, or a damaged one ({type(exc).__name__}: "
                              f"{first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"holds a {type(state).__name__}, not a checkpoint")
    expected = state.pop(CHECKSUM, None)
    if expected is not None and expected != checksum(state):
        raise CheckpointError("its contents do not match its checksum (the file is damaged)")
    return state


def checksum(state: Any) -> str:
    """``sha256:<hex>`` of a checkpoint state: tensors by dtype, shape and bytes, mappings by
    key order, every other value by its repr."""
    h = hashlib.sha256()
    _feed(h, state)
    return f"sha256:{h.hexdigest()}"


def _feed(h, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, dict):
        h.update(f"D{len(value)}".encode())
        for k, v in value.items():
            h.update(repr(k).encode())
            _feed(h, v)
    elif isinstance(value, (list, tuple)):
        h.update(f"L{len(value)}".encode())
        for v in value:
            _feed(h, v)
    else:
        h.update(f"V{value!r}".encode())


def write_json(path: Path, data: Any) -> None:
    _atomic(Path(path), lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


def write_text(path: Path, text: str) -> None:
    _atomic(Path(path), lambda f: f.write(text.encode()))


def temp_files(folder: Path, name: str) -> list[Path]:
    """Temp files :func:`_atomic` may have left beside ``folder/name`` (a process killed mid-write)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f".{glob.escape(name)}.*.tmp") if p.is_file())


def remove_temp_files(folder: Path, names) -> list[Path]:
    """Remove the temp files a killed write left beside ``folder/<name>`` for each name (only
    files named ``.<name>.<random>.tmp``, which only :func:`_atomic` writes); return them."""
    removed = []
    for name in names:
        for path in temp_files(folder, name):
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


def write_jsonl(path: Path, rows: list[dict]) -> None:
    _atomic(Path(path), lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()))


def append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
