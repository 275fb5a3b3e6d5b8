"""One trial over two processes: ``archspace train --nproc 2`` (torchrun, gloo on the CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from archspace.train.rundir import RUN_FILES
from test_train import TINY_CONVNEXT, _write, cli

EXE = Path(sys.executable).with_name("archspace")
BASE = ["--data", "synthetic", "--batch-size", "32", "--lr", "3e-3", "--seed", "1"]


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    spec = _write(tmp_path, TINY_CONVNEXT)
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = cli("train", spec, *BASE, "--epochs", "2", "--out", str(one), "--format", "json")
    assert r1.returncode == 0, r1.stderr
    r2 = cli("train", spec, *BASE, "--epochs", "2", "--out", str(two), "--nproc", "2", "--format", "json")
    assert r2.returncode == 0, r2.stderr[-3000:]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["device"]["processes"] == 2
    assert json.loads(r2.stdout)["device"]["processes"] == 2  # rank 0 printed the one result
    for a, b in zip(rows(one), rows(two), strict=True):
        for key in ("train_loss", "train_error", "eval_loss", "eval_error", "lr"):
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(a[key])), (key, a[key], b[key])
    w1 = torch.load(one / "checkpoint.pt", weights_only=True)["model"]
    w2 = torch.load(two / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-5) for k in w1)
    # rank 0 alone wrote the run: its files once, no temp files, one metrics row per epoch
    assert sorted(p.name for p in two.iterdir()) == sorted(RUN_FILES)
    assert [r["epoch"] for r in rows(two)] == [1, 2]
    state = torch.load(two / "checkpoint.pt", weights_only=True)
    assert len(state["generators"]) == 2  # each rank's augmentation generator, for resume


def test_a_killed_two_process_run_resumes(tmp_path):
    spec = _write(tmp_path, TINY_CONVNEXT)
    run = tmp_path / "run"
    args = ["train", spec, *BASE, "--epochs", "4", "--out", str(run), "--nproc", "2", "--format", "json"]
    proc = subprocess.Popen([str(EXE), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= 1:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks
    proc.wait()
    done = len(torch.load(run / "checkpoint.pt", weights_only=True)["history"])
    assert 1 <= done < 4
    r = cli(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["epochs"] == 4
    assert [row["epoch"] for row in rows(run)] == [1, 2, 3, 4]


def test_bad_data_parallel_settings_are_one_line_exit_2(tmp_path):
    spec = _write(tmp_path, TINY_CONVNEXT)
    for extra, path in ((["--nproc", "0"], "--nproc"), (["--nproc", "2", "--batch-size", "33"], "train.batch_size")):
        out = tmp_path / "never"
        r = cli("train", spec, "--data", "synthetic", "--epochs", "1", "--out", str(out), *extra)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"{path}: "), lines
        assert not out.exists()
