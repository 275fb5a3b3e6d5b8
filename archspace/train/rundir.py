"""Run directories: which files archspace writes there, what a directory holds, and the checks
that keep a run from being changed silently (a new run over an old one, a resume with another
spec or recipe). Pure file work: nothing here trains or loads a checkpoint.

:func:`archspace.train.loop.plan_run` uses these to decide what a run does before anything is
written; the command line uses them before it loads any data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import yaml

from ..errors import SpecError
from ..spec import NetworkSpec, dump_spec
from ..spec._yaml import parse_yaml
from ..spec.paths import format_path
from .checkpoint import temp_files
from .config import TrainConfig

RUN_FILES = ("spec.yaml", "config.json", "checkpoint.pt", "metrics.jsonl", "summary.json")
"""The files archspace writes into a run directory (with their temp files ``.<name>.*.tmp``);
nothing else in the folder is ever read, changed or removed."""
FREE_RECIPE_FIELDS = ("device", "compile", "eval_batch_size", "data_dir", "checkpoint", "checkpoint_steps",
                      "loader_workers")
"""Recipe fields that do not change what is trained: they may differ on resume (so may ``epochs``)."""
FREE_SPEC_FIELDS = ("name", "description")
"""Spec fields that do not change what is trained: they may differ on resume."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Stands for an absent key or list item in :func:`first_difference`'s answer."""


def first_difference(here: Any, there: Any, path: tuple = ()) -> tuple[tuple, Any, Any] | None:
    """The first place where two JSON-like values differ, depth first in ``here``'s key order.

    Returns:
        ``(path, here_value, there_value)`` with ``path`` a tuple of keys and indexes
        (``("stages", 2, "depth")``; see :func:`archspace.spec.paths.format_path`) and
        :data:`MISSING` for a key or list item one side lacks; ``None`` if they are equal.
        Lists and tuples compare alike; ``True`` is not ``1``; ``1`` is ``1.0``.
    """
    if isinstance(here, dict) and isinstance(there, dict):
        for key in [*here, *(k for k in there if k not in here)]:
            found = first_difference(here.get(key, MISSING), there.get(key, MISSING), (*path, key))
            if found is not None:
                return found
        return None
    if isinstance(here, (list, tuple)) and isinstance(there, (list, tuple)):
        for i in range(max(len(here), len(there))):
            found = first_difference(here[i] if i < len(here) else MISSING,
                                     there[i] if i < len(there) else MISSING, (*path, i))
            if found is not None:
                return found
        return None
    return None if _same(here, there) else (tuple(path), here, there)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    number = (int, float)
    if isinstance(a, bool) or isinstance(b, bool) or not (isinstance(a, number) and isinstance(b, number)):
        return type(a) is type(b) and a == b
    return a == b or (a != a and b != b)  # NaN is NaN


def show_value(value: Any, limit: int = 60) -> str:
    """A value as one short line for a message: ``0.003``, ``gelu``, ``unset``, ``absent``."""
    if value is MISSING:
        return "absent"
    if value is None:
        return "unset"
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, separators=(", ", ": "), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_files(out_dir: str | Path) -> list[str]:
    """The :data:`RUN_FILES` that ``out_dir`` holds (none if it does not exist)."""
    out = Path(out_dir)
    return [name for name in RUN_FILES if (out / name).exists()]


def clear_run(out_dir: str | Path) -> list[str]:
    """Remove the run files archspace wrote into ``out_dir`` (:data:`RUN_FILES` and their temp
    files) and nothing else; the folder itself stays. Returns the names removed."""
    out = Path(out_dir)
    removed = []
    for name in RUN_FILES:
        for path in [out / name, *temp_files(out, name)]:
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append(path.name)
    return removed


def free_run_dir(base: str | Path) -> Path:
    """``base`` if it holds no run, else the first of ``base-2``, ``base-3``, … that holds none."""
    base = Path(base)
    candidate, n = base, 1
    while run_files(candidate):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def describe_run(out_dir: str | Path) -> str:
    """The run a directory holds, in a few words: ``coatnet-0, 3/10 epochs`` (best effort)."""
    out = Path(out_dir)
    name, done, total, status = None, None, None, None
    spec = read_or_none(out / "spec.yaml", _spec_yaml)
    if isinstance(spec, dict):
        name = spec.get("name")
    config = read_or_none(out / "config.json", json.loads)
    if isinstance(config, dict):
        total = config.get("epochs")
    summary = read_or_none(out / "summary.json", json.loads)
    if isinstance(summary, dict):
        done, status = summary.get("epochs"), summary.get("status")
    else:
        rows = read_or_none(out / "metrics.jsonl", json_lines)
        if rows is not None:
            done = max((r["epoch"] for r in rows if isinstance(r, dict) and isinstance(r.get("epoch"), int)),
                       default=0)
    parts = [str(name) if name else "unnamed spec"]
    if done is not None or total is not None:
        parts.append(f"{'?' if done is None else done}/{'?' if total is None else total} epochs")
    if status in ("diverged", "pruned"):
        parts.append(status)
    return ", ".join(parts)


