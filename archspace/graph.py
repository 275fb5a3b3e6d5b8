"""Lower a spec to a chain of parts (a networkx graph on demand) with a shape and a cost on
every node, and check it.

Nodes are ``input``, ``stem``, ``stages[i]`` and ``head``, linked in order; each carries
its spec ``path``, ``kind``, input and output :class:`FeatureShape` and analytic
:class:`Cost`. Checks collect every problem (with its spec path) before any module or
tensor exists.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from pathlib import Path


from . import cost as C
from .blocks import STAGES, STEMS, FeatureShape, HeadFamily as Head
from .errors import Problem, SpecError
from .spec import ClassAttentionStage, NetworkSpec, PatchifyStem

if TYPE_CHECKING:
    import networkx as nx

BYTES_PER_PARAM = 4
BYTES_PER_ACT = 4
BUILD_PEAK = 2.0
"""Peak memory of building a module, in multiples of its weights (initialisers hold copies)."""


@dataclass(frozen=True, slots=True)
class Lowered:
    """A checked network: its spec (stem width resolved), its parts, and warnings.

    ``nodes`` holds one attribute mapping per part (``input``, ``stem``, ``stages[i]``,
    ``head``, in order; each node's name is its ``path``); :attr:`graph` is the same as a
    networkx graph, built on first use.
    """

    spec: NetworkSpec
    nodes: tuple[dict, ...]
    warnings: list[Problem]
    _graph: object = field(default=None, init=False, repr=False, compare=False)

    @property
    def graph(self) -> nx.DiGraph:
        """The parts as a chain ``input -> stem -> stages[0] -> … -> head`` with their attributes."""
        graph = self._graph
        if graph is None:
            import networkx as nx  # only here: the analytic path (lower, cost) never needs it

            graph = nx.DiGraph()
            prev = None
            for data in self.nodes:
                graph.add_node(data["path"], **data)
                if prev is not None:
                    graph.add_edge(prev, data["path"])
                prev = data["path"]
            object.__setattr__(self, "_graph", graph)
        return graph

    def node(self, path: str) -> dict:
        """One part's attributes (``stem``, ``stages[2]``, ...): what :attr:`graph` holds for it,
        without building the graph (networkx's import alone takes ~0.3 s)."""
        for data in self.nodes:
            if data["path"] == path:
                return data
        raise KeyError(path)

    @property
    def stage_nodes(self) -> list[str]:
        return [f"stages[{i}]" for i in range(len(self.spec.stages))]

    def cost(self) -> C.Cost:
        return C.total([data["cost"] for data in self.nodes])


def resolve_defaults(spec: NetworkSpec) -> NetworkSpec:
    """Fill values that depend on other parts of the spec (the patchify stem's width)."""
    if isinstance(spec.stem, PatchifyStem) and spec.stem.width is None:
        return _updated(spec, stem=_updated(spec.stem, width=spec.stages[0].width))
    return spec


_set = object.__setattr__


def _updated(model, **changes):
    """``model.model_copy(update=changes)`` for a spec model (frozen, ``extra="forbid"``, no private
    attributes), without pydantic's generic copy: what that copy sets, set directly."""
    cls = type(model)
    new = cls.__new__(cls)
    _set(new, "__dict__", {**model.__dict__, **changes})
    _set(new, "__pydantic_extra__", None)
    _set(new, "__pydantic_fields_set__", model.__pydantic_fields_set__ | changes.keys())
    _set(new, "__pydantic_private__", None)
    return new


def structural_problems(spec: NetworkSpec) -> list[Problem]:
    """Problems that do not depend on shapes."""
    problems = []
    last = len(spec.stages) - 1
    for i, stage in enumerate(spec.stages):
        if isinstance(stage, ClassAttentionStage) and i != last:
            problems.append(Problem(f"stages[{i}].block", "class_attention must be the last stage"))
    return problems


# Lowering a part (stem or stage) is a pure function of its spec's field values, the family
# and the input shape, so each result is kept per process: a search or a width match costs
# the same stage at the same input again and again. Bounded: cleared when full.
_PARTS: dict[tuple, tuple] = {}
PART_CACHE_SIZE = 1 << 16


def clear_caches() -> None:
    """Forget every lowered part kept by :func:`lower` (for benchmarks of the uncached path)."""
    _PARTS.clear()


def _values(model: object) -> tuple:
    """A spec model's type and field values, as a key (hashable unless a field is a list)."""
    return (type(model), *model.__dict__.values())


def _hashable(model: object) -> tuple:
    """:func:`_values` with lists made tuples (a conv stem's channels), for a key that hashes."""
    return (type(model), *[tuple(v) if type(v) is list else v for v in model.__dict__.values()])


def _stem_part(family, stem, shape: FeatureShape) -> tuple[FeatureShape, C.Cost]:
    key = (family, _values(stem), shape)
    try:
        part = _PARTS.get(key)
    except TypeError:  # a list field: only then rebuild the key
        key = (family, _hashable(stem), shape)
        part = _PARTS.get(key)
    if part is None:
        part = family.part(stem, shape, "stem", 0)[1:]
        _remember(key, part)
    return part


def _stage_part(family, stage, shape: FeatureShape, i: int) -> tuple[tuple[Problem, ...], FeatureShape, C.Cost]:
    """A stage's check problems (``stages[i]`` paths), output shape and cost."""
    key = (family, i, _values(stage), shape)
    try:
        part = _PARTS.get(key)
    except TypeError:  # a list field: only then rebuild the key
        key = (family, i, _hashable(stage), shape)
        part = _PARTS.get(key)
    if part is None:
        path = f"stages[{i}]"
        found, out, cost = family.part(stage, shape, path, i)
        if shape.prefix and not family.takes_class_token:
            found = (Problem(f"{path}.block", f"a {stage.block} stage cannot follow a class token"), *found)
        part = (tuple(found), out, cost)
        _remember(key, part)
    return part


def _remember(key: tuple, part: tuple) -> None:
    if len(_PARTS) >= PART_CACHE_SIZE:
        _PARTS.clear()
    _PARTS[key] = part


def lower(spec: NetworkSpec) -> Lowered:
    """Lower and check a spec.

    Raises:
        SpecError: every error found (warnings are returned on the result).
    """
    spec = resolve_defaults(spec)
    problems = structural_problems(spec)
    stem, stages = spec.stem, spec.stages
    stem_family = STEMS[stem.kind]
    families = [STAGES[stage.block] for stage in stages]
    total_stride = stem_family.stride(stem)
    for family, stage in zip(families, stages):
        total_stride *= family.stride(stage)
    size = spec.input.size
    if size % total_stride or size < total_stride:
        problems.append(Problem(
            "input.size",
            f"{size} is not divisible by the network's total stride {total_stride}"
            + (" (no tokens would remain)" if size < total_stride else ""),
        ))
        raise SpecError(problems)

    shape = FeatureShape(spec.input.channels, size, size)
    out, cost = _stem_part(stem_family, stem, shape)
    nodes = [
        {"path": "input", "kind": "input", "shape_in": shape, "shape": shape, "cost": C.ZERO},
        {"path": "stem", "kind": stem.kind, "shape_in": shape, "shape": out, "cost": cost},
    ]
    shape = out
    for i, (family, stage) in enumerate(zip(families, stages)):
        found, out, cost = _stage_part(family, stage, shape, i)
        if found:
            problems.extend(found)
        nodes.append({"path": f"stages[{i}]", "kind": stage.block, "shape_in": shape, "shape": out, "cost": cost,
                      "depth": stage.depth, "width": stage.width})
        shape = out
    head = spec.head
    if head.pool == "cls" and not shape.prefix:
        problems.append(Problem("head.pool", "cls pooling needs a class token, but no stage adds one "
                                             "(set class_token: true on a transformer stage, or add class_attention)"))
    nodes.append({"path": "head", "kind": f"head:{head.pool}", "shape_in": shape,
                  "shape": FeatureShape(spec.num_classes, 1, 1),
                  "cost": Head.cost(head, shape.channels, spec.num_classes)})
    if problems:
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            raise SpecError(errors)
        warnings = [p for p in problems if p.severity == "warning"]
    else:
        warnings = []
    return Lowered(spec, tuple(nodes), warnings)


def available_memory() -> int:
    """Bytes this process can still allocate: the least of the memory the kernel reports as
    available, what the cgroup's limit leaves, and what the address-space limit
    (``RLIMIT_AS``) leaves beside what the process already maps."""
    found = []
    meminfo = _numbers(Path("/proc/meminfo"), 1024)
    if "MemAvailable" in meminfo:
        found.append(meminfo["MemAvailable"])
    limit, current = _read_int(Path("/sys/fs/cgroup/memory.max")), _read_int(Path("/sys/fs/cgroup/memory.current"))
    if limit is not None and current is not None:
        found.append(max(0, limit - current))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        mapped = _numbers(Path("/proc/self/status"), 1024).get("VmSize", 0)
        found.append(max(0, soft - mapped))
    if not found:
        try:
            found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            found.append(1 << 40)
    return min(found)


def _numbers(path: Path, unit: int) -> dict[str, int]:
    """``Key: value kB`` lines of a /proc file, in bytes."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (unit if parts[1:] == ["kB"] else 1)
    return out


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def memory_needed(lowered: Lowered, batch: int = 1) -> tuple[int, int]:
    """Bytes of the weights, and the peak bytes of building the module (initialisation holds a
    copy of the weights beside them) and running one forward of ``batch`` images at the spec's
    size (every counted activation held at once: an upper bound)."""
    cost = lowered.cost()
    weights = cost.params * BYTES_PER_PARAM
    return weights, round(weights * BUILD_PEAK) + batch * cost.acts * BYTES_PER_ACT


def check_memory(lowered: Lowered, memory: int | None = None, batch: int = 1) -> None:
    """Refuse a network whose module would not fit in the memory available now: the weights,
    their copies while initialised, and a forward of ``batch`` images (see :func:`memory_needed`).
    Nothing is allocated; ``memory`` overrides the available bytes.

    Raises:
        SpecError: with the estimated sizes.
    """
    memory = available_memory() if memory is None else memory
    weights, peak = memory_needed(lowered, batch)
    if peak > memory:
        size = lowered.spec.input.size
        raise SpecError.single("", f"weights alone need {weights / 2**30:.1f} GiB ({lowered.cost().params:,} float32 "
                                   f"params) and building the network with a forward of {batch} {size}×{size} "
                                   f"image{'s' if batch > 1 else ''} peaks at about {peak / 2**30:.1f} GiB, more "
                                   f"than the {memory / 2**30:.1f} GiB of memory available here")
