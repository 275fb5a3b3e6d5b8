"""Reading a checkpoint file as untrusted input: tensors only, never arbitrary pickles.

A ``.safetensors`` file is read with the safetensors package; anything else with
``torch.load(weights_only=True)``, memory-mapped where the file format allows it. Training
checkpoints that wrap the weights (``{"state_dict": ...}``, ``{"model": ...}``) are
unwrapped, and a ``module.`` prefix left by data-parallel training is dropped.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import Problem, SpecError
from ..graph import available_memory

WRAPPERS = ("state_dict", "model", "module")
SAFETENSORS_SUFFIX = ".safetensors"


def read_checkpoint(path: str | os.PathLike[str], option: str = "--weights") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, by key.

    Raises:
        SpecError: unreadable, not a checkpoint, larger than the memory available, or holding
            anything but tensors (one problem per offending key, on ``option``).
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError.single(option, f"no file {path}")
    size = path.stat().st_size
    if size > available_memory():
        raise SpecError.single(option, f"{path} is {size / 2**30:.1f} GiB, more than the memory available here")
    data = _read_safetensors(path, option) if path.suffix == SAFETENSORS_SUFFIX else _read_torch(path, option)
    return _tensors(_unwrap(data), path, option)


def _read_safetensors(path: Path, option: str):
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise SpecError.single(option, "reading .safetensors files needs the safetensors package "
                                       "(pip install safetensors)") from None
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise SpecError.single(option, f"{path} is not a readable safetensors file: {exc}") from None


def _read_torch(path: Path, option: str):
    mmap = zipfile.is_zipfile(path)  # the zip format can be memory-mapped; the legacy one cannot
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError.single(option, f"{path} holds more than tensors and plain containers, refused "
                                       f"(only weights are loaded): {first}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError.single(option, f"{path} is not a torch checkpoint: {first}") from None


def _unwrap(data):
    while isinstance(data, dict):
        inner = next((data[k] for k in WRAPPERS if isinstance(data.get(k), dict)), None)
        if inner is None:
            break
        data = inner
    return data


def _tensors(data, path: Path, option: str) -> dict[str, torch.Tensor]:
    if not isinstance(data, dict):
        raise SpecError.single(option, f"{path} holds a {type(data).__name__}, not a mapping of names to tensors")
    problems, out = [], {}
    for key, value in data.items():
        name = str(key)
        if not isinstance(value, torch.Tensor):
            problems.append(Problem(f"{option} {name}", f"is a {type(value).__name__}, not a tensor"))
            continue
        out[name[len("module."):] if name.startswith("module.") else name] = value
    if problems:
        raise SpecError(problems)
    if not out:
        raise SpecError.single(option, f"{path} holds no tensors")
    return out
