#!/usr/bin/env bash
# Create .venv (once) and install archspace with everything it needs.
# torch is pinned to the CPU wheel first so that no CUDA packages are pulled in;
# re-runs are no-ops until pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.archspace-installed
WANT=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/archspace" ]; then
  "$VENV/bin/python" -m compileall -q archspace >/dev/null || true   # new or changed modules (see below)
  exit 0
fi
echo "setting up $VENV (first run takes a few minutes)..." >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install "torch==2.13.0" numpy 2>&1 | grep -v "^WARNING: Location" >&2 || true
"$VENV/bin/python" -c "import torch" || { echo "torch failed to install" >&2; exit 1; }
$PIP install -e ".[all]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
# timm builds the reference models of tests/test_weights.py. --no-deps: its torchvision
# requirement has no CPU wheel that loads beside this torch; the tests stand in for the few
# torchvision names timm imports (tests/_torchvision_standin.py).
$PIP install --no-deps "timm==1.0.*" 2>&1 | grep -v "^WARNING: Location" >&2 || true
"$VENV/bin/python" -c "import archspace, optuna, ray, sklearn, matplotlib, hypothesis, safetensors" \
  || { echo "dependencies failed to install" >&2; exit 1; }
"$VENV/bin/python" -c "import importlib.util as u; assert u.find_spec('timm')" \
  || { echo "timm failed to install" >&2; exit 1; }
# byte-code for the package, written once: the analytic commands start in well under a second
# even where PYTHONDONTWRITEBYTECODE keeps Python from caching it itself
"$VENV/bin/python" -m compileall -q archspace >/dev/null || true
echo "$WANT" > "$STAMP"
