"""The spec language: pydantic models of a network, and loading from YAML and presets."""

from .io import apply_overrides, deep_merge, dump_spec, load_raw, load_spec, preset_dirs, preset_index, validate
from .network import DropPathSpec, HeadSpec, InputSpec, NetworkSpec, StageSpec, StemSpec
from .paths import format_path, get_path, parse_path, set_path
from .stages import BottleneckStage, ClassAttentionStage, ConvNeXtStage, MBConvStage, TransformerStage
from .stems import ConvStem, PatchifyStem, ResNetStem

__all__ = [
    "BottleneckStage", "ClassAttentionStage", "ConvNeXtStage", "ConvStem", "DropPathSpec",
    "HeadSpec", "InputSpec", "MBConvStage", "NetworkSpec", "PatchifyStem", "ResNetStem",
    "StageSpec", "StemSpec", "TransformerStage", "apply_overrides", "deep_merge", "dump_spec",
    "format_path", "get_path", "load_raw", "load_spec", "parse_path", "preset_dirs", "preset_index", "set_path",
    "validate",
]
