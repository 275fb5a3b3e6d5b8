"""Run a study at one of its scales on this machine and record what it measured, beside the
paper's claim, for the study's page in docs/studies/.

    .venv/bin/python docs/measure_study.py coatnet-layouts              # its cpu scale
    .venv/bin/python docs/measure_study.py vitc-edf-adamw --workers 2   # two trials at a time
    .venv/bin/python docs/measure_study.py --all                        # every study with a claim below
    .venv/bin/python docs/measure_study.py --rejudge convnext-roadmap   # the claims again, from the same runs
    .venv/bin/python docs/gen_study_pages.py                            # the pages then show the section

Each run is ``archspace search studies/NAME.yaml --scale SCALE --out runs/measured/NAME-SCALE``
(a killed run resumes where it stopped) followed by ``archspace report``. The record,
``docs/studies/measured/NAME.json``, holds the command, the date, the machine, the wall time
of the search and of its trials, every variant's completed runs, best and median error and
eval − train gap, and the verdict of each of the paper's claims below.

A claim compares variants by what the report measured. A comparison of two variants needs at
least ``MIN_RUNS`` completed runs of each (a single run says nothing of the spread between
seeds: on digits' 359 eval images, one run against one run differs by a few images either
way); it agrees when the paper's better variant is better by at least ``MARGIN`` (percentage
points) in both its best and its median error, disagrees when it is worse by that much in
both, and is inconclusive otherwise. An ordering claim (a list of variants the paper puts in order) is
judged by the Spearman correlation between the paper's order and the measured values: agrees
at ρ ≥ 0.5, disagrees at ρ ≤ −0.5, inconclusive between. The rules are fixed here, before any
run, so a verdict cannot be chosen after seeing the numbers (one change since the first
records: ``MIN_RUNS``, added when the convnext-roadmap record called a difference of two eval
images between single runs a disagreement).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "studies" / "measured"
MARGIN = 0.5  # percentage points of error
MIN_RUNS = 2  # completed runs of each variant before two are compared
RHO = 0.5

Verdict = tuple[str, str]  # (agrees | disagrees | inconclusive, the figures behind it)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


@dataclass(frozen=True)
class Better:
    """The paper's ``good`` variant has lower error than ``bad``: by its best and median error."""

    good: str
    bad: str

    @property
    def variants(self) -> tuple[str, ...]:
        return self.good, self.bad

    def __call__(self, report: dict) -> Verdict:
        good, bad, v = self.good, self.bad, report["variants"]
        missing = [name for name in (good, bad) if name not in v or not v[name]["completed"]]
        if missing:
            return "inconclusive", f"no completed run of {', '.join(missing)}"
        few = [name for name in (good, bad) if v[name]["completed"] < MIN_RUNS]
        diffs = [100 * (v[bad][stat] - v[good][stat]) for stat in ("best", "median")]
        figures = (f"{good}: best {_pct(v[good]['best'])}, median {_pct(v[good]['median'])} "
                   f"({_runs(v[good]['completed'])}); {bad}: best {_pct(v[bad]['best'])}, median "
                   f"{_pct(v[bad]['median'])} ({_runs(v[bad]['completed'])})")
        if few:
            return "inconclusive", figures + f" (fewer than {MIN_RUNS} runs of {', '.join(few)}: no spread to judge by)"
        if all(d >= MARGIN for d in diffs):
            return "agrees", figures
        if all(d <= -MARGIN for d in diffs):
            return "disagrees", figures
        return "inconclusive", figures + f" (differences {diffs[0]:+.2f} and {diffs[1]:+.2f} points, margin {MARGIN})"


