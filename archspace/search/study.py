"""Study files: a space, a fixed recipe, a sampler, a pruner, a budget and a backend.

```yaml
name: my-study
space: {base: coatnet-0, set: {input.size: 32}, choices: {...}}   # or a path to a space file
train: {data: digits, epochs: 3, batch_size: 64}                   # train.* choices override these
sampler: {kind: tpe, seed: 0}       # grid | random | tpe | nsga2 (objectives eval_error and flops)
pruner: {kind: median}              # none | median | asha
trials: 20
backend: optuna                     # optuna | ray
resources: {workers: 1, cpu: 1, gpu: 0}   # per trial: data-parallel workers, CPUs and GPUs of each
```
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, ValidationError, model_validator

from ..errors import Problem, SpecError
from ..spec._base import FieldError, PositiveInt, SpecModel
from ..spec.io import problems_from_validation, read_yaml
from ..train.config import MAX_SEED
from .space import IntRange, Space, SpaceSpec, load_space

MAX_GRID_POINTS = 100_000
"""Most points a grid may have (the grid sampler lists them all)."""


class SamplerSpec(SpecModel):
    kind: Literal["grid", "random", "tpe", "nsga2"] = "tpe"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    startup_trials: PositiveInt = Field(5, description="Random trials before TPE models the space.")
    per_variant: PositiveInt | None = Field(None, le=100_000, description=(
        "random: train this many points of each variant (each value of the base or layout choice), the other "
        "choices drawn independently for each; the budget is per_variant times the variants."))

    @model_validator(mode="after")
    def _balanced_random(self) -> "SamplerSpec":
        if self.per_variant is not None and self.kind != "random":
            raise FieldError("per_variant", f"balanced samples per variant need kind: random (not {self.kind})")
        return self


class PrunerSpec(SpecModel):
    kind: Literal["none", "median", "asha"] = "none"
    warmup_epochs: int = Field(1, ge=0, description="Epochs before a trial may be pruned.")
    reduction_factor: int = Field(3, ge=2, description="ASHA: keep 1/factor of trials at each rung.")


MAX_WORKERS = 1024  # data-parallel workers per trial


class ResourcesSpec(SpecModel):
    """What one trial takes: ``workers`` data-parallel processes (DistributedDataParallel; one
    is a plain trial), each with ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs. ``cpu``
    and ``gpu`` are short for the per-worker fields. A fractional GPU packs several one-worker
    trials onto a GPU (ray backend); data-parallel workers take whole GPUs."""

    workers: int = Field(1, ge=1, le=MAX_WORKERS, strict=True, description=(
        "Data-parallel processes per trial: Ray Train's TorchTrainer on the ray backend, torchrun on the "
        "optuna backend."))
    cpus_per_worker: float = Field(1.0, gt=0, le=4096, allow_inf_nan=False)
    gpus_per_worker: float = Field(0.0, ge=0, le=64, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _short_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for short, full in (("cpu", "cpus_per_worker"), ("gpu", "gpus_per_worker")):
            if short in data:
                if full in data:
                    raise FieldError(short, f"give {short} or {full} (the same setting), not both")
                data[full] = data.pop(short)
        return data

    @model_validator(mode="after")
    def _whole_gpus(self) -> "ResourcesSpec":
        if self.workers > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise FieldError("gpus_per_worker", f"{self.gpus_per_worker:g}: data-parallel workers take whole GPUs; "
                                                "a fractional GPU packs one-worker trials (workers: 1)")
        return self

    @property
    def trial_cpus(self) -> float:
        return self.workers * self.cpus_per_worker

    @property
    def trial_gpus(self) -> float:
        return self.workers * self.gpus_per_worker


class StudySpec(SpecModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    space: Annotated[Union[Annotated[SpaceSpec, Tag("tag:inline")], Annotated[str, Tag("tag:file")]],
                     Discriminator(lambda v: "tag:file" if isinstance(v, str) else "tag:inline")]
    train: dict[str, Any] = Field(default_factory=dict)
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    trials: PositiveInt | None = None
    objectives: list[Literal["eval_error", "flops", "params"]] = ["eval_error"]
    backend: Literal["optuna", "ray"] = "optuna"
    resources: ResourcesSpec = ResourcesSpec()
    scales: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        "Named variants of the study (e.g. tiny, cpu, full), each a mapping deep-merged into the study by "
        "`archspace search STUDY --scale NAME`."))
    analyses: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "StudySpec":
        if self.sampler.kind == "nsga2" and len(self.objectives) < 2:
            raise FieldError("objectives", "nsga2 is multi-objective: give two objectives, e.g. [eval_error, flops]")
        if self.sampler.kind != "nsga2" and len(self.objectives) > 1:
            raise FieldError("objectives", f"the {self.sampler.kind} sampler optimizes one objective")
        if len(self.objectives) > 1 and self.pruner.kind != "none":
            raise FieldError("pruner", "pruning needs a single objective")
        if self.sampler.kind != "grid" and self.trials is None and self.sampler.per_variant is None:
            raise FieldError("trials", "required (only the grid sampler can count its own trials)")
        return self


class Study:
    """A loaded study: its spec, its resolved space and its folder (for relative paths)."""

    def __init__(self, spec: StudySpec, space: Space, folder: Path, scale: str | None = None):
        self.spec = spec
        self.space = space
        self.folder = folder
        self.scale = scale  # the scale it was loaded at (its name has it as a suffix)

    @property
    def name(self) -> str:
        return self.spec.name

    def grid(self) -> dict[str, list[Any]]:
        """The grid sampler's search space: every choice must be a list or an int range."""
        grid, problems = {}, []
        for path, choice in self.space.spec.choices.items():
            if isinstance(choice, list):
                grid[path] = choice
            elif isinstance(choice, IntRange):
                count = (choice.int[1] - choice.int[0]) // choice.step + 1
                if count > MAX_GRID_POINTS:
                    problems.append(Problem(f"space.choices.{path}", f"an int range of {count:,} values is more "
                                                                     f"than a grid may hold ({MAX_GRID_POINTS:,})"))
                    continue
                grid[path] = list(range(choice.int[0], choice.int[1] + 1, choice.step))
            else:
                problems.append(Problem(f"space.choices.{path}", "the grid sampler needs a list of values "
                                                                 "or an int range here"))
        if problems:
            raise SpecError(problems)
        if math.prod(len(v) for v in grid.values()) > MAX_GRID_POINTS:
            raise SpecError.single("space.choices", f"the grid has {math.prod(len(v) for v in grid.values()):,} "
                                                    f"points, more than {MAX_GRID_POINTS:,}")
        return grid

    @property
    def variant_choice(self) -> str | None:
        """The choice whose values are the variants a study compares (``base``, else ``layout``)."""
        from .variants import DESIGN_CHOICES

        return next((c for c in reversed(DESIGN_CHOICES) if isinstance(self.space.spec.choices.get(c), list)), None)

    def check_recipe(self) -> None:
        """The fixed recipe's dataset can be used (unless a choice sets ``train.data`` or
        ``train.data_dir``), and holds a full batch where its size is known without loading it:
        checked before a dry run or a run, before anything is written.

        Raises:
            SpecError: on ``train.data`` / ``train.data_dir`` / ``train.batch_size``.
        """
        from ..train.config import check_batch, load_config

        if {"train.data", "train.data_dir"} & set(self.space.spec.choices):
            return
        config = load_config(**self.spec.train)
        info = self.space.data_info(config)
        if info.train_images is not None and "train.batch_size" not in self.space.spec.choices:
            check_batch(config.batch_size, info.train_images, info.name)

    def n_trials(self, override: int | None = None) -> int:
        if override is not None:
            return override
        per = self.spec.sampler.per_variant
        if per is not None:
            return per * len(self.space.spec.choices[self.variant_choice])
        if self.spec.trials is not None:
            return self.spec.trials
        n = 1
        for values in self.grid().values():
            n *= len(values)
        return n


