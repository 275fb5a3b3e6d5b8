"""The ``archspace`` command: build, list, schema.

Exit status: 0 ok, 2 invalid input (one line per problem on stderr, no traceback),
1 internal error.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Callable, List, Optional

import typer

from ..errors import SpecError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="archspace: vision-network design as data. Check a spec, count its cost, compile it, search spaces.",
)


class _Console:
    """A rich ``Console`` made on first use: commands that answer in JSON never import rich."""

    def __init__(self, **options):
        self._options, self._console = options, None

    @property
    def rich(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str):
        return getattr(self.rich, name)


def Table(**options):
    from rich.table import Table

    return Table(**options)


out = _Console(width=None if sys.stdout.isatty() else 160)
err = _Console(stderr=True, width=None if sys.stderr.isatty() else 1000)


class Format(str, Enum):
    table = "table"
    json = "json"


class Export(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"
    graphml = "graphml"


_QUIET_WARNINGS = ("ExperimentalWarning", "TracerWarning")


@contextmanager
def _quiet_warnings():
    """Hide what users cannot act on: Optuna's experimental and user warnings and torch's tracer
    warnings (the filters and the printer are restored on exit)."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def filtered(message, category, filename, lineno, file=None, line=None):
            where = str(filename).replace(os.sep, "/")
            if category.__name__ in _QUIET_WARNINGS or category.__module__.startswith("optuna") or "/optuna/" in where:
                return
            show(message, category, filename, lineno, file, line)

        warnings.showwarning = filtered
        yield


