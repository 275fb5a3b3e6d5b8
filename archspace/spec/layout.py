"""Layout shorthand: ``layout: C-C-T-T`` sets each stage's block kind, keeping its size.

Letters come from the stage models (``letter`` class variable), so a new block family
adds its own letter by declaring one. Named layouts rewrite the whole network:
Applying a layout twice changes nothing. ``VIT_REL`` is CoAtNet's ViT-stem variant — a 16×16 patchify stem followed by one
relative-attention transformer stage as deep as all stages together, as wide as the
deepest stage.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from .network import STAGE_MODELS
from .stages import TransformerStage

LETTERS: dict[str, type] = {m.letter: m for m in STAGE_MODELS if m.letter}


def _vit_rel(data: dict[str, Any]) -> dict[str, Any]:
    stages = data.get("stages") or []
    stem = data.get("stem")
    if (len(stages) == 1 and isinstance(stages[0], dict) and stages[0].get("block") == "transformer"
            and isinstance(stem, dict) and stem.get("kind") == "patchify"):
        return data  # already in VIT_REL form
    if not all(isinstance(s, dict) and isinstance(s.get("depth"), int) for s in stages) or not stages:
        raise ValueError("VIT_REL needs stages with integer depths")
    deepest = max(stages, key=lambda s: s["depth"])
    stage: dict[str, Any] = {
        "block": "transformer",
        "attention": "relative",
        "depth": sum(s["depth"] for s in stages),
        "width": deepest.get("width"),
        "stride": 1,
    }
    if deepest.get("block") == "transformer":
        for key in ("heads", "head_size", "mlp_ratio"):
            if key in deepest:
                stage[key] = deepest[key]
    out = dict(data)
    out["stem"] = {"kind": "patchify", "patch": 16}
    out["stages"] = [stage]
    return out


NAMED: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"VIT_REL": _vit_rel}


def layout_letters(text: str, n_stages: int) -> list[str | None]:
    """The letter of each stage in ``text`` (``None`` for ``-``-less named layouts' free stages).

    Raises:
        ValueError: unknown letter or wrong number of stages.
    """
    if text in NAMED:
        return [TransformerStage.letter] * n_stages
    letters = text.split("-")
    unknown = [x for x in letters if x not in LETTERS]
    if unknown:
        known = ", ".join(sorted(LETTERS)) + ", " + ", ".join(NAMED)
        raise ValueError(f"unknown layout letter(s) {', '.join(map(repr, unknown))} in {text!r} (known: {known})")
    if len(letters) != n_stages:
        raise ValueError(f"{text!r} names {len(letters)} stages but the spec has {n_stages}")
    return letters


def apply_layout(data: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of raw spec data with ``layout`` applied to its stages.

    Raises:
        ValueError: the layout cannot be applied (message without the path).
    """
    text = data.get("layout")
    if text is None:
        return data
    if not isinstance(text, str):
        raise ValueError(f"must be a string like C-C-T-T, got {text!r}")
    if text in NAMED:
        return NAMED[text](data)
    stages = data.get("stages")
    if not isinstance(stages, list):
        raise ValueError("needs a list of stages to apply to")
    letters = layout_letters(text, len(stages))
    new_stages = []
    for letter, stage in zip(letters, stages):
        model = LETTERS[letter]
        kind = model.model_fields["block"].default
        if not isinstance(stage, dict) or stage.get("block") == kind:
            new_stages.append(copy.deepcopy(stage))
            continue
        kept = {k: stage[k] for k in ("depth", "width", "stride") if k in stage}
        new_stages.append({"block": kind, **kept, **model.layout_defaults})
    out = dict(data)
    out["stages"] = new_stages
    return out
