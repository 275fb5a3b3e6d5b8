"""A stand-in for the few torchvision names timm's modules import, so that timm can be
imported beside a CPU torch build that has no loadable torchvision.

timm's model code runs without torchvision, but importing ``timm`` touches these names:

* ``torchvision.ops.misc.FrozenBatchNorm2d`` (timm's norm helpers test instances against it),
* ``torchvision.datasets.{CIFAR10, CIFAR100, MNIST, KMNIST, FashionMNIST, ImageFolder}``
  (timm's dataset factory imports them),
* ``torchvision.transforms.ToTensor`` (a timm transform subclasses it),
* ``torchvision.transforms.functional.InterpolationMode`` (timm's transforms map its members).

Each stand-in class refuses to be instantiated, so nothing of timm that really needs
torchvision can run by mistake; the tests only build timm models and read their state
dicts. When a real torchvision can be imported, it is used and nothing is installed.
"""

from __future__ import annotations

import enum
import importlib
import sys
import types

NAMES = {
    "torchvision.ops.misc": ("FrozenBatchNorm2d",),
    "torchvision.datasets": ("CIFAR10", "CIFAR100", "MNIST", "KMNIST", "FashionMNIST", "ImageFolder"),
    "torchvision.transforms": ("ToTensor",),
}
MODULES = ("torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.datasets",
           "torchvision.transforms", "torchvision.transforms.functional")


class _StandIn:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__} is a torchvision stand-in used only to import timm")


def install() -> None:
    """Put the stand-in modules in ``sys.modules`` unless a real torchvision imports."""
    if "torchvision" in sys.modules:
        return
    try:
        importlib.import_module("torchvision")
        return
    except Exception:  # absent, or a wheel that does not load beside this torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    for name in MODULES:
        module = types.ModuleType(name)
        module.__path__ = []  # a package, so that submodules resolve
        for attr in NAMES.get(name, ()):
            setattr(module, attr, type(attr, (_StandIn,), {"__module__": name}))
        sys.modules[name] = module
        if "." in name:
            parent, child = name.rsplit(".", 1)
            setattr(sys.modules[parent], child, module)
    modes = ("NEAREST", "BILINEAR", "BICUBIC", "BOX", "HAMMING", "LANCZOS")
    sys.modules["torchvision.transforms.functional"].InterpolationMode = enum.Enum(
        "InterpolationMode", [(m, m.lower()) for m in modes])


def import_timm():
    """timm, imported with the stand-in where needed; the test is skipped without timm."""
    import pytest

    install()
    return pytest.importorskip("timm", reason="timm is a test dependency (scripts/setup.sh installs it)")