def _spec_yaml(text: str) -> Any:
    """A run's spec.yaml, parsed with the spec files' bounds (a run directory may hold any file)."""
    return parse_yaml(text, "spec.yaml")


def read_or_none(path: Path, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(path.read_text())
    except (OSError, ValueError, yaml.YAMLError, UnicodeDecodeError):
        return None


def json_lines(text: str) -> list:
    """The rows of a JSON-lines file that archspace appends to. Only the last line may be
    torn (a write cut by a kill leaves no newline after it): it is left out. A bad line
    anywhere else is damage, not a kill: ``ValueError``."""
    lines = text.split("\n")
    torn = lines.pop()  # after the last newline: "" for a whole file, else a cut write
    rows = [json.loads(line) for line in lines if line.strip()]
    if torn.strip():
        try:
            rows.append(json.loads(torn))
        except ValueError:
            pass  # the write a kill cut short: its epoch is in the checkpoint or done again
    return rows


def check_resumable(out_dir: str | Path) -> None:
    """Raise unless ``out_dir`` holds a run to continue (the command line's ``--resume``;
    the API's ``train(resume=True)`` starts a fresh run there instead).

    Raises:
        SpecError: one problem on ``--resume``.
    """
    out = Path(out_dir)
    if not out.exists():
        raise SpecError.single("--resume", f"{out} does not exist: there is no run to continue; "
                                           f"leave out --resume to start one")
    if not run_files(out):
        raise SpecError.single("--resume", f"{out} holds no run to continue (none of {', '.join(RUN_FILES)}); "
                                           f"leave out --resume to start one")


def check_free(out_dir: str | Path) -> None:
    """Raise if ``out_dir`` holds a run (a new run may not go there without resume or overwrite).

    Raises:
        SpecError: one problem on ``--out``.
    """
    out = Path(out_dir)
    if run_files(out):
        raise SpecError.single("--out", f"{out} already holds a run ({describe_run(out)}); use --resume to continue "
                                        f"it, --overwrite to replace it, or another --out")


def check_same_run(out: Path, spec: NetworkSpec, config: TrainConfig) -> None:
    """Refuse to resume with another spec or recipe than the run's (see FREE_* for what may differ)."""
    if (out / "spec.yaml").exists():
        there = _load_file(out / "spec.yaml", _spec_yaml)
        here = yaml.safe_load(dump_spec(spec))
        if isinstance(there, dict):
            try:  # fields added since the run was written take their defaults
                there = yaml.safe_load(dump_spec(NetworkSpec.model_validate(there)))
            except Exception:  # noqa: BLE001 - compared as it is
                pass
            there = {k: v for k, v in there.items() if k not in FREE_SPEC_FIELDS}
        found = first_difference({k: v for k, v in here.items() if k not in FREE_SPEC_FIELDS}, there)
        if found is not None:
            path, a, b = found
            where = format_path(path) if path else "the spec"
            raise SpecError.single("--resume", f"the spec differs from the run in {out}: {where} is {show_value(a)} "
                                               f"here, {show_value(b)} in the run; use --overwrite to replace it, "
                                               f"or another --out")
    if (out / "config.json").exists():
        there = _load_file(out / "config.json", json.loads)
        if isinstance(there, dict):
            try:  # fields added since the run was written take their defaults
                there = TrainConfig.model_validate(there).model_dump(mode="json")
            except Exception:  # noqa: BLE001 - compared as it is
                pass
        skip = (*FREE_RECIPE_FIELDS, "epochs")
        here = {k: v for k, v in config.model_dump(mode="json").items() if k not in skip}
        if isinstance(there, dict):
            there = {k: v for k, v in there.items() if k not in skip}
        found = first_difference(here, there, ("train",))
        if found is not None:
            path, a, b = found
            raise SpecError.single("--resume", f"the recipe differs from the run in {out}: {format_path(path)} is "
                                               f"{show_value(a)} here, {show_value(b)} in the run; use --overwrite "
                                               f"to replace it, or another --out")


def _load_file(path: Path, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(path.read_text())
    except (OSError, ValueError, yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError.single("--resume", f"cannot read {path}: {first}") from None