def _fail_on_spec_errors(fn: Callable[[], None], root: str) -> None:
    try:
        with _quiet_warnings():
            fn()
    except SpecError as exc:
        for line in exc.lines(root):
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except typer.Exit:
        raise
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stdout = open(os.devnull, "w")
        raise typer.Exit(0) from None
    except Exception as exc:  # internal error: say so, exit 1
        if os.environ.get("ARCHSPACE_DEBUG"):
            raise
        err.print(f"internal error: {type(exc).__name__}: {exc} (set ARCHSPACE_DEBUG=1 for the traceback)",
                  markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


@app.command()
def build(
    spec: str = typer.Argument(..., help="A spec file (YAML) or a preset name (see `archspace list`)."),
    set_: List[str] = typer.Option([], "--set", "-s", help="Override a spec path: PATH=VALUE, e.g. stages[2].depth=6. Repeatable."),
    size: Optional[int] = typer.Option(None, "--size", help="Input resolution (overrides input.size)."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table (readable) or json (one object, for scripts)."),
    export: Optional[Export] = typer.Option(None, "--export", help="Also write the network as onnx, torchscript or graphml."),
    export_file: Optional[Path] = typer.Argument(None, help="File to write with --export."),
    compile_: bool = typer.Option(True, "--compile/--no-compile", help="Also build the PyTorch module (--no-compile: checks and analytic cost only)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Import a checkpoint file (safetensors or a torch state dict) into the module; every key must be used and every parameter filled."),
    weights_from: str = typer.Option("timm", "--from", help="The naming the --weights checkpoint follows: timm."),
) -> None:
    """Check a spec, count its cost per stage, and compile it to a PyTorch module.

    The module is built (and its parameter count checked against the analytic one) unless
    --no-compile is given; nothing is trained. With --weights the module is filled from a
    local checkpoint (see docs/weights.md): a key missing, left over or of the wrong shape
    is one line each and exit status 2; a resampled position table or a re-initialised
    classifier is said on stderr. An --export then writes the imported weights.

    Every problem is reported at once, one line each, naming its spec path; exit status 2.

    [bold]Examples[/bold]

      archspace build coatnet-0
      archspace build my-net.yaml --set stages[2].depth=6 --size 384
      archspace build vit_c-4gf --format json | jq .flops
      archspace build convnext-t --export onnx convnext-t.onnx
      archspace build deit-s --weights deit_small_patch16_224.safetensors --from timm
      archspace build deit-s --size 384 --set num_classes=10 --weights deit_small.pth
    """
    root = spec

    def run() -> None:
        from ..complexity import complexity
        from ..graph import check_memory, lower
        from ..spec import load_spec

        if export is not None and export_file is None:
            raise SpecError.single("--export", "needs a FILE to write, e.g. --export onnx net.onnx")
        if weights is not None and not compile_:
            raise SpecError.single("--weights", "imports into the module, which --no-compile does not build")
        lowered = lower(load_spec(spec, set_, size))
        check_memory(lowered)
        for w in lowered.warnings:
            err.print(w.format(root), markup=False, highlight=False, soft_wrap=True)
        report = complexity(lowered)
        if compile_:
            from ..compile import compile_network

            model = compile_network(lowered, check_fits=False)
            built = sum(p.numel() for p in model.parameters())
            if built != report["params"]:
                raise RuntimeError(f"built module has {built} params, analytic count {report['params']}")
            report["compiled"] = True
            if weights is not None:
                from ..weights import import_weights

                imported = import_weights(model, weights, source=weights_from)
                report["weights"] = {"file": str(weights), "from": weights_from, "family": imported.family,
                                     "tensors": imported.copied, "notes": imported.notes}
                for note in imported.notes:
                    err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
        if export is not None:
            from ..export import export_network

            export_network(lowered, export.value, export_file, model=model if compile_ else None)
            report["export"] = {"format": export.value, "file": str(export_file)}
        if fmt == Format.json:
            print(json.dumps(report))
        else:
            _print_table(report)
            if compile_:
                out.print(f"compiled: torch module with {report['params']:,} parameters (equal to the analytic count)")
            if weights is not None:
                w = report["weights"]
                out.print(f"weights: {w['tensors']} tensors imported from {weights} ({w['from']} {w['family']} table)")
            if export is not None:
                out.print(f"wrote {export.value} to {export_file}")

    _fail_on_spec_errors(run, root)


def _print_table(report: dict) -> None:
    title = f"{report['name'] or 'network'} @ {report['input'][1]}×{report['input'][2]}"
    table = Table(title=title)
    for col, justify in (("part", "left"), ("block", "left"), ("depth", "right"), ("width", "right"),
                         ("output", "right"), ("params", "right"), ("flops", "right"), ("acts", "right")):
        table.add_column(col, justify=justify)
    for p in report["parts"]:
        shape = "×".join(map(str, p["output"])) + (f" +{p['class_tokens']} cls" if p["class_tokens"] else "")
        table.add_row(p["part"], p["kind"], str(p.get("depth", "")), str(p.get("width", "")), shape,
                      _human(p["params"]), _human(p["flops"]), _human(p["acts"]))
    table.add_section()
    table.add_row("total", "", "", "", "", _human(report["params"]), _human(report["flops"]), _human(report["acts"]))
    out.print(table)
    out.print("flops are multiply-adds; acts are output elements of convs, linears and attention products.")


EXIT_DIVERGED = 3


# train's options that set a recipe field, and the field (where the names differ)
RECIPE_OPTIONS = {"data": "data", "data_dir": "data_dir", "loader": "loader", "loader_workers": "loader_workers",
                  "checkpoint_steps": "checkpoint_steps", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
                  "weight_decay": "weight_decay", "optimizer": "optimizer", "warmup": "warmup_epochs",
                  "label_smoothing": "label_smoothing", "mixup": "mixup", "cutmix": "cutmix",
                  "crop": "random_resized_crop", "flip": "flip", "ema": "ema", "clip_grad": "clip_grad",
                  "seed": "seed", "device": "device", "precision": "precision", "channels_last": "channels_last",
                  "compile_model": "compile"}


def _recipe(ctx: typer.Context, config_file: Optional[Path], options: dict) -> dict:
    """The recipe's values: the --config file's, with the options given on the command line
    on top (without --config, every option, defaults included)."""
    values = {RECIPE_OPTIONS[k]: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
    if config_file is None:
        return values
    from ..train.config import read_config

    given = {RECIPE_OPTIONS[k] for k in options
             if getattr(ctx.get_parameter_source(k), "name", None) == "COMMANDLINE"}  # not a default
    return {**read_config(config_file), **{k: v for k, v in values.items() if k in given}}


@app.command()
def train(
    ctx: typer.Context,
    spec: str = typer.Argument(..., help="A spec file (YAML) or a preset name."),
    data: str = typer.Option("digits", "--data", help="Dataset: digits (built in), synthetic, cifar10, imagefolder, "
                             "baked (a folder made by archspace data bake)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder of cifar10 / imagefolder data, or a "
                                            "baked folder."),
    loader: str = typer.Option("auto", "--loader", help="imagefolder: memory (decode once), stream (decode in "
                               "loader workers every epoch) or auto (memory when the decoded images fit in 1 GiB)."),
    loader_workers: Optional[int] = typer.Option(None, "--loader-workers", help="Loader worker processes of a "
                                                 "streamed folder (default: the CPUs, at most 8)."),
    checkpoint_steps: Optional[int] = typer.Option(None, "--checkpoint-steps", help="Also checkpoint every N steps "
                                                   "inside an epoch (a killed run resumes there)."),
    nproc: int = typer.Option(1, "--nproc", help="Processes of one data-parallel trial (torchrun; gloo on the cpu, "
                              "nccl on CUDA): the batch is split across them; rank 0 writes the run."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per step."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate."),
    weight_decay: float = typer.Option(0.05, "--weight-decay", help="Decoupled weight decay (not on gains, biases, embeddings, tokens, tables, layer scale)."),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw or sgd (momentum 0.9)."),
    warmup: float = typer.Option(0.0, "--warmup", help="Linear warm-up, in epochs."),
    label_smoothing: float = typer.Option(0.0, "--label-smoothing"),
    mixup: float = typer.Option(0.0, "--mixup", help="Mixup alpha (0: off)."),
    cutmix: float = typer.Option(0.0, "--cutmix", help="CutMix alpha (0: off)."),
    crop: bool = typer.Option(False, "--crop/--no-crop", help="Random resized crop."),
    flip: bool = typer.Option(False, "--flip/--no-flip", help="Random horizontal flip."),
    ema: Optional[float] = typer.Option(None, "--ema", help="EMA decay of the weights, e.g. 0.999."),
    clip_grad: Optional[float] = typer.Option(None, "--clip-grad", help="Clip the gradient norm."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto (the accelerator, else the cpu), cpu, or e.g. cuda, cuda:1."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, bf16 or fp16 autocast (default: bf16 on "
                                            "an accelerator, fp32 on the cpu; fp16 needs an accelerator)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="Channels-last "
                                                 "memory format (default: on an accelerator)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model (inductor; also on the cpu)."),
    set_: List[str] = typer.Option([], "--set", "-s", help="Override a spec path: PATH=VALUE. Repeatable."),
    size: Optional[int] = typer.Option(None, "--size", help="Input resolution (overrides input.size)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/train/<spec name>, "
                                           "or <spec name>-2, -3, … if that holds a run)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint (same "
                                "spec and recipe; a larger --epochs extends it)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in --out (removes only the files "
                                   "archspace wrote there)."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table (progress and summary) or json (one object)."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="A recipe file (YAML or JSON: one `archspace export` wrote, or a run's config.json); options given on the command line override its values."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from the weights of a checkpoint file (safetensors or a torch state dict, see docs/weights.md); a classifier of another size is re-initialised."),
    init_from: str = typer.Option("timm", "--from", help="The naming the --init checkpoint follows: timm."),
) -> None:
    """Train one spec on one dataset with one recipe (one trial).

    Writes spec.yaml, config.json, metrics.jsonl (one line per epoch), checkpoint.pt (every
    epoch, atomic) and summary.json into the run directory. A directory that already holds a
    run is refused unless --resume (continue it: same spec and recipe, --epochs may grow) or
    --overwrite (replace it) is given. Exit status: 0 complete, 3 diverged (non-finite loss:
    the run stops at once and says so), 2 bad input or a refused run directory, 1 internal error.

    [bold]Examples[/bold]

      archspace train coatnet-0 --size 32 --set stages[*].depth=1 --epochs 5
      archspace train my-net.yaml --data cifar10 --data-dir ~/data/cifar-10-batches-py --epochs 30 --lr 3e-3
      archspace train vit_c-1gf --size 32 --optimizer sgd --lr 0.1 --out runs/vitc
      archspace train coatnet-0 --size 64 --data baked --data-dir ~/data/imagenet-64 --crop --flip
      archspace train convnext-t --data imagefolder --data-dir ~/data/imagenet --loader stream --crop --flip
      archspace train my-net.yaml --nproc 4 --batch-size 256 --out runs/dp  # one trial, 4 processes
      archspace train my-net.yaml --out runs/a --resume              # continue it
      archspace train my-net.yaml --out runs/a --resume --epochs 20  # extend it
      archspace train my-net.yaml --out runs/a --overwrite           # replace it
      archspace train my-net.yaml       # into runs/train/my-net, or my-net-2, …
      archspace train deit-s --size 32 --init deit_small.safetensors --epochs 2   # fine-tune
      archspace train best/spec.yaml --config best/recipe.yaml --epochs 300       # a study's best, at full length
    """
    status = {"code": 0}

    def run() -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from ..data import load_data
        from ..spec import load_spec
        from ..train import load_config
        from ..train.ranks import ranks_from_env
        from ..train.rundir import check_free, check_resumable, free_run_dir

        ranks = ranks_from_env()
        if nproc < 1:
            raise SpecError.single("--nproc", f"must be at least 1, got {nproc}")
        if not ranks.main:  # another rank of a data-parallel run: rank 0 prints
            out.quiet = err.quiet = True
        if resume and out_dir is None:
            raise SpecError.single("--resume", "needs --out, the run directory to continue")
        if resume and overwrite:
            raise SpecError.single("--overwrite", "cannot be combined with --resume: one continues the run, "
                                                  "the other replaces it")
        if resume:
            check_resumable(out_dir)
        elif out_dir is not None and not overwrite:
            check_free(out_dir)  # refused before any data is loaded (train() checks again)

        config = load_config(**_recipe(ctx, config_file, dict(
            data=data, data_dir=data_dir, loader=loader, loader_workers=loader_workers,
            checkpoint_steps=checkpoint_steps, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
            optimizer=optimizer, warmup=warmup, label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix, crop=crop,
            flip=flip, ema=ema, clip_grad=clip_grad, seed=seed, device=device, precision=precision,
            channels_last=channels_last, compile_model=compile_model)))
        if init is not None and not init.is_file():
            raise SpecError.single("--init", f"no file {init}")
        network = load_spec(spec, set_, size)  # every check so far needs no torch: a typo is answered at once
        from ..train.loop import check_config, settings_of, train as train_run

        settings_of(config)  # a device setting this machine cannot run: before any data is loaded
        bundle = load_data(config.data, size=network.input.size, channels=network.input.channels,
                           data_dir=config.data_dir, loader=config.loader)
        check_config(config, bundle, max(nproc, ranks.world))
        show = fmt == Format.table
        note = out if show else err  # what happens to the run directory: stdout in table mode, else stderr
        if nproc > 1 and not ranks.parallel:  # every check has passed: start the ranks, which train
            run_dir = out_dir if out_dir is not None else free_run_dir(Path("runs") / "train" /
                                                                       (network.name or Path(spec).stem))
            status["code"] = _launch_ranks(nproc, run_dir, out_dir is None)
            return
        if out_dir is not None:
            run_dir = out_dir
        else:
            default = Path("runs") / "train" / (network.name or Path(spec).stem)
            run_dir = free_run_dir(default)
            note.print(f"run directory {run_dir}" + (f" ({default} holds a run)" if run_dir != default else ""),
                       markup=False, highlight=False, soft_wrap=True)

        def on_start(plan) -> None:  # every check has passed
            note.print(f"data: {bundle.note}", markup=False, highlight=False, soft_wrap=True)
            for line in plan.messages:
                note.print(line, markup=False, highlight=False, soft_wrap=True)

        progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err.rich,
                            disable=not (show and err.is_terminal))
        with progress:
            task = progress.add_task("train", total=None, epoch=1, info="")

            def on_batch(i: int, n: int) -> None:
                progress.update(task, completed=i, total=n)

            def on_epoch(row: dict) -> None:
                progress.update(task, epoch=row["epoch"] + 1, completed=0,
                                info=f"loss {row['train_loss']:.3f} eval error {100 * row['eval_error']:.1f}%")
                if show:
                    progress.console.print(
                        f"epoch {row['epoch']:>3}: train loss {row['train_loss']:.4f}  train error "
                        f"{100 * row['train_error']:.2f}%  eval loss {row['eval_loss']:.4f}  eval error "
                        f"{100 * row['eval_error']:.2f}%  lr {row['lr']:.2e}  {row['images_per_s']:.0f} img/s")

            def on_init(notes: list[str]) -> None:
                progress.console.print(f"weights: started from {init}", markup=False, highlight=False)
                for line in notes:
                    err.print(f"note: {line}", markup=False, highlight=False, soft_wrap=True)

            result = train_run(network, config, run_dir, resume=resume, overwrite=overwrite, data=bundle,
                               on_batch=on_batch, on_epoch=on_epoch, on_start=on_start, init=init,
                               init_from=init_from, on_init=on_init)
        if result.status == "diverged" and not ranks.parallel:  # under torchrun the launcher says so
            status["code"] = EXIT_DIVERGED
        if not ranks.main:
            return
        if fmt == Format.json:
            print(json.dumps(result.as_dict()))
            return
        final = result.final
        out.print(f"status: {result.status}" + (f" (non-finite loss in epoch {result.diverged_epoch})"
                                                 if result.status == "diverged" else ""))
        if final:
            out.print(f"epochs {result.epochs}: eval error {100 * final['eval_error']:.2f}% (best "
                      f"{100 * result.best_eval_error:.2f}%), train loss {final['train_loss']:.4f}")
        out.print(f"{_human(result.params)} params, {_human(result.flops)} flops; run directory {run_dir}")

    _fail_on_spec_errors(run, spec)
    if status["code"]:
        raise typer.Exit(status["code"])


def _launch_ranks(nproc: int, run_dir: Path, add_out: bool) -> int:
    """Run this ``train`` command again as ``nproc`` ranks under torchrun; its exit status
    (0 complete, 3 diverged, else the ranks' failure)."""
    import subprocess

    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        args.append(a)
    if add_out:
        args += ["--out", str(run_dir)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "archspace.cli.app", *args]
    from .._cpus import share

    env = dict(os.environ, OMP_NUM_THREADS=str(share(nproc)))
    code = subprocess.run(cmd, env=env).returncode
    if code != 0:
        return code
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return 0
    return EXIT_DIVERGED if summary.get("status") == "diverged" else 0


@app.command()
def search(
    study_file: Path = typer.Argument(..., help="A study file (YAML): space, recipe, sampler, pruner, budget."),
    backend: Optional[str] = typer.Option(None, "--backend", help="optuna (default) or ray."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default: sqlite file in the run directory); e.g. postgresql://user@host/db for many machines."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Trained trials to reach (overrides the study's)."),
    workers: int = typer.Option(1, "--workers", help="Worker processes on this machine sharing the study."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (ray backend), e.g. auto."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<study name>): trial files, the default store, and a manifest naming its store and study."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the variants the sampler would draw, with cost; train nothing, write nothing."),
    scale: Optional[str] = typer.Option(None, "--scale", help="A named scale of the study (e.g. tiny, cpu, full): its overrides are merged in."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="The data folder (overrides the study's train.data_dir), e.g. where you baked ImageNet."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Devices dealt round-robin to the --workers (optuna backend): 0,1,2,3 or cuda:0,cuda:1 (default: every accelerator device here). More workers than devices pack trials onto each."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table (live view and summary) or json."),
) -> None:
    """Search a design space: sample, check analytically, train, record, resume.

    Re-running the same command resumes the study where it stopped; several processes
    (--workers, or other machines with the same --storage) share one study.

    On a terminal a live line shows progress; otherwise (a cluster log, a pipe) one plain
    line is printed per finished trial, then a summary. SIGTERM stops the search cleanly: the
    running trial is queued again and resumes from its last checkpoint on the next run.

    [bold]Examples[/bold]

      archspace search studies/quickstart.yaml
      archspace search my-study.yaml --dry-run
      archspace search my-study.yaml --workers 2 --trials 40
      archspace search my-study.yaml --storage postgresql://me@db/archspace
      archspace search my-study.yaml --backend ray --address auto
      archspace search studies/vitc-edf-adamw.yaml --scale full --data-dir /data/imagenet-64
      archspace search studies/vitc-edf-adamw.yaml --scale full --workers 16 --devices 0,1,2,3,4,5,6,7
    """
    worker = os.environ.get("ARCHSPACE_WORKER") == "1"
    data_dir = data_dir.expanduser().resolve() if data_dir is not None else None
    argv = [str(study_file)] + (["--trials", str(trials)] if trials else []) + \
        (["--out", str(out_dir)] if out_dir else []) + (["--scale", scale] if scale else []) + \
        (["--data-dir", str(data_dir)] if data_dir else [])

    def run() -> None:
        from ..search.runner import dry_run as draw, edf_bias, search as run_search, size_spread
        from ..search.study import load_study

        if workers < 1:
            raise SpecError.single("--workers", f"must be at least 1, got {workers}")
        if backend not in (None, "optuna", "ray"):
            raise SpecError.single("--backend", f"unknown backend {backend!r} (optuna or ray)")
        study = load_study(study_file, {"train.data_dir": str(data_dir)} if data_dir else None, scale=scale)
        run_dir = out_dir or Path("runs") / study.name
        bias = edf_bias(study)
        if bias and not worker:
            err.print(f"warning: {bias}", markup=False, highlight=False, soft_wrap=True)
        if dry_run:
            budget = study.n_trials(trials)
            rows = draw(study, budget)
            spread = size_spread([r["params"] for r in rows if r["status"] == "ok"])
            if fmt == Format.json:
                print(json.dumps({"rows": rows, "params_spread": spread, "budget": budget}))
                return
            distinct = sum(1 for r in rows if r["status"] == "ok")
            table = Table(title=f"{study.name}: the first {len(rows)} draws of the {study.spec.sampler.kind} sampler "
                                f"({distinct} distinct trainable points of a budget of {budget})")
            for col in ("#", "sampled", "stages", "params", "flops", "status"):
                table.add_column(col, justify="right" if col in ("#", "params", "flops") else "left")
            for i, r in enumerate(rows):
                sampled = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["sampled"].items())
                status = (f"rejected: {r['reason']}" if r["reason"] else
                          f"duplicate of #{r['duplicate_of']} (not trained)" if r["status"] == "duplicate" else r["status"])
                table.add_row(str(i), sampled, " ".join(r.get("stages", [])),
                              _human(r["params"]) if "params" in r else "", _human(r["flops"]) if "flops" in r else "",
                              status)
            out.print(table)
            if spread:
                out.print(f"params of the trainable points: {spread['min']:,.0f} to {spread['max']:,.0f} "
                          f"(spread {spread['ratio']:.3f}x, max/min)")
            return
        from ..search.runner import check_inputs

        check_inputs(study, storage, run_dir)  # every input problem before the live view starts
        budget = study.n_trials(trials)
        live = fmt == Format.table and not worker and err.is_terminal
        view = _SearchView(budget, enabled=live, plain=fmt == Format.table and not worker and not live)
        with view, _stop_on_sigterm():
            summary = run_search(study, run_dir=run_dir, storage=storage, trials=trials, backend=backend,
                                 workers=workers, argv=argv + (["--out", str(run_dir)] if not out_dir else []),
                                 on_trial=view.on_trial, on_epoch=view.on_epoch, address=address, checked=True,
                                 devices=devices)
        if fmt == Format.json:
            print(json.dumps(summary))
            return
        counts = ", ".join(f"{v} {k}" for k, v in sorted(summary["counts"].items()))
        out.print(f"study {summary['study']}: {counts}")
        best = summary["best"]
        if best:
            out.print(f"best: trial {best['number']} eval error {100 * best['values'][0]:.2f}% "
                      f"({_human(best['cost']['params'])} params) {best['params']}")
        spread = summary.get("params_spread")
        if spread:
            out.print(f"params of the trained networks: {spread['min']:,.0f} to {spread['max']:,.0f} "
                      f"(spread {spread['ratio']:.3f}x, max/min)")
        out.print(f"store: {storage or (run_dir / 'study.db')}")

    try:
        _fail_on_spec_errors(run, str(study_file))
    except _Stopped:
        if not worker:
            err.print(f"stopped by SIGTERM; the interrupted trial is queued to resume from its last checkpoint. "
                      f"To go on: archspace search {' '.join(argv)}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(143) from None


class _Stopped(BaseException):
    """The search was stopped by SIGTERM (a BaseException: it passes the internal-error handler
    of :func:`_fail_on_spec_errors`, like KeyboardInterrupt)."""


@contextmanager
def _stop_on_sigterm():
    """SIGTERM raises :class:`Interrupted` in the search (the running trial is failed and queued
    again, worker processes are stopped too), then :class:`_Stopped` here."""
    import signal

    from ..search.optuna_backend import Interrupted

    def handler(signum, frame):
        raise Interrupted("SIGTERM")

    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except Interrupted:
        raise _Stopped() from None
    finally:
        signal.signal(signal.SIGTERM, before)


class _SearchView:
    """On a terminal, a live line: trials done / running / failed and the best so far.
    Elsewhere (``plain``), one line per finished trial, for logs."""

    def __init__(self, budget: int, enabled: bool, plain: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.budget = budget
        self.plain = plain
        self.progress = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err.rich,
                                 disable=not enabled)
        self.task = self.progress.add_task("search", total=budget, info="")
        self.enabled = enabled

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def on_epoch(self, number: int, row: dict) -> None:
        self.progress.update(self.task, info=f"trial {number} epoch {row['epoch']}: "
                                             f"eval error {100 * row['eval_error']:.1f}%")

    def on_trial(self, ostudy, trial, trials=None) -> None:
        from ..search.optuna_backend import TRAINED, trial_status
        from ..search.runner import summarize

        if self.plain:
            print(trial_line(trial, trial_status(trial)), flush=True)
        if not self.enabled:
            return
        s = summarize(ostudy, trials)
        c = s["counts"]
        done = sum(c.get(k, 0) for k in TRAINED)
        best = s["best"]
        info = (f"running {c.get('running', 0)} · failed {c.get('failed', 0)} · rejected {c.get('rejected', 0)}"
                + (f" · duplicate {c['duplicate']}" if c.get("duplicate") else "")
                + (f" · best {100 * best['values'][0]:.2f}%" if best else ""))
        self.progress.update(self.task, completed=min(done, self.budget), info=info)


def trial_line(trial, status: str) -> str:
    """One plain line for a finished trial: number, status, error, params, sampled values, time."""
    a = trial.user_attrs
    parts = [f"trial {trial.number:>4}", f"{status:<9}"]
    if status in ("complete", "diverged", "pruned") and a.get("eval_error") is not None:
        parts.append(f"eval error {100 * (1.0 if status == 'diverged' else a['eval_error']):6.2f}%")
    if status == "duplicate":
        parts.append(f"of trial {a.get('duplicate_of')} (not trained)")
    if a.get("cost"):
        parts.append(f"params {a['cost']['params']:,}")
    parts.append(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()))
    if trial.duration is not None and status in ("complete", "diverged", "pruned"):
        parts.append(f"{trial.duration.total_seconds():.1f} s")
    if status in ("rejected", "failed") and a.get("reason"):
        parts.append(f"({a['reason']})")
    return "  ".join(p for p in parts if p)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A study's run directory (holding study.db)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Read this Optuna storage instead of RUN_DIR/study.db."),
    study_name: Optional[str] = typer.Option(None, "--study", help="Study name, when the store holds several."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="Choice that names a variant (default: layout when sampled)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Report folder (default RUN_DIR/report)."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table or json."),
) -> None:
    """Write a study's EDFs, scatter plots, rankings and tables as Markdown and HTML.

    Works on a study that is still running or partly failed.

    [bold]Examples[/bold]

      archspace report runs/quickstart
      archspace report runs/my-study --group-by train.optimizer
    """

    def run() -> None:
        from ..analysis.report import build_report

        result = build_report(run_dir, storage=storage, name=study_name, group_by=group_by, out_dir=out_dir)
        if fmt == Format.json:
            print(json.dumps(result))
            return
        out.print(f"report: {result['html']} (and {Path(result['markdown']).name}, {len(result['plots'])} plots)")

    _fail_on_spec_errors(run, str(run_dir))


@app.command("export")
def export_trial(
    run_dir: Path = typer.Argument(..., help="A study's run directory (holding study.db, or a manifest naming the store)."),
    trial: Optional[int] = typer.Option(None, "--trial", help="The trial number to export."),
    best: bool = typer.Option(False, "--best", help="Export the best finished trial (the default without --trial)."),
    out_dir: Path = typer.Option(..., "--out", help="Folder to write spec.yaml and recipe.yaml into."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Read this Optuna storage instead of RUN_DIR's."),
    study_name: Optional[str] = typer.Option(None, "--study", help="Study name, when the store holds several."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace spec.yaml and recipe.yaml in --out."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table or json."),
) -> None:
    """Take a trial out of a study: its resolved spec and its recipe, ready to train again.

    Writes OUT/spec.yaml (the trial's network, renamed <study>-trial-<N>) and OUT/recipe.yaml
    (its training recipe), which `archspace train OUT/spec.yaml --config OUT/recipe.yaml`
    trains again with the same spec hash; add options to that command to change the scale
    (--epochs, --data, --size ...).

    [bold]Examples[/bold]

      archspace export runs/quickstart --best --out best
      archspace train best/spec.yaml --config best/recipe.yaml --epochs 100
      archspace export runs/my-study --trial 12 --out trial-12
    """

    def run() -> None:
        from ..search.extract import export_trial as extract

        if best and trial is not None:
            raise SpecError.single("--best", "cannot be combined with --trial: pick one")
        result = extract(run_dir, out_dir, trial=trial, storage=storage, study=study_name, overwrite=overwrite)
        if fmt == Format.json:
            print(json.dumps(result))
            return
        error = result["eval_error"]
        out.print(f"trial {result['trial']} of {result['study']} ({result['status']}"
                  + (f", eval error {100 * error:.2f}%" if error is not None else "") + f"): wrote {result['spec']} "
                  f"and {result['recipe']}", markup=False, highlight=False)
        out.print(f"train it again: {result['command']}", markup=False, highlight=False)

    _fail_on_spec_errors(run, str(run_dir))


@app.command("list")
def list_presets(
    family: Optional[str] = typer.Option(None, "--family", help="Only presets of this family (folder under spaces/)."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="table or json."),
) -> None:
    """List the presets with family, params and flops at their default size.

    [bold]Examples[/bold]

      archspace list
      archspace list --family coatnet --format json
    """

    def run() -> None:
        from ..complexity import complexity
        from ..spec import load_spec, preset_dirs, preset_index

        roots = preset_dirs()
        rows = []
        for name, path in preset_index().items():
            fam = next((path.relative_to(r).parts[0] for r in roots if path.is_relative_to(r)
                        and len(path.relative_to(r).parts) > 1), "")
            if family and fam != family:
                continue
            try:
                c = complexity(load_spec(path))
                rows.append({"name": name, "family": fam, "size": c["input"][1], "params": c["params"],
                             "flops": c["flops"], "acts": c["acts"]})
            except SpecError as exc:
                rows.append({"name": name, "family": fam, "error": exc.problems[0].format()})
        rows.sort(key=lambda r: (r["family"], r.get("flops", 0), r["name"]))
        if fmt == Format.json:
            print(json.dumps(rows))
            return
        table = Table()
        for col in ("preset", "family", "size", "params", "flops", "acts"):
            table.add_column(col, justify="left" if col in ("preset", "family") else "right")
        for r in rows:
            if "error" in r:
                table.add_row(r["name"], r["family"], "", "", "", r["error"])
            else:
                table.add_row(r["name"], r["family"], str(r["size"]), _human(r["params"]), _human(r["flops"]),
                              _human(r["acts"]))
        out.print(table)

    _fail_on_spec_errors(run, "list")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the spec language (for editor completion and checking).

    [bold]Example[/bold]

      archspace schema > archspace-spec.schema.json
    """
    def run() -> None:
        from ..spec import NetworkSpec

        print(json.dumps(NetworkSpec.model_json_schema(), indent=2))

    _fail_on_spec_errors(run, "schema")


def _add_data_commands() -> None:
    from .data import data_app

    app.add_typer(data_app, name="data")


_add_data_commands()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
