"""Norms and activations by name, for feature maps (N, C, H, W) and tokens (N, L, C).

The modules (``map_norm``, ``token_norm``, ``act``, ...) are in :mod:`.modules`, imported on
first use; the analytic cost is here, without torch.
"""

from __future__ import annotations

from .. import cost as C
from .._lazy import lazy

__getattr__, __dir__ = lazy(__name__, globals(), {name: f".modules:{name}" for name in (
    "LayerNorm2d", "BatchNormTokens", "MAP_NORMS", "TOKEN_NORMS", "ACTIVATIONS", "map_norm", "token_norm", "act")})


def norm_params(name: str, channels: int) -> int:
    """Learnable gain and bias of a norm (none for ``none``)."""
    return 0 if name == "none" else 2 * channels


def norm_cost(name: str, channels: int) -> C.Cost:
    """:func:`norm_params` as a cost."""
    return C.params(norm_params(name, channels))
