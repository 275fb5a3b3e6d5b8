"""``archspace report RUN_DIR``: a study's plots and tables as Markdown and self-contained HTML.

Works on a study that is still running or partly failed: it reads whatever the store
holds. Trained trials (complete, diverged — counted as 100% error —, duplicate) make the
EDFs; the variant of a trial is the value of its ``group_by`` choice (``layout`` by
default when the space chooses a layout).
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import SpecError
from .metrics import (complexity_weights, delta_edf, edf, generalization, length_gaps, optimizer_gaps, ranking,
                      scatter)
from .plots import plot_bars, plot_edfs, plot_generalization, plot_lines, plot_scatters

TRAINED = ("complete", "diverged", "duplicate")


def open_study(run_dir: Path, storage: str | None = None, name: str | None = None):
    """The Optuna study of a run directory (or of ``storage``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is None:
        db = Path(run_dir) / "study.db"
        if not db.is_file():
            raise SpecError.single("RUN_DIR", f"no study store in {run_dir} (expected {db})")
        storage = f"sqlite:///{db.resolve()}"
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except Exception as exc:
        raise SpecError.single("--storage", f"cannot read {storage}: {str(exc).splitlines()[0]}") from None
    if name is None:
        if len(names) != 1:
            raise SpecError.single("--study", f"the store holds {len(names)} studies ({', '.join(names)}): name one")
        name = names[0]
    if name not in names:
        raise SpecError.single("--study", f"no study {name!r} in the store (found: {', '.join(names)})")
    return optuna.load_study(study_name=name, storage=storage)


def collect(ostudy) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-trial rows (status, sampled values, cost, final metrics) and the study settings."""
    from ..search.optuna_backend import trial_status

    rows = []
    for t in ostudy.get_trials(deepcopy=False):
        a = t.user_attrs
        status = trial_status(t)
        error = a.get("eval_error")
        if status == "diverged":
            error = 1.0
        rows.append({"number": t.number, "status": status, "params": dict(t.params), "cost": a.get("cost") or {},
                     "eval_error": error, "train_loss": a.get("train_loss"), "train_error": a.get("train_error"),
                     "epochs": len(a.get("history") or []), "reason": a.get("reason")})
    return rows, ostudy.user_attrs.get("archspace_study", {})


def _group_key(settings: dict[str, Any], rows: list[dict], group_by: str | None) -> str | None:
    if group_by:
        return group_by
    choices = ((settings.get("space") or {}) if isinstance(settings.get("space"), dict) else {}).get("choices", {})
    for candidate in ("layout", "base"):
        if candidate in choices:
            return candidate
    if any("layout" in r["params"] for r in rows):
        return "layout"
    return None


def build_report(run_dir: Path, *, storage: str | None = None, name: str | None = None,
                 group_by: str | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """Compute the analyses, draw the plots, write ``report.md`` and ``report.html``.

    Returns:
        ``{"markdown", "html", "plots", "counts", "variants"}`` (paths and numbers).
    """
    ostudy = open_study(run_dir, storage, name)
    rows, settings = collect(ostudy)
    out = Path(out_dir or Path(run_dir) / "report")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):  # plots of an earlier report that may not apply any more
        old.unlink()
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r["status"]] += 1
    key = _group_key(settings, rows, group_by)
    trained = [r for r in rows if r["status"] in TRAINED and r["eval_error"] is not None]
    variants: dict[str, list[dict]] = defaultdict(list)
    for r in trained:
        variants[str(r["params"].get(key, "all")) if key else "all"].append(r)
    title = ostudy.study_name
    md = [f"# Study report: {title}", ""]
    md.append("Trials: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none") + ".")
    plots: list[Path] = []
    if not trained:
        md += ["", f"**No finished trials yet** ({sum(counts.values())} trials in the store). "
               "Run or resume the study, then report again.", ""]
    else:
        md += ["", f"Variants by `{key or 'all'}`; a diverged run counts as 100% error.", ""]
        errs = {v: [r["eval_error"] for r in rs] for v, rs in variants.items()}
        plots.append(plot_edfs({v: edf(e) for v, e in errs.items()}, out / "edf.png",
                               title=f"{title}: EDF of eval error"))
        plots.append(plot_edfs({v: delta_edf(e) for v, e in errs.items()}, out / "edf_delta.png",
                               title=f"{title}: EDF of Δ error to each variant's best",
                               xlabel="Δ top-1 error (%)"))
        # only informative where a variant's runs differ in complexity (matched spaces do not)
        if all(r["cost"].get("flops") for r in trained) and any(
                len({r["cost"]["flops"] for r in rs}) > 1 for rs in variants.values()):
            curves = {}
            for v, rs in variants.items():
                w = complexity_weights([r["cost"]["flops"] for r in rs])
                curves[v] = edf([r["eval_error"] for r in rs], weights=w)
            plots.append(plot_edfs(curves, out / "edf_complexity.png",
                                   title=f"{title}: complexity-normalized EDF (flops)"))
        panels = {}
        for label, fn in (("train.lr", lambda p: p.get("train.lr")),
                          ("train.weight_decay", lambda p: p.get("train.weight_decay")),
                          ("lr·wd", lambda p: p["train.lr"] * p["train.weight_decay"]
                           if "train.lr" in p and "train.weight_decay" in p else None)):
            by_v = {}
            for v, rs in variants.items():
                pts = [(fn(r["params"]), r["eval_error"]) for r in rs if fn(r["params"]) is not None]
                if pts:
                    by_v[v] = scatter([x for x, _ in pts], [e for _, e in pts])
            if by_v:
                panels[label] = by_v
        if panels:
            plots.append(plot_scatters(panels, out / "scatter.png", title=f"{title}: error vs hyperparameters"))
        gen_rows = [{"model": v, **r} for v, rs in variants.items() for r in rs
                    if r["train_loss"] is not None and r["status"] != "diverged"]
        gen = generalization(gen_rows)
        if gen:
            plots.append(plot_generalization(gen, out / "generalization.png",
                                             title=f"{title}: train loss vs eval error (best run per variant)"))
        ranked = ranking(errs)
        plots.append(plot_bars({r["model"]: 100 * r["best"] for r in ranked}, out / "ranking.png",
                               title=f"{title}: best eval error per variant\n(90% bootstrap interval)",
                               ylabel="best top-1 error (%)",
                               errors=[(100 * r["best_lo"], 100 * r["best_hi"]) for r in ranked]))
        if any("train.optimizer" in r["params"] for r in trained):
            gaps = optimizer_gaps([{"model": v, "optimizer": r["params"].get("train.optimizer"),
                                    "error": r["eval_error"]} for v, rs in variants.items() for r in rs
                                   if "train.optimizer" in r["params"]])
            if gaps:
                plots.append(plot_bars({k: 100 * g for k, g in gaps.items()}, out / "optimizer_gap.png",
                                       title=f"{title}: SGD − AdamW best error", ylabel="Δ top-1 error (%)"))
        if any("train.epochs" in r["params"] for r in trained):
            gaps_len = length_gaps([{"model": v, "epochs": r["params"]["train.epochs"], "error": r["eval_error"]}
                                    for v, rs in variants.items() for r in rs if "train.epochs" in r["params"]])
            plots.append(plot_lines({v: {ep: 100 * g for ep, g in d.items()} for v, d in gaps_len.items()},
                                    out / "training_length.png", title=f"{title}: Δ error to the longest schedule",
                                    xlabel="epochs", ylabel="Δ top-1 error (%)"))
        md += ["## Variants", "", "| variant | runs | diverged | best error | 90% interval | rank (interval) | "
               "median error | params | flops |", "|---|---:|---:|---:|---|---|---:|---:|---:|"]
        for r in ranked:
            rs = variants[r["model"]]
            med = float(np.median([x["eval_error"] for x in rs]))
            div = sum(1 for x in rs if x["status"] == "diverged")
            p = np.mean([x["cost"].get("params", 0) for x in rs])
            f = np.mean([x["cost"].get("flops", 0) for x in rs])
            md.append(f"| {r['model']} | {r['runs']} | {div} | {100 * r['best']:.2f}% | "
                      f"{100 * r['best_lo']:.2f}–{100 * r['best_hi']:.2f}% | {r['rank']} ({r['rank_lo']}–{r['rank_hi']}) | "
                      f"{100 * med:.2f}% | {p / 1e6:.2f}M | {f / 1e6:.1f}M |")
        if gen:
            md += ["", "## Generalization (best run per variant)", "", "| variant | final train loss | eval error | "
                   "eval − train error |", "|---|---:|---:|---:|"]
            for v, g in sorted(gen.items(), key=lambda kv: kv[1]["gap"]):
                md.append(f"| {v} | {g['train_loss']:.4f} | {100 * g['eval_error']:.2f}% | {100 * g['gap']:.2f}% |")
        md += ["", "## Best trials", "", "| trial | variant | eval error | sampled | params | flops |",
               "|---:|---|---:|---|---:|---:|"]
        for r in sorted(trained, key=lambda r: r["eval_error"])[:10]:
            sampled = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
            md.append(f"| {r['number']} | {r['params'].get(key, 'all') if key else 'all'} | "
                      f"{100 * r['eval_error']:.2f}% | {sampled} | {r['cost'].get('params', 0) / 1e6:.2f}M | "
                      f"{r['cost'].get('flops', 0) / 1e6:.1f}M |")
        md += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    rejected = [r for r in rows if r["status"] == "rejected"]
    if rejected:
        md += ["", f"## Rejected points ({len(rejected)})", ""]
        reasons: dict[str, int] = defaultdict(int)
        for r in rejected:
            reasons[r["reason"] or "?"] += 1
        md += [f"- {n} × {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:10]]
    md += ["", "## Study settings", "", "```yaml", yaml.safe_dump(settings, sort_keys=False).strip() or "{}", "```",
           "", f"Optuna's dashboard opens the same store: `optuna-dashboard sqlite:///{Path(run_dir).resolve()}/study.db`."]
    text = "\n".join(md) + "\n"
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(_html(title, text, out))
    (out / "report.json").write_text(json.dumps({"counts": dict(counts), "variants": {v: len(rs) for v, rs in variants.items()}}))
    return {"markdown": str(out / "report.md"), "html": str(out / "report.html"), "plots": [str(p) for p in plots],
            "counts": dict(counts), "variants": {v: len(rs) for v, rs in variants.items()}}


def _html(title: str, markdown: str, folder: Path) -> str:
    """A self-contained page: tables and text from the Markdown, plots embedded as data URIs."""
    body, table, code = [], [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            body.append("</pre>" if code else "<pre>")
            code = not code
            continue
        if code:
            body.append(html.escape(line))
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= set("-:") for c in cells):
                tag = "th" if not table else "td"
                table.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if table:
            body.append("<table>" + "".join(table) + "</table>")
            table = []
        if line.startswith("!["):
            name = line[line.index("(") + 1:-1]
            data = base64.b64encode((folder / name).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    if table:
        body.append("<table>" + "".join(table) + "</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#f3f3f3}img{max-width:100%;display:block;margin:1em 0}"
             "pre{background:#f6f6f6;padding:1em;overflow:auto}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
