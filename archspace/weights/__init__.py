"""Import trained weights from a timm checkpoint into an archspace network.

The checkpoint is a local file (safetensors, or a torch state dict read with
``weights_only=True``); nothing is downloaded. Each family has one explicit table from
timm's names to archspace's (``archspace.weights._timm``), with the conversions its tensors
need. The import is all or nothing: every checkpoint key must be used and every parameter
and buffer of the network filled, or :class:`~archspace.errors.SpecError` lists each key
missing, left over or of the wrong shape. Two differences are resolved rather than
refused, and said in the report:

* a position table (absolute, or a relative-bias table) made at another resolution is
  resampled once, bicubically, to the network's grid;
* a classifier with another number of classes is left at its fresh initialisation.

Example::

    import archspace
    model = archspace.create_model("convnext-t", num_classes=10)
    report = archspace.weights.import_weights(model, "convnext_tiny.safetensors")
    print(report.notes)  # ['head.fc: the checkpoint classifies 1000 classes, the network 10: re-initialised']
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import Problem, SpecError
from ._files import read_checkpoint
from ._timm import TABLES, Table

SOURCES = ("timm",)
CLASSIFIER = ("head.fc.weight", "head.fc.bias")
MAX_LISTED = 40


@dataclass
class ImportReport:
    """What an import did: the family table used, the tensors copied, and notes on what was
    resampled or re-initialised."""

    family: str
    copied: int
    notes: list[str] = field(default_factory=list)


def table_for(spec) -> Table:
    """The timm table of a spec's family.

    Raises:
        SpecError: no family table fits the spec.
    """
    for table in TABLES:
        if table.matches(spec):
            return table
    blocks = "-".join(s.block for s in spec.stages)
    raise SpecError.single("--weights", f"no timm weight table fits a {spec.stem.kind} stem with {blocks} stages "
                                        f"(tables: {', '.join(t.name for t in TABLES)})")


def import_weights(model: nn.Module, checkpoint: str | os.PathLike[str] | Mapping[str, torch.Tensor], *,
                   source: str = "timm") -> ImportReport:
    """Fill ``model`` (a compiled :class:`~archspace.Network`) from a timm checkpoint.

    Args:
        model: the network; its spec picks the family table.
        checkpoint: a file path, or a mapping of timm keys to tensors.
        source: the naming the checkpoint follows (``timm``).

    Returns:
        An :class:`ImportReport`; the model's weights are replaced only when every check passed.

    Raises:
        SpecError: one line per key missing, left over or of the wrong shape, or an
            unreadable or unsafe file.
    """
    if source not in SOURCES:
        raise SpecError.single("--from", f"unknown weight source {source!r} (known: {', '.join(SOURCES)})")
    state = checkpoint if isinstance(checkpoint, Mapping) else read_checkpoint(checkpoint)
    spec = model.spec
    table = table_for(spec)
    state = table.prepare(dict(state), spec)
    target = model.state_dict()
    filled: dict[str, torch.Tensor] = {}
    reinitialised: set[str] = set()
    misfits: set[str] = set()  # reported as a shape problem, not again as missing
    problems: list[Problem] = []
    notes: list[str] = []
    for key, tensor in state.items():
        found = table.locate(key, spec)
        if found is None or found[0] not in target:
            where = f" (would be {found[0]}, which this network lacks)" if found else ""
            problems.append(Problem(key, f"left over: no parameter of the network takes it{where}"))
            continue
        name, convert, stage = found
        if name in filled or name in reinitialised or name in misfits:
            problems.append(Problem(key, f"left over: {name} is already filled by another key"))
            continue
        want = target[name]
        try:
            value = convert(tensor, stage)
        except (RuntimeError, ValueError):  # a reshape the tensor's shape does not allow
            misfits.add(name)
            problems.append(Problem(key, f"shape {list(tensor.shape)} does not fit {name} of shape "
                                         f"{list(want.shape)}"))
            continue
        if value.shape == want.shape:
            filled[name] = value.to(dtype=want.dtype)
        elif name in CLASSIFIER and value.shape[1:] == want.shape[1:]:
            reinitialised.add(name)
            _note(notes, f"head.fc: the checkpoint classifies {value.shape[0]} classes, the network "
                         f"{want.shape[0]}: re-initialised")
        elif (resampled := _resample(name, value, want)) is not None:
            filled[name] = resampled.to(dtype=want.dtype)
            _note(notes, f"{name}: resampled bicubically from {_grid(value, name)} to {_grid(want, name)}")
        else:
            misfits.add(name)
            problems.append(Problem(key, f"shape {list(value.shape)} does not fit {name} of shape "
                                         f"{list(want.shape)}"))
    missing = [k for k in target if k not in filled and k not in reinitialised and k not in misfits]
    problems.extend(Problem(k, f"missing: no {source} key of the checkpoint fills it") for k in missing)
    if problems:
        raise SpecError(_bounded(problems))
    model.load_state_dict(filled, strict=False)
    return ImportReport(table.name, len(filled), notes)


def _note(notes: list[str], note: str) -> None:
    if note not in notes:
        notes.append(note)


def _grid(t: torch.Tensor, name: str) -> str:
    if name.endswith("position.pos"):
        side = math.isqrt(t.shape[1])
        return f"{side}×{side}"
    return f"{t.shape[-2]}×{t.shape[-1]}"


def _resample(name: str, value: torch.Tensor, want: torch.Tensor) -> torch.Tensor | None:
    if name.endswith("position.pos") and value.ndim == 3 and value.shape[2] == want.shape[2]:
        old, new = math.isqrt(value.shape[1]), math.isqrt(want.shape[1])
        if old * old != value.shape[1] or new * new != want.shape[1]:
            return None
        grid = value.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(new, new), mode="bicubic", antialias=True, align_corners=False)
        return grid.permute(0, 2, 3, 1).reshape(1, new * new, -1).to(value.dtype)
    if name.endswith("bias.table") and value.ndim == 3 and value.shape[0] == want.shape[0]:
        table = F.interpolate(value[None].float(), size=tuple(want.shape[1:]), mode="bicubic", antialias=True,
                              align_corners=False)
        return table[0].to(value.dtype)
    return None


def _bounded(problems: list[Problem]) -> list[Problem]:
    """At most :data:`MAX_LISTED` lines, and one saying how many more there were."""
    if len(problems) <= MAX_LISTED:
        return problems
    rest = len(problems) - MAX_LISTED
    return problems[:MAX_LISTED] + [Problem("--weights", f"... and {rest} more problems like these")]


__all__ = ["ImportReport", "import_weights", "read_checkpoint", "table_for"]
