"""Write docs/spec-reference.md: every key of the spec language, from the pydantic models.

Types, defaults, allowed values and bounds come from ``NetworkSpec.model_json_schema()``
(the same schema ``archspace schema`` prints); each model's summary is its docstring; the
one-line meaning of each field is the schema's ``description`` where the model gives one,
else the entry in ``MEANINGS`` below. The script fails if a field has no meaning or a
meaning names a field that no longer exists, so the page cannot silently fall behind
the models.

Usage::

    python docs/gen_spec_reference.py          # (re)write docs/spec-reference.md
    python docs/gen_spec_reference.py --check  # exit 1 if the page is out of date
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from archspace.spec import network as network_module  # noqa: E402
from archspace.spec.network import NetworkSpec  # noqa: E402

OUT = Path(__file__).with_name("spec-reference.md")

# What each field does, where the model does not say it in a Field(description=...).
_STAGE = {
    "depth": "Number of blocks in the stage.",
    "width": "Output channels of every block of the stage (the token dimension for attention stages).",
    "stride": "Spatial reduction of the stage, applied by its first block (or by its separate downsampling "
              "layer, see `downsample`).",
}
_BOTTLENECK = {
    **_STAGE,
    "block": "Selects this block kind.",
    "expansion": "Hidden width of a block = `max(1, round(width × expansion))`, from the stage's output width "
                 "(0.25: ResNet's 4× bottleneck; 4: an inverted bottleneck).",
    "kernel": "Kernel of the spatial convolution (odd; padding `kernel // 2`).",
    "groups": "Groups of the spatial convolution: an integer, or `depthwise` (one group per channel).",
    "order": "`middle`: 1×1 → k×k → 1×1 (ResNet); `first`: k×k on the block's input width → 1×1 → 1×1 "
             "(ConvNeXt).",
    "norm": "Norm kind after the convolutions, on a projection shortcut and before a separate downsampling "
            "conv (`layernorm` on maps normalises over channels, eps 1e-6).",
    "norms": "`all`: a norm after each of the three convolutions; `one`: only after the first.",
    "act": "Activation kind.",
    "activations": "`all`: after the first two convolutions and after the residual sum (ResNet); `one`: only "
                   "after the second convolution (ConvNeXt).",
    "downsample": "`block`: the first block strides its spatial conv and gets a 1×1 conv + norm shortcut "
                  "whenever the stride or width changes (ResNet); `separate`: a norm then a 2×2 stride-2 conv "
                  "with bias before the stage (a 1×1 conv if only the width changes), and every block keeps "
                  "its shape (ConvNeXt).",
    "layer_scale": "Initial value of a learnable per-channel scale on the residual branch; `null`: none.",
    "bias": "Bias on every convolution; a convolution with no norm after it has a bias anyway.",
}
_HEADS = {
    "heads": "Number of attention heads; `width` must be a multiple. Set `heads` or `head_size`, not both.",
    "mlp_ratio": "MLP hidden width = `round(width × mlp_ratio)`.",
    "qkv_bias": "Bias on the query, key and value projections.",
    "norm": "Norm kind of the pre-norms (`layernorm`: eps 1e-6; `batchnorm`: over channels).",
    "act": "Activation inside the MLP.",
}
MEANINGS: dict[str, dict[str, str]] = {
    "NetworkSpec": {
        "name": "Name shown in tables and reports. Presets are found by file name, not by this key.",
        "description": "Free text for people; ignored by archspace.",
        "layout": "Stage-kind shorthand: one letter per stage (`C-C-T-T`) or a named layout (`VIT_REL`). "
                  "Applied when loading; afterwards every stage must agree with it.",
        "input": "The input images.",
        "num_classes": "Outputs of the classifier.",
        "stem": "How the image becomes the first feature map; one of the stem kinds, chosen by `kind`.",
        "stages": "The stages in order; each is one of the block kinds, chosen by `block`.",
        "head": "The classifier head.",
        "drop_path": "Stochastic depth for the whole network.",
    },
    "InputSpec": {
        "size": "Side of the square input image in pixels; must be divisible by the network's total stride.",
        "channels": "Channels of the input image.",
    },
    "HeadSpec": {
        "pool": "`avg`: mean of the final feature map (patch tokens only, a class token is not averaged in); "
                "`cls`: the class token, which some stage must have inserted.",
        "norm": "Norm of the pooled vector: `layernorm` (eps 1e-6), `batchnorm` (BatchNorm1d) or `none`.",
        "hidden": "Width of an optional hidden layer (linear + `hidden_act`) after the norm; `null`: none.",
        "hidden_act": "Activation of the hidden layer (used only when `hidden` is set).",
        "dropout": "Dropout rate before the final linear layer.",
    },
    "DropPathSpec": {
        "rate": "Drop-path rate: with `linear`, block i of all n blocks of the network gets "
                "`rate × i / (n − 1)` (the first 0, the last `rate`); with `uniform`, every block gets `rate`.",
        "schedule": "How the rate is spread over the blocks.",
    },
    "PatchifyStem": {
        "kind": "Selects this stem kind.",
        "patch": "Side of the non-overlapping patches: one `patch × patch` convolution with stride `patch` "
                 "and bias, no padding. The stem's stride.",
        "width": "Output channels; `null` takes the first stage's width.",
        "norm": "Norm after the convolution (ConvNeXt: `layernorm`); there is no activation.",
    },
    "ConvStem": {
        "kind": "Selects this stem kind.",
        "channels": "Output channels of each `kernel × kernel` convolution, in order.",
        "strides": "Stride of each convolution, as many as `channels`. `null` applies the ViT_C rule: the "
                   "first convolution, and any that changes the channels, has stride 2; one that keeps them "
                   "has stride 1.",
        "kernel": "Kernel of every convolution (odd; padding `kernel // 2`).",
        "norm": "Norm after each convolution; a convolution has a bias only when this is `none`.",
        "act": "Activation after each norm.",
        "project": "Channels of a final 1×1 convolution with bias and no norm or activation (ViT_C); `null`: "
                   "no projection, the stem outputs `channels[-1]` channels.",
        "rule": "`vitc`: check the ViT_C pattern: after the first, every convolution either doubles the "
                "channels with stride 2 or keeps them with stride 1.",
        "norm_last": "`false`: the last convolution of `channels` is bare (no norm, activation or bias), as in "
                     "timm's CoAtNet stems, where the first block's pre-norm follows; `true`: every "
                     "convolution is followed by `norm` and `act` (the CoAtNet paper, ViT_C).",
    },
    "ResNetStem": {
        "kind": "Selects this stem kind.",
        "width": "Output channels of the convolution.",
        "kernel": "Kernel of the stride-2 convolution (no bias, padding `kernel // 2`), followed by norm, "
                  "activation and a 3×3 stride-2 max pool (padding 1): stride 4 in all.",
        "norm": "Norm after the convolution.",
        "act": "Activation after the norm.",
    },
    "MBConvStage": {
        **_STAGE,
        "block": "Selects this block kind.",
        "expansion": "Hidden width of a block = `max(1, round(width × expansion))`, from the stage's output "
                     "width, also in a first block that widens.",
        "kernel": "Kernel of the depthwise convolution (odd; padding `kernel // 2`).",
        "se_ratio": "Squeeze-excitation width = `int(width × se_ratio)`, from the output width; `0` removes SE.",
        "norm": "Norm kind of the pre-norm and of the norms after the expand and depthwise convolutions.",
        "act": "Activation after the expand and depthwise convolutions (SE always uses SiLU, then a sigmoid).",
        "downsample": "Where the first block of a stride-2 stage strides: `conv`, the first 1×1 (expand) "
                      "convolution (CoAtNet paper); `depthwise`, the depthwise convolution.",
        "shortcut_pool": "2×2 stride-2 pooling on the first block's shortcut in a stride-2 stage; a 1×1 "
                         "convolution with bias follows when the width changes.",
    },
    "TransformerStage": {
        **_STAGE,
        **_HEADS,
        "block": "Selects this block kind.",
        "attention": "`relative`: a learned bias per head for every 2-D offset, a `(2H−1)·(2W−1)` table in "
                     "each block, added to the logits (resized bilinearly at another resolution); "
                     "`absolute`: a learned position embedding added to the patch tokens at the start of the "
                     "stage, unless an earlier absolute stage already added one.",
        "head_size": "Channels per head: `heads = width / head_size`; 32 when neither `heads` nor `head_size` "
                     "is set.",
        "talking_heads": "Mix the heads with learned `heads × heads` linear maps before and after the "
                         "softmax (CaiT).",
        "layer_scale": "Initial value of a learnable per-channel scale on both residual branches (CaiT); "
                       "`null`: none.",
        "class_token": "Insert a learned class token before the stage's first block (with the incoming "
                       "width); later token stages carry it along.",
        "shortcut_pool": "2×2 stride-2 pooling of the patch tokens in the first block of a stride-2 stage, on "
                         "both the attention and the shortcut branch.",
    },
    "ClassAttentionStage": {
        **_STAGE,
        **_HEADS,
        "block": "Selects this block kind.",
        "stride": "Always 1: class attention leaves the patch tokens as they are.",
        "width": "Token width; must equal the incoming width.",
        "head_size": "Channels per head: `heads = width / head_size`; 48 when neither `heads` nor "
                     "`head_size` is set.",
        "layer_scale": "Initial value of the per-channel scale on both residual branches; `null`: none.",
    },
    "BottleneckStage": _BOTTLENECK,
    "ConvNeXtStage": _BOTTLENECK,
}

ORDER = [
    ("Network", ["NetworkSpec", "InputSpec", "HeadSpec", "DropPathSpec"]),
    ("Stems (`stem:`, chosen by `kind:`)", ["PatchifyStem", "ConvStem", "ResNetStem"]),
    ("Stages (`stages[i]:`, chosen by `block:`)",
     ["MBConvStage", "TransformerStage", "ClassAttentionStage", "BottleneckStage", "ConvNeXtStage"]),
]


def _rst_to_md(text: str) -> str:
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def _anchor(name: str) -> str:
    return name.lower()


def _tag(defs: dict[str, Any], name: str) -> str | None:
    props = defs[name]["properties"]
    for key in ("kind", "block"):
        if key in props and "const" in props[key]:
            return f"{key}: {props[key]['const']}"
    return None


def _title(defs: dict[str, Any], name: str) -> str:
    tag = _tag(defs, name)
    return f"`{tag}` ({name})" if tag else name


def _bounds(s: dict[str, Any]) -> str:
    out = []
    for key, op in (("exclusiveMinimum", ">"), ("minimum", "≥"), ("exclusiveMaximum", "<"), ("maximum", "≤")):
        if key in s:
            out.append(f"{op} {s[key]}")
    if "minItems" in s:
        out.append(f"at least {s['minItems']} item{'s' if s['minItems'] != 1 else ''}")
    return f" ({', '.join(out)})" if out else ""


def _type(s: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in s:
        name = s["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    if "oneOf" in s:
        mapping = s.get("discriminator", {}).get("mapping", {})
        names = [ref.rsplit("/", 1)[-1] for ref in mapping.values()] or [
            x["$ref"].rsplit("/", 1)[-1] for x in s["oneOf"]]
        return "one of " + ", ".join(f"[`{_tag(defs, n).split(': ')[1]}`](#{_anchor(n)})" for n in names)
    if "anyOf" in s:
        return " or ".join(_type(x, defs) for x in s["anyOf"])
    if "const" in s:
        return f"`{json.dumps(s['const'])}`"
    if "enum" in s:
        return " \\| ".join(f"`{json.dumps(v) if not isinstance(v, str) else v}`" for v in s["enum"])
    kind = s.get("type")
    if kind == "array":
        return f"list of {_type(s.get('items', {}), defs)}{_bounds(s)}"
    names = {"integer": "int", "number": "float", "string": "str", "boolean": "bool", "null": "`null`",
             "object": "mapping"}
    return names.get(kind, kind or "any") + _bounds(s)


def _default(name: str, s: dict[str, Any], required: set[str]) -> str:
    if name in required:
        return "required"
    if "default" not in s:
        return ""
    value = s["default"]
    if isinstance(value, dict):
        return "its defaults" if value else "`{}`"
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def _model_class(name: str) -> type:
    for module in (network_module,):
        cls = getattr(module, name, None)
        if inspect.isclass(cls):
            return cls
    from archspace.spec import stages, stems

    return getattr(stages, name, None) or getattr(stems, name)


def render() -> str:
    schema = NetworkSpec.model_json_schema()
    defs = {**schema["$defs"], "NetworkSpec": {k: v for k, v in schema.items() if k != "$defs"}}
    documented = [n for _, names in ORDER for n in names]
    missing_models = sorted(set(defs) - set(documented))
    problems = [f"model {m} is not placed in ORDER" for m in missing_models]
    lines = [
        "# Spec reference",
        "",
        "<!-- Generated by docs/gen_spec_reference.py from the pydantic models; do not edit by hand. -->",
        "",
        "Every key of the spec language, with its type, default and meaning. Types, defaults and bounds "
        "are taken from the JSON Schema that `archspace schema` prints. A key not listed here is an error. "
        "How the pieces fit together, with examples: [the spec language](spec-language.md).",
        "",
    ]
    for section, names in ORDER:
        lines += [f"## {section}", ""]
        for name in names:
            model = defs[name]
            cls = _model_class(name)
            lines += [f"### {_title(defs, name)}", f'<a id="{_anchor(name)}"></a>', ""]
            if model.get("description"):
                lines += [_rst_to_md(model["description"]), ""]
            letter = getattr(cls, "letter", None)
            if letter:
                extra = getattr(cls, "layout_defaults", {})
                also = (" (and sets " + ", ".join(f"`{k}: {v}`" for k, v in extra.items()) + ")") if extra else ""
                lines += [f"Layout letter: `{letter}`{also}.", ""]
            lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
            required = set(model.get("required", []))
            meanings = MEANINGS.get(name, {})
            for field, prop in model["properties"].items():
                meaning = prop.get("description") or meanings.get(field)
                if not meaning:
                    problems.append(f"{name}.{field} has no meaning in MEANINGS")
                    meaning = "?"
                lines.append(f"| `{field}` | {_type(prop, defs)} | {_default(field, prop, required)} | "
                             f"{_rst_to_md(meaning)} |")
            stale = sorted(set(meanings) - set(model["properties"]))
            problems += [f"MEANINGS[{name!r}] names {f!r}, which the model does not have" for f in stale]
            lines.append("")
    if problems:
        raise SystemExit("gen_spec_reference: " + "; ".join(problems))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/spec-reference.md from the spec models.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page differs from the models")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is out of date: run python docs/gen_spec_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
