"""Classifier head: pool (average of the map, or the class token) → norm → hidden → linear."""

from __future__ import annotations

import torch
from torch import nn

from .. import cost as C
from ..layers.norms import act, norm_cost
from ..spec import HeadSpec

VECTOR_NORMS = {"layernorm": lambda c: nn.LayerNorm(c, eps=1e-6), "batchnorm": nn.BatchNorm1d,
                "none": lambda c: nn.Identity()}


class AvgPool(nn.Module):
    def forward(self, x: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        return x.mean((2, 3))


class ClassTokenPool(nn.Module):
    def forward(self, x: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        return cls[:, 0]


POOLS = {"avg": AvgPool, "cls": ClassTokenPool}


class Head(nn.Module):
    def __init__(self, spec: HeadSpec, channels: int, num_classes: int):
        super().__init__()
        self.pool = POOLS[spec.pool]()
        self.norm = VECTOR_NORMS[spec.norm](channels)
        hidden = spec.hidden
        self.hidden = nn.Sequential(nn.Linear(channels, hidden), act(spec.hidden_act)) if hidden else nn.Identity()
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()
        self.fc = nn.Linear(hidden or channels, num_classes)

    def pre_logits(self, x: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        return self.hidden(self.norm(self.pool(x, cls)))

    def forward(self, x: torch.Tensor, cls: torch.Tensor | None) -> torch.Tensor:
        return self.fc(self.dropout(self.pre_logits(x, cls)))

    @staticmethod
    def cost(spec: HeadSpec, channels: int, num_classes: int) -> C.Cost:
        c = norm_cost(spec.norm, channels)
        if spec.hidden:
            c = c + C.linear(1, channels, spec.hidden)
        return c + C.linear(1, spec.hidden or channels, num_classes)
