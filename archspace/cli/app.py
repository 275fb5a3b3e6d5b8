"""The ``archspace`` command: build, list, schema.

Exit status: 0 ok, 2 invalid input (one line per problem on stderr, no traceback),
1 internal error.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import SpecError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="archspace: vision-network design as data. Check a spec, count its cost, compile it, search spaces.",
)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 1000)


class Format(str, Enum):
    table = "table"
    json = "json"


class Export(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"
    graphml = "graphml"


def _fail_on_spec_errors(fn: Callable[[], None], root: str) -> None:
    try:
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
) -> None:
    """Check a spec, count its cost per stage, and compile it to a PyTorch module.

    The module is built (and its parameter count checked against the analytic one) unless
    --no-compile is given; nothing is trained.

    Every problem is reported at once, one line each, naming its spec path; exit status 2.

    [bold]Examples[/bold]

      archspace build coatnet-0
      archspace build my-net.yaml --set stages[2].depth=6 --size 384
      archspace build vit_c-4gf --format json | jq .flops
      archspace build convnext-t --export onnx convnext-t.onnx
    """
    root = spec

    def run() -> None:
        from ..complexity import complexity
        from ..graph import check_memory, lower
        from ..spec import load_spec

        if export is not None and export_file is None:
            raise SpecError.single("--export", "needs a FILE to write, e.g. --export onnx net.onnx")
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
        if export is not None:
            from ..export import export_network

            export_network(lowered, export.value, export_file)
            report["export"] = {"format": export.value, "file": str(export_file)}
        if fmt == Format.json:
            print(json.dumps(report))
        else:
            _print_table(report)
            if compile_:
                out.print(f"compiled: torch module with {report['params']:,} parameters (equal to the analytic count)")
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


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
