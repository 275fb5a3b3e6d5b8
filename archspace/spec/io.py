"""Loading specs: YAML files and presets, ``extends``, ``layout``, ``--set`` overrides.

Every failure is a :class:`~archspace.errors.SpecError` naming the spec path concerned;
pydantic's validation errors are translated to the same one-line form.
"""

from __future__ import annotations

import copy
import os
import pickle
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import Problem, SpecError, shorten
from ._base import FieldError
from ._yaml import parse_yaml, read_text
from .layout import apply_layout
from .network import STAGE_MODELS, STEM_MODELS, NetworkSpec
from .paths import format_path, parse_path, set_path

PRESET_SUFFIXES = (".yaml", ".yml")
MAX_EXTENDS = 32
"""Longest chain of ``extends`` (a spec extending one extending one …)."""
MAX_NAME = 1024
"""Longest ``extends`` name or path, in characters."""
_TAGS = {m.model_fields["block"].default for m in STAGE_MODELS} | {
    m.model_fields["kind"].default for m in STEM_MODELS
}


def preset_dirs() -> list[Path]:
    """Folders searched for presets: ``$ARCHSPACE_PRESETS`` (``:``-separated), then ``spaces/``
    (the repository's, or the copy an installed package carries)."""
    from .._resources import resource_dir

    dirs = [Path(p) for p in os.environ.get("ARCHSPACE_PRESETS", "").split(os.pathsep) if p]
    spaces = resource_dir("spaces")
    if spaces is not None:
        dirs.append(spaces)
    return [d for d in dirs if d.is_dir()]


def preset_index() -> dict[str, Path]:
    """Every preset name (the file name without ``.yaml``) and its file; earlier folders win."""
    return dict(_preset_index(tuple(preset_dirs())))


@lru_cache(maxsize=8)
def _preset_index(dirs: tuple[Path, ...]) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for d in dirs:
        for path in sorted(d.rglob("*")):
            if path.suffix in PRESET_SUFFIXES:
                index.setdefault(path.stem, path)
    return index


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping; problems name the file (and line for syntax errors).

    The file's size, encoding, nesting and expanded size are bounded (see ``archspace.spec._yaml``).
    """
    text = read_text(path)
    try:
        data = parse_yaml(text, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
        raise SpecError.single("", f"malformed YAML in {path}{where}: {what}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError.single("", f"{path} must hold a mapping, not {type(data).__name__}")
    return data


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_source(source: str | os.PathLike[str], relative_to: Path | None = None) -> Path:
    """A spec file path, or the file of a preset name.

    Raises:
        SpecError: neither a file nor a known preset.
    """
    text = str(source)
    candidate = Path(text) if relative_to is None else relative_to / text
    if candidate.suffix in PRESET_SUFFIXES or os.sep in text:
        if candidate.is_file():
            return candidate
        raise SpecError.single("", f"no spec file {candidate}")
    if candidate.is_file():
        return candidate
    index = preset_index()
    if text in index:
        return index[text]
    raise SpecError.single("", f"unknown preset {text!r} (see `archspace list`)")


def load_raw(source: str | os.PathLike[str], *, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Raw spec data of a file or preset with every ``extends`` resolved (deep-merged).

    Each source is read and resolved once per process: the result is kept and handed out
    again (a fresh copy each time) while every file of its ``extends`` chain keeps its
    modification time, size and inode, and, for a preset name, while no file of that name
    appears in the working directory.

    Raises:
        SpecError: unreadable file, malformed YAML, unknown preset, cyclic ``extends``.
    """
    if _chain:
        return _load_file(resolve_source(source, None).resolve(), _chain)
    text = str(source)
    key = (text, os.getcwd(), os.environ.get("ARCHSPACE_PRESETS"))
    kept = _RESOLVED.get(key)
    if kept is not None:
        stamps, blob, preset = kept
        if (not preset or not os.path.isfile(text)) and all(_stamp(p) == stamp for p, stamp in stamps):
            return pickle.loads(blob)  # a copy of what this process made from safe_load: never a file's bytes
    candidate = resolve_source(source, None)
    files: list[Path] = []
    data = _load_file(candidate.resolve(), (), files)
    preset = not (candidate.suffix in PRESET_SUFFIXES or os.sep in text) and not Path(text).is_file()
    if not preset:
        files.append(Path(text))  # the name as given: a link to another file is another file
    try:
        stamps = tuple((p, _stamp(p)) for p in files)
        blob = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # data pickle cannot copy: keep nothing
        return data
    if len(_RESOLVED) >= RESOLVED_CACHE_SIZE:
        _RESOLVED.clear()
    _RESOLVED[key] = (stamps, blob, preset)
    return data