def resolve_study(source: str | Path) -> Path:
    """A study file, or the file of a study shipped with archspace by name (``quickstart``).

    Raises:
        SpecError: neither a file nor a shipped study.
    """
    from .._resources import resource_dir

    path = Path(source)
    if path.is_file():
        return path
    shipped = resource_dir("studies")
    text = str(source)
    if shipped is not None and path.suffix == "" and "/" not in text and os.sep not in text:
        candidate = shipped / f"{text}.yaml"
        if candidate.is_file():
            return candidate
    raise SpecError.single("", f"no study file {path}")


def load_study(source: str | Path | dict[str, Any], overrides: dict[str, Any] | None = None,
               scale: str | None = None) -> Study:
    """Read and check a study file (every problem reported with its path).

    Args:
        scale: a key of the study's ``scales``: its mapping is deep-merged into the study,
            and the study's name gets the scale as a suffix (``name-scale``) so that each
            scale has its own store.

    Raises:
        SpecError: bad study, space, recipe or paths.
    """
    from ..spec.io import apply_overrides
    from ..spec.paths import parse_path
    from ..train.config import load_config

    if isinstance(source, dict):
        data, folder = dict(source), Path.cwd()
    else:
        path = resolve_study(source)
        data, folder = read_yaml(path), path.resolve().parent
    if scale is not None:
        from ..spec.io import deep_merge

        scales = data.get("scales") or {}
        if not isinstance(scales, dict) or not isinstance(scales.get(scale, {}), dict):
            raise SpecError.single("scales", "must map each scale name to a mapping merged into the study")
        if scale not in scales:
            raise SpecError.single("--scale", f"unknown scale {scale!r} (this study has: "
                                              f"{', '.join(scales) or 'none'})")
        data = deep_merge(data, scales[scale])
        data["name"] = f"{data.get('name')}-{scale}"
    if overrides:
        data = apply_overrides(data, [(parse_path(k), v) for k, v in overrides.items()])
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(problems_from_validation(exc)) from None
    space_data = spec.space
    if isinstance(space_data, str):
        space_path = folder / space_data
        if not space_path.is_file():
            raise SpecError.single("space", f"no space file {space_path}")
        space_data = read_yaml(space_path)
        space = load_space(space_data, spec.train, space_path.parent)
    else:
        space = load_space(space_data.model_dump(), spec.train, folder)
    load_config(**spec.train)  # the fixed recipe must be valid on its own
    study = Study(spec, space, folder, scale)
    per = spec.sampler.per_variant
    if per is not None:
        if study.variant_choice is None:
            raise SpecError.single("sampler.per_variant", "needs variants to balance: a base or layout choice "
                                                          "that lists its values")
        variants = len(space.spec.choices[study.variant_choice])
        if spec.trials is not None and spec.trials != per * variants:
            raise SpecError.single("trials", f"{spec.trials} is not per_variant x variants = {per} x {variants} = "
                                             f"{per * variants} (leave trials out)")
    return study
