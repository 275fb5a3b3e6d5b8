"""Atomic files: checkpoints (loaded with ``weights_only=True``), JSON and JSON lines."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def write_jsonl(path: Path, rows: list[dict]) -> None:
    _atomic(Path(path), lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()))


def append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