_RESOLVED: dict[tuple, tuple[tuple, bytes, bool]] = {}
RESOLVED_CACHE_SIZE = 4096
"""Sources whose resolved data :func:`load_raw` keeps (all are dropped when full)."""


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _load_file(path: Path, chain: tuple[Path, ...], files: list[Path] | None = None) -> dict[str, Any]:
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise SpecError.single("extends", f"cyclic extends: {cycle}")
    if len(chain) > MAX_EXTENDS:
        raise SpecError.single("extends", f"a chain of more than {MAX_EXTENDS} extends (from {chain[0].name})")
    if files is not None:
        files.append(path)
    return resolve_data(read_yaml(path), path.parent, (*chain, path), _files=files)


def resolve_data(data: Mapping[str, Any], folder: Path, chain: tuple[Path, ...] = (), *,
                 _files: list[Path] | None = None) -> dict[str, Any]:
    """Resolve raw data's ``extends`` (relative to ``folder``) and its ``set:`` overrides."""
    data = dict(data)
    parent = data.pop("extends", None)
    overrides = data.pop("set", None) or {}
    where = f" (in {chain[-1].name})" if chain else ""
    if not isinstance(overrides, dict):
        raise SpecError.single("set", f"must map spec paths to values, e.g. stages[0].depth: 3{where}")
    if parent is None:
        return _apply_file_overrides(_layout(data), overrides)
    if not isinstance(parent, str):
        raise SpecError.single("extends", f"must be a preset name or a relative path, got {shorten(parent)}")
    if len(parent) > MAX_NAME or "\0" in parent:
        raise SpecError.single("extends", f"{shorten(parent)} ({len(parent):,} characters) is not a preset name "
                                          f"or a path (at most {MAX_NAME} characters, no NUL){where}")
    try:
        parent_path = _resolve_extends(parent, folder)
    except SpecError as exc:
        raise SpecError.single("extends", f"{exc.problems[0].message}{where}") from None
    base = _load_file(parent_path.resolve(), chain, _files)
    if "layout" in data:
        base.pop("layout", None)
    return _apply_file_overrides(_layout(deep_merge(base, data)), overrides)


def _layout(data: dict[str, Any]) -> dict[str, Any]:
    try:
        return apply_layout(data)
    except ValueError as exc:
        raise SpecError.single("layout", str(exc)) from None


def _apply_file_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Apply a spec file's ``set:`` mapping (path -> value), reporting bad paths under ``set``."""
    pairs = []
    problems = []
    for key, value in overrides.items():
        try:
            pairs.append((parse_path(str(key)), value))
        except ValueError as exc:
            problems.append(Problem(f"set.{key}", str(exc)))
    if problems:
        raise SpecError(problems)
    return apply_overrides(data, pairs)


def _resolve_extends(name: str, folder: Path) -> Path:
    local = folder / name
    if local.is_file():
        return local
    if Path(name).suffix in PRESET_SUFFIXES or "/" in name:
        raise SpecError.single("extends", f"no spec file {local}")
    return resolve_source(name)


def parse_override(text: str) -> tuple[tuple[str | int, ...], Any]:
    """Split ``stages[2].depth=6`` into a path and a YAML-parsed value.

    Raises:
        SpecError: malformed override or path.
    """
    if "=" not in text:
        raise SpecError.single("--set", f"{shorten(text)} must look like PATH=VALUE, e.g. stages[2].depth=6")
    path_text, value_text = text.split("=", 1)
    try:
        keys = parse_path(path_text.strip())
    except ValueError as exc:
        raise SpecError.single("--set", str(exc)) from None
    try:
        value = parse_yaml(value_text, f"the value of {path_text.strip()}", "--set") if value_text.strip() else None
    except yaml.YAMLError:
        value = value_text
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str | tuple]) -> dict[str, Any]:
    """A copy of ``data`` with each override (``PATH=VALUE`` or ``(keys, value)``) applied.

    Every bad override is reported, each naming its path.
    """
    out = copy.deepcopy(data)
    problems = []
    for item in overrides:
        try:
            keys, value = parse_override(item) if isinstance(item, str) else item
            set_path(out, keys, value)
        except SpecError as exc:
            problems.extend(exc.problems)
        except KeyError as exc:
            problems.append(Problem(format_path(keys), f"--set cannot reach this path: {exc.args[0]}"))
    if problems:
        raise SpecError(problems)
    return out


