"""Names a module gives without importing what they need until first use (PEP 562).

The analytic side of archspace (specs, checks, cost, the CLI's build --no-compile, list,
schema, search --dry-run, report) runs without torch; the names that need torch (modules,
compilation, training, weights) are looked up here on first use::

    __getattr__, __dir__ = lazy(__name__, globals(), {"compile_network": ".compile:compile_network",
                                                      "weights": ".weights"})
"""

from __future__ import annotations

import importlib
import types
from typing import Any, Callable, Mapping


def lazy(module: str, namespace: dict[str, Any], names: Mapping[str, str]
         ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``module``: ``names`` maps a name to
    ``"where:attribute"`` (an attribute of module ``where``) or ``"where"`` (the module
    itself); ``where`` may be relative to ``module``'s package. A name found is kept in
    ``namespace`` (the module's globals), so it is looked up once."""
    package = module if namespace.get("__path__") is not None else module.rpartition(".")[0]

    def __getattr__(name: str) -> Any:
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, _, attribute = where.partition(":")
        value = importlib.import_module(target, package)
        if attribute:
            value = getattr(value, attribute)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__


class _LazyModule(types.ModuleType):
    """Stands for module ``__name__``, imported when one of its attributes is first used (an
    attribute found is kept on this stand-in, so it is looked up once)."""

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        value = getattr(importlib.import_module(self.__name__), attribute)
        setattr(self, attribute, value)
        return value


def lazy_module(name: str) -> types.ModuleType:
    """A stand-in for module ``name`` for code that uses it only inside functions (and in
    annotations, which ``from __future__ import annotations`` leaves unevaluated): importing
    the code does not import ``name``; the first use of an attribute does::

        torch = lazy_module("torch")   # instead of: import torch
    """
    return _LazyModule(name)
