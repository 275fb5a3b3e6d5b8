"""``archspace report RUN_DIR``: a study's plots and tables as Markdown and self-contained HTML.

Works on a study that is still running or partly failed: it reads whatever the store
holds. Only runs *completed under the same budget* — status ``complete`` (all epochs) or
``diverged`` (counted as 100% error) — make the EDFs, rankings, scatters and tables of
results; pruned, failed, duplicate, rejected and surplus trials are counted per variant and
nothing else. The variant of a trial is the value of its ``group_by`` choice (``layout`` or
``base`` by default when the space chooses one); every value of that choice gets a row,
with the reason when it has no completed run. A study drawn by a non-uniform sampler or
thinned by a pruner says so at the top: its EDFs are not estimates of the space's.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from ..errors import SpecError
from ..search.rundir import open_study
from .metrics import (COMPLETED, STATUSES, complexity_weights, delta_edf, edf, edf_bias, generalization, length_gaps,
                      optimizer_gaps, ranking, scatter, size_spread, variant_summary)
from .plots import plot_bars, plot_edfs, plot_generalization, plot_lines, plot_scatters

BOOT_LEVEL, BOOT_N = 0.9, 1000  # bootstrap of the best error: interval level, resamples
NOT_SAMPLED = "(not sampled)"
# per-variant count columns, always shown / shown only when some variant has one
COUNT_COLUMNS = ("completed", "diverged", "pruned", "failed", "duplicate", "rejected")
OPTIONAL_COUNT_COLUMNS = ("surplus", "running", "waiting")


def check_trial_dirs(ostudy, run_dir: Path) -> None:
    """Refuse a study whose trial directories hold other runs than their records say: each
    trained trial's directory (under ``RUN_DIR/trials``, or where its record says) must hash
    to the trial's key. Directories not on this machine are skipped: the
    report reads only the store.

    Raises:
        SpecError: on ``RUN_DIR``, naming the first trial directory that does not match.
    """
    from ..search.rundir import check_trial_dir

    for t in ostudy.get_trials(deepcopy=False):
        recorded, key = t.user_attrs.get("run_dir"), t.user_attrs.get("key")
        if not recorded or not key or t.user_attrs.get("status") not in ("complete", "diverged", "pruned"):
            continue
        path = Path(run_dir) / "trials" / Path(recorded).name  # this run directory's copy first
        if not path.is_dir():
            path = Path(recorded)
        if not (path / "spec.yaml").is_file():
            continue
        why = check_trial_dir(path, key)
        if why is not None:
            raise SpecError.single("RUN_DIR", f"trial {t.number}'s directory {path} holds another run: {why}; "
                                              f"its files were overwritten, so the report does not use this run "
                                              f"directory")


def collect(ostudy) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-trial rows (status, sampled values, cost, final metrics) and the study settings.

    A trial recorded ``complete`` without a finite eval error cannot go on an EDF: it is
    reported as ``failed``, with that reason, rather than dropped.
    """
    from ..search.optuna_backend import trial_status

    rows = []
    for t in ostudy.get_trials(deepcopy=False):
        a = _checked_attrs(t.user_attrs)
        status, reason = trial_status(t), a.get("reason")
        error = a.get("eval_error")
        if status == "diverged":
            error = 1.0
        elif status == "complete" and not (isinstance(error, (int, float)) and np.isfinite(error)):
            status, reason = "failed", "recorded complete without a finite eval error"
        rows.append({"number": t.number, "status": status, "params": dict(t.params), "cost": a.get("cost") or {},
                     "eval_error": error, "train_loss": a.get("train_loss"), "train_error": a.get("train_error"),
                     "epochs": len(a.get("history") or []), "reason": reason, "duplicate_of": a.get("duplicate_of")})
    return rows, ostudy.user_attrs.get("archspace_study", {})


_NUMBER_ATTRS = ("eval_error", "train_loss", "train_error")


def _checked_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's attributes with every value the report reads of the type it expects; a value
    of another type (a store written by another program, or edited) reads as absent."""
    out = dict(attrs)
    for key in _NUMBER_ATTRS:
        if not isinstance(out.get(key), (int, float)) or isinstance(out.get(key), bool):
            out.pop(key, None)
    cost = out.get("cost")
    out["cost"] = {k: v for k, v in cost.items() if isinstance(v, (int, float)) and not isinstance(v, bool)} \
        if isinstance(cost, dict) else {}
    if not isinstance(out.get("history"), list):
        out["history"] = []
    for key in ("reason", "status"):
        if not isinstance(out.get(key), (str, type(None))):
            out[key] = str(out[key])
    return out


def space_of(ostudy, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The study's space as a dict: the resolved ``archspace_space`` attribute where the
    search wrote it, else the study's inline space, else ``None`` (a space file's path)."""
    space = ostudy.user_attrs.get("archspace_space")
    if isinstance(space, dict):
        return space
    return settings.get("space") if isinstance(settings.get("space"), dict) else None


