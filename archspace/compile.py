"""Compile a checked spec into a PyTorch module."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import STAGES, STEMS, Head
from .graph import Lowered, check_memory, lower
from .spec import NetworkSpec


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
    """A compiled network: ``stem`` → ``stages`` → ``head``.

    Between stages flows an (N, C, H, W) map and, once a stage inserts one, a class token
    (N, 1, C). ``feature_info`` describes each stage's output (channels, reduction,
    module name), as timm's backbones do.
    """

    def __init__(self, lowered: Lowered):
        super().__init__()
        spec = lowered.spec
        graph = lowered.graph
        self.spec = spec
        self.stem = STEMS[spec.stem.kind].build(spec.stem, graph.nodes["stem"]["shape_in"], [])
        rates = drop_path_rates(spec)
        self.stages = nn.ModuleList(
            STAGES[stage.block].build(stage, graph.nodes[f"stages[{i}]"]["shape_in"], rates[i])
            for i, stage in enumerate(spec.stages)
        )
        last = graph.nodes[f"stages[{len(spec.stages) - 1}]"]["shape"]
        self.head = Head(spec.head, last.channels, spec.num_classes)
        self.feature_info = [
            {"num_chs": graph.nodes[n]["shape"].channels,
             "reduction": spec.input.size // graph.nodes[n]["shape"].height,
             "module": f"stages.{i}"}
            for i, n in enumerate(lowered.stage_nodes)
        ]
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output map of every stage."""
        x, cls, feats = self.stem(x), None, []
        for stage in self.stages:
            x, cls = stage(x, cls)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, cls = self.stem(x), None
        for stage in self.stages:
            x, cls = stage(x, cls)
        return self.head(x, cls)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def compile_network(spec: NetworkSpec | Lowered, check_fits: bool = True) -> Network:
    """Check a spec and build its module.

    Args:
        spec: a validated spec, or an already lowered one.
        check_fits: refuse specs whose weights exceed this machine's memory.

    Raises:
        SpecError: graph-check problems, or weights too large for memory.
    """
    lowered = spec if isinstance(spec, Lowered) else lower(spec)
    if check_fits:
        check_memory(lowered)
    return Network(lowered)
