"""timm-shaped entry points: :func:`create_model` and :func:`list_models`."""

from __future__ import annotations

import fnmatch
import logging
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import yaml

from .errors import SpecError
from .spec import NetworkSpec, dump_spec, load_spec, parse_path, preset_index

if TYPE_CHECKING:
    from .compile import FeatureNetwork, Network

log = logging.getLogger(__name__)

# timm's keyword names for settings the spec language spells otherwise
ALIASES = {
    "drop_path_rate": ("drop_path", "rate"),
    "drop_rate": ("head", "dropout"),
    "in_chans": ("input", "channels"),
    "img_size": ("input", "size"),
}


def list_models(pattern: str = "*") -> list[str]:
    """The preset names matching a shell-style ``pattern`` (``"coatnet-*"``), sorted."""
    return sorted(name for name in preset_index() if fnmatch.fnmatchcase(name, pattern))


def create_model(
    name_or_spec: str | os.PathLike[str] | Mapping[str, Any] | NetworkSpec,
    *,
    num_classes: int | None = None,
    size: int | None = None,
    weights: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    weights_from: str = "timm",
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    **overrides: Any,
) -> Network | FeatureNetwork:
    """Build a network the way ``timm.create_model`` does.

    Args:
        name_or_spec: a preset name (see :func:`list_models`), a spec file, a mapping of
            raw spec data, or a :class:`~archspace.NetworkSpec`.
        num_classes: classes of the classifier (default: the spec's).
        size: input resolution (default: the spec's ``input.size``).
        weights: a checkpoint file (or a mapping of tensors) to import; a classifier of
            another size is re-initialised (see :mod:`archspace.weights`).
        weights_from: the naming the checkpoint follows (``timm``).
        features_only: return a :class:`~archspace.compile.FeatureNetwork` giving the map of
            every stage (or of ``out_indices``) instead of logits.
        out_indices: with ``features_only``, the stages whose maps are returned (an int
            ``n``: the last ``n``).
        **overrides: spec settings: a spec path (``**{"stages[2].depth": 6}``), a top-level
            field (``head={"dropout": 0.1}`` sets that key only), or one of timm's names
            ``drop_path_rate``, ``drop_rate``, ``in_chans``, ``img_size``.

    Raises:
        SpecError: unknown preset, bad override, invalid spec, or a checkpoint that does
            not fit (one problem per line).
    """
    source = yaml.safe_load(dump_spec(name_or_spec)) if isinstance(name_or_spec, NetworkSpec) else name_or_spec
    pairs = []
    for key, value in overrides.items():
        pairs.extend(_leaves(_path(key), value))
    if num_classes is not None:
        pairs.append((("num_classes",), num_classes))
    from .compile import FeatureNetwork, compile_network

    model = compile_network(load_spec(source, pairs, size))
    if weights is not None:
        from .weights import import_weights

        report = import_weights(model, weights, source=weights_from)
        for note in report.notes:
            log.info("%s", note)
    return FeatureNetwork(model, out_indices) if features_only else model


def _path(key: str) -> tuple:
    if key in ALIASES:
        return ALIASES[key]
    try:
        return parse_path(key)
    except ValueError as exc:
        raise SpecError.single(key, str(exc)) from None


def _leaves(path: tuple, value: Any) -> list[tuple[tuple, Any]]:
    """A mapping value sets each of its keys (recursively); anything else sets the path."""
    if isinstance(value, Mapping) and value:
        return [pair for k, v in value.items() for pair in _leaves((*path, k), v)]
    return [(path, value)]
