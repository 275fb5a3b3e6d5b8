#!/usr/bin/env bash
# The README's test command: set up, then run the whole suite on both cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q "$@"
