"""``archspace data``: bake a dataset once for many short trials, and describe a baked one."""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

data_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Prepare data: bake an image folder or CIFAR-10 into memory-mapped arrays; describe a baked set.",
)


class Source(str, Enum):
    imagefolder = "imagefolder"
    cifar10 = "cifar10"


def _console():
    from .app import err, out

    return out, err


@data_app.command()
def bake(
    src: Path = typer.Argument(..., help="The source: a folder with train/<class>/ (and optionally val/<class>/), "
                                         "or the CIFAR-10 python folder with --source cifar10."),
    size: int = typer.Option(..., "--size", help="Input size the baked set is for (the spec's input.size)."),
    out_dir: Path = typer.Option(..., "--out", help="Folder to bake into: new or empty, or an unfinished bake of the "
                                                    "same source and size (resumed)."),
    source: Source = typer.Option(Source.imagefolder, "--source", help="imagefolder or cifar10."),
    margin: int = typer.Option(0, "--margin", help="Pixels kept above --size (images stored at size + margin) for "
                                                   "random resized crops; evaluation takes the centre."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default: the CPUs, at most "
                                                                  "16)."),
    skip_unreadable: bool = typer.Option(False, "--skip-unreadable", help="Bake without the images that cannot be "
                                                                          "read; the manifest lists them."),
    fmt: str = typer.Option("table", "--format", "-f", help="table (progress and summary) or json (the manifest)."),
) -> None:
    """Decode a dataset once into uint8 arrays that every trial memory-maps (train.data: baked).

    Each image's shorter side is resized to size + margin and its centre kept. Checks every
    file first: unreadable images are listed (exit 2, nothing written) unless --skip-unreadable.
    Atomic and resumable: a killed bake continues where it stopped when run again; the
    manifest (archspace-baked.json, with checksums) is written last.

    [bold]Examples[/bold]

      archspace data bake ~/data/imagenet --size 64 --out ~/data/imagenet-64 --workers 16
      archspace data bake ~/data/imagenet --size 32 --margin 4 --out ~/data/imagenet-32
      archspace data bake ~/data/cifar-10-batches-py --source cifar10 --size 32 --out ~/data/cifar10-baked
      archspace train coatnet-0 --size 64 --data baked --data-dir ~/data/imagenet-64
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..data.baked import bake as run_bake
    from .app import _fail_on_spec_errors

    out, err = _console()
    show = fmt != "json"

    def run() -> None:
        if fmt not in ("table", "json"):
            from ..errors import SpecError

            raise SpecError.single("--format", f"table or json, not {fmt!r}")
        progress = Progress(TextColumn("{task.description:<6}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err.rich,
                            disable=not (show and err.is_terminal))
        tasks: dict[str, int] = {}
        started: dict[str, tuple[float, int]] = {}
        last_line = {"t": 0.0}

        def on_progress(phase: str, done: int, total: int) -> None:
            now = time.perf_counter()
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total, rate="")
                started[phase] = (now, done)
            t0, d0 = started[phase]
            rate = (done - d0) / (now - t0) if now > t0 and done > d0 else 0.0
            progress.update(tasks[phase], completed=done, rate=f"{rate:,.0f} img/s" if rate else "")
            if show and not err.is_terminal and (now - last_line["t"] > 10 or done == total) and phase == "bake":
                last_line["t"] = now
                err.print(f"bake: {done:,}/{total:,} images, {rate:,.0f} img/s", markup=False, highlight=False)

        with progress:
            result = run_bake(src, out_dir, size=size, source=source.value, margin=margin, workers=workers,
                              skip_unreadable=skip_unreadable, progress=on_progress)
        manifest = result.manifest
        if not show:
            print(json.dumps({"out": str(result.out), "already": result.already,
                              "resumed_chunks": result.resumed_chunks, **manifest.model_dump(mode="json")}))
            return
        if result.already:
            out.print(f"{result.out} already holds this bake: nothing to do", markup=False, highlight=False)
        elif result.resumed_chunks:
            out.print(f"resumed: {result.resumed_chunks} chunks were baked before", markup=False, highlight=False)
        _describe(manifest, result.out)

    _fail_on_spec_errors(run, str(src))


def _describe(manifest, folder: Path) -> None:
    out, _ = _console()
    train, val = manifest.splits["train"], manifest.splits["val"]
    size_mb = (train.images.bytes + val.images.bytes) / 2**20
    lines = [
        f"baked set {folder}: {len(manifest.classes)} classes, {train.count:,} train and {val.count:,} val images",
        f"for input size {manifest.size} (stored at {manifest.stored} px, margin {manifest.margin}); "
        f"{size_mb:,.1f} MiB of images",
        f"source: {manifest.source.get('kind')} {manifest.source.get('path')}",
    ]
    if manifest.unreadable:
        lines.append(f"skipped {len(manifest.unreadable)} unreadable images (listed in the manifest), e.g. "
                     f"{manifest.unreadable[0].path}")
    if manifest.ignored:
        lines.append(f"ignored {manifest.ignored} files that are not images by their extension")
    lines.append(f"use: train.data: baked, train.data_dir: {folder}, input.size: {manifest.size}")
    for line in lines:
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@data_app.command()
def info(
    folder: Path = typer.Argument(..., help="A baked folder."),
    verify: bool = typer.Option(False, "--verify", help="Also check every array against its checksums."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json (the manifest)."),
) -> None:
    """Describe a baked set (its manifest); --verify checks its checksums.

    [bold]Examples[/bold]

      archspace data info ~/data/imagenet-64 --verify
      archspace data info ~/data/imagenet-64 --format json | jq .splits.train.count
    """
    from ..data.baked import read_manifest, verify as check
    from .app import _fail_on_spec_errors

    def run() -> None:
        manifest = read_manifest(folder, "FOLDER")
        if verify:
            check(folder, manifest, "FOLDER", full=True)
        if fmt == "json":
            print(json.dumps(manifest.model_dump(mode="json")))
            return
        _describe(manifest, folder)
        if verify:
            _console()[0].print("checksums: every array matches its manifest", markup=False, highlight=False)

    _fail_on_spec_errors(run, str(folder))
