"""Search-layer overhead per trial, and trials per hour of a tiny real study.

Part 1 (framework overhead, nothing trained): for a few spaces and samplers, trials are asked
from an Optuna study in a SQLite file and split into

  sampling    Optuna ``ask`` plus every ``suggest_*`` the space makes (timed inside resolve)
  resolve     ``Space.resolve`` minus the suggest calls: overrides, layout, validation,
              complexity matching, analytic cost, hashing
  storage     what the Optuna backend writes per trial: the record's attributes in three
              transactions (owner/key/cost; claim/spec/recipe/versions; history/status and,
              without a pruner, the epochs' values: see ``optuna_backend.set_user_attrs``),
              ``tell``
  scans       the backend's per-trial reads of the study: duplicate check and budget claim (one
              read), then the trained count and the live view's summary (one read for both;
              they grow with the study)
  gc          the ``gc.collect()`` that ``optimize(gc_after_trial=True)`` would run after each
              trial (``run_worker`` passes ``gc_after_trial=False``: shown, not counted)

and, end to end, ``run_worker`` on the quickstart's space (the real per-trial loop: heartbeats,
stale-trial checks, claims, callbacks) with the trainer replaced by a no-op (``--repeats`` runs per
sampler, interleaved, since this machine's load drifts: the median run is shown, with the range). That per-trial
overhead, plus the process start shared by the quickstart's trials, is shown as a share of one
quickstart trial (studies/quickstart.yaml trained once here, or ``--quickstart-s``), split into
the parts above plus 'other' (what they leave out: Optuna's per-trial bookkeeping, heartbeat
thread, stale-trial check, callbacks), with a line saying whether the < 1% target is met.

Part 2 (real training): ``archspace search`` on a tiny CoAtNet study, 1-epoch trials on
synthetic data, with 1 and 2 workers; trials per hour over the whole command and over the
trials alone (first start to last finish, from the store).

    python benchmarks/search_overhead.py                     # both parts
    python benchmarks/search_overhead.py --trials 300 --skip-real
    python benchmarks/search_overhead.py --trials 60 --skip-real --only-quickstart --quickstart-s 9.5
    python benchmarks/search_overhead.py --trials 60 --skip-real --only-quickstart --no-sqlite-wal
    python benchmarks/search_overhead.py --real-trials 12 --oversubscribed --json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import yaml

from archspace._cpus import share
from archspace.search import optuna_backend as ob
from archspace.search.runner import summarize
from archspace.search.space import load_space
from archspace.search.study import load_study

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage")  # components() asks outside optimize

TINY_SPACE = {
    "base": "coatnet-0",
    "set": {"input.size": 32, "stages[*].depth": 1, "stem.channels": [16, 16]},
    "choices": {"layout": ["C-C-C-C", "C-C-T-T"], "train.lr": {"loguniform": [1.0e-3, 1.0e-2]}},
    "match": {"params": 3.35e5, "tolerance": 0.05},
}
DESIGN_SPACE = {  # the example of DESIGN.md "Spaces and studies"
    "base": "coatnet-0",
    "set": {"input.size": 32},
    "choices": {
        "layout": ["C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T", "VIT_REL"],
        "stages[1].depth": {"int": [2, 6]},
        "train.lr": {"loguniform": [1.0e-4, 1.0e-2]},
        "train.weight_decay": {"loguniform": [1.0e-3, 1.0]},
        "train.optimizer": ["adamw", "sgd"],
    },
    "match": {"params": 2.0e6, "tolerance": 0.05, "by": "width"},
    "constraints": {"flops": [None, 1.0e9]},
}
QUICKSTART = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"
QUICKSTART_SPACE = yaml.safe_load(QUICKSTART.read_text())["space"]
SPACES = {
    "quickstart (3 choices, match)": QUICKSTART_SPACE,
    "tiny (2 choices, match)": TINY_SPACE,
    "tiny, no match": {k: v for k, v in TINY_SPACE.items() if k != "match"},
    "design example @32 (5 choices, match)": DESIGN_SPACE,
    "design example @224": {**DESIGN_SPACE, "set": {"input.size": 224}},
}
QUICKSTART_EPOCHS = yaml.safe_load(QUICKSTART.read_text())["train"]["epochs"]
TRAIN = {"data": "synthetic", "epochs": QUICKSTART_EPOCHS, "batch_size": 64}  # per-trial writes as the quickstart's


class TimedSuggester(ob.OptunaSuggester):
    """The backend's suggester, adding up the time spent in Optuna's suggest calls."""

    def __init__(self, trial):
        super().__init__(trial)
        self.seconds = 0.0

    def _timed(self, fn, *args, **kw):
        t = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            self.seconds += time.perf_counter() - t

    def categorical(self, name, values):
        return self._timed(super().categorical, name, values)

    def int(self, name, low, high, step=1, log=False):
        return self._timed(super().int, name, low, high, step=step, log=log)

    def float(self, name, low, high, log=False):
        return self._timed(super().float, name, low, high, log=log)


QUICKSTART_SAMPLER = "random, balanced"
"""The quickstart's sampler: random, with equal samples per layout (``sampler.per_variant``)."""


