"""Export a compiled network: ONNX, TorchScript, or the lowered graph as GraphML."""

from __future__ import annotations

import warnings
from pathlib import Path

import networkx as nx
import torch

from .compile import compile_network
from .graph import Lowered


def _graphml(lowered: Lowered, path: Path) -> None:
    g = nx.DiGraph()
    for node, data in lowered.graph.nodes(data=True):
        shape, cost = data["shape"], data["cost"]
        g.add_node(node, kind=data["kind"], path=data["path"], channels=shape.channels, height=shape.height,
                   width=shape.width, class_tokens=shape.prefix, params=cost.params, flops=cost.flops,
                   acts=cost.acts)
    g.add_edges_from(lowered.graph.edges)
    nx.write_graphml(g, path)


def export_network(lowered: Lowered, fmt: str, path: Path, model: torch.nn.Module | None = None) -> None:
    """Write ``lowered`` to ``path`` as ``onnx``, ``torchscript`` or ``graphml``; ``model``, when
    given, is the built module to write (e.g. with imported weights)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "graphml":
        _graphml(lowered, path)
        return
    model = (model if model is not None else compile_network(lowered)).eval()
    size = lowered.spec.input.size
    example = torch.randn(1, lowered.spec.input.channels, size, size)
    if fmt == "torchscript":
        # A trace is fixed to the spec's input size; torch marks TorchScript as deprecated.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(model, example)
            traced.save(str(path))
    elif fmt == "onnx":
        torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"],
                          dynamo=False)
    else:
        raise ValueError(f"unknown export format {fmt!r}")
