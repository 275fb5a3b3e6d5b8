"""Analytic complexity of a spec: params, flops (multiply-adds) and acts, per part and total.

Nothing is built: the numbers come from the lowered parts, so thousands of specs can be
costed per second.
"""

from __future__ import annotations

from typing import Any

from .graph import Lowered, lower
from .spec import NetworkSpec


def complexity(spec_or_lowered: NetworkSpec | Lowered) -> dict[str, Any]:
    """Totals and a row per part (stem, each stage, head).

    Returns:
        ``{"params", "flops", "acts", "input", "parts": [...], "stages": [...]}`` with plain
        integers; each stage row has block, depth, width, stride, output shape and its cost.

    Raises:
        SpecError: if the spec does not pass the graph checks.
    """
    lowered = spec_or_lowered if isinstance(spec_or_lowered, Lowered) else lower(spec_or_lowered)
    parts = []
    for data in lowered.nodes:
        if data["path"] == "input":
            continue
        row = {
            "part": data["path"],
            "kind": data["kind"],
            "output": data["shape"].as_list(),
            "class_tokens": data["shape"].prefix,
            **data["cost"].as_dict(),
        }
        if "depth" in data:
            row.update(depth=data["depth"], width=data["width"])
        parts.append(row)
    total = lowered.cost()
    spec = lowered.spec
    return {
        "name": spec.name,
        "input": [spec.input.channels, spec.input.size, spec.input.size],
        **total.as_dict(),
        "parts": parts,
        "stages": [
            {"block": p["kind"], "depth": p["depth"], "width": p["width"], "stride": s.stride,
             "output": p["output"], "params": p["params"], "flops": p["flops"], "acts": p["acts"]}
            for p, s in zip((p for p in parts if p["part"].startswith("stages")), spec.stages)
        ],
    }