def _sampler(kind: str, seed: int = 0) -> optuna.samplers.BaseSampler:
    layouts = QUICKSTART_SPACE["choices"]["layout"]
    return {"random": lambda: optuna.samplers.RandomSampler(seed=seed),
            QUICKSTART_SAMPLER: lambda: ob.BalancedSampler(optuna.samplers.RandomSampler(seed=seed), "layout", layouts),
            "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)}[kind]()


def _samplers(space: str) -> tuple[str, ...]:
    """The samplers measured on a space: the quickstart's own (balanced) on its space only."""
    if space.startswith("quickstart"):
        return (QUICKSTART_SAMPLER, "random", "tpe")
    return ("random",) if "no match" in space else ("random", "tpe")


def _fake_history(epochs: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0, "train_error": 0.5, "eval_loss": 1.0, "eval_error": 0.5, "lr": 1e-3,
             "train_time": 1.0, "images_per_s": 500.0, "time": 1.0} for e in range(1, epochs + 1)]


def components(space_data: dict, sampler: str, n: int, folder: Path) -> dict:
    """Per-trial ms of sampling / resolve / storage / scans over ``n`` trials on a fresh SQLite store."""
    space = load_space(space_data, TRAIN)
    storage = ob.open_storage(f"sqlite:///{folder / f'components-{time.monotonic_ns()}.db'}")  # as run_worker
    study = optuna.create_study(storage=storage, sampler=_sampler(sampler), study_name="bench")
    rows = {"sampling": [], "resolve": [], "storage": [], "scans": [], "gc": []}
    versions = ob.versions()
    for i in range(n):
        t0 = time.perf_counter()
        trial = study.ask()
        t_ask = time.perf_counter() - t0
        suggest = TimedSuggester(trial)
        t0 = time.perf_counter()
        point = space.resolve(suggest)
        t_resolve = time.perf_counter() - t0
        rows["sampling"].append(1e3 * (t_ask + suggest.seconds))
        rows["resolve"].append(1e3 * (t_resolve - suggest.seconds))

        t0 = time.perf_counter()  # the objective's writes, batched as it batches them
        out = str(folder / "trials" / f"{trial.number:05d}")
        ob.set_user_attrs(trial, owner={"host": "bench", "pid": os.getpid()}, key=point.key,
                          cost={k: point.cost[k] for k in ("params", "flops", "acts")}, match_scale=point.match_scale)
        ob.set_user_attrs(trial, claimed=True, spec=point.spec.model_dump(mode="json", exclude_none=True),
                          train=point.train.model_dump(mode="json"), seed=point.train.seed, versions=versions,
                          run_dir=out)
        history = _fake_history(QUICKSTART_EPOCHS)  # no pruner (the quickstart's): the epochs' values
        ob.set_user_attrs(trial, {row["epoch"]: row["eval_error"] for row in history},  # go with the record
                          history=history, final_status="complete",
                          **{k: history[-1][k] for k in ("train_loss", "train_error", "eval_error")}, status="complete")
        study.tell(trial, 0.5)
        rows["storage"].append(1e3 * (time.perf_counter() - t0))

        t0 = time.perf_counter()
        study.get_trials(deepcopy=False)                                      # _twin (and _claim)
        trials = study.get_trials(deepcopy=False)                             # stop_when_done's read,
        ob.count_trained(study, trials)                                       # its count
        summarize(study, trials)                                              # and the live view
        rows["scans"].append(1e3 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        gc.collect()                                                          # optimize(gc_after_trial=True)
        rows["gc"].append(1e3 * (time.perf_counter() - t0))
    out = {}
    for name, values in rows.items():
        k = max(1, min(20, n // 5))
        out[name] = {"mean": statistics.fmean(values), "first": statistics.fmean(values[:k]),
                     "last": statistics.fmean(values[-k:])}
    return out


def end_to_end(space_data: dict, sampler: str, n: int, folder: Path) -> dict:
    """``run_worker`` for ``n`` trials with a no-op trainer: the whole per-trial loop in ms."""
    from archspace.train.loop import TrainResult

    from archspace.complexity import complexity
    from archspace.graph import lower

    def no_train(spec, config, out_dir=None, *, callback=None, **kw):
        history = _fake_history(config.epochs)
        for row in history:
            if callback is not None:
                callback(row)
        cost = complexity(lower(spec))  # what a real run reports: the built network's size
        return TrainResult("complete", config.epochs, history, params=cost["params"], flops=cost["flops"])

    if sampler == QUICKSTART_SAMPLER:  # per_variant x 3 layouts: n rounded up to a multiple of 3
        how = {"sampler": {"kind": "random", "seed": 0, "per_variant": -(-n // 3)}}
        n = 3 * how["sampler"]["per_variant"]
    else:
        how = {"sampler": {"kind": sampler, "seed": 0}, "trials": n}
    data = {"name": "bench", "space": space_data, "train": TRAIN, **how}
    study = load_study(data)
    url = f"sqlite:///{folder / f'e2e-{time.monotonic_ns()}.db'}"
    real_train, ob.train = ob.train, no_train
    stamps: list[float] = []
    try:
        t0 = time.perf_counter()
        ostudy = ob.run_worker(study, url, folder / "e2e", n, on_trial=lambda s, t, trials: (summarize(s, trials),
                                                                                  stamps.append(time.perf_counter())))
        total = time.perf_counter() - t0
    finally:
        ob.train = real_train
    gaps = [1e3 * (b - a) for a, b in zip([t0, *stamps], stamps)]
    k = max(1, min(20, n // 5))
    return {"trials": len(ostudy.trials), "mean": 1e3 * total / n, "first": statistics.fmean(gaps[:k]),
            "last": statistics.fmean(gaps[-k:])}


def quickstart_trial_s(folder: Path) -> dict[str, float]:
    """Wall seconds of a trial of studies/quickstart.yaml as the search trains it (full recipe:
    digits, 6 epochs), in this process, with the threads ``archspace search`` gives its one
    worker (its whole thread budget: OMP_NUM_THREADS, else the usable cores): one trial per
    layout (the first trainable sampled point of each), since the quickstart trains as many of
    each and their times differ (C-C-C-C is the slowest). A 1-epoch warm-up run goes first: the
    process's first training pays one-off costs."""
    import torch

    from archspace.search.runner import sample_points
    from archspace.train import train

    study = load_study(QUICKSTART)
    choice = study.variant_choice
    points: dict[str, object] = {}
    for values, point, reason in sample_points(study, 40):
        if reason is None and values[choice] not in points:
            points[values[choice]] = point
    threads = torch.get_num_threads()
    torch.set_num_threads(share(1))
    times = {}
    try:  # the process's first training pays one-off costs (kernel set-up, first data load): not any layout's
        first = next(iter(points.values()))
        train(first.spec, first.train.model_copy(update={"epochs": 1, "warmup_epochs": 0}), folder / "warm-up")
        for variant, point in sorted(points.items()):
            t0 = time.perf_counter()
            train(point.spec, point.train, folder / f"quickstart-{variant}")
            times[variant] = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    return times


def process_start_s() -> tuple[float, float]:
    """Wall seconds to start a search process: the interpreter, the imports a worker pays
    (CLI, Optuna backend, torch) and the quickstart's data loaded once (digits, at its input
    size) before its first trial, once per process, not per trial; and of that, the interpreter,
    ``import torch`` and torch's first optimizer (whose construction imports ``torch._dynamo``,
    ~1.8 s): what any PyTorch training process pays. Median of five processes; archspace's
    share is timed inside each process, after torch's part (what archspace adds to a PyTorch
    trainer; the difference of two processes' wall times is swamped by this machine's drift)."""
    data = yaml.safe_load(QUICKSTART.read_text())
    load = f"load_data({data['train']['data']!r}, size={int(data['space']['set']['input.size'])})"
    code = ("import time; t0 = time.perf_counter(); import torch; "
            "torch.optim.AdamW([torch.zeros(1, requires_grad=True)]); t1 = time.perf_counter(); "
            "import archspace.cli.app, archspace.search.optuna_backend, archspace.train; "
            f"from archspace.data import load_data; {load}; print(time.perf_counter() - t1)")
    walls, ours = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
        walls.append(time.perf_counter() - t0)
        ours.append(float(out.split()[-1]))
    total, share = statistics.median(walls), statistics.median(ours)
    return total, total - share


# -- part 2: real trials per hour ----------------------------------------------------------------

def _trained_span(url: str) -> tuple[int, float]:
    study = optuna.load_study(study_name="bench-real", storage=url)
    done = [t for t in study.get_trials() if ob.trial_status(t) in ob.TRAINED]
    if not done:
        return 0, float("nan")
    start = min(t.datetime_start for t in done)
    end = max(t.datetime_complete for t in done)
    return len(done), (end - start).total_seconds()


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")


def real_run(folder: Path, trials: int, workers: int, mode: str) -> dict:
    """mode: 'cli' (archspace search --workers N), 'procs' (N processes, cores/N threads each: what
    --workers N does), 'oversubscribed' (N plain processes, each with every core)."""
    study = folder / f"study-{mode}-{workers}.yaml"
    study.write_text(yaml.safe_dump({"name": "bench-real", "space": TINY_SPACE, "train": {**TRAIN, "epochs": 1},
                                     "sampler": {"kind": "random", "seed": 0}, "trials": trials}))
    out = folder / f"real-{mode}-{workers}"
    out.mkdir()
    url = f"sqlite:///{out / 'study.db'}"
    exe = str(Path(sys.executable).with_name("archspace"))
    base = [str(study), "--out", str(out), "--storage", url, "--format", "json"]
    t0 = time.perf_counter()
    if mode == "cli":
        r = subprocess.run([exe, "search", *base, "--workers", str(workers)], capture_output=True, text=True)
        rcs, err = [r.returncode], [_error_line(r.stderr)] if r.returncode else []
    else:
        env = dict(os.environ)
        cmd = [exe, "search", *base]
        if mode == "procs":  # each process's thread budget (archspace._cpus): its share of the cores
            env["OMP_NUM_THREADS"] = str(share(workers))
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
        if workers > 1:  # start the others once the first has created the study (see the schema race)
            deadline = time.time() + 60
            while time.time() < deadline and procs[0].poll() is None:
                try:
                    if optuna.study.get_all_study_names(storage=url):
                        break
                except Exception:
                    pass
                time.sleep(0.05)
            procs += [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                      for _ in range(workers - 1)]
        errs = [p.communicate()[1] for p in procs]
        rcs = [p.returncode for p in procs]
        err = [_error_line(e) for e, rc in zip(errs, rcs) if rc]
    wall = time.perf_counter() - t0
    n, span = _trained_span(url)
    return {"mode": mode, "workers": workers, "rc": rcs, "error": err, "trained": n, "wall_s": wall,
            "span_s": span, "per_hour_wall": 3600 * n / wall, "per_hour_trials": 3600 * n / span if span else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=150, help="trials per overhead measurement (part 1)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="end-to-end runs per sampler, interleaved; the median is reported (with min-max)")
    ap.add_argument("--real-trials", type=int, default=8, help="1-epoch trials per real run (part 2)")
    ap.add_argument("--skip-real", action="store_true", help="part 1 only")
    ap.add_argument("--skip-overhead", action="store_true", help="part 2 only")
    ap.add_argument("--only-quickstart", action="store_true", help="part 1 on the quickstart's space only")
    ap.add_argument("--no-sqlite-wal", action="store_true",
                    help=f"SQLite stores in rollback-journal mode, not archspace's default write-ahead log "
                         f"(sets {ob.SQLITE_WAL_ENV}=0, for part 2's searches too)")
    ap.add_argument("--oversubscribed", action="store_true",
                    help="also run 2 plain processes that each use every core (slow: shows the OpenMP spin problem)")
    ap.add_argument("--quickstart-s", type=float, default=None,
                    help="seconds of one quickstart trial (default: train one per layout and take the mean)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args()
    if args.no_sqlite_wal:
        os.environ[ob.SQLITE_WAL_ENV] = "0"
    import torch

    torch.set_num_threads(1)
    report: dict = {"overhead": [], "end_to_end": [], "real": [], "cpus": os.cpu_count(),
                    "sqlite_wal": os.environ.get(ob.SQLITE_WAL_ENV) != "0",
                    "versions": ob.versions()}
    with tempfile.TemporaryDirectory(prefix="archspace-bench-") as tmp:
        folder = Path(tmp)
        spaces = {k: v for k, v in SPACES.items() if k.startswith("quickstart") or not args.only_quickstart}
        for name, data in spaces.items() if not args.skip_overhead else ():
            for sampler in _samplers(name):
                report["overhead"].append({"space": name, "sampler": sampler,
                                           **components(data, sampler, args.trials, folder)})
        runs: dict[str, list[dict]] = {}
        for _ in range(args.repeats) if not args.skip_overhead else ():  # interleaved: the machine's load drifts
            for sampler in _samplers("quickstart"):
                runs.setdefault(sampler, []).append(end_to_end(QUICKSTART_SPACE, sampler, args.trials, folder))
        for sampler, rs in runs.items():
            means = [r["mean"] for r in rs]
            middle = sorted(rs, key=lambda r: r["mean"])[len(rs) // 2]
            report["end_to_end"].append({"space": "quickstart (3 choices, match)", "sampler": sampler, **middle,
                                         "mean": statistics.median(means), "min": min(means), "max": max(means),
                                         "repeats": len(rs)})
        if report["end_to_end"]:
            per_layout = {"given": args.quickstart_s} if args.quickstart_s else quickstart_trial_s(folder)
            report["quickstart_trial_s_per_layout"] = per_layout
            report["quickstart_trial_s"] = statistics.fmean(per_layout.values())
            report["quickstart_trials"] = load_study(QUICKSTART).n_trials()
            report["process_start_s"], report["torch_start_s"] = process_start_s()
        if not args.skip_real:
            runs = [(1, "cli"), (2, "cli"), (2, "procs")] + ([(2, "oversubscribed")] if args.oversubscribed else [])
            for workers, mode in runs:
                report["real"].append(real_run(folder, args.real_trials, workers, mode))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    if report["overhead"]:
        _print_overhead(report, args)
    if report["real"]:
        _print_real(report, args)


def _print_overhead(report: dict, args) -> None:
    print(f"search overhead per trial, ms (SQLite store{' in WAL mode' if report['sqlite_wal'] else ', rollback journal'}, "
          f"{args.trials} trials; 'first'/'last': mean of the "
          f"first/last {max(1, min(20, args.trials // 5))} trials)")
    print(f"{'space':38} {'sampler':16} {'sampling':>17} {'resolve':>17} {'storage':>17} {'scans':>17} "
          f"{'gc (not run)':>17}")
    for r in report["overhead"]:
        cells = [f"{r[k]['mean']:5.1f} ({r[k]['first']:.1f}→{r[k]['last']:.1f})" for k in
                 ("sampling", "resolve", "storage", "scans", "gc")]
        print(f"{r['space']:38} {r['sampler']:16} " + " ".join(f"{c:>17}" for c in cells))
    print()
    print("run_worker end to end with a no-op trainer, ms per trial (median over runs of each run's mean, "
          "min–max; first → last of the median run)")
    for r in report["end_to_end"]:
        print(f"  {r['space']:38} {r['sampler']:16} {r['mean']:7.1f}  ({r['min']:.1f}–{r['max']:.1f} over "
              f"{r['repeats']} runs)   {r['first']:.1f} → {r['last']:.1f}   ({r['trials']} trials in the store)")
    trial = report.get("quickstart_trial_s")
    if trial:
        _print_share(report, trial)


def _print_share(report: dict, trial: float) -> None:
    """The per-trial overhead of run_worker as a share of one quickstart trial, split into the
    parts measured on the same space and sampler (what they leave out: 'other', Optuna's own
    per-trial bookkeeping, the heartbeat thread, callbacks), plus the process start shared by
    the quickstart's trials."""
    n = report["quickstart_trials"]
    start_ms = 1e3 * report["process_start_s"] / n
    torch_ms = 1e3 * report["torch_start_s"] / n
    own_ms = start_ms - torch_ms
    print()
    per_layout = report.get("quickstart_trial_s_per_layout") or {}
    how = ("given" if "given" in per_layout else "mean of one trial per layout trained here: "
           + ", ".join(f"{k} {v:.2f} s" for k, v in per_layout.items()))
    print(f"per-trial overhead as a share of a quickstart trial ({trial:.2f} s: studies/quickstart.yaml, digits, "
          f"6 epochs, {how}; target < 1% = {10 * trial:.0f} ms)")
    parts = ("sampling", "resolve", "storage", "scans")
    verdicts = []
    for r in report["end_to_end"]:
        comp = next((c for c in report["overhead"] if c["space"] == r["space"] and c["sampler"] == r["sampler"]), None)
        total = r["mean"] + start_ms
        share = 100 * total / 1e3 / trial
        print(f"  {r['sampler']} ({r['space']}, median of {r['repeats']} runs of {r['trials']} trials: "
              f"{r['min']:.1f}–{r['max']:.1f} ms)")
        if comp is not None:
            split = {k: comp[k]["mean"] for k in parts}
            split["other"] = r["mean"] - sum(split.values())
            for k, v in split.items():
                print(f"    {k:15} {v:7.1f} ms  {100 * v / 1e3 / trial:5.2f}%")
        print(f"    {'run_worker':15} {r['mean']:7.1f} ms  {100 * r['mean'] / 1e3 / trial:5.2f}%   (= the parts above)")
        print(f"    {'process start':15} {start_ms:7.1f} ms  {100 * start_ms / 1e3 / trial:5.2f}%   "
              f"({1e3 * report['process_start_s']:.0f} ms once per search process, over the quickstart's {n} trials)")
        print(f"      {'python + torch':13} {torch_ms:7.1f} ms  {100 * torch_ms / 1e3 / trial:5.2f}%   "
              f"({1e3 * report['torch_start_s']:.0f} ms: the interpreter, import torch and its first optimizer, "
              "as any PyTorch trainer)")
        print(f"      {'archspace':13} {own_ms:7.1f} ms  {100 * own_ms / 1e3 / trial:5.2f}%   "
              f"({1e3 * (report['process_start_s'] - report['torch_start_s']):.0f} ms: the CLI, Optuna, SQLAlchemy, "
              "pydantic models, the quickstart's data)")
        print(f"    {'with start':15} {total:7.1f} ms  {share:5.2f}%")
        own = 100 * (r["mean"] + own_ms) / 1e3 / trial
        print(f"    {'without torch':15} {r['mean'] + own_ms:7.1f} ms  {own:5.2f}%   (run_worker and archspace's own start)")
        verdicts.append((r["sampler"], 100 * r["mean"] / 1e3 / trial, own, share))
    for i, what in ((1, "per-trial loop (run_worker)"), (2, "with archspace's own start shared out"),
                    (3, "with the whole process start (torch's import too) shared out")):
        worst = max(verdicts, key=lambda v: v[i], default=None)
        if worst:
            ok = worst[i] < 1.0
            print(f"  target < 1% of a quickstart trial, {what}: {'met' if ok else 'NOT met'} "
                  f"({worst[i]:.2f}%, {worst[0]}, {'below' if ok else 'above'} 1%)")


def _print_real(report: dict, args) -> None:
    print()
    print(f"tiny real study: {args.real_trials} trials of 1 epoch on synthetic data (512 images, batch 64), "
          f"{os.cpu_count()} cpus")
    print(f"{'how':44} {'trained':>7} {'wall s':>7} {'trials s':>8} {'/h wall':>8} {'/h trials':>9}")
    labels = {"cli": "archspace search --workers {w}", "procs": "{w} processes, cores/{w} threads each",
              "oversubscribed": "{w} processes, all cores each (OMP spin)"}
    for r in report["real"]:
        how = labels[r["mode"]].format(w=r["workers"])
        if any(r["rc"]):
            how += f"  [exit {r['rc']}]"
        print(f"{how:44} {r['trained']:>7} {r['wall_s']:>7.1f} {r['span_s']:>8.1f} {r['per_hour_wall']:>8.0f} "
              f"{r['per_hour_trials']:>9.0f}")
        for e in r["error"]:
            print(f"    error: {e[:150]}")


if __name__ == "__main__":
    main()
