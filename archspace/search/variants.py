"""The variants a study compares, and the check that they are different networks.

A study that compares the values of a design choice (``base``: ViT_P against ViT_C, the steps
of a roadmap; ``layout``: C-C-T-T against C-T-T-T) claims each value is its own network. A
scale-down can silently break that claim: with every stage at depth 1, the roadmap's step
"stage ratio 3-3-9-3" *is* step 00. :func:`check_variants` resolves each value with every
other choice held at its first option and refuses values that give the same network and
recipe (the trial key, which leaves the name out).
"""

from __future__ import annotations

from typing import Any

from ..errors import Problem, SpecError
from .space import FixedSuggester

DESIGN_CHOICES = ("layout", "base")  # choices whose values are variants a report compares


def variant_keys(study, choice: str) -> dict[Any, str]:
    """The trial key of each value of ``choice``, the other choices at their first option.
    Where the recipe's dataset cannot be described here (a folder on another machine), the
    networks are compared as specified, not fitted to its class count. Values that cannot be
    resolved on their own are left out (the other checks say why)."""
    keys: dict[Any, str] = {}
    for value in study.space.spec.choices.get(choice) or []:
        point = None
        for fit_data in (True, False):
            try:
                point = study.space.resolve(FixedSuggester({choice: value}), fit_data=fit_data)
                break
            except SpecError:
                continue
        if point is not None and point.rejected is None:
            keys[value] = point.key
    return keys


def check_variants(study) -> None:
    """Refuse a study whose differently named variants resolve to one network and recipe.

    Raises:
        SpecError: one problem per collapsed group, at ``space.choices.<choice>``, naming the
            variants and the scale.
    """
    problems = []
    where = f" at scale {study.scale}" if getattr(study, "scale", None) else ""
    for choice in DESIGN_CHOICES:
        if not isinstance(study.space.spec.choices.get(choice), list):
            continue
        groups: dict[str, list[Any]] = {}
        for value, key in variant_keys(study, choice).items():
            groups.setdefault(key, []).append(value)
        for key, values in groups.items():
            if len(values) > 1:
                names = " and ".join(str(v) for v in values)
                problems.append(Problem(f"space.choices.{choice}", (
                    f"{names} resolve to the same network and recipe{where} (trial key {key}): the study would "
                    f"train one network under {len(values)} names")))
    if problems:
        raise SpecError(problems)


__all__ = ["DESIGN_CHOICES", "check_variants", "variant_keys"]