def _group_key(space: Mapping[str, Any] | None, rows: list[dict], group_by: str | None) -> str | None:
    if group_by:
        return group_by
    choices = (space or {}).get("choices") or {}
    for candidate in ("layout", "base"):
        if candidate in choices:
            return candidate
    for candidate in ("layout", "base"):
        if any(candidate in r["params"] for r in rows):
            return candidate
    return None


def _choice_values(space: Mapping[str, Any] | None, key: str | None, limit: int = 100) -> list[str]:
    """Every value of the group-by choice where the space lists them (a list, or an int range
    of at most ``limit`` values); otherwise none (the variants are the values seen)."""
    choice = ((space or {}).get("choices") or {}).get(key) if key else None
    if isinstance(choice, list):
        return [str(v) for v in choice]
    if isinstance(choice, dict) and "int" in choice:
        lo, hi = choice["int"]
        values = range(int(lo), int(hi) + 1, int(choice.get("step") or 1))
        if len(values) <= limit:
            return [str(v) for v in values]
    return []


def _variant(row: Mapping[str, Any], key: str | None) -> str:
    if key is None:
        return "all"
    return str(row["params"][key]) if key in row["params"] else NOT_SAMPLED


def bias_warning(settings: Mapping[str, Any]) -> str | None:
    """Why the study's EDFs are not an unbiased estimate of its space's error distribution
    (a non-uniform sampler, a pruner), or ``None`` when neither applies."""
    return edf_bias((settings.get("sampler") or {}).get("kind"), (settings.get("pruner") or {}).get("kind"))


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def _size(x: float | None) -> str:
    """Params as millions with three significant digits (0.295M, 2.51M, 25.1M), enough to see
    a few percent of mismatch; under 10K as thousands."""
    if not x:
        return "—"
    if x < 1e4:
        return f"{x / 1e3:.2f}K"
    return f"{x / 1e6:.{max(0, 2 - int(np.floor(np.log10(x / 1e6) + 1e-9)))}f}M"


def _times(ratio: float) -> str:
    return f"{ratio:.2f}×" if ratio >= 1.01 else f"{ratio:.3f}×"


def _size_range(lo: float | None, hi: float | None) -> str:
    return _size(lo) if _size(lo) == _size(hi) else f"{_size(lo)}–{_size(hi)}"


def _size_line(completed: list[dict], variants: Mapping[str, Any], space: Mapping[str, Any] | None
               ) -> tuple[str | None, float | None]:
    """The Markdown line on the trained networks' sizes, and the params spread (max/min)."""
    sizes = [r["cost"]["params"] for r in completed if r["cost"].get("params")]
    if not sizes:
        return None, None
    spread = size_spread(sizes)
    across = "across variants" if sum(1 for v in variants.values() if v["params_min"]) > 1 else "across runs"
    line = (f"Params: {_size_range(min(sizes), max(sizes))} {across}, spread {_times(spread)} (max/min) over "
            f"{len(sizes)} completed trials")
    if space is not None:
        match = space.get("match")
        if not match:
            line += "; the space does not match sizes (no `match`)"
        else:
            metric = "params" if match.get("params") is not None else "flops"
            target = match.get(metric)
            line += f"; the space matches {metric} to {_size(target)} ± {100 * float(match.get('tolerance', 0.05)):g}%"
            flops = [r["cost"]["flops"] for r in completed if r["cost"].get("flops")]
            if metric == "flops" and flops:
                line += f" (flops spread {_times(size_spread(flops))})"
    return line + ".", spread


