"""The analytic commands run without torch and ray: ``build --no-compile``, ``list``, ``schema``,
``search --dry-run`` and ``report`` each run in a fresh interpreter, which must finish with the
command's usual exit status and without ``torch`` or ``ray`` in ``sys.modules`` (nothing is timed
here; benchmarks/cli_latency.py measures the start-up)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray")

# runs the CLI's entry point with the given arguments, then says which heavy packages it imported
WRAPPER = """
import json, sys
sys.argv = ["archspace"] + sys.argv[1:]
from archspace.cli.app import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
sys.stdout.flush()
print(json.dumps({"code": code, "imported": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,)


def run_cli(*args: str, cwd: Path = ROOT) -> tuple[int, list[str], str, str]:
    """Exit status, heavy packages imported, stdout and stderr (less the wrapper's line)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    *lines, last = proc.stderr.rstrip("\n").split("\n")
    verdict = json.loads(last)
    return verdict["code"], verdict["imported"], proc.stdout, "\n".join(lines)


def finished_study(folder: Path) -> Path:
    """A run directory with a small finished study, written with Optuna as the search records
    trials (nothing trained)."""
    from archspace.search.study import StudySpec

    layouts = ["C-C-C-C", "C-C-T-T"]
    study = StudySpec.model_validate({
        "name": "tiny",
        "space": {"base": "coatnet-0", "set": {"input.size": 32, "stages[*].depth": 1, "stem.channels": [16, 16]},
                  "choices": {"layout": layouts, "train.lr": {"loguniform": [1.0e-3, 1.0e-2]}}},
        "train": {"data": "synthetic", "epochs": 2, "batch_size": 64},
        "sampler": {"kind": "random", "seed": 0},
        "trials": 4,
    }).model_dump(mode="json")
    folder.mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ostudy = optuna.create_study(study_name="tiny", storage=f"sqlite:///{folder / 'study.db'}")
    ostudy.set_user_attr("archspace_study", study)
    ostudy.set_user_attr("archspace_space", study["space"])
    distributions = {"layout": CategoricalDistribution(layouts), "train.lr": FloatDistribution(1e-3, 1e-2, log=True)}
    for i, layout in enumerate(layouts * 2):
        error = 0.5 - 0.05 * i
        history = [{"epoch": e, "train_loss": 1.0, "train_error": 0.4, "eval_loss": 1.0, "eval_error": error + 0.1 * (1 - e),
                    "lr": 3e-3} for e in range(2)]
        ostudy.add_trial(create_trial(
            state=TrialState.COMPLETE, values=[error], params={"layout": layout, "train.lr": 2e-3 + 1e-3 * i},
            distributions=distributions,
            user_attrs={"status": "complete", "cost": {"params": 300000 + i, "flops": 12000000, "acts": 100000},
                        "key": f"k{i}", "history": history, "train_loss": 1.0, "train_error": 0.4,
                        "eval_error": error}))
    return folder


@pytest.mark.parametrize("args", [
    ("build", "coatnet-0", "--no-compile", "--format", "json"),
    ("build", "coatnet-0", "--no-compile"),
    ("list", "--format", "json"),
    ("schema",),
    ("search", "studies/quickstart.yaml", "--dry-run", "--format", "json"),
    ("search", "studies/quickstart.yaml", "--dry-run"),
], ids=lambda a: " ".join(a))
def test_analytic_commands_import_neither_torch_nor_ray(args):
    code, imported, out, err = run_cli(*args)
    assert code == 0, err
    assert imported == [], f"{' '.join(args)} imported {imported}"
    assert out.strip()
    if "json" in args:
        json.loads(out)


def test_report_imports_neither_torch_nor_ray(tmp_path):
    run = finished_study(tmp_path / "run")
    code, imported, out, err = run_cli("report", str(run), "--format", "json")
    assert code == 0, err
    assert imported == []
    assert Path(json.loads(out)["html"]).is_file()


@pytest.mark.parametrize("args,path", [
    (("build", "no-such-preset", "--no-compile"), "no-such-preset: unknown preset"),
    (("train", "coatnet-0", "--lr", "-0.1"), "train.lr"),                      # a bad recipe
    (("train", "coatnet-0", "--set", "stages[9].depth=2"), "stages[9]"),       # a bad spec
    (("train", "coatnet-0", "--resume"), "--resume"),                          # a bad combination
], ids=["build", "train-recipe", "train-spec", "train-resume"])
def test_bad_input_still_exits_2_with_one_line_without_torch(tmp_path, args, path):
    """A user's mistake is answered at once: without torch, so without its seconds of import."""
    out_dir = ("--out", str(tmp_path / "out")) if args[0] == "train" and "--resume" not in args else ()
    code, imported, out, err = run_cli(*args, *out_dir)
    lines = [line for line in err.splitlines() if line.strip()]
    assert (code, imported, out) == (2, [], ""), err
    assert len(lines) == 1 and "Traceback" not in err and path in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_public_names_needing_torch_still_import():
    """``from archspace import compile_network`` and the module classes still work (imported on use)."""
    code = ("import sys, archspace; assert 'torch' not in sys.modules; "
            "from archspace import FeatureNetwork, Network, compile_network, weights; "
            "from archspace.layers.attention import PositionEmbedding; from archspace.blocks import Head; "
            "from archspace.train import train; "
            "m = compile_network(archspace.load_spec('coatnet-0', size=64)); assert isinstance(m, Network); "
            "assert 'torch' in sys.modules; "
            "assert 'networkx' not in sys.modules; "  # building reads the lowered parts, not their graph (0.3 s)
            "low = archspace.lower(archspace.load_spec('coatnet-0')); "
            "assert all(low.node(n) == d for n, d in low.graph.nodes(data=True)); print('ok')")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
