"""Start-up cost of the analytic CLI commands: wall time, peak memory, and whether torch / ray
were imported.

Each command runs ``--repeat`` times as a fresh ``python -m archspace.cli.app`` process (the
console script's entry point); per command: median / min / max wall seconds, the peak RSS
(max over the runs, from ``wait4``'s rusage of each child), and the heavy packages the command
imported (one extra run that prints ``sys.modules``). Targets (issue 14): ``build coatnet-0
--no-compile --format json`` median ≤ 0.5 s and peak ≤ 120 MB, and none of these commands
imports torch or ray.

    python benchmarks/cli_latency.py
    python benchmarks/cli_latency.py --repeat 20 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "optuna", "matplotlib", "networkx", "sklearn")
COMMANDS = [
    ["build", "coatnet-0", "--no-compile", "--format", "json"],
    ["list", "--format", "json"],
    ["schema"],
    ["search", "studies/quickstart.yaml", "--dry-run", "--format", "json"],
]
PROBE = """
import runpy, sys
sys.argv = ["archspace"] + sys.argv[1:]
try:
    runpy.run_module("archspace.cli.app", run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
print("imported:", ",".join(m for m in %r if m in sys.modules), file=sys.stderr)
""" % (HEAVY,)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one run of ``cmd``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()[-500:]}")
    return wall, usage.ru_maxrss / 1024  # Linux: KiB


def imported(args: list[str]) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=_env(), capture_output=True, text=True)
    line = next((ln for ln in proc.stderr.splitlines() if ln.startswith("imported:")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
    return [m for m in line.split(":", 1)[1].strip().split(",") if m]


def measure(args: list[str], repeat: int) -> dict:
    cmd = [sys.executable, "-m", "archspace.cli.app", *args]
    timed(cmd)  # warm the page cache and the bytecode
    runs = [timed(cmd) for _ in range(repeat)]
    walls = [w for w, _ in runs]
    heavy = imported(args)
    return {"command": "archspace " + " ".join(args), "median_s": statistics.median(walls), "min_s": min(walls),
            "max_s": max(walls), "peak_mb": max(m for _, m in runs), "imported": heavy,
            "torch_or_ray": any(m in ("torch", "ray") for m in heavy)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=10, help="timed runs per command")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    rows = [measure(c, args.repeat) for c in COMMANDS]
    base = [sys.executable, "-c", "pass"]
    timed(base)
    python = statistics.median(timed(base)[0] for _ in range(args.repeat))
    if args.json:
        print(json.dumps({"repeat": args.repeat, "python_startup_s": python, "commands": rows}, indent=2))
        return
    print(f"CLI start-up, {args.repeat} runs each (python itself starts in {python:.3f} s; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f})")
    print(f"{'command':62} {'median s':>8} {'min s':>6} {'max s':>6} {'peak MB':>8}  torch/ray  imported")
    for r in rows:
        print(f"{r['command']:62} {r['median_s']:>8.3f} {r['min_s']:>6.3f} {r['max_s']:>6.3f} {r['peak_mb']:>8.1f}  "
              f"{'YES' if r['torch_or_ray'] else 'no':9}  {', '.join(r['imported']) or '-'}")


if __name__ == "__main__":
    main()
