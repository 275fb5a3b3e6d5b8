"""Block, stem and head families; importing this package registers them all.

The families (shapes, checks, analytic cost) import without torch; their torch modules are
in :mod:`.modules`, imported when a network is built (``Head``, the head module, on first use).
"""

from .._lazy import lazy
from . import bottleneck, mbconv, stems, transformer  # noqa: F401  (registration)
from .base import STAGES, STEMS, Family, FeatureShape
from .head import HeadFamily

__getattr__, __dir__ = lazy(__name__, globals(), {"Head": ".modules:Head"})

__all__ = ["STAGES", "STEMS", "Family", "FeatureShape", "Head", "HeadFamily"]
