"""Optimizers, parameter groups without weight decay, and the warm-up + half-cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..layers.modules import ClassToken, LayerScale, PositionEmbedding, RelativePositionBias
from .config import TrainConfig

NO_DECAY_MODULES = (ClassToken, PositionEmbedding, RelativePositionBias, LayerScale)


def no_decay_names(model: nn.Module) -> set[str]:
    """Parameters exempt from weight decay: norm gains and every bias (all 1-D tensors),
    position embeddings, relative-position tables, class tokens and layer scale."""
    names = {n for n, p in model.named_parameters() if p.ndim <= 1}
    for prefix, module in model.named_modules():
        if isinstance(module, NO_DECAY_MODULES):
            names |= {f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters()}
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    skip = no_decay_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


# Devices with fused optimizer kernels: one kernel per step over all parameters, instead of
# several element-wise ops per tensor (torch's default on the CPU). On the CPU this makes the
# AdamW step of a 22M-parameter ViT about 20x faster, a tenth or more of a training step.
FUSED_DEVICES = ("cpu", "cuda", "xpu", "mps")


def fused(groups) -> bool | None:
    """``True`` where every parameter lives on a device with fused kernels, else torch's choice."""
    types = {p.device.type for g in groups for p in g["params"]}
    return True if types and types <= set(FUSED_DEVICES) and all(
        p.is_floating_point() for g in groups for p in g["params"]) else None


def _adamw(groups, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused(groups))


def _sgd(groups, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=fused(groups))


OPTIMIZERS = {"adamw": _adamw, "sgd": _sgd}


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optimizer](param_groups(model, cfg.weight_decay), cfg)


def lr_at(step: int, total_steps: int, warmup_steps: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then half-cosine down to ``min_lr``."""
    if step < warmup_steps:
        return cfg.lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))
