#!/usr/bin/env bash
# On a machine with an accelerator: the accelerator-marked tests, then training throughput
# (bf16 with and without torch.compile, and fp32) with model FLOPs utilisation for vit_c-4gf.
# Needs a Python with an accelerator build of torch and archspace installed:
#   PYTHON=/path/to/python bash scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" - <<'PYEOF'
import sys, torch
if not (hasattr(torch, "accelerator") and torch.accelerator.is_available()):
    sys.exit("no accelerator: scripts/gpu-check.sh is for a machine with one (torch " + torch.__version__ + ")")
print("accelerator:", torch.accelerator.current_accelerator(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PYEOF
"$PY" -m pytest -q -m accelerator tests/test_devices.py
"$PY" benchmarks/train_throughput.py --presets vit_c-4gf --sizes 224 --batch 128 --steps 20 --warmup 5 --compile
"$PY" benchmarks/train_throughput.py --presets vit_c-4gf --sizes 224 --batch 128 --steps 20 --warmup 5 --precision fp32
"$PY" benchmarks/train_throughput.py --presets coatnet-0 convnext-t resnet-50 --sizes 224 --batch 128 --steps 20 --warmup 5 --compile
