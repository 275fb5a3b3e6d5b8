"""Atomic files: checkpoints (loaded with ``weights_only=True``), JSON, JSON lines and text.

Each file (but :func:`append_jsonl`'s lines) is written to a temp file ``.<name>.<random>.tmp``
beside it and renamed over it, so a reader (or a resume after a kill) sees the old file or the
new one, never a torn one; a kill mid-write can leave the temp file behind (:func:`temp_files`).
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


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


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` so that a reader sees the old file or the new one, never a torn one."""
    _atomic(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(Path(path), map_location="cpu", weights_only=True)


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


def write_jsonl(path: Path, rows: list[dict]) -> None:
    _atomic(Path(path), lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()))


def append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
