"""Design spaces: a base spec plus choices at spec paths and ``train.*`` paths.

```yaml
base: coatnet-0
set: {input.size: 32}                      # fixed overrides, same paths as --set
choices:
  layout: [C-C-C-C, C-C-C-T, C-C-T-T, C-T-T-T, VIT_REL]
  stages[1].depth: {int: [2, 6]}
  stages[2].head_size: [16, 32]            # sampled only where stage 2 is a transformer
  train.lr: {loguniform: [1.0e-4, 1.0e-2]}
  train.optimizer: [adamw, sgd]
match: {params: 2.0e6, tolerance: 0.05, by: width}
constraints: {flops: [null, 1.0e9]}
```

``base`` may itself be a choice (a list of presets or spec files: ViT_P against ViT_C,
the steps of a roadmap); ``base:`` then names the first. A point is resolved by a *suggester* — anything with ``categorical``, ``int`` and
``float`` methods (an Optuna trial, or a fixed mapping) — so that one space serves every
sampler and backend. Constraints and matching use analytic cost only: a rejected point is
never trained.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Protocol, Union

from pydantic import Discriminator, Field, Tag, ValidationError, model_validator

from ..complexity import complexity
from ..errors import Problem, SpecError
from ..graph import lower
from ..spec import NetworkSpec, load_raw
from ..spec._base import FieldError, SpecModel
from ..spec.io import apply_overrides, problems_from_validation, resolve_data, validate
from ..spec.layout import apply_layout
from ..spec.network import STAGE_MODELS
from ..spec.paths import format_path, get_path, parse_path
from ..train.config import TrainConfig

STAGE_FIELDS = {m.model_fields["block"].default: set(m.model_fields) for m in STAGE_MODELS}
METRICS = ("params", "flops", "acts")


class IntRange(SpecModel):
    int: tuple[int, int]
    step: int = Field(1, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "IntRange":
        if self.int[0] > self.int[1]:
            raise FieldError("int", f"low {self.int[0]} is above high {self.int[1]}")
        if self.log and self.int[0] < 1:
            raise FieldError("int", f"a log range needs low >= 1, got [{self.int[0]}, {self.int[1]}]")
        return self


class UniformRange(SpecModel):
    uniform: tuple[float, float]

    @model_validator(mode="after")
    def _ordered(self) -> "UniformRange":
        if self.uniform[0] > self.uniform[1]:
            raise FieldError("uniform", f"low {self.uniform[0]} is above high {self.uniform[1]}")
        return self


class LogUniformRange(SpecModel):
    loguniform: tuple[float, float]

    @model_validator(mode="after")
    def _ordered(self) -> "LogUniformRange":
        lo, hi = self.loguniform
        if lo <= 0 or lo > hi:
            raise FieldError("loguniform", f"needs 0 < low <= high, got [{lo}, {hi}]")
        return self


def _choice_tag(value: Any) -> str | None:
    if isinstance(value, list):
        return "tag:values"
    if isinstance(value, dict):
        for key in ("int", "uniform", "loguniform"):
            if key in value:
                return f"tag:{key}"
    if isinstance(value, (IntRange, UniformRange, LogUniformRange)):
        return {IntRange: "tag:int", UniformRange: "tag:uniform", LogUniformRange: "tag:loguniform"}[type(value)]
    return None


Choice = Annotated[
    Union[
        Annotated[Annotated[list[Any], Field(min_length=1)], Tag("tag:values")],
        Annotated[IntRange, Tag("tag:int")],
        Annotated[UniformRange, Tag("tag:uniform")],
        Annotated[LogUniformRange, Tag("tag:loguniform")],
    ],
    Discriminator(_choice_tag, custom_error_type="choice", custom_error_message=(
        "a choice is a list of values, {int: [lo, hi]}, {uniform: [lo, hi]} or {loguniform: [lo, hi]}")),
]


class MatchSpec(SpecModel):
    """Scale a knob until every variant is within ``tolerance`` of a params/flops target."""

    params: float | None = Field(None, gt=0)
    flops: float | None = Field(None, gt=0)
    tolerance: float = Field(0.05, gt=0, lt=1)
    by: Literal["width", "depth"] = "width"

    @model_validator(mode="after")
    def _one_target(self) -> "MatchSpec":
        if (self.params is None) == (self.flops is None):
            raise FieldError("params", "give exactly one target: params or flops")
        return self

    @property
    def metric(self) -> str:
        return "params" if self.params is not None else "flops"

    @property
    def target(self) -> float:
        return self.params if self.params is not None else self.flops


class Relative(SpecModel):
    """A ``set`` value relative to each base's own: ``{scale: 0.34}`` multiplies it (rounded,
    at least 1), ``{add: -8}`` adds to it. Scaling a study down this way keeps what its
    variants differ in: ViT_C keeps its one block fewer than ViT_P, the roadmap's 3-3-9-3
    stays apart from 3-4-6-3."""

    scale: float | None = Field(None, gt=0, le=1e6, allow_inf_nan=False)
    add: int | None = Field(None, ge=-10**6, le=10**6)

    @model_validator(mode="after")
    def _one(self) -> "Relative":
        if (self.scale is None) == (self.add is None):
            raise FieldError("scale", "give exactly one of scale or add")
        return self

    def apply(self, value: Any, where: str) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} is {value!r}, not a number: a relative value needs one")
        if self.add is not None:
            out = value + self.add
        else:
            out = value * self.scale
            out = max(1, math.floor(out + 0.5)) if isinstance(value, int) else out
        if isinstance(value, int) and out < 1:
            raise ValueError(f"{where} would be {out} ({value} {self.add:+d}): it must stay at least 1")
        return out


def _is_relative(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= {"scale", "add"}


def relative_overrides(data: dict[str, Any], keys: tuple, rel: Relative) -> list[tuple[tuple, Any]]:
    """The concrete overrides a relative value makes in ``data`` (``[*]`` expanded)."""
    star = next((i for i, k in enumerate(keys) if k == "*"), None)
    if star is None:
        return [(keys, rel.apply(get_path(data, keys), format_path(keys)))]
    items = get_path(data, keys[:star])
    if not isinstance(items, list):
        raise KeyError(f"{format_path(keys[:star])} is not a list")
    out = []
    for i in range(len(items)):
        out.extend(relative_overrides(data, (*keys[:star], i, *keys[star + 1:]), rel))
    return out


class SpaceSpec(SpecModel):
    """A design space: base spec, fixed overrides, choices, matching and constraints."""

    base: str | dict[str, Any]
    set: dict[str, Any] = Field(default_factory=dict, description=(
        "Fixed overrides at spec paths; a value {scale: f} or {add: n} is relative to each base's own."))
    choices: dict[str, Choice] = Field(default_factory=dict)
    match: MatchSpec | None = None
    constraints: dict[Literal["params", "flops", "acts"], tuple[float | None, float | None]] = Field(
        default_factory=dict)



class Suggester(Protocol):
    def categorical(self, name: str, values: list[Any]) -> Any: ...
    def int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int: ...
    def float(self, name: str, low: float, high: float, log: bool = False) -> float: ...


@dataclass
class Point:
    """One resolved point of a space: the network, the recipe and what was sampled."""

    spec: NetworkSpec
    train: TrainConfig
    params: dict[str, Any]
    cost: dict[str, Any]
    match_scale: float | None = None
    rejected: str | None = None
    key: str = field(default="")

    def record(self) -> dict[str, Any]:
        return {"spec": self.spec.model_dump(mode="json", exclude_none=True),
                "train": self.train.model_dump(mode="json"), "params": self.params,
                "cost": {k: self.cost[k] for k in METRICS}, "match_scale": self.match_scale, "key": self.key}


def spec_hash(spec: NetworkSpec, train: TrainConfig) -> str:
    """Hash of the fully resolved spec and recipe: equal hash, same trial. What does not change
    what is trained (the spec's name, where the data lies, the device, ...) is left out."""
    from ..train.rundir import FREE_RECIPE_FIELDS

    data = {"spec": spec.model_dump(mode="json", exclude={"name", "description"}),
            "train": train.model_dump(mode="json", exclude=set(FREE_RECIPE_FIELDS))}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class Space:
    """A checked space, ready to resolve points."""

    def __init__(self, spec: SpaceSpec, train: Mapping[str, Any] | None = None, folder=None):
        self.spec = spec
        self.train_base = dict(train or {})
        self.folder = Path(folder or ".")
        base_choice = spec.choices.get("base")
        if base_choice is not None and not isinstance(base_choice, list):
            raise SpecError.single("space.choices.base", "a base choice is a list of presets or spec files")
        names = list(base_choice) if base_choice is not None else [spec.base]
        self.bases = {str(n) if isinstance(n, str) else "base": self._load_base(n) for n in names}
        self.base = next(iter(self.bases.values()))
        self._data: dict[tuple, Any] = {}  # (dataset, folder) -> DataInfo or the SpecError it raised
        self._check_paths()

    def _load_base(self, base: str | dict[str, Any]) -> dict[str, Any]:
        try:
            if isinstance(base, str):
                local = self.folder / base
                data = load_raw(local if local.is_file() else base)
            else:
                data = resolve_data(base, self.folder)
        except SpecError as exc:
            raise SpecError([Problem("space.base", p.message) for p in exc.problems]) from None
        overrides = []
        try:
            for path, value in self.spec.set.items():
                keys = parse_path(path)
                if _is_relative(value):
                    try:
                        rel = Relative.model_validate(value)
                    except ValidationError as exc:
                        raise SpecError(problems_from_validation(exc, ("space", "set", path))) from None
                    try:
                        overrides.extend(relative_overrides(data, keys, rel))
                    except KeyError as exc:
                        raise SpecError.single(f"space.set.{path}", f"cannot reach this path: {exc.args[0]}") from None
                    except ValueError as exc:
                        raise SpecError.single(f"space.set.{path}", str(exc)) from None
                else:
                    overrides.append((keys, value))
            try:
                return apply_overrides(data, overrides)
            except SpecError as exc:  # named at the space's set, e.g. space.set.stages[9].depth
                raise SpecError([Problem(f"space.set.{p.path}", p.message.replace("--set ", ""))
                                 for p in exc.problems]) from None
        except SpecError:
            raise
        except ValueError as exc:  # a malformed path
            raise SpecError.single("space.set", str(exc)) from None

    # -- checks ---------------------------------------------------------------------------
    def _check_paths(self) -> None:
        problems = self._check_layouts()
        if problems:
            raise SpecError(problems)
        for path in self.spec.choices:
            try:
                keys = parse_path(path)
            except ValueError as exc:
                problems.append(Problem(f"space.choices.{path}", str(exc)))
                continue
            if keys[0] == "train":
                if len(keys) != 2 or keys[1] not in TrainConfig.model_fields:
                    problems.append(Problem(f"space.choices.{path}", f"no such training setting "
                                                               f"(known: {', '.join(TrainConfig.model_fields)})"))
            elif keys[0] in ("layout", "base"):
                continue
            elif not self._path_can_exist(keys):
                problems.append(Problem(f"space.choices.{path}", "this path does not exist in the base spec "
                                                           "(nor under any layout the space can choose)"))
        if problems:
            raise SpecError(problems)

    def _check_layouts(self) -> list[Problem]:
        """Every layout choice applies to every base (an unknown letter, a wrong stage count)."""
        problems = []
        for layout in self._layouts() if "layout" in self.spec.choices else []:
            for base in self.bases.values():
                try:
                    self._with_layout(copy.deepcopy(base), layout)
                except ValueError as exc:
                    problems.append(Problem("space.choices.layout", str(exc)))
                    break
        return problems

    def _layouts(self) -> list[str | None]:
        choice = self.spec.choices.get("layout")
        return list(choice) if isinstance(choice, list) else [self.base.get("layout")]

    def _path_can_exist(self, keys: tuple) -> bool:
        for base in self.bases.values():
            for layout in self._layouts():
                data = self._with_layout(copy.deepcopy(base), layout)
                if self._applicable(data, keys):
                    return True
        return False

    @staticmethod
    def _with_layout(data: dict, layout: str | None) -> dict:
        if layout is None:
            return data
        data["layout"] = layout
        return apply_layout(data)

    @staticmethod
    def _applicable(data: dict, keys: tuple) -> bool:
        """Whether a spec path exists, or names a field of the model it lands in (a stage's
        kind, the stem's kind, head, input, drop path, the network)."""
        if keys[0] == "stages" and len(keys) >= 3 and isinstance(keys[1], int):
            stages = data.get("stages") or []
            if not -len(stages) <= keys[1] < len(stages):
                return False
            if keys[2] not in STAGE_FIELDS.get(stages[keys[1]].get("block"), set()):
                return False
            return len(keys) == 3 or _exists(data, keys)
        model = _model_at(data, keys[:-1]) if len(keys) <= 2 else None
        if model is not None:
            return keys[-1] in model.model_fields
        return _exists(data, keys)

    # -- resolving --------------------------------------------------------------------------
    def resolve(self, suggest: Suggester, fit_data: bool = True) -> Point:
        """Sample every applicable choice with ``suggest`` and build the point (``fit_data``:
        with the class count of the recipe's dataset, which is described, not loaded).

        Raises:
            SpecError: the point is not a valid network (reported with spec paths).
        """
        sampled: dict[str, Any] = {}
        if "base" in self.spec.choices:
            sampled["base"] = self._draw(suggest, "base", self.spec.choices["base"])
            data = copy.deepcopy(self.bases[sampled["base"]])
        else:
            data = copy.deepcopy(self.base)
        if "layout" in self.spec.choices:
            sampled["layout"] = self._draw(suggest, "layout", self.spec.choices["layout"])
            data = self._with_layout(data, sampled["layout"])
        train = dict(self.train_base)
        overrides = []
        for path, choice in self.spec.choices.items():
            if path in ("layout", "base"):
                continue
            keys = parse_path(path)
            if keys[0] == "train":
                train[keys[1]] = sampled[path] = self._draw(suggest, path, choice)
            elif self._applicable(data, keys):
                value = sampled[path] = self._draw(suggest, path, choice)
                overrides.append((keys, value))
        data = apply_overrides(data, overrides)
        spec = validate(data)
        try:
            config = TrainConfig.model_validate(train)
        except ValidationError as exc:
            raise SpecError(problems_from_validation(exc, ("train",))) from None
        spec = self.fit_to_data(spec, config) if fit_data else spec
        scale, unmatched = None, None
        if self.spec.match is not None:
            spec, scale, unmatched = match(spec, self.spec.match)
        cost = complexity(lower(spec))
        point = Point(spec, config, sampled, cost, scale, key=spec_hash(spec, config))
        point.rejected = unmatched or self.violation(cost, spec)
        return point

    def fit_to_data(self, spec: NetworkSpec, config: TrainConfig) -> NetworkSpec:
        """``spec`` as it will be trained on ``config``'s dataset (its class count), checked
        against what the dataset can give; described once per dataset, nothing loaded.

        Raises:
            SpecError: on ``train.data`` / ``train.data_dir`` / ``input.channels``.
        """
        from ..data import fit_spec

        return fit_spec(spec, self.data_info(config))

    def data_info(self, config: TrainConfig):
        """What ``config``'s dataset gives (described once per dataset and folder, nothing loaded).

        Raises:
            SpecError: on ``train.data`` / ``train.data_dir``.
        """
        from ..data import describe_data

        where = (config.data, config.data_dir)
        if where not in self._data:
            try:
                self._data[where] = describe_data(config.data, data_dir=config.data_dir)
            except SpecError as exc:
                self._data[where] = exc
        info = self._data[where]
        if isinstance(info, SpecError):
            paths = {"--data": "train.data", "--data-dir": "train.data_dir"}
            raise SpecError([Problem(paths.get(p.path, p.path), p.message) for p in info.problems])
        return info

    @staticmethod
    def _draw(suggest: Suggester, name: str, choice: Choice) -> Any:
        if isinstance(choice, list):
            return suggest.categorical(name, choice)
        if isinstance(choice, IntRange):
            return suggest.int(name, choice.int[0], choice.int[1], step=choice.step, log=choice.log)
        if isinstance(choice, UniformRange):
            return suggest.float(name, choice.uniform[0], choice.uniform[1], log=False)
        return suggest.float(name, choice.loguniform[0], choice.loguniform[1], log=True)

    def violation(self, cost: Mapping[str, Any], spec: NetworkSpec | None = None) -> str | None:
        """Why a point's cost breaks the constraints, or ``None``."""
        for metric, (lo, hi) in self.spec.constraints.items():
            value = cost[metric]
            if lo is not None and value < lo:
                return f"constraints.{metric}: {value:,} is below {lo:g}"
            if hi is not None and value > hi:
                return f"constraints.{metric}: {value:,} is above {hi:g}"
        return None


def _exists(data: dict, keys: tuple) -> bool:
    try:
        get_path(data, keys)
        return True
    except KeyError:
        return False


def _model_at(data: dict, parent: tuple):
    """The pydantic model a mapping at ``parent`` is validated by (``()`` is the network)."""
    from ..spec.network import STEM_MODELS, DropPathSpec, HeadSpec, InputSpec

    if parent == ():
        return NetworkSpec
    if parent == ("stem",):
        kind = (data.get("stem") or {}).get("kind")
        return next((m for m in STEM_MODELS if m.model_fields["kind"].default == kind), None)
    return {("head",): HeadSpec, ("input",): InputSpec, ("drop_path",): DropPathSpec}.get(parent)


# -- complexity matching ----------------------------------------------------------------------
#
# A matched variant is the variant with every stage width times one common multiplier, each
# rounded down or up to the stage's unit (its head size, 8 channels per head, or 8 channels)
# and never below the stage's floor (one head; 16 channels for a conv stage). Depths never
# change under ``by: width``. So stage ratios survive matching up to one unit per stage; a
# point that no such rounding brings within tolerance is rejected with the closest it got.

CONV_UNIT = 8
CONV_FLOOR = 16
HEAD_DIM_UNIT = 8


def _unit(stage: Any) -> int:
    """Width granularity of a stage: its head size, 8 channels per head, or 8 channels."""
    if hasattr(stage, "resolved_heads"):
        if stage.heads is not None:
            return HEAD_DIM_UNIT * stage.heads
        return stage.head_size or stage.default_head_size
    return CONV_UNIT


def _floor(stage: Any) -> int:
    """The narrowest width matching may give a stage: one head, or 16 channels."""
    return _unit(stage) if hasattr(stage, "resolved_heads") else max(CONV_FLOOR, _unit(stage))


def _free(spec: NetworkSpec) -> list[int]:
    """Stages whose width matching chooses (a class-attention stage keeps its input's width)."""
    return [i for i, st in enumerate(spec.stages) if not (st.block == "class_attention" and i)]


def _with_widths(spec: NetworkSpec, widths: dict[int, int]) -> NetworkSpec | None:
    """The spec with these stage widths (and the widths that must follow them); ``None`` if invalid."""
    data = spec.model_dump(mode="json", exclude_none=True)
    stages = data["stages"]
    for i, w in widths.items():
        stages[i]["width"] = w
    for i, stage in enumerate(spec.stages):  # class attention keeps its input width
        if stage.block == "class_attention" and i:
            stages[i]["width"] = stages[i - 1]["width"]
    stem = data["stem"]
    if stem.get("kind") == "patchify" and "width" in stem:
        stem["width"] = stages[0]["width"]
    if stem.get("kind") == "conv" and stem.get("project"):
        stem["project"] = stages[0]["width"]
    if data.get("head", {}).get("hidden"):
        data["head"]["hidden"] = stages[-1]["width"]
    try:
        return validate(data)
    except SpecError:
        return None


def _roundings(spec: NetworkSpec, factor: float) -> list[dict[int, int]]:
    """Every width vector with each free stage's width × ``factor`` rounded down or up to its
    unit (at least its floor), keeping widths non-decreasing where the spec's are."""
    options = []
    for i in _free(spec):
        st = spec.stages[i]
        unit, exact = _unit(st), st.width * factor
        down = max(_floor(st), int(exact // unit) * unit)
        up = max(_floor(st), -int(-exact // unit) * unit)
        options.append([(i, down)] if down == up else [(i, down), (i, up)])
    out: list[dict[int, int]] = [{}]
    for opts in options:
        out = [{**o, i: w} for o in out for i, w in opts]
    if _non_decreasing([st.width for st in spec.stages]):
        out = [o for o in out if _non_decreasing([o[i] for i in sorted(o)])]
    return out


def _non_decreasing(widths: list[int]) -> bool:
    return all(a <= b for a, b in zip(widths, widths[1:]))


def scale_spec(spec: NetworkSpec, by: str, factor: float) -> NetworkSpec | None:
    """Every free stage width × ``factor`` (rounded to the stage's unit, at least its floor), or
    the deepest stage's depth + ``factor`` blocks; ``None`` if the result is not a valid spec."""
    if by == "width":
        widths = {i: max(_floor(st), int(round(st.width * factor / _unit(st))) * _unit(st))
                  for i, st in ((i, spec.stages[i]) for i in _free(spec))}
        return _with_widths(spec, widths)
    data = spec.model_dump(mode="json", exclude_none=True)
    stages = data["stages"]
    deepest = max(range(len(stages)), key=lambda i: stages[i]["depth"])
    stages[deepest]["depth"] = max(1, stages[deepest]["depth"] + int(factor))
    try:
        return validate(data)
    except SpecError:
        return None


SPAN = 1.25  # multipliers up to this far from the bisection's crossing are tried


def _breakpoint_factors(spec: NetworkSpec, lo: float, hi: float) -> list[float]:
    """One multiplier inside each interval of ``[lo, hi]`` on which every stage's round-down
    and round-up widths stay the same, nearest the middle of the range first."""
    cuts = {lo, hi}
    for i in _free(spec):
        st = spec.stages[i]
        unit = _unit(st)
        k = int(lo * st.width // unit) + 1
        while k * unit / st.width < hi:
            cuts.add(k * unit / st.width)
            k += 1
    cuts = sorted(cuts)
    mids = [(a * b) ** 0.5 for a, b in zip(cuts, cuts[1:])]
    centre = (lo * hi) ** 0.5
    return sorted(mids, key=lambda f: abs(math.log(f / centre)))


@dataclass
class _Closest:
    """The candidate nearest the target so far."""

    target: float
    metric: str
    error: float = float("inf")
    spec: NetworkSpec | None = None
    scale: float | None = None
    value: float | None = None

    def consider(self, spec: NetworkSpec | None, scale: float) -> float | None:
        if spec is None:
            return None
        try:
            value = complexity(lower(spec))[self.metric]
        except SpecError:
            return None
        error = abs(value / self.target - 1)
        if error < self.error:
            self.error, self.spec, self.scale, self.value = error, spec, scale, value
        return value


def match(spec: NetworkSpec, m: MatchSpec) -> tuple[NetworkSpec, float | None, str | None]:
    """Scale widths (or depth) until ``m.metric`` is within tolerance of the target.

    Width: a geometric bisection on one multiplier for all stages (each width rounded to its
    stage's unit), then every rounding down or up of each stage at the multipliers around the
    crossing — rounding makes cost a step function, and this is as far as a stage may stray
    from the common multiplier. Depth: the deepest stage's block count, widths untouched.

    Returns:
        The closest variant, its scale (the multiplier, or the depth change) and ``None``; or
        the original spec, ``None`` and why nothing lands within tolerance.
    """
    best = _Closest(m.target, m.metric)
    if m.by == "width":
        lo, hi = 1.0 / 64, 64.0
        tried = [1.0]
        for _ in range(40):
            mid = (lo * hi) ** 0.5
            tried.append(mid)
            v = best.consider(scale_spec(spec, "width", mid), mid)
            if v is None or hi / lo < 1.0005:
                break
            lo, hi = (mid, hi) if v < m.target else (lo, mid)
        seen: set[tuple] = set()
        for factor in _breakpoint_factors(spec, lo / SPAN, hi * SPAN):
            if best.error <= m.tolerance / 4:
                break
            for widths in _roundings(spec, factor):
                key = tuple(sorted(widths.items()))
                if key not in seen:
                    seen.add(key)
                    best.consider(_with_widths(spec, widths), factor)
    else:
        for delta in range(-64, 65):
            best.consider(scale_spec(spec, "depth", delta), delta)
    if best.spec is None or best.error > m.tolerance:
        what = ("one width multiplier for every stage, each stage rounded to its unit" if m.by == "width"
                else "changing the deepest stage's depth")
        closest = "" if best.value is None else \
            f"; the closest is {best.value:,.0f} ({best.value / m.target - 1:+.1%})"
        return spec, None, (f"match: {what} brings {m.metric} no closer than {best.error:.1%} to "
                            f"{m.target:,.0f} (tolerance {m.tolerance:.0%}){closest}")
    return best.spec, best.scale, None


def load_space(data: Mapping[str, Any], train: Mapping[str, Any] | None = None, folder=None) -> Space:
    """Validate raw space data (problems under ``space.*``) and check its paths."""
    try:
        spec = SpaceSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(problems_from_validation(exc, ("space",))) from None
    return Space(spec, train, folder)


class FixedSuggester:
    """Resolves a point from given values: where one is missing, the first option (or, with
    ``strict``, a ``KeyError``: replaying a recorded point must not invent values)."""

    def __init__(self, values: Mapping[str, Any] | None = None, strict: bool = False):
        self.values = dict(values or {})
        self.strict = strict

    def _get(self, name: str, default: Any) -> Any:
        if name in self.values:
            return self.values[name]
        if self.strict:
            raise KeyError(f"no value for {name!r}")
        return default

    def categorical(self, name, values):
        return self._get(name, values[0])

    def int(self, name, low, high, step=1, log=False):
        return int(self._get(name, low))

    def float(self, name, low, high, log=False):
        return float(self._get(name, low))


__all__ = ["FixedSuggester", "MatchSpec", "Point", "Space", "SpaceSpec", "format_path", "load_space", "match",
           "scale_spec", "spec_hash"]
