"""`archspace train` never changes a run silently: refusals, --overwrite, --resume, the default --out.

Real (tiny) training on synthetic data through the command line (in process) and the API.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from archspace import load_spec
from archspace.errors import SpecError
from archspace.train import TrainConfig, lr_at, train
from archspace.train.rundir import MISSING, first_difference

TINY = """
name: tiny-convnext
input: {size: 16}
stem: {kind: patchify, patch: 4, norm: layernorm}
stages:
  - {block: convnext, depth: 1, width: 16, stride: 1}
  - {block: convnext, depth: 1, width: 32}
"""
ARGS = ["--data", "synthetic", "--batch-size", "64"]  # 8 steps per epoch


@pytest.fixture
def tiny(spec_file):
    return str(spec_file(TINY, "tiny.yaml"))


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def epochs_in(folder: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def refused(r, start: str) -> str:
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith(start), r.err_lines
    assert r.exception is None and "Traceback" not in r.stderr
    return r.err_lines[0]


def test_a_second_run_into_the_same_out_is_refused_and_overwrite_replaces_only_run_files(cli, tiny, tmp_path):
    out = tmp_path / "run"
    assert cli("train", tiny, *ARGS, "--epochs", "1", "--out", out).exit_code == 0
    (out / "notes.txt").write_text("mine")
    before = files(out)
    assert set(before) == {"spec.yaml", "config.json", "checkpoint.pt", "metrics.jsonl", "summary.json", "notes.txt"}

    line = refused(cli("train", tiny, *ARGS, "--epochs", "1", "--lr", "3e-3", "--out", out), "--out: ")
    assert line == (f"--out: {out} already holds a run (tiny-convnext, 1/1 epochs); use --resume to continue it, "
                    f"--overwrite to replace it, or another --out")
    assert files(out) == before                                   # byte for byte

    (out / ".checkpoint.pt.x1y2.tmp").write_bytes(b"torn")        # left by a kill mid-write
    (out / "checkpoint.pt.bak").write_bytes(b"not ours")
    r = cli("train", tiny, *ARGS, "--epochs", "1", "--lr", "3e-3", "--out", out, "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert f"--overwrite: replacing the run in {out} (tiny-convnext, 1/1 epochs)" in r.stdout
    assert (out / "notes.txt").read_text() == "mine" and (out / "checkpoint.pt.bak").read_bytes() == b"not ours"
    assert not (out / ".checkpoint.pt.x1y2.tmp").exists()
    assert json.loads((out / "config.json").read_text())["lr"] == 3e-3
    assert epochs_in(out) == [1]


def test_the_default_out_gets_the_first_free_suffix(cli, tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = Path("runs/train/tiny-convnext")
    base.mkdir(parents=True)                       # an empty folder holds no run: it is free
    first = cli("train", tiny, *ARGS, "--epochs", "1")
    assert first.exit_code == 0 and "run directory runs/train/tiny-convnext\n" in first.stdout
    Path("runs/train/tiny-convnext-3").mkdir()
    (Path("runs/train/tiny-convnext-3") / "summary.json").write_text("{}")   # -3 holds (part of) a run
    second = cli("train", tiny, *ARGS, "--epochs", "1", "--format", "json")
    assert second.exit_code == 0, second.stderr
    assert second.json()["run_dir"] == "runs/train/tiny-convnext-2"
    assert "run directory runs/train/tiny-convnext-2 (runs/train/tiny-convnext holds a run)" in second.stderr
    assert epochs_in(base) == [1] and epochs_in(Path("runs/train/tiny-convnext-2")) == [1]


def test_resume_refuses_a_changed_recipe_or_spec_naming_the_first_difference(cli, tiny, tmp_path):
    out = tmp_path / "run"
    assert cli("train", tiny, *ARGS, "--epochs", "2", "--out", out).exit_code == 0
    before = files(out)
    line = refused(cli("train", tiny, *ARGS, "--epochs", "2", "--lr", "3e-3", "--out", out, "--resume"), "--resume: ")
    assert line.startswith(f"--resume: the recipe differs from the run in {out}: train.lr is 0.003 here, "
                           f"0.001 in the run"), line
    line = refused(cli("train", tiny, *ARGS, "--epochs", "2", "--set", "stages[1].depth=2", "--out", out, "--resume"),
                   "--resume: ")
    assert line.startswith(f"--resume: the spec differs from the run in {out}: stages[1].depth is 2 here, "
                           f"1 in the run"), line
    line = refused(cli("train", tiny, *ARGS, "--epochs", "1", "--out", out, "--resume"), "--resume: ")
    assert "has done 2 epochs; train.epochs is 1 here" in line
    assert files(out) == before
    # what does not change the training may differ; the run is complete, so nothing is trained or written
    r = cli("train", tiny, *ARGS, "--epochs", "2", "--device", "cpu", "--out", out, "--resume")
    assert r.exit_code == 0, r.stderr
    assert f"--resume: the run in {out} is complete (2/2 epochs): nothing to train" in r.stdout
    assert files(out) == before


def test_resume_with_more_epochs_extends_the_run_and_says_how_the_schedule_changes(cli, tiny, tmp_path):
    out = tmp_path / "run"
    assert cli("train", tiny, *ARGS, "--epochs", "2", "--warmup", "1", "--out", out).exit_code == 0
    r = cli("train", tiny, *ARGS, "--epochs", "4", "--warmup", "1", "--out", out, "--resume")
    assert r.exit_code == 0, r.stderr
    cfg = TrainConfig(data="synthetic", batch_size=64, epochs=4, warmup_epochs=1)
    before, after = lr_at(16, 16, 8, cfg), lr_at(16, 32, 8, cfg)    # 8 steps per epoch; resume at step 16
    assert before == 0.0 and after == pytest.approx(7.5e-4)      # cos(pi/3): a third of the new cosine done
    assert f"--resume: continuing the run in {out} at epoch 3, extended from 2 to 4 epochs" in r.stdout
    assert ("schedule: the warm-up (steps 0-7) is kept and the half-cosine from step 8 is laid anew to end at step "
            "32 instead of 16, so at the resume step 16 the learning rate jumps from 0 (the old schedule; the last "
            "step trained used ") in r.stdout
    assert "to 0.00075; the 2 epochs done keep the old schedule's rates" in r.stdout
    assert epochs_in(out) == [1, 2, 3, 4]                         # each epoch once
    history = json.loads((out / "summary.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[3]["lr"] == pytest.approx(lr_at(31, 32, 8, cfg))   # the new schedule's last step
    assert json.loads((out / "config.json").read_text())["epochs"] == 4


def test_resume_needs_a_run_and_an_out(cli, tiny, tmp_path):
    line = refused(cli("train", tiny, *ARGS, "--epochs", "1", "--resume"), "--resume: ")
    assert line == "--resume: needs --out, the run directory to continue"
    (tmp_path / "empty").mkdir()
    line = refused(cli("train", tiny, *ARGS, "--epochs", "1", "--out", tmp_path / "empty", "--resume"), "--resume: ")
    assert "holds no run to continue" in line
    assert list((tmp_path / "empty").iterdir()) == []
    line = refused(cli("train", tiny, *ARGS, "--epochs", "1", "--out", tmp_path / "nope", "--resume"), "--resume: ")
    assert "does not exist" in line and not (tmp_path / "nope").exists()
    refused(cli("train", tiny, *ARGS, "--epochs", "1", "--out", tmp_path / "x", "--resume", "--overwrite"),
            "--overwrite: ")


# -- the API (what the search layer calls) --------------------------------------------------------

def test_api_resume_starts_fresh_where_there_is_no_run_or_no_checkpoint_yet(tmp_path, spec_file):
    spec = load_spec(str(spec_file(TINY, "tiny.yaml")))
    cfg = TrainConfig(data="synthetic", epochs=1, batch_size=64)
    out = tmp_path / "a" / "run"
    result = train(spec, cfg, out, resume=True)                  # does not exist: a fresh run
    assert result.status == "complete" and epochs_in(out) == [1]
    with pytest.raises(SpecError) as exc:                         # a second run without resume or overwrite
        train(spec, cfg, out)
    assert [p.path for p in exc.value.problems] == ["--out"]

    killed = tmp_path / "killed"

    def die(i: int, n: int) -> None:
        raise KeyboardInterrupt  # killed in the first epoch: files written, no checkpoint yet

    with pytest.raises(KeyboardInterrupt):
        train(spec, cfg, killed, on_batch=die)
    assert sorted(p.name for p in killed.iterdir()) == ["config.json", "metrics.jsonl", "spec.yaml"]
    with pytest.raises(SpecError) as exc:                         # still the same recipe only
        train(spec, cfg.model_copy(update={"lr": 3e-3}), killed, resume=True)
    assert exc.value.problems[0].path == "--resume" and "train.lr is 0.003 here" in exc.value.problems[0].message
    plans = []
    result = train(spec, cfg, killed, resume=True, on_start=plans.append)
    assert plans[0].mode == "fresh" and "starting it again in place" in plans[0].messages[0]
    assert result.status == "complete" and epochs_in(killed) == [1]


def test_first_difference_gives_the_path_and_both_values():
    a = {"stages": [{"depth": 1, "width": 8}, {"depth": 6}], "lr": 1e-3, "flip": True}
    assert first_difference(a, json.loads(json.dumps(a))) is None
    b = {**a, "stages": [{"depth": 1, "width": 8}, {"depth": 5}]}
    assert first_difference(a, b) == (("stages", 1, "depth"), 6, 5)
    assert first_difference(a, {**a, "flip": 1}) == (("flip",), True, 1)          # a bool is not a number
    assert first_difference({"x": 1}, {"x": 1.0}) is None
    assert first_difference({"x": [1, 2]}, {"x": (1, 2)}) is None
    assert first_difference({"x": [1]}, {"x": [1, 2]}) == (("x", 1), MISSING, 2)
    assert first_difference({"x": 1}, {"x": 1, "y": 2}) == (("y",), MISSING, 2)
    assert first_difference({"x": math.nan}, {"x": math.nan}) is None
