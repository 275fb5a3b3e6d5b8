"""Compile a checked spec into a PyTorch module."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .blocks import STAGES, STEMS
from .blocks.modules import Head
from .layers.modules import Linear
from .graph import Lowered, check_memory, lower
from .spec import NetworkSpec, load_spec


def drop_path_rates(spec: NetworkSpec) -> list[list[float]]:
    """Per-stage lists of per-block drop-path rates (linear over all blocks, or uniform)."""
    n = sum(s.depth for s in spec.stages)
    rate = spec.drop_path.rate
    if spec.drop_path.schedule == "uniform":
        flat = [rate] * n
    else:
        flat = [rate * i / (n - 1) if n > 1 else rate for i in range(n)]
    out, start = [], 0
    for s in spec.stages:
        out.append(flat[start:start + s.depth])
        start += s.depth
    return out


class Network(nn.Module):
    """A compiled network: ``stem`` → ``stages`` → ``head``, with timm's model interface.

    Between stages flows an (N, C, H, W) map and, once a stage inserts one, a class token
    (N, 1, C). ``feature_info`` describes each stage's output (channels, reduction,
    module name), as timm's backbones do.

    * :meth:`forward_features` gives the final features before the head: the last stage's
      (N, C, H, W) map, or for a network with class tokens its (N, T + H·W, C) tokens,
      class tokens first (timm's ViT layout);
    * :meth:`forward_head` turns those into logits (or pre-logits);
    * :meth:`forward_intermediates` gives every stage's map;
    * :meth:`reset_classifier` swaps the classifier for one with another number of classes.
    """

    def __init__(self, lowered: Lowered):
        super().__init__()
        spec = lowered.spec
        self.spec = spec
        self.stem = STEMS[spec.stem.kind].build(spec.stem, lowered.node("stem")["shape_in"], [])
        rates = drop_path_rates(spec)
        self.stages = nn.ModuleList(
            STAGES[stage.block].build(stage, lowered.node(f"stages[{i}]")["shape_in"], rates[i])
            for i, stage in enumerate(spec.stages)
        )
        last = lowered.node(f"stages[{len(spec.stages) - 1}]")["shape"]
        self.head = Head(spec.head, last.channels, spec.num_classes)
        self.num_classes = spec.num_classes
        self.num_features = last.channels
        self.head_hidden_size = spec.head.hidden or last.channels
        self.num_prefix_tokens = last.prefix
        # a class-token head reads the class tokens alone: the last block may skip the rest (see forward)
        self.class_only = (spec.head.pool == "cls" and last.prefix > 0
                           and getattr(self.stages[-1], "supports_class_only", False))
        self.feature_info = [
            {"num_chs": lowered.node(n)["shape"].channels,
             "reduction": spec.input.size // lowered.node(n)["shape"].height,
             "module": f"stages.{i}"}
            for i, n in enumerate(lowered.stage_nodes)
        ]
        self.apply(_init_weights)

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              intermediates_only: bool = False):
        """The (N, C, H, W) map of the stages picked by ``indices`` (all by default; an int
        ``n``: the last ``n``), and unless ``intermediates_only`` the final features too:
        ``(final, [maps])``."""
        picked = _pick(indices, len(self.stages))
        x, cls, maps = self.stem(x), None, []
        for i, stage in enumerate(self.stages):
            x, cls = stage(x, cls)
            if i in picked:
                maps.append(x)
        return maps if intermediates_only else (self._features(x, cls), maps)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final features before the head: the last map, or tokens with class tokens first."""
        return self._features(*self._run(x))

    def _run(self, x: torch.Tensor, class_only: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The last stage's map and class token (with ``class_only``, the class token alone)."""
        x, cls = self.stem(x), None
        for stage in self.stages[:-1]:
            x, cls = stage(x, cls)
        return self.stages[-1](x, cls, class_only=True) if class_only else self.stages[-1](x, cls)

    def _features(self, x: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        if cls is None:
            return x
        return torch.cat([cls, x.flatten(2).transpose(1, 2)], dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits (or the pre-logits vector) from :meth:`forward_features`' output."""
        if x.ndim == 3:  # tokens, class tokens first
            p = self.num_prefix_tokens
            cls, x = x[:, :p], x[:, p:].transpose(1, 2).unsqueeze(-1)  # the patches as an (N, C, L, 1) map
        else:
            cls = None
        return self.head.pre_logits(x, cls) if pre_logits else self.head(x, cls)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A freshly initialised classifier for ``num_classes`` (0: none, the head gives
        pre-logits); the spec follows when ``num_classes`` is positive."""
        self.head.fc = Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        self.head.fc.apply(_init_weights)
        self.num_classes = num_classes
        if num_classes > 0:
            self.spec = self.spec.model_copy(update={"num_classes": num_classes})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits. While training (train mode, gradients on), a network whose head reads only
        the class tokens has its last transformer block compute those alone (the other tokens'
        queries, projections and MLP, which nothing reads: DeiT-S, 1/12 of its blocks' work):
        the same logits and gradients. Otherwise (evaluation, measured flops) every token runs,
        as the analytic cost counts it."""
        return self.head(*self._run(x, class_only=self.class_only and self.training and torch.is_grad_enabled()))


class FeatureNetwork(nn.Module):
    """The stem and stages of a network, giving the maps of the stages ``out_indices``
    picks (timm's ``features_only`` model); ``feature_info`` lists those stages."""

    def __init__(self, network: Network, out_indices: int | Sequence[int] | None = None):
        super().__init__()
        self.spec = network.spec
        self.stem = network.stem
        self.stages = network.stages
        self.out_indices = sorted(_pick(out_indices, len(network.stages)))
        self.feature_info = [network.feature_info[i] for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, cls, maps = self.stem(x), None, []
        for i, stage in enumerate(self.stages):
            x, cls = stage(x, cls)
            if i in self.out_indices:
                maps.append(x)
        return maps


def _pick(indices: int | Sequence[int] | None, n: int) -> set[int]:
    """Stage indices: all, the last ``indices`` (an int), or the listed ones (negative from the end)."""
    if indices is None:
        return set(range(n))
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(f"indices={indices}: the network has {n} stages")
        return set(range(n - indices, n))
    picked = set()
    for i in indices:
        if not -n <= i < n:
            raise ValueError(f"stage index {i} out of range: the network has {n} stages")
        picked.add(i % n)
    return picked


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def compile_network(spec: NetworkSpec | Lowered | str | os.PathLike[str] | Mapping[str, Any],
                    check_fits: bool = True) -> Network:
    """Check a spec and build its module.

    Args:
        spec: a validated spec, an already lowered one, a preset name or spec file, or a
            mapping of raw spec data.
        check_fits: refuse specs whose module would not fit in the memory available (see graph.check_memory).

    Raises:
        SpecError: unknown preset, spec or graph-check problems, or weights too large for memory.
    """
    if isinstance(spec, (str, os.PathLike, Mapping)):
        spec = load_spec(spec)
    elif not isinstance(spec, (NetworkSpec, Lowered)):
        raise TypeError(f"compile_network takes a spec, a preset name, a path or a mapping, "
                        f"not {type(spec).__name__}")
    lowered = spec if isinstance(spec, Lowered) else lower(spec)
    if check_fits:
        check_memory(lowered)
    return Network(lowered)