def _table(header: Sequence[str], align: str, rows: list[Sequence[Any]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
            + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


REPORT_MANIFEST = ".archspace-report.json"
"""Names the plots a report wrote into its folder: the next report removes those, and only those."""


def _written_before(out: Path) -> list[Path]:
    """The plots the manifest of ``out`` says an earlier report wrote (plain ``.png`` names in
    ``out``, still there); a missing or unreadable manifest names none."""
    try:
        names = json.loads((out / REPORT_MANIFEST).read_text(encoding="utf-8")).get("plots", [])
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return []
    if not isinstance(names, list):
        return []
    return [out / n for n in names if isinstance(n, str) and n.endswith(".png") and Path(n).name == n
            and (out / n).is_file() and not (out / n).is_symlink()]


def build_report(run_dir: Path, *, storage: str | None = None, name: str | None = None,
                 group_by: str | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """Compute the analyses, draw the plots, write ``report.md``, ``report.html`` and ``report.json``.

    Returns:
        The contents of ``report.json``: ``markdown``, ``html`` and ``plots`` (paths);
        ``counts`` (trials by status); ``group_by`` (the choice naming a variant);
        ``variants`` (every value of that choice → its counts by status, best and median
        error, params range and, without a completed run, the reason — see
        :func:`~archspace.analysis.metrics.variant_summary`); ``ranking`` (variants by best
        error with bootstrap intervals, :func:`~archspace.analysis.metrics.ranking`);
        ``generalization`` (variant → final train loss, eval error and eval − train gap of its
        best run, :func:`~archspace.analysis.metrics.generalization`); ``bias_warning`` (text or
        ``None``); ``params_spread`` (max/min params over the completed trials, or ``None``).
    """
    ostudy = open_study(run_dir, storage, name)
    check_trial_dirs(ostudy, Path(run_dir))
    rows, settings = collect(ostudy)
    space = space_of(ostudy, settings)
    out = Path(out_dir or Path(run_dir) / "report")
    out.mkdir(parents=True, exist_ok=True)
    for old in _written_before(out):  # plots of an earlier report that may not apply any more
        old.unlink()
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r["status"]] += 1
    key = _group_key(space, rows, group_by)
    for r in rows:
        r["variant"] = _variant(r, key)
    known = _choice_values(space, key)
    summary = variant_summary([{"variant": r["variant"], "status": r["status"], "error": r["eval_error"],
                                "params": r["cost"].get("params")} for r in rows], known)
    completed = [r for r in rows if r["status"] in COMPLETED]
    variants: dict[str, list[dict]] = {v: [r for r in completed if r["variant"] == v]
                                       for v, s in summary.items() if s["completed"]}
    warning = bias_warning(settings)
    size_line, spread = _size_line(completed, summary, space)
    title = ostudy.study_name
    md = [f"# Study report: {title}", ""]
    if warning:
        md += [f"> **Biased EDFs.** {warning}", ""]
    md += ["Trials: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none") + ".", ""]
    if size_line:
        md += [size_line, ""]
    plots: list[Path] = []
    ranked: list[dict[str, Any]] = []
    gen: dict[str, dict[str, Any]] = {}
    lo_pct, hi_pct = 100 * (1 - BOOT_LEVEL) / 2, 100 * (1 + BOOT_LEVEL) / 2
    if not completed:
        md += [f"**No finished trials yet** ({sum(counts.values())} trials in the store, none complete or "
               "diverged). Run or resume the study, then report again.", ""]
    else:
        md += [f"Variants by `{key or 'all'}`. Only runs completed under the study's budget (`complete`, or "
               "`diverged`, which counts as 100% error) make the EDFs, rankings, scatters and tables of results; "
               "pruned, failed, duplicate, rejected and surplus trials are only counted.", ""]
        errs = {v: [r["eval_error"] for r in rs] for v, rs in variants.items()}
        plots.append(plot_edfs({v: edf(e) for v, e in errs.items()}, out / "edf.png",
                               title=f"{title}: EDF of eval error"))
        plots.append(plot_edfs({v: delta_edf(e) for v, e in errs.items()}, out / "edf_delta.png",
                               title=f"{title}: EDF of Δ error to each variant's best",
                               xlabel="Δ top-1 error (%)"))
        # only informative where a variant's runs differ in complexity (matched spaces do not)
        if all(r["cost"].get("flops") for r in completed) and any(
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
        ranked = ranking(errs, n_boot=BOOT_N, level=BOOT_LEVEL)
        plots.append(plot_bars({r["model"]: 100 * r["best"] for r in ranked}, out / "ranking.png",
                               title=f"{title}: best eval error per variant\n(whiskers: {lo_pct:g}th–{hi_pct:g}th "
                                     "percentile of the bootstrap best; none for a single run)",
                               ylabel="best top-1 error (%)",
                               errors=[None if r["best_lo"] is None else (100 * r["best_lo"], 100 * r["best_hi"])
                                       for r in ranked]))
        if any("train.optimizer" in r["params"] for r in completed):
            gaps = optimizer_gaps([{"model": v, "optimizer": r["params"].get("train.optimizer"),
                                    "error": r["eval_error"]} for v, rs in variants.items() for r in rs
                                   if "train.optimizer" in r["params"]])
            if gaps:
                plots.append(plot_bars({k: 100 * g for k, g in gaps.items()}, out / "optimizer_gap.png",
                                       title=f"{title}: SGD − AdamW best error", ylabel="Δ top-1 error (%)"))
        if any("train.epochs" in r["params"] for r in completed):
            gaps_len = length_gaps([{"model": v, "epochs": r["params"]["train.epochs"], "error": r["eval_error"]}
                                    for v, rs in variants.items() for r in rs if "train.epochs" in r["params"]])
            plots.append(plot_lines({v: {ep: 100 * g for ep, g in d.items()} for v, d in gaps_len.items()},
                                    out / "training_length.png", title=f"{title}: Δ error to the longest schedule",
                                    xlabel="epochs", ylabel="Δ top-1 error (%)"))
    if summary:  # every variant, with the reason where it has no completed run
        interval = f"best error, bootstrap {lo_pct:g}th–{hi_pct:g}th pct (upward only)"
        table = []
        for r in ranked:
            s, rs = summary[r["model"]], variants[r["model"]]
            f = np.mean([x["cost"].get("flops", 0) for x in rs])
            rank = f"{r['rank']} (—)" if r["rank_lo"] is None else f"{r['rank']} ({r['rank_lo']}–{r['rank_hi']})"
            table.append([r["model"], s["completed"], s["diverged"], _pct(r["best"]),
                          "—" if r["best_lo"] is None else f"{100 * r['best_lo']:.2f}–{100 * r['best_hi']:.2f}%",
                          rank, _pct(s["median"]), _size_range(s["params_min"], s["params_max"]),
                          f"{f / 1e6:.1f}M" if f else "—", ""])
        table += [[v, s["completed"], s["diverged"], "—", "—", "—", "—", "—", "—", s["reason"]]
                  for v, s in summary.items() if not s["completed"]]
        md += ["## Variants", ""]
        md += _table(["variant", "completed", "diverged", "best error", interval, "rank (interval)",
                      "median error", "params", "flops", "note"], "lrrrrrrrrl", table)
        if ranked:
            md += ["", f"**{interval[0].upper() + interval[1:]}**: the {lo_pct:g}th–{hi_pct:g}th percentile of the "
                   f"best error over {BOOT_N} bootstrap resamples of that variant's completed runs. A resampled best "
                   "is never below the observed best, so the range only reaches upward from it; its width says how "
                   "much the best depends on the luck of a few good runs. The rank interval comes from the same "
                   "resamples; a variant with a single run has neither (—).", ""]
        else:
            md += [""]
        columns = list(COUNT_COLUMNS) + [c for c in OPTIONAL_COUNT_COLUMNS if any(s[c] for s in summary.values())]
        columns += sorted({r["status"] for r in rows} - set(STATUSES))  # a status this report does not know
        md += ["## Trials per variant", ""]
        md += _table(["variant", *columns, "total"], "l" + "r" * (len(columns) + 1),
                     [[v, *(s.get(c, 0) for c in columns),
                       sum(s.get(c, 0) for c in columns if c != "diverged")] for v, s in summary.items()])
        md += ["", "**completed** counts the runs trained to the study's budget: `complete` and `diverged` "
               "(**diverged** is the part of them whose loss became non-finite, counted as 100% error). A "
               "**duplicate** repeats the point of a completed trial and is only counted here, never on a curve or "
               "in a ranking: its twin already is. Pruned, failed, rejected and surplus trials are only counted."
               + ("" if key is None else f" Variants are the values of `{key}`; one that no trial drew yet is "
                                         "listed with zeros." if known else
                  f" Variants are the values of `{key}` seen in the trials: the store does not list the choice's "
                  "values, so one that no trial drew is not shown."), ""]
    if completed:
        if gen:
            md += ["## Generalization (best run per variant)", ""]
            md += _table(["variant", "final train loss", "eval error", "eval − train error"], "lrrr",
                         [[v, f"{g['train_loss']:.4f}", _pct(g["eval_error"]), _pct(g["gap"])]
                          for v, g in sorted(gen.items(), key=lambda kv: (kv[1]["gap"] is None, kv[1]["gap"] or 0))])
            md += ["", "Eval − train error can be negative: the train error is measured during training, averaged "
                   "over the last epoch while the weights still change, on augmented inputs (crop, flip, mixup, "
                   "cutmix) with label smoothing and drop path, so it can be higher than the eval error of the "
                   "final weights.", ""]
        md += ["## Best trials", ""]
        best_rows = []
        for r in sorted(completed, key=lambda r: r["eval_error"])[:10]:
            sampled = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
            best_rows.append([r["number"], r["variant"], r["status"], _pct(r["eval_error"]), sampled,
                              _size(r["cost"].get("params")), f"{r['cost'].get('flops', 0) / 1e6:.1f}M"])
        md += _table(["trial", "variant", "status", "eval error", "sampled", "params", "flops"], "rllrlrr", best_rows)
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
    (out / REPORT_MANIFEST).write_text(json.dumps({"plots": [p.name for p in plots]}) + "\n")
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(_html(title, text, out))
    result = {"markdown": str(out / "report.md"), "html": str(out / "report.html"), "plots": [str(p) for p in plots],
              "counts": dict(counts), "group_by": key, "variants": summary, "ranking": ranked,
              "generalization": gen, "bias_warning": warning, "params_spread": spread}
    (out / "report.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


# a table cell that reads as a number: 12, 0.30M, 12.30%, 1.04×, 1.2–3.4%, 2 (1–3), —
_VALUE = r"[-+−]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?\s?(?:%|[KMGTB]|×)?"
_RANGE = rf"{_VALUE}(?:\s?–\s?{_VALUE})?"
_NUMERIC = re.compile(rf"—|{_RANGE}(?:\s?\((?:—|{_RANGE})\))?")


def _is_numeric(cell: str) -> bool:
    plain = cell.replace("**", "").replace("`", "").strip()
    return bool(plain) and _NUMERIC.fullmatch(plain) is not None


def _inline(text: str) -> str:
    """Markdown inline code and bold as HTML, everything else escaped."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick stays a backtick
        parts[-2:] = [parts[-2] + "`" + parts[-1]]
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{html.escape(part)}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


def _table_html(rows: list[list[str]], align: list[str]) -> str:
    """Header cells aligned as the separator row says; body cells right if numeric, else left."""
    head, *body = rows
    lines = ["<table>", "<tr>" + "".join(
        f'<th style="text-align:{align[i] if i < len(align) else "left"}">{_inline(c)}</th>'
        for i, c in enumerate(head)) + "</tr>"]
    for row in body:
        lines.append("<tr>" + "".join(
            f'<td style="text-align:{"right" if _is_numeric(c) else "left"}">{_inline(c)}</td>' for c in row)
            + "</tr>")
    return "\n".join(lines + ["</table>"])


def _html(title: str, markdown: str, folder: Path) -> str:
    """A self-contained page: tables and text from the Markdown, plots embedded as data URIs."""
    body: list[str] = []
    table: list[list[str]] = []
    align: list[str] = []
    items: list[str] = []
    code: list[str] | None = None

    def flush() -> None:
        if table:
            body.append(_table_html(table, align))
            table.clear()
            align.clear()
        if items:
            body.append("<ul>\n" + "\n".join(f"<li>{_inline(i)}</li>" for i in items) + "\n</ul>")
            items.clear()

    for line in markdown.splitlines():
        if line.startswith("```"):
            if code is None:
                flush()
                code = []
            else:
                body.append("<pre>" + "\n".join(html.escape(c) for c in code) + "</pre>")
                code = None
            continue
        if code is not None:
            code.append(line)
            continue
        if line.startswith("|"):
            if items:
                flush()
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if table and not align and all(re.fullmatch(r":?-+:?", c) for c in cells):
                align.extend("right" if c.endswith(":") else "left" for c in cells)
            else:
                table.append(cells)
            continue
        if line.startswith("- "):
            if table:
                flush()
            items.append(line[2:])
            continue
        flush()
        if line.startswith("!["):
            name = line[line.index("(") + 1:-1]
            data = base64.b64encode((folder / name).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith(">"):
            body.append(f"<blockquote><p>{_inline(line[1:].strip())}</p></blockquote>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush()
    if code is not None:  # an unclosed block still shows
        body.append("<pre>" + "\n".join(html.escape(c) for c in code) + "</pre>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
             "th{background:#f3f3f3}img{max-width:100%;display:block;margin:1em 0}"
             "pre{background:#f6f6f6;padding:1em;overflow:auto}code{background:#f3f3f3;padding:0 2px}"
             "blockquote{border-left:4px solid #d9822b;background:#fff6ec;margin:1em 0;padding:.2em 1em}")
    body_text = "\n".join(body)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n{body_text}\n</body></html>\n")
