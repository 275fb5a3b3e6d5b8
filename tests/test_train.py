"""Training one trial: recipe details, real training on digits, divergence, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from archspace import compile_network, load_spec
from archspace.errors import SpecError
from archspace.train import TrainConfig, load_config, lr_at, no_decay_names, param_groups, train

TINY_COATNET = {
    "name": "tiny-coatnet",
    "input": {"size": 32},
    "stem": {"kind": "conv", "channels": [16, 16], "strides": [2, 1], "act": "gelu"},
    "stages": [
        {"block": "mbconv", "depth": 1, "width": 32},
        {"block": "transformer", "depth": 1, "width": 64, "head_size": 16},
    ],
    "head": {"pool": "avg", "hidden": 64},
}
TINY_CONVNEXT = {
    "name": "tiny-convnext",
    "input": {"size": 32},
    "stem": {"kind": "patchify", "patch": 4, "norm": "layernorm"},
    "stages": [
        {"block": "convnext", "depth": 1, "width": 32, "stride": 1},
        {"block": "convnext", "depth": 1, "width": 64},
    ],
}
TINY_VITC = {
    "name": "tiny-vitc",
    "input": {"size": 32},
    "stem": {"kind": "conv", "channels": [16, 32, 64], "project": 64, "rule": "vitc"},
    "stages": [{"block": "transformer", "depth": 2, "width": 64, "heads": 4, "mlp_ratio": 2,
                "attention": "absolute", "stride": 1, "class_token": True}],
    "head": {"pool": "cls"},
}


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("archspace")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, **kw)


# -- recipe -------------------------------------------------------------------------------------

def test_no_weight_decay_on_gains_biases_embeddings_tables_tokens_and_layer_scale():
    spec = load_spec({
        "input": {"size": 32},
        "stem": {"kind": "patchify", "patch": 4},
        "stages": [
            {"block": "transformer", "depth": 1, "width": 32, "head_size": 16, "attention": "relative", "stride": 1},
            {"block": "transformer", "depth": 1, "width": 32, "head_size": 16, "attention": "absolute",
             "stride": 1, "class_token": True, "layer_scale": 1e-5},
        ],
        "head": {"pool": "cls"},
    })
    model = compile_network(spec)
    skip = no_decay_names(model)
    groups = {g["name"]: g for g in param_groups(model, 0.05)}
    assert groups["decay"]["weight_decay"] == 0.05 and groups["no_decay"]["weight_decay"] == 0.0
    names = dict(model.named_parameters())
    for name, p in names.items():
        special = (p.ndim <= 1 or name.endswith(("table", ".pos", "class_token.token", "gamma")))
        assert (name in skip) == special, name
    assert any(n.endswith("bias.table") for n in skip)           # relative-position table (2-D+)
    assert any(n.endswith("position.pos") for n in skip)         # absolute position embedding
    assert any(n.endswith("class_token.token") for n in skip)    # class token
    assert any(n.endswith("gamma") for n in skip)                # layer scale
    assert any(n.endswith("qkv.weight") for n in names if n not in skip)
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # every parameter exactly once



@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_optimizer_step_is_fused_on_the_cpu_and_equals_torchs_per_tensor_step(optimizer):
    from archspace.train.optim import make_optimizer

    cfg = TrainConfig(optimizer=optimizer, lr=1e-2, weight_decay=0.05)
    models = [torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
              for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = make_optimizer(models[0], cfg)
    plain = type(fused)(param_groups(models[1], cfg.weight_decay), **{k: v for k, v in fused.defaults.items()
                                                                     if k not in ("fused", "foreach", "decoupled_weight_decay")})
    assert fused.defaults["fused"] is True and not plain.defaults.get("fused")
    x = torch.randn(32, 8)
    for _ in range(5):
        for model, opt in zip(models, (fused, plain)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

def test_schedule_warms_up_linearly_then_half_cosine():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, epochs=10, warmup_epochs=1)
    total, warm = 100, 10
    assert lr_at(0, total, warm, cfg) == pytest.approx(0.1)
    assert lr_at(9, total, warm, cfg) == pytest.approx(1.0)
    assert lr_at(10, total, warm, cfg) == pytest.approx(1.0)
    assert lr_at(55, total, warm, cfg) == pytest.approx(0.55)
    assert lr_at(100, total, warm, cfg) == pytest.approx(0.1)
    values = [lr_at(s, total, warm, cfg) for s in range(warm, total)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_bad_recipe_values_are_reported_with_train_paths():
    with pytest.raises(SpecError) as err:
        load_config(lr=-1, batch_size=0, optimizer="adam")
    paths = sorted(p.path for p in err.value.problems)
    assert paths == ["train.batch_size", "train.lr", "train.optimizer"]


# -- real training on digits ----------------------------------------------------------------------

@pytest.mark.parametrize("raw,epochs,lr", [(TINY_COATNET, 8, 3e-3), (TINY_CONVNEXT, 8, 3e-3), (TINY_VITC, 12, 2e-3)],
                         ids=["coatnet", "convnext", "vit_c"])
def test_tiny_networks_learn_digits(raw, epochs, lr, tmp_path):
    torch.set_num_threads(1)
    cfg = TrainConfig(data="digits", epochs=epochs, batch_size=32, lr=lr, weight_decay=0.05, warmup_epochs=1, seed=0)
    result = train(load_spec(raw), cfg, tmp_path)
    assert result.status == "complete" and result.epochs == epochs
    assert result.final["eval_error"] < 0.10, result.final
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == list(range(1, epochs + 1))
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "complete"


def test_training_is_seeded_and_deterministic_on_cpu():
    cfg = TrainConfig(data="synthetic", epochs=2, batch_size=32, lr=1e-3, seed=3)
    a = train(load_spec(TINY_CONVNEXT), cfg).history
    b = train(load_spec(TINY_CONVNEXT), cfg).history
    strip = lambda h: [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in h]  # noqa: E731
    assert strip(a) == strip(b)


def test_ema_is_evaluated_when_on(tmp_path):
    cfg = TrainConfig(data="synthetic", epochs=1, batch_size=32, ema=0.9)
    result = train(load_spec(TINY_CONVNEXT), cfg)
    assert 0.0 <= result.final["ema_eval_error"] <= 1.0


def test_callback_can_prune(tmp_path):
    cfg = TrainConfig(data="synthetic", epochs=5, batch_size=32)
    result = train(load_spec(TINY_CONVNEXT), cfg, tmp_path, callback=lambda row: row["epoch"] >= 2)
    assert result.status == "pruned" and result.epochs == 2


def test_a_stop_after_the_last_epoch_leaves_the_run_complete(tmp_path):
    cfg = TrainConfig(data="synthetic", epochs=2, batch_size=32)
    result = train(load_spec(TINY_CONVNEXT), cfg, tmp_path, callback=lambda row: True if row["epoch"] == 2 else None)
    assert result.status == "complete" and result.epochs == 2


# -- divergence -----------------------------------------------------------------------------------

def test_huge_sgd_lr_on_vit_ends_as_diverged_with_clear_status(tmp_path):
    out = tmp_path / "run"
    r = cli("train", _write(tmp_path, TINY_VITC), "--data", "synthetic",
            "--epochs", "3", "--batch-size", "32", "--optimizer", "sgd", "--lr", "1000", "--out", str(out),
            "--format", "json", env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 3, r.stderr
    summary = json.loads(r.stdout)
    assert summary["status"] == "diverged" and summary["diverged_epoch"] == 1
    assert summary["device"]["threads"] == 1                    # torch keeps the budget it was given
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"
    assert (out / "metrics.jsonl").read_text() == ""          # no half-written epoch
    assert not (out / "checkpoint.pt").exists()
    assert not list(out.glob(".*.tmp"))
    assert "Traceback" not in r.stderr


def _write(tmp_path: Path, raw: dict) -> str:
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(json.dumps(raw))
    return str(path)


# -- checkpoints and resume -----------------------------------------------------------------------

def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    full = TrainConfig(data="synthetic", epochs=3, batch_size=32, lr=2e-3, seed=1, flip=True, mixup=0.2)
    spec = load_spec(TINY_COATNET)
    straight = train(spec, full, tmp_path / "a")
    first = train(spec, full.model_copy(update={"epochs": 3}), tmp_path / "b", callback=lambda r: r["epoch"] == 2)
    assert first.status == "pruned"
    resumed = train(spec, full, tmp_path / "b", resume=True)
    assert resumed.epochs == 3
    strip = lambda h: [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_kill_9_during_training_then_resume(tmp_path):
    out = tmp_path / "run"
    spec = _write(tmp_path, TINY_COATNET)
    args = ["train", spec, "--data", "digits", "--epochs", "4", "--batch-size", "16", "--out", str(out),
            "--format", "json"]
    exe = Path(sys.executable).with_name("archspace")
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(torch.load(out / "checkpoint.pt", weights_only=True)["history"])
    assert 2 <= done_before < 4
    r = cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["status"] == "complete" and summary["epochs"] == 4
    epochs = [json.loads(l)["epoch"] for l in metrics.read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


# -- bad input (one line each, exit 2) --------------------------------------------------------------

@pytest.mark.parametrize("extra,path", [
    (["--data", "nope"], "--data"),
    (["--data", "cifar10", "--data-dir", "/nonexistent/cifar"], "--data-dir"),
    (["--lr", "-0.1"], "train.lr"),
    (["--batch-size", "100000"], "train.batch_size"),
])
def test_bad_training_input_is_one_line_exit_2(tmp_path, extra, path):
    r = cli("train", _write(tmp_path, TINY_CONVNEXT), "--epochs", "1", "--out", str(tmp_path / "o"), *extra)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(path), lines
    assert "Traceback" not in r.stderr


def test_corrupt_cifar_folder_is_one_line_exit_2(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        (folder / name).write_bytes(b"not a pickle")
    r = cli("train", _write(tmp_path, TINY_CONVNEXT), "--data", "cifar10", "--data-dir", str(folder), "--epochs", "1")
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr


def test_image_folder_with_one_class_is_one_line_exit_2(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    (root / "train" / "cat").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / "train" / "cat" / f"{i}.png")
    r = cli("train", _write(tmp_path, TINY_CONVNEXT), "--data", "imagefolder", "--data-dir", str(root), "--epochs", "1")
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "class" in lines[0], lines
