"""Where and how a trial computes: the device, its precision, memory format and compilation.

Nothing here names CUDA: the accelerator is whatever ``torch.accelerator`` reports (CUDA,
XPU, MPS, or a backend added later), and autocast, the gradient scaler and channels-last are
asked of ``torch`` by device type, so that the same code runs on the CPU (where the tests
exercise bf16 autocast, channels-last and ``torch.compile``) and on any accelerator.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, replace

import torch

from ..errors import Problem, SpecError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def accelerator() -> torch.device | None:
    """The accelerator torch sees on this machine, or ``None``."""
    api = getattr(torch, "accelerator", None)
    if api is not None:
        return api.current_accelerator() if api.is_available() else None
    return torch.device("cuda") if torch.cuda.is_available() else None  # torch < 2.6


def resolve_device(name: str) -> torch.device:
    """``auto`` (the accelerator if there is one, else the CPU), ``cpu``, or a device such as
    ``cuda`` / ``cuda:1`` / ``xpu`` that must exist here.

    Raises:
        SpecError: on ``train.device``: an unknown name, or a device this machine lacks.
    """
    if name == "auto":
        return accelerator() or torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SpecError.single("train.device", f"unknown device {name!r} (auto, cpu, or an accelerator such as "
                                               f"cuda or cuda:1)") from None
    if device.type == "cpu":
        return device
    found = accelerator()
    if found is None or found.type != device.type:
        have = f"this machine has {found.type}" if found is not None else "this machine has no accelerator"
        raise SpecError.single("train.device", f"{name} was asked for but no {device.type} device is available "
                                               f"({have})")
    count = torch.accelerator.device_count() if hasattr(torch, "accelerator") else 1
    if device.index is not None and device.index >= count:
        raise SpecError.single("train.device", f"{name} was asked for but this machine has {count} {device.type} "
                                               f"device{'s' if count != 1 else ''}")
    return device


@dataclass(frozen=True)
class DeviceSettings:
    """The resolved device settings of one run (see :func:`device_settings`)."""

    device: torch.device
    precision: str
    channels_last: bool
    compile: bool

    def autocast(self) -> AbstractContextManager:
        """Mixed precision for the forward pass (a no-op at fp32)."""
        return torch.autocast(self.device.type, dtype=DTYPES[self.precision], enabled=self.precision != "fp32")

    def scaler(self) -> torch.amp.GradScaler:
        """The gradient scaler: on for fp16 only (bf16 has fp32's range)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the run's memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def as_dict(self) -> dict:
        return {"device": str(self.device), "precision": self.precision, "channels_last": self.channels_last,
                "compile": self.compile}


def device_settings(device: str = "auto", precision: str | None = None, channels_last: bool | None = None,
                    compile: bool = False) -> DeviceSettings:
    """Resolve a recipe's device settings: ``precision`` defaults to bf16 on an accelerator and
    fp32 on the CPU, ``channels_last`` to on for an accelerator (and on the CPU for networks
    with depthwise convolutions: :func:`for_network`).

    Raises:
        SpecError: one line per bad setting (``train.device``, ``train.precision``).
    """
    resolved = resolve_device(device)
    problems = []
    if precision is None:
        precision = "fp32" if resolved.type == "cpu" else "bf16"
    elif precision not in DTYPES:
        problems.append(Problem("train.precision", f"unknown precision {precision!r} (fp32, bf16 or fp16)"))
    elif precision == "fp16" and resolved.type == "cpu":
        problems.append(Problem("train.precision", "fp16 needs an accelerator (its gradients are scaled to stay in "
                                                   "range); on the cpu use bf16 or fp32"))
    if problems:
        raise SpecError(problems)
    if channels_last is None:
        channels_last = resolved.type != "cpu"
    return DeviceSettings(resolved, precision, bool(channels_last), bool(compile))


def for_network(settings: DeviceSettings, model: torch.nn.Module, channels_last: bool | None) -> DeviceSettings:
    """``settings`` for this network: where the recipe leaves ``channels_last`` unset, a network
    with convolutions in its stages (MBConv, ConvNeXt, bottleneck blocks; not only in its stem)
    trains channels-last on the cpu too. Torch's cpu kernels for convolutions on small maps, a
    depthwise convolution's backward pass and batch norm are faster channels-last: CoAtNet's
    training step measured 1.15-1.18x faster at 64 and 224 px, ResNet-50's 1.11x at 64 px and
    1.03-1.10x at 224 (``benchmarks/train_throughput.py``); a network of transformer stages
    (DeiT, ViT with a convolutional stem) no faster, and stays NCHW."""
    if channels_last is not None or settings.channels_last or settings.device.type != "cpu":
        return settings
    stages = getattr(model, "stages", model)
    return replace(settings, channels_last=any(isinstance(m, torch.nn.Conv2d) for m in stages.modules()))


__all__ = ["DTYPES", "DeviceSettings", "accelerator", "device_settings", "for_network", "resolve_device"]
