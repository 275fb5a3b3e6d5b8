"""Block, stem and head families; importing this package registers them all."""

from . import bottleneck, mbconv, stems, transformer  # noqa: F401  (registration)
from .base import STAGES, STEMS, Family, FeatureShape
from .head import Head

__all__ = ["STAGES", "STEMS", "Family", "FeatureShape", "Head"]
