#!/usr/bin/env bash
# The README's main job: set up, then check, cost and compile a preset network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/archspace list
.venv/bin/archspace build coatnet-0
.venv/bin/archspace build coatnet-0 --set layout=C-T-T-T --size 64 --export torchscript runs/coatnet-0-ctt.pt
