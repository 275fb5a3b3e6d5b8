"""Write docs/studies/<name>.md for every study in studies/, from the file's header comment.

Run from the repository root:  .venv/bin/python docs/gen_study_pages.py   (tests check the pages are current)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def page(path: Path) -> str:
    text = path.read_text()
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line[1:].strip())
    data = yaml.safe_load(text)
    scales = list((data.get("scales") or {}).keys())
    name = data["name"]
    lines = [f"# Study `{name}`", "", " ".join(c for c in comment if c and not c.startswith("archspace ")), "",
             "## Run it", "", "```bash"]
    lines.append(f"archspace search studies/{path.name} --dry-run      # the variants and their cost")
    for scale in scales:
        lines.append(f"archspace search studies/{path.name} --scale {scale}   # then: archspace report runs/{name}-{scale}")
    lines.append(f"archspace search studies/{path.name}                # as written; then: archspace report runs/{name}")
    lines += ["```", "", "Scales (deep-merged into the study by `--scale NAME`):", ""]
    for scale, over in (data.get("scales") or {}).items():
        lines.append(f"- `{scale}`: `{yaml.safe_dump(over, default_flow_style=True, width=1000).strip()}`")
    lines += measured(name)
    lines += ["", "## The study file", "", "```yaml", text.strip(), "```", ""]
    return "\n".join(lines)


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def _minutes(s) -> str:
    return "—" if s is None else f"{s / 60:.1f} min"


def measured(name: str) -> list[str]:
    """The "Measured" section from docs/studies/measured/NAME.json (docs/measure_study.py)."""
    path = ROOT / "docs" / "studies" / "measured" / f"{name}.json"
    if not path.exists():
        return []
    r = json.loads(path.read_text())
    lines = ["", f"## Measured at the `{r['scale']}` scale", "",
             f"`{r['command']}`, run on {r['date']} (commit {r['commit']}; {r['machine']}): "
             f"{r['trials_trained']} trials trained in {_minutes(r['trials_span_s'])} from the first start to the "
             f"last finish; the search command took {_minutes(r['search_wall_s'])}. "
             "Recorded by `docs/measure_study.py`; its docstring gives the rules of the verdicts below, fixed in "
             "advance and the same for every study.", "",
             f"| {r['group_by'] or 'variant'} | completed | diverged | best error | median error | params | "
             "eval − train error (best run) |", "|---|---:|---:|---:|---:|---:|---:|"]
    gen = r.get("generalization", {})
    for v, s in r["variants"].items():
        lo, hi = s["params_min"], s["params_max"]
        size = "—" if lo is None else (f"{lo / 1e6:.2f}M" if lo == hi else f"{lo / 1e6:.2f}–{hi / 1e6:.2f}M")
        gap = gen.get(v, {}).get("gap")
        lines.append(f"| {v} | {s['completed']} | {s['diverged']} | {_pct(s['best'])} | {_pct(s['median'])} | "
                     f"{size} | {_pct(gap)} |")
    lines += ["", "The paper's claims against these runs:", ""]
    lines += [f"- {c['text']} — **{c['verdict']}**: {c['figures']}." for c in r["claims"]]
    return lines


def main(check: bool = False) -> int:
    out = ROOT / "docs" / "studies"
    out.mkdir(exist_ok=True)
    stale = []
    for path in sorted((ROOT / "studies").glob("*.yaml")):
        target = out / f"{path.stem}.md"
        text = page(path)
        if check:
            if not target.exists() or target.read_text() != text:
                stale.append(target.name)
        else:
            target.write_text(text)
            print(f"wrote docs/studies/{target.name}")
    if stale:
        print(f"out of date: {', '.join(stale)}: run python docs/gen_study_pages.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv))
