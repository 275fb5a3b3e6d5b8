#!/usr/bin/env bash
# The README's main job: set up, run studies/quickstart.yaml (a layout + lr/wd study on the
# built-in digits data, CPU, SQLite store) and write its report. Re-running resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/archspace search studies/quickstart.yaml
.venv/bin/archspace report runs/quickstart
echo "open runs/quickstart/report/report.html (or report.md) to see the EDF per layout"