def _runs(n: int) -> str:
    return f"{n} run" + ("" if n == 1 else "s")


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (ties share ranks); ``None`` below three pairs or without spread."""
    if len(xs) < 3:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / (sxx * syy) ** 0.5


@dataclass(frozen=True)
class Ordered:
    """The paper puts ``order`` in increasing ``measure``: ``best`` or ``median`` error (from the
    variants' summary), ``gap`` or ``train_loss`` (from the best run's generalization row)."""

    order: tuple[str, ...]
    measure: str
    what: str

    @property
    def variants(self) -> tuple[str, ...]:
        return self.order

    def value(self, report: dict, name: str) -> float | None:
        table = report.get("generalization", {}) if self.measure in ("gap", "train_loss") else report["variants"]
        row = table.get(name)
        return None if row is None else row[self.measure]

    def __call__(self, report: dict) -> Verdict:
        order = self.order
        have = [(i, x) for i, x in ((i, self.value(report, name)) for i, name in enumerate(order)) if x is not None]
        shown = ", ".join(f"{order[i]} {x:.4f}" if self.measure == "train_loss" else f"{order[i]} {_pct(x)}"
                          for i, x in have)
        rho = spearman([float(i) for i, _ in have], [x for _, x in have])
        if rho is None:
            return "inconclusive", f"{self.what} of too few variants to order: {shown or 'none'}"
        figures = f"{self.what}: {shown}; Spearman ρ with the paper's order {rho:+.2f}"
        return ("agrees" if rho >= RHO else "disagrees" if rho <= -RHO else "inconclusive"), figures


@dataclass(frozen=True)
class Claim:
    text: str
    check: Better | Ordered


LAYOUTS = ["C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T", "VIT_REL"]
ROADMAP = ["roadmap-00-resnet50", "roadmap-01-stage-ratio", "roadmap-02-patchify-stem",
           "roadmap-03-depthwise-width96", "roadmap-04-inverted-bottleneck", "roadmap-05-depthwise-up",
           "roadmap-06-kernel7", "roadmap-07-gelu", "roadmap-08-fewer-activations", "roadmap-09-fewer-norms",
           "roadmap-10-layernorm", "roadmap-11-separate-downsampling"]

CLAIMS: dict[str, list[Claim]] = {
    "vitc-edf-adamw": [Claim("With AdamW, ViT_C's error distribution lies left of ViT_P's at equal flops "
                             "(Early Convolutions, Fig. 3): ViT_C has lower best and median error.",
                             Better("vit_c-1gf", "vit_p-1gf"))],
    "vitc-edf-sgd": [Claim("With SGD, ViT_P trains poorly while ViT_C still trains well at good settings (Early "
                           "Convolutions, Fig. 3 and 4): ViT_C has lower best and median error.",
                           Better("vit_c-1gf", "vit_p-1gf"))],
    "coatnet-layouts": [
        Claim("Generalization (CoAtNet, Fig. 1): C-C-C-C ≈ C-C-C-T ≥ C-C-T-T > C-T-T-T ≫ VIT_REL, i.e. the "
              "eval − train gap grows as transformer stages replace convolutional ones.",
              Ordered(tuple(LAYOUTS), "gap", "eval − train error of each layout's best run")),
        Claim("Capacity (CoAtNet, Fig. 1, on the larger JFT data): VIT_REL > C-T-T-T > C-C-T-T > C-C-C-T > "
              "C-C-C-C, i.e. the final train loss falls as transformer stages are added.",
              Ordered(tuple(LAYOUTS[::-1]), "train_loss", "final train loss of each layout's best run")),
    ],
    "convnext-roadmap": [
        Claim("Modernizing ResNet-50 step by step ends in ConvNeXt, more accurate than where it started "
              "(ConvNeXt, Fig. 2: 78.8% → 82.0% ImageNet top-1).",
              Better("roadmap-11-separate-downsampling", "roadmap-00-resnet50")),
        Claim("Along the roadmap the error mostly falls (ConvNeXt, Fig. 2: most steps gain accuracy).",
              Ordered(tuple(ROADMAP[::-1]), "best", "best error of each step")),
    ],
    "cait-depth": [Claim("Inserting the class token late, into class-attention layers, beats carrying it from "
                         "the first layer (CaiT, section 3 and Fig. 3): deit-s-sa12-ca2 has lower error than deit-s.",
                         Better("deit-s-sa12-ca2", "deit-s"))],
}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE)


def trial_span(run_dir: Path) -> tuple[int, float | None]:
    """Completed-or-diverged trials and the seconds from the first start to the last finish."""
    from archspace.search.optuna_backend import TRAINED, trial_status
    from archspace.search.rundir import open_study

    trials = [t for t in open_study(run_dir).get_trials(deepcopy=False)
              if trial_status(t) in TRAINED and t.datetime_complete]
    if not trials:
        return 0, None
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    return len(trials), (end - start).total_seconds()


def commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True, capture_output=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def measure(name: str, scale: str, workers: int | None, runs: Path, records: Path) -> dict[str, Any]:
    archspace = str(Path(sys.executable).with_name("archspace"))
    run_dir = runs / f"{name}-{scale}"
    search = [archspace, "search", f"studies/{name}.yaml", "--scale", scale, "--out", str(run_dir)]
    if workers:
        search += ["--workers", str(workers)]
    start = time.perf_counter()
    done = run(search + ["--format", "json"])
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name}: the search exited {done.returncode}")
    reported = run([archspace, "report", str(run_dir), "--format", "json"])
    if reported.returncode != 0:
        raise SystemExit(f"{name}: the report exited {reported.returncode}")
    report = json.loads(reported.stdout)
    trained, span = trial_span(run_dir)
    shown = ["archspace", *search[1:]]
    if run_dir.resolve().is_relative_to(ROOT):
        shown[shown.index(str(run_dir))] = str(run_dir.resolve().relative_to(ROOT))
    record = {
        "study": name, "scale": scale, "command": " ".join(shown),
        "date": datetime.date.today().isoformat(), "commit": commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "search_wall_s": round(wall, 1), "trials_trained": trained,
        "trials_span_s": None if span is None else round(span, 1),
        "counts": report["counts"], "group_by": report["group_by"],
        "variants": {v: {k: s[k] for k in ("completed", "diverged", "best", "median", "params_min", "params_max")}
                     for v, s in report["variants"].items()},
        "generalization": report.get("generalization", {}),
        "claims": [dict(zip(("text", "verdict", "figures"), (c.text, *c.check(report))))
                   for c in CLAIMS.get(name, [])],
    }
    records.mkdir(parents=True, exist_ok=True)
    (records / f"{name}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {records / f'{name}.json'}: " + "; ".join(c["verdict"] for c in record["claims"]), flush=True)
    return record


def rejudge(name: str, runs: Path, records: Path) -> dict[str, Any]:
    """Judge a record's claims again from its run's report (after a claim or rule changed),
    keeping what the run measured: its command, date and times. The run is where
    :func:`measure` put it: ``runs/NAME-SCALE``."""
    path = records / f"{name}.json"
    record = json.loads(path.read_text())
    run_dir = runs / f"{name}-{record['scale']}"
    reported = run([str(Path(sys.executable).with_name("archspace")), "report", str(run_dir), "--format", "json"])
    if reported.returncode != 0:
        raise SystemExit(f"{name}: the report exited {reported.returncode}")
    report = json.loads(reported.stdout)
    record["claims"] = [dict(zip(("text", "verdict", "figures"), (c.text, *c.check(report))))
                        for c in CLAIMS.get(name, [])]
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"rejudged {path}: " + "; ".join(c["verdict"] for c in record["claims"]), flush=True)
    return record


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("studies", nargs="*", help="study names (studies/NAME.yaml)")
    ap.add_argument("--all", action="store_true", help=f"every study with a claim: {', '.join(CLAIMS)}")
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--workers", type=int, help="trials at a time (default: the study's)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "measured", help="where the run directories go")
    ap.add_argument("--records", type=Path, default=RECORDS, help="where the records go")
    ap.add_argument("--rejudge", action="store_true",
                    help="judge existing records again from their runs' reports; train nothing")
    args = ap.parse_args()
    names = list(CLAIMS) if args.all else args.studies
    if not names:
        ap.error("name a study or pass --all")
    for name in names:
        if args.rejudge:
            rejudge(name, args.runs, args.records)
        else:
            measure(name, args.scale, args.workers, args.runs, args.records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
