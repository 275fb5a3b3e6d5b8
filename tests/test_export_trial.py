"""`archspace export`: a study's trial out of the study, trained again with `train --config`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from archspace.search.space import spec_hash
from archspace.spec import validate
from archspace.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """The quickstart study at its tiny scale, cut to one trial: (run directory, best trial's record)."""
    from typer.testing import CliRunner

    from archspace.cli.app import app

    folder = tmp_path_factory.mktemp("quickstart")
    study = yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text())
    study["sampler"].pop("per_variant")       # one trial, not one per layout
    study["scales"]["tiny"].pop("sampler")
    study["scales"]["tiny"]["trials"] = 1
    path = folder / "quickstart.yaml"
    path.write_text(yaml.safe_dump(study))
    run = folder / "run"
    r = CliRunner().invoke(app, ["search", str(path), "--scale", "tiny", "--out", str(run), "--format", "json"])
    assert r.exit_code == 0, r.output
    return run, json.loads(r.stdout)["best"]


def test_export_best_then_train_config_gives_the_same_spec_hash_and_recipe(cli, tmp_path, quickstart_run):
    run, best = quickstart_run
    out = tmp_path / "best"
    r = cli("export", run, "--best", "--out", out, "--format", "json")
    assert r.exit_code == 0, r.stderr
    exported = r.json()
    assert exported["trial"] == best["number"] and exported["key"] == best["key"]
    assert exported["command"] == f"archspace train {out / 'spec.yaml'} --config {out / 'recipe.yaml'}"
    spec = yaml.safe_load((out / "spec.yaml").read_text())
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert spec["name"] == f"quickstart-tiny-trial-{best['number']}"
    trial_dir = Path(best["run_dir"])
    assert recipe == json.loads((trial_dir / "config.json").read_text())  # the recipe the trial trained with
    assert spec_hash(validate(spec), TrainConfig.model_validate(recipe)) == best["key"]

    again = tmp_path / "again"
    r = cli("train", out / "spec.yaml", "--config", out / "recipe.yaml", "--out", again, "--format", "json")
    assert r.exit_code == 0, r.stderr
    trained_spec = validate(yaml.safe_load((again / "spec.yaml").read_text()))
    trained_recipe = json.loads((again / "config.json").read_text())
    assert trained_recipe == recipe
    assert spec_hash(trained_spec, TrainConfig.model_validate(trained_recipe)) == best["key"]
    assert trained_spec.name == spec["name"]


def test_export_a_numbered_trial_and_refusals(cli, tmp_path, quickstart_run):
    run, best = quickstart_run
    out = tmp_path / "t"
    assert cli("export", run, "--trial", best["number"], "--out", out).exit_code == 0
    r = cli("export", run, "--trial", best["number"], "--out", out)
    assert r.exit_code == 2
    assert r.err_lines == [f"--out: {out / 'spec.yaml'}, {out / 'recipe.yaml'} already exist; choose another --out "
                           "or pass --overwrite"]
    assert cli("export", run, "--trial", best["number"], "--out", out, "--overwrite").exit_code == 0
    r = cli("export", run, "--trial", 99, "--out", tmp_path / "u")
    assert r.exit_code == 2 and r.err_lines == ["--trial: study 'quickstart-tiny' has no trial 99 (trials 0 to 0)"]
    r = cli("export", run, "--trial", 0, "--best", "--out", tmp_path / "u")
    assert r.exit_code == 2 and r.err_lines == ["--best: cannot be combined with --trial: pick one"]
    r = cli("export", tmp_path / "nothing", "--out", tmp_path / "u")
    assert r.exit_code == 2 and len(r.err_lines) == 1 and "no study store" in r.err_lines[0]


def test_train_config_options_on_the_command_line_win(cli, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: synthetic\nepochs: 3\nlr: 0.5\nmin_lr: 0.1\n")
    # the file's min_lr (0.1) is above the command line's lr: the two were merged before checking
    tiny = ("coatnet-0", "--size", "32", "--set", "stages[*].depth=1")  # were a check to slip, a cheap run
    r = cli("train", *tiny, "--config", recipe, "--lr", "0.01", "--out", tmp_path / "run")
    assert r.exit_code == 2 and r.err_lines == ["train.min_lr: 0.1 is above lr 0.01"]
    recipe.write_text("data: synthetic\nepochs: 3\nlearning_rate: 0.5\n")
    r = cli("train", *tiny, "--config", recipe)
    assert r.exit_code == 2 and r.err_lines == ["train.learning_rate: unknown key (not part of the spec language)"]
    r = cli("train", "coatnet-0", "--config", tmp_path / "none.yaml")
    assert r.exit_code == 2 and r.err_lines == [f"--config: cannot read {tmp_path / 'none.yaml'}: No such file or "
                                                "directory"]