def validate(data: Mapping[str, Any]) -> NetworkSpec:
    """Validate resolved raw data (``extends``, ``set`` and ``layout`` applied) into a spec.

    A ``layout`` left in the data must agree with the stages.

    Raises:
        SpecError: every schema problem, each with its path.
    """
    try:
        return NetworkSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(problems_from_validation(exc)) from None


def load_spec(
    source: str | os.PathLike[str] | Mapping[str, Any],
    overrides: Iterable[str | tuple] = (),
    size: int | None = None,
) -> NetworkSpec:
    """Load a spec from a file, a preset name, or raw data; apply overrides; validate.

    Args:
        source: a YAML path, a preset name, or a mapping of raw spec data.
        overrides: ``PATH=VALUE`` strings (or ``(keys, value)`` pairs) applied in order.
        size: input resolution override (``input.size``).

    Raises:
        SpecError: every problem found, each with its spec path.
    """
    if isinstance(source, Mapping):
        data = resolve_data(copy.deepcopy(dict(source)), Path.cwd())
    else:
        data = load_raw(source)
    overrides = list(overrides)
    if size is not None:
        overrides.append((("input", "size"), size))
    if overrides:  # ``data`` is a fresh copy already
        data = apply_overrides(data, overrides)
    if any(_keys(o)[:1] == ("layout",) for o in overrides):
        data = _layout(data)
    return validate(data)


def _keys(override: str | tuple) -> tuple:
    return parse_override(override)[0] if isinstance(override, str) else tuple(override[0])


def dump_spec(spec: NetworkSpec) -> str:
    """The spec as YAML (defaults included), loadable again by :func:`load_spec` into the same
    spec: an unset field is left out where unset is its default, and written as ``null``
    where it is not (``layer_scale: null`` on a class-attention stage means no LayerScale)."""
    return yaml.safe_dump(_lean(spec, spec.model_dump(mode="json")), sort_keys=False)


def _lean(model: BaseModel, data: dict) -> dict:
    """``data`` (``model``'s JSON dump) without the ``None`` values that equal their default."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None and field.get_default(call_default_factory=True) is None:
            data.pop(name, None)
        elif isinstance(value, BaseModel):
            _lean(value, data[name])
        elif isinstance(value, (list, tuple)):
            for item, dumped in zip(value, data[name]):
                if isinstance(item, BaseModel):
                    _lean(item, dumped)
    return data


def problems_from_validation(exc: ValidationError, prefix: tuple = ()) -> list[Problem]:
    """One :class:`Problem` per pydantic error, with spec paths (``prefix`` prepended)."""
    problems, seen = [], set()
    for err in exc.errors(include_url=False):
        loc = (*prefix, *_strip_tags(err["loc"]))
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, FieldError):
            loc = (*loc, error.field)
            message = str(error)
        else:
            message = _message(err)
        key = (loc, message)
        if key not in seen:
            seen.add(key)
            problems.append(Problem(format_path(loc), message))
    return problems


def _strip_tags(loc: tuple) -> tuple:
    """Drop the union tag pydantic inserts (``stages.2.mbconv.width`` -> ``stages[2].width``)."""
    out = []
    for i, part in enumerate(loc):
        prev = loc[i - 1] if i else None
        if isinstance(part, str) and part in _TAGS and (isinstance(prev, int) or prev == "stem"):
            continue
        if isinstance(part, str) and (part.startswith("function-") or part.startswith("tag:")):
            continue
        out.append(part)
    return tuple(out)


def _message(err: dict) -> str:
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        return "unknown key (not part of the spec language)"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"unknown kind {shorten(ctx.get('tag'))} (expected one of {ctx.get('expected_tags')})"
    if kind == "union_tag_not_found":
        ctx = err.get("ctx", {})
        return f"missing the {ctx.get('discriminator')} key that says which kind this is"
    if kind == "missing":
        return "required"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    shown = shorten(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return f"{msg[0].lower()}{msg[1:]} (got {shown})" if value is not None else msg
